//! W3C Trace Context Level 2 as the README's Propagation section and the specification's processing model read it.
//! The invalid shapes are those of the W3C test suite (`test/test.py`: traceparent version,
//! trace id, parent id and flags cases; tracestate member, key, value and limit cases).

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use tracecar::trace::context::{Read, SamplingState, SpanContext, TraceContext};
use tracecar::trace::id::{SpanId, TraceId};
use tracecar::trace::w3c::{self, TraceState, extract, inject};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const SPAN: &str = "b7ad6b7169203331";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn tp(value: &str) -> Read<TraceContext> {
    extract(&headers(&[("traceparent", value)])).context
}

fn valid(value: &str) -> TraceContext {
    match tp(value) {
        Read::Valid(c) => c,
        other => panic!("{value}: {other:?}"),
    }
}

fn state(values: &[&str]) -> TraceState {
    let mut pairs = vec![(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )];
    pairs.extend(values.iter().map(|v| ("tracestate", *v)));
    w3c::read_tracestate(&headers(&pairs))
}

#[test]
fn spec_example_is_read_with_the_callers_span_and_sampled_flag() {
    let c = valid(&format!("00-{TRACE}-{SPAN}-01"));
    let ids = c.ids.unwrap();
    assert_eq!(ids.trace_id.to_string(), TRACE);
    assert!(ids.trace_id.wide);
    assert_eq!(ids.span_id.to_string(), SPAN);
    assert_eq!(ids.parent_id, None);
    assert_eq!(c.sampling, Some(SamplingState::Accept));
    assert!(!c.random);
}

#[test]
fn flags_00_is_an_honoured_deny() {
    assert_eq!(
        valid(&format!("00-{TRACE}-{SPAN}-00")).sampling,
        Some(SamplingState::Deny)
    );
}

#[test]
fn the_level_2_random_flag_is_kept() {
    let c = valid(&format!("00-{TRACE}-{SPAN}-03"));
    assert!(c.random);
    assert_eq!(c.sampling, Some(SamplingState::Accept));
}

#[test]
fn unknown_flags_are_zeroed() {
    let c = valid(&format!("00-{TRACE}-{SPAN}-fc"));
    assert!(!c.random);
    assert_eq!(c.sampling, Some(SamplingState::Deny));
    let mut out = HeaderMap::new();
    inject(&mut out, &c.ids.unwrap(), false, c.random, None);
    assert_eq!(out["traceparent"], format!("00-{TRACE}-{SPAN}-00"));
}

#[test]
fn a_padded_64_bit_trace_id_reads_back_64_bits_wide() {
    let c = valid(&format!("00-0000000000000000{SPAN}-{SPAN}-01"));
    let id = c.ids.unwrap().trace_id;
    assert!(!id.wide);
    assert_eq!(id.to_string(), SPAN);
}

#[test]
fn surrounding_whitespace_is_allowed() {
    // W3C test suite: test_traceparent_ows_handling.
    for v in [
        format!(" 00-{TRACE}-{SPAN}-01"),
        format!("00-{TRACE}-{SPAN}-01\t"),
        format!("\t 00-{TRACE}-{SPAN}-01 \t"),
    ] {
        assert!(matches!(tp(&v), Read::Valid(_)), "{v:?}");
    }
}

#[test]
fn higher_versions_are_read_by_their_first_fields() {
    for v in [
        format!("cc-{TRACE}-{SPAN}-01"),
        format!("cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like"),
        format!("01-{TRACE}-{SPAN}-01-"),
    ] {
        assert!(matches!(tp(&v), Read::Valid(_)), "{v}");
    }
}

#[test]
fn every_invalid_traceparent_shape_is_ignored() {
    let cases = [
        // Version.
        format!("ff-{TRACE}-{SPAN}-01"),
        format!("0-{TRACE}-{SPAN}-01"),
        format!("000-{TRACE}-{SPAN}-01"),
        format!(".0-{TRACE}-{SPAN}-01"),
        format!("0.-{TRACE}-{SPAN}-01"),
        format!("0A-{TRACE}-{SPAN}-01"),
        format!("00-{TRACE}-{SPAN}-01-what-the-future-will-be-like"),
        format!("00-{TRACE}-{SPAN}-01-"),
        format!("cc-{TRACE}-{SPAN}-01what-the-future-will-be-like"),
        format!("cc-{TRACE}-{SPAN}-01."),
        // Trace id.
        format!("00-00000000000000000000000000000000-{SPAN}-01"),
        format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
        format!("00-0af7651916cd43dd8448eb211c80319.-{SPAN}-01"),
        format!("00-0af7651916cd43dd8448eb211c80319-{SPAN}-01"),
        format!("00-0af7651916cd43dd8448eb211c80319c1-{SPAN}-01"),
        format!("00-{TRACE}{SPAN}-01"),
        // Parent id.
        format!("00-{TRACE}-0000000000000000-01"),
        format!("00-{TRACE}-{}-01", SPAN.to_uppercase()),
        format!("00-{TRACE}-b7ad6b716920333.-01"),
        format!("00-{TRACE}-b7ad6b716920333-01"),
        format!("00-{TRACE}-b7ad6b71692033331-01"),
        // Flags.
        format!("00-{TRACE}-{SPAN}-.0"),
        format!("00-{TRACE}-{SPAN}-0x"),
        format!("00-{TRACE}-{SPAN}-0A"),
        format!("00-{TRACE}-{SPAN}-1"),
        format!("00-{TRACE}-{SPAN}-001"),
        // Separators and shape.
        format!("00_{TRACE}_{SPAN}_01"),
        format!("00-{TRACE}-{SPAN}_01"),
        String::new(),
        "00".to_string(),
        format!("00-{TRACE}-{SPAN}"),
        format!("00 -{TRACE}-{SPAN}-01"),
    ];
    for v in cases {
        assert_eq!(tp(&v), Read::Invalid, "{v:?}");
    }
}

#[test]
fn two_traceparent_headers_are_invalid_even_when_equal() {
    let v = format!("00-{TRACE}-{SPAN}-01");
    let map = headers(&[("traceparent", &v), ("traceparent", &v)]);
    assert_eq!(extract(&map).context, Read::Invalid);
}

#[test]
fn no_traceparent_is_absent_and_a_lone_tracestate_is_not_judged() {
    let got = extract(&headers(&[("tracestate", "a=1")]));
    assert_eq!(got.context, Read::Absent);
    assert!(!got.state_invalid);
}

#[test]
fn tracestate_is_kept_as_received() {
    let v = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    assert_eq!(state(&[v]), TraceState::Valid(HeaderValue::from_static(v)));
}

#[test]
fn several_tracestate_headers_are_one_list_in_order() {
    assert_eq!(
        state(&["a=1", "b=2,c=3"]),
        TraceState::Valid(HeaderValue::from_static("a=1,b=2,c=3"))
    );
}

#[test]
fn empty_members_and_whitespace_around_members_are_allowed() {
    assert!(matches!(state(&["a=1,,  b=2 ,\t"]), TraceState::Valid(_)));
    assert!(matches!(state(&["a=1", "", "b=2"]), TraceState::Valid(_)));
}

#[test]
fn an_empty_tracestate_is_never_forwarded() {
    assert_eq!(state(&[""]), TraceState::Empty);
    assert_eq!(state(&[",", " , "]), TraceState::Empty);
}

#[test]
fn thirty_two_members_are_valid_thirty_three_are_not() {
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert!(matches!(state(&[&list(32)]), TraceState::Valid(_)));
    assert_eq!(state(&[&list(33)]), TraceState::Invalid);
    // Across headers the limit is the same.
    assert_eq!(state(&[&list(20), &list(33)[..]]), TraceState::Invalid);
}

#[test]
fn multi_tenant_keys_are_valid() {
    for v in [
        "tenant@system=1",
        "1tenant@sys=1",
        "t@s=1",
        "a-b_c*d/e@s0-_*/=1",
    ] {
        assert!(matches!(state(&[v]), TraceState::Valid(_)), "{v}");
    }
}

#[test]
fn key_and_value_sizes_are_limited() {
    let key256 = format!("a{}", "b".repeat(255));
    let key257 = format!("a{}", "b".repeat(256));
    let tenant241 = format!("t{}", "1".repeat(240));
    let tenant242 = format!("t{}", "1".repeat(241));
    let system14 = format!("s{}", "1".repeat(13));
    let system15 = format!("s{}", "1".repeat(14));
    let value256 = "v".repeat(256);
    let value257 = "v".repeat(257);
    for ok in [
        format!("{key256}=1"),
        format!("{tenant241}@s=1"),
        format!("t@{system14}=1"),
        format!("a={value256}"),
    ] {
        assert!(matches!(state(&[&ok]), TraceState::Valid(_)), "{ok}");
    }
    for bad in [
        format!("{key257}=1"),
        format!("{tenant242}@s=1"),
        format!("t@{system15}=1"),
        format!("a={value257}"),
    ] {
        assert_eq!(state(&[&bad]), TraceState::Invalid, "{bad}");
    }
}

#[test]
fn every_invalid_tracestate_shape_drops_the_whole_list() {
    for bad in [
        "a=1,a=2",
        "a=1,a=1",
        "A=1",
        "1a=1",
        "_a=1",
        "a",
        "a=",
        "=1",
        "a=1=2",
        "a=1 ,b",
        "@s=1",
        "t@=1",
        "t@1s=1",
        "t@s@x=1",
        "tenant@SYS=1",
        "a=\u{e9}",
        "a.b=1",
        "a=1,b=2,foo",
    ] {
        assert_eq!(state(&["ok=1", bad]), TraceState::Invalid, "{bad:?}");
    }
}

#[test]
fn an_invalid_tracestate_keeps_the_traceparent_but_is_flagged() {
    let map = headers(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("tracestate", "a=1,a=2"),
    ]);
    let got = extract(&map);
    assert!(got.state_invalid);
    let Read::Valid(c) = got.context else {
        panic!("{got:?}")
    };
    assert_eq!(c.trace_state, None);
}

#[test]
fn inject_pads_a_64_bit_trace_id_and_writes_version_00() {
    let ctx = SpanContext {
        trace_id: TraceId {
            high: 0,
            low: 0x0af7_6519_16cd_43dd,
            wide: false,
        },
        span_id: SpanId(0xb7ad_6b71_6920_3331),
        parent_id: Some(SpanId(1)),
    };
    let mut out = HeaderMap::new();
    inject(&mut out, &ctx, true, true, None);
    assert_eq!(
        out["traceparent"],
        "00-00000000000000000af7651916cd43dd-b7ad6b7169203331-03"
    );
}

#[test]
fn inject_without_a_tracestate_removes_a_stale_one() {
    let mut out = headers(&[("tracestate", "a=1")]);
    let ctx = valid(&format!("00-{TRACE}-{SPAN}-01")).ids.unwrap();
    inject(&mut out, &ctx, true, false, None);
    assert!(!out.contains_key("tracestate"));
}

fn any_trace() -> impl Strategy<Value = TraceId> {
    (any::<u64>(), any::<u64>())
        .prop_filter("not zero", |(h, l)| *h != 0 || *l != 0)
        .prop_map(|(high, low)| TraceId {
            high,
            low,
            wide: high != 0,
        })
}

proptest! {
    #[test]
    fn inject_then_extract_is_the_same_context(
        trace_id in any_trace(),
        span in 1..=u64::MAX,
        sampled: bool,
        random: bool,
        members in proptest::collection::vec(("[a-z][a-z0-9_*/-]{0,8}", "[!-+--<>-~]{1,12}"), 0..8),
    ) {
        let ctx = SpanContext { trace_id, span_id: SpanId(span), parent_id: None };
        let mut seen = std::collections::HashSet::new();
        let list: Vec<String> = members
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let state = (!list.is_empty()).then(|| HeaderValue::from_str(&list.join(",")).unwrap());
        let mut out = HeaderMap::new();
        inject(&mut out, &ctx, sampled, random, state.as_ref());
        let got = extract(&out);
        prop_assert!(!got.state_invalid);
        let Read::Valid(c) = got.context else { panic!("{out:?}") };
        prop_assert_eq!(c.ids, Some(ctx));
        prop_assert_eq!(c.sampling, Some(if sampled { SamplingState::Accept } else { SamplingState::Deny }));
        prop_assert_eq!(c.random, random);
        prop_assert_eq!(c.trace_state, state);
    }

    #[test]
    fn arbitrary_traceparent_values_never_panic(value in "[ -~]{0,80}") {
        let _ = tp(&value);
    }
}
