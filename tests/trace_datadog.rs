//! Datadog propagation (`x-datadog-*`) as the README's Propagation section reads it: decimal 64-bit ids, the high
//! half of a 128-bit trace id in `_dd.p.tid`, priorities, origin and `_dd.p.*` tags passed on.

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use tracecar::trace::context::{Read, SamplingState, SpanContext, TraceContext};
use tracecar::trace::datadog::{extract, inject, priority};
use tracecar::trace::id::{SpanId, TraceId};

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

fn ids(trace: &str, parent: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-datadog-trace-id", trace.to_string()),
        ("x-datadog-parent-id", parent.to_string()),
    ]
}

fn read(pairs: &[(&str, &str)]) -> Read<TraceContext> {
    extract(&headers(pairs)).context
}

fn valid(pairs: &[(&str, &str)]) -> TraceContext {
    match read(pairs) {
        Read::Valid(c) => c,
        other => panic!("{pairs:?}: {other:?}"),
    }
}

#[test]
fn decimal_ids_are_read_as_a_64_bit_trace_and_the_callers_span() {
    let c = valid(&[
        ("x-datadog-trace-id", "1234567890123456789"),
        ("x-datadog-parent-id", "9876543210987654321"),
    ]);
    let ids = c.ids.unwrap();
    assert_eq!(ids.trace_id.low, 1_234_567_890_123_456_789);
    assert_eq!(ids.trace_id.high, 0);
    assert!(!ids.trace_id.wide);
    assert_eq!(ids.span_id, SpanId(9_876_543_210_987_654_321));
    assert_eq!(c.sampling, None, "no priority: the decision is deferred");
}

#[test]
fn dd_p_tid_carries_the_high_64_bits() {
    let c = valid(&[
        ("x-datadog-trace-id", "5208512171318403364"),
        ("x-datadog-parent-id", "1"),
        ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000"),
    ]);
    let trace = c.ids.unwrap().trace_id;
    assert!(trace.wide);
    assert_eq!(trace.high, 0x640c_fd8d_0000_0000);
    assert_eq!(trace.low, 5_208_512_171_318_403_364);
    assert_eq!(c.dd_tags, Some(HeaderValue::from_static("_dd.p.dm=-4")));
}

#[test]
fn priorities_map_to_deny_accept_and_debug() {
    for (p, want) in [
        ("-1", Some(SamplingState::Deny)),
        ("0", Some(SamplingState::Deny)),
        ("1", Some(SamplingState::Accept)),
        ("2", Some(SamplingState::Debug)),
        ("3", None),
        ("yes", None),
        ("", None),
    ] {
        let c = valid(&[
            ("x-datadog-trace-id", "1"),
            ("x-datadog-parent-id", "2"),
            ("x-datadog-sampling-priority", p),
        ]);
        assert_eq!(c.sampling, want, "priority {p:?}");
    }
}

#[test]
fn a_user_priority_travels_on_when_the_decision_agrees() {
    assert_eq!(priority(false, false, Some(-1)), -1);
    assert_eq!(priority(true, true, Some(2)), 2);
    assert_eq!(
        priority(true, false, Some(-1)),
        1,
        "a different decision wins"
    );
    assert_eq!(priority(false, false, None), 0);
    assert_eq!(priority(true, false, None), 1);
    assert_eq!(priority(true, true, None), 2);
}

#[test]
fn origin_and_other_propagated_tags_pass_through() {
    let c = valid(&[
        ("x-datadog-trace-id", "1"),
        ("x-datadog-parent-id", "2"),
        ("x-datadog-origin", "synthetics"),
        ("x-datadog-tags", "_dd.p.dm=-1,team=x,_dd.p.usr.id=abc"),
    ]);
    assert_eq!(c.dd_origin, Some(HeaderValue::from_static("synthetics")));
    // Only `_dd.p.*` tags are propagated (Datadog's rule).
    assert_eq!(
        c.dd_tags,
        Some(HeaderValue::from_static("_dd.p.dm=-1,_dd.p.usr.id=abc"))
    );
}

#[test]
fn every_invalid_id_shape_is_ignored() {
    for (trace, parent) in [
        ("0", "1"),
        ("1", "0"),
        ("-1", "1"),
        ("+1", "1"),
        ("1", "x"),
        ("0x10", "1"),
        ("18446744073709551616", "1"),
        ("1", "99999999999999999999999"),
        ("", "1"),
        ("1.5", "1"),
        ("1 2", "1"),
    ] {
        let pairs = ids(trace, parent);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(read(&pairs), Read::Invalid, "{trace:?} {parent:?}");
    }
}

#[test]
fn the_largest_unsigned_id_is_valid() {
    let c = valid(&[
        ("x-datadog-trace-id", "18446744073709551615"),
        ("x-datadog-parent-id", "1"),
    ]);
    assert_eq!(c.ids.unwrap().trace_id.low, u64::MAX);
}

#[test]
fn a_lone_id_is_ignored_as_a_whole() {
    assert_eq!(read(&[("x-datadog-trace-id", "1")]), Read::Invalid);
    assert_eq!(read(&[("x-datadog-parent-id", "1")]), Read::Invalid);
}

#[test]
fn a_priority_origin_or_tags_without_ids_is_invalid() {
    assert_eq!(read(&[("x-datadog-sampling-priority", "1")]), Read::Invalid);
    assert_eq!(read(&[("x-datadog-origin", "rum")]), Read::Invalid);
}

#[test]
fn no_datadog_headers_is_absent() {
    assert_eq!(read(&[("x-b3-sampled", "1")]), Read::Absent);
}

#[test]
fn malformed_tags_are_dropped_and_flagged_but_the_ids_count() {
    for tags in [
        "garbage",
        "_dd.p.tid=640CFD8D00000000",
        "_dd.p.tid=640cfd8d",
        "_dd.p.tid=640cfd8d0000000g",
        "=x",
        "_dd.p.dm=",
        &format!("_dd.p.x={}", "a".repeat(600)),
    ] {
        let got = extract(&headers(&[
            ("x-datadog-trace-id", "1"),
            ("x-datadog-parent-id", "2"),
            ("x-datadog-tags", tags),
        ]));
        assert!(got.tags_invalid, "{tags}");
        let Read::Valid(c) = got.context else {
            panic!("{tags}: {got:?}")
        };
        assert_eq!(c.dd_tags, None);
        assert!(!c.ids.unwrap().trace_id.wide);
    }
}

#[test]
fn inject_writes_the_low_half_in_decimal_and_the_high_half_as_dd_p_tid() {
    let ctx = SpanContext {
        trace_id: TraceId {
            high: 0x463a_c35c_9f64_13ad,
            low: 0x4848_5a39_53bb_6124,
            wide: true,
        },
        span_id: SpanId(42),
        parent_id: Some(SpanId(7)),
    };
    let mut out = headers(&[("x-datadog-origin", "stale")]);
    inject(
        &mut out,
        &ctx,
        1,
        None,
        Some(&HeaderValue::from_static("_dd.p.dm=-4")),
    );
    assert_eq!(out["x-datadog-trace-id"], "5208512171318403364");
    assert_eq!(out["x-datadog-parent-id"], "42");
    assert_eq!(out["x-datadog-sampling-priority"], "1");
    assert_eq!(
        out["x-datadog-tags"],
        "_dd.p.dm=-4,_dd.p.tid=463ac35c9f6413ad"
    );
    assert!(
        !out.contains_key("x-datadog-origin"),
        "stale origin removed"
    );
}

#[test]
fn inject_of_a_64_bit_trace_without_tags_sends_no_tags_header() {
    let ctx = SpanContext {
        trace_id: TraceId {
            high: 0,
            low: 5,
            wide: false,
        },
        span_id: SpanId(6),
        parent_id: None,
    };
    let mut out = headers(&[("x-datadog-tags", "_dd.p.tid=0000000000000001")]);
    inject(&mut out, &ctx, 0, None, None);
    assert!(!out.contains_key("x-datadog-tags"));
}

proptest! {
    #[test]
    fn inject_then_extract_is_the_same_context(
        high: u64,
        low in 1..=u64::MAX,
        span in 1..=u64::MAX,
        p in -1i8..=2,
        origin in proptest::option::of("[a-z]{1,10}"),
        tags in proptest::option::of("_dd\\.p\\.[a-z]{1,5}=[a-z0-9-]{1,8}"),
    ) {
        let ctx = SpanContext {
            trace_id: TraceId { high, low, wide: high != 0 },
            span_id: SpanId(span),
            parent_id: None,
        };
        let origin = origin.map(|o| HeaderValue::from_str(&o).unwrap());
        let tags = tags.map(|t| HeaderValue::from_str(&t).unwrap());
        let mut out = HeaderMap::new();
        inject(&mut out, &ctx, p, origin.as_ref(), tags.as_ref());
        let got = extract(&out);
        prop_assert!(!got.tags_invalid);
        let Read::Valid(c) = got.context else { panic!("{out:?}") };
        prop_assert_eq!(c.ids, Some(ctx));
        prop_assert_eq!(c.dd_priority, Some(p));
        prop_assert_eq!(c.dd_origin, origin);
        prop_assert_eq!(c.dd_tags, tags);
    }
}
