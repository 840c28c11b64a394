//! Properties of B3 propagation: every valid context survives a hop, and no header bytes make
//! extraction panic.

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use tracecar::trace::b3::{Extracted, SamplingState, SpanContext, extract, inject};
use tracecar::trace::id::{SpanId, TraceId};

const B3_HEADERS: [&str; 6] = [
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

fn trace_id() -> impl Strategy<Value = TraceId> {
    prop_oneof![
        (1..=u64::MAX).prop_map(|low| TraceId {
            high: 0,
            low,
            wide: false
        }),
        (any::<u64>(), any::<u64>())
            .prop_filter("non-zero", |(h, l)| *h != 0 || *l != 0)
            .prop_map(|(high, low)| TraceId {
                high,
                low,
                wide: true
            }),
    ]
}

fn span_id() -> impl Strategy<Value = SpanId> {
    (1..=u64::MAX).prop_map(SpanId)
}

fn context() -> impl Strategy<Value = SpanContext> {
    (trace_id(), span_id(), proptest::option::of(span_id())).prop_map(
        |(trace_id, span_id, parent_id)| SpanContext {
            trace_id,
            span_id,
            parent_id,
        },
    )
}

fn state() -> impl Strategy<Value = SamplingState> {
    prop_oneof![
        Just(SamplingState::Accept),
        Just(SamplingState::Deny),
        Just(SamplingState::Debug),
    ]
}

fn header(name: &str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_bytes(name.as_bytes()).expect("name"),
        HeaderValue::from_str(value).expect("value"),
    )
}

/// The caller's headers for a context, written by hand (not by `inject`), in either form and
/// either case.
fn caller_headers(c: &SpanContext, s: SamplingState, single: bool, upper: bool) -> HeaderMap {
    let case = |v: String| if upper { v.to_uppercase() } else { v };
    let trace = case(c.trace_id.to_string());
    let span = case(c.span_id.to_string());
    let parent = c.parent_id.map(|p| case(p.to_string()));
    let mut map = HeaderMap::new();
    let mut put = |name: &str, value: &str| {
        let (n, v) = header(name, value);
        map.append(n, v);
    };
    if single {
        let state = match s {
            SamplingState::Accept => "1",
            SamplingState::Deny => "0",
            SamplingState::Debug => "d",
        };
        let mut v = format!("{trace}-{span}-{state}");
        if let Some(p) = &parent {
            v.push('-');
            v.push_str(p);
        }
        put("b3", &v);
    } else {
        put("x-b3-traceid", &trace);
        put("x-b3-spanid", &span);
        if let Some(p) = &parent {
            put("x-b3-parentspanid", p);
        }
        match s {
            SamplingState::Accept => put("x-b3-sampled", "1"),
            SamplingState::Deny => put("x-b3-sampled", "0"),
            SamplingState::Debug => put("x-b3-flags", "1"),
        }
    }
    map
}

/// Forwards what was extracted, as the layer does when it shares the caller's span.
fn forward(got: &Extracted) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(c) = &got.context {
        let debug = got.sampling == Some(SamplingState::Debug);
        let sampled = debug || got.sampling == Some(SamplingState::Accept);
        inject(&mut out, c, sampled, debug, got.single);
    }
    out
}

/// Header values that are mostly near-valid B3, with arbitrary bytes mixed in.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        "[0-9a-fA-F]{0,34}".prop_map(String::into_bytes),
        "[0-9a-fA-F-]{0,72}".prop_map(String::into_bytes),
        "[0-9a-g]{14,18}(-[0-9a-g]{14,18}){0,4}(-[01d])?".prop_map(String::into_bytes),
        "(0|1|d|true|false|-|)".prop_map(String::into_bytes),
        "[\\x00-\\xff]{0,40}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_valid_context_round_trips_through_a_hop(
        c in context(),
        s in state(),
        single in any::<bool>(),
        upper in any::<bool>(),
    ) {
        // What a caller sends is read back exactly, and what we forward reads back the same.
        let first = extract(&caller_headers(&c, s, single, upper));
        prop_assert_eq!(first, Extracted {
            context: Some(c),
            sampling: Some(s),
            single,
            invalid: false,
        });
        let second = extract(&forward(&first));
        prop_assert_eq!(second, first);
    }

    #[test]
    fn injected_ids_are_lower_case_hex_of_the_right_width(
        c in context(),
        s in state(),
        single in any::<bool>(),
    ) {
        // 16 or 32 chars for the trace (its own width), 16 for spans, never upper case.
        let out = forward(&extract(&caller_headers(&c, s, single, true)));
        let trace = out.get("x-b3-traceid").expect("trace").to_str().expect("ascii");
        prop_assert_eq!(trace.len(), if c.trace_id.wide { 32 } else { 16 });
        for name in ["x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "b3"] {
            if let Some(v) = out.get(name) {
                let v = v.to_str().expect("ascii");
                prop_assert!(
                    v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-'),
                    "{}: {}", name, v
                );
            }
        }
    }

    #[test]
    fn extraction_never_panics_on_arbitrary_header_bytes(
        raw in proptest::collection::vec(
            proptest::option::of(proptest::collection::vec(value_bytes(), 1..3)),
            B3_HEADERS.len(),
        ),
    ) {
        // Whatever arrives, extract returns; what it returns is a context that survives a hop.
        let mut map = HeaderMap::new();
        for (name, values) in B3_HEADERS.iter().zip(raw) {
            for bytes in values.into_iter().flatten() {
                // Bytes that http refuses never reach the tracer.
                if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                    map.append(HeaderName::from_static(name), v);
                }
            }
        }
        let got = extract(&map);
        if let Some(c) = got.context {
            prop_assert!(c.trace_id.high != 0 || c.trace_id.low != 0);
            prop_assert!(c.span_id.0 != 0);
            prop_assert!(c.parent_id.is_none_or(|p| p.0 != 0));
            if got.sampling.is_some() {
                let again = extract(&forward(&got));
                prop_assert_eq!(again.context, got.context);
                prop_assert_eq!(again.sampling, got.sampling);
            }
        }
    }
}
