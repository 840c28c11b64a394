//! B3 propagation and the sampler, as the README's Tracing section settles them.
//!
//! Each test states one behaviour. The examples come from the B3 specification
//! (openzipkin/b3-propagation, README), the malformed cases the README names.

use http::{HeaderMap, HeaderName, HeaderValue};
use tracecar::trace::b3::{Extracted, SamplingState, SpanContext, extract, inject};
use tracecar::trace::id::{SpanId, TraceId};
use tracecar::trace::sampler::{Decision, basis_points, bucket, decide};

// The specification's ids.
const TRACE_128: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const TRACE_64: &str = "a3ce929d0e0e4736";
const SPAN: &str = "e457b5a2e4d86bd1";
const PARENT: &str = "05e3ac9a4f6e3b90";
const OTHER_SPAN: &str = "00f067aa0ba902b7";

const B3_HEADERS: [&str; 6] = [
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Headers in the given order; a repeated name appends a second value.
fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    map
}

fn ctx(trace: &str, span: &str, parent: Option<&str>) -> SpanContext {
    SpanContext {
        trace_id: TraceId::parse(trace.as_bytes()).expect("test trace id"),
        span_id: SpanId::parse(span.as_bytes()).expect("test span id"),
        parent_id: parent.map(|p| SpanId::parse(p.as_bytes()).expect("test parent id")),
    }
}

/// Every value of a header, as text.
fn values(map: &HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii header").to_owned())
        .collect()
}

/// The one value of a header (fails if repeated), or `None`.
fn value(map: &HeaderMap, name: &str) -> Option<String> {
    let all = values(map, name);
    assert!(all.len() <= 1, "{name} repeated: {all:?}");
    all.into_iter().next()
}

fn parsed(
    context: Option<SpanContext>,
    sampling: Option<SamplingState>,
    single: bool,
) -> Extracted {
    Extracted {
        context,
        sampling,
        single,
        invalid: false,
    }
}

/// What the README asks of a malformed context: nothing of it is used, and it is counted.
fn assert_ignored(map: &HeaderMap, case: &str) {
    let got = extract(map);
    assert!(got.invalid, "{case}: not flagged invalid: {got:?}");
    assert_eq!(got.context, None, "{case}: context used: {got:?}");
}

// ---------------------------------------------------------------------------------------------
// The specification's own examples
// ---------------------------------------------------------------------------------------------

#[test]
fn spec_multi_header_example_is_read_in_full() {
    // The README's multi-header example: 128-bit trace, parent, accept.
    let map = headers(&[
        ("x-b3-traceid", TRACE_128),
        ("x-b3-parentspanid", PARENT),
        ("x-b3-spanid", SPAN),
        ("x-b3-sampled", "1"),
    ]);
    assert_eq!(
        extract(&map),
        parsed(
            Some(ctx(TRACE_128, SPAN, Some(PARENT))),
            Some(SamplingState::Accept),
            false
        )
    );
}

#[test]
fn spec_single_header_equivalent_of_the_multi_example_is_the_same_context() {
    // `b3: {trace}-{span}-{sampling}-{parent}` for the multi example above: same context, and the
    // caller is marked as a single-header user.
    let map = headers(&[("b3", &format!("{TRACE_128}-{SPAN}-1-{PARENT}"))]);
    assert_eq!(
        extract(&map),
        parsed(
            Some(ctx(TRACE_128, SPAN, Some(PARENT))),
            Some(SamplingState::Accept),
            true
        )
    );
}

#[test]
fn spec_single_header_literal_example_puts_span_second_and_parent_last() {
    // The README prints `80f1…-05e3ac9a4f6e3b90-1-e457b5a2e4d86bd1` (its ids swapped relative to
    // its multi example): position decides, so 05e3… is the span and e457… the parent.
    let map = headers(&[("b3", &format!("{TRACE_128}-{PARENT}-1-{SPAN}"))]);
    assert_eq!(
        extract(&map).context,
        Some(ctx(TRACE_128, PARENT, Some(SPAN)))
    );
}

#[test]
fn spec_single_header_64_bit_trace_without_parent() {
    // A 64-bit trace id is 16 characters and keeps its width.
    let map = headers(&[("b3", &format!("{TRACE_64}-{OTHER_SPAN}-1"))]);
    let got = extract(&map);
    assert_eq!(
        got,
        parsed(
            Some(ctx(TRACE_64, OTHER_SPAN, None)),
            Some(SamplingState::Accept),
            true
        )
    );
    assert!(!got.context.expect("context").trace_id.wide);
}

#[test]
fn spec_single_header_debug_is_d() {
    // README: `b3: 80f1…-05e3…-d` is a debug trace.
    let map = headers(&[("b3", &format!("{TRACE_128}-{PARENT}-d"))]);
    assert_eq!(extract(&map).sampling, Some(SamplingState::Debug));
}

#[test]
fn spec_single_header_without_sampling_state_defers() {
    // `b3: {trace}-{span}`: Defer is the absence of the sampling field.
    let map = headers(&[("b3", &format!("{TRACE_128}-{SPAN}"))]);
    assert_eq!(
        extract(&map),
        parsed(Some(ctx(TRACE_128, SPAN, None)), None, true)
    );
}

#[test]
fn spec_lone_b3_0_is_an_honoured_deny() {
    // README: "A deny decision may omit identifiers and look like this: b3: 0". The README: honoured.
    let map = headers(&[("b3", "0")]);
    assert_eq!(extract(&map), parsed(None, Some(SamplingState::Deny), true));
}

#[test]
fn spec_lone_b3_1_is_an_accept() {
    // The sampling state "can also be sent on its own (with no identifiers)".
    let map = headers(&[("b3", "1")]);
    assert_eq!(
        extract(&map),
        parsed(None, Some(SamplingState::Accept), true)
    );
}

#[test]
fn spec_lone_b3_d_is_debug() {
    // Same as above for debug.
    let map = headers(&[("b3", "d")]);
    assert_eq!(
        extract(&map),
        parsed(None, Some(SamplingState::Debug), true)
    );
}

#[test]
fn spec_x_b3_flags_1_is_debug() {
    // README: "Debug is encoded as X-B3-Flags: 1" (and implies accept, so no x-b3-sampled).
    let map = headers(&[
        ("x-b3-traceid", TRACE_128),
        ("x-b3-spanid", SPAN),
        ("x-b3-flags", "1"),
    ]);
    assert_eq!(
        extract(&map),
        parsed(
            Some(ctx(TRACE_128, SPAN, None)),
            Some(SamplingState::Debug),
            false
        )
    );
}

#[test]
fn spec_lone_x_b3_sampled_0_is_an_honoured_deny() {
    // README: "valid to propagate only a reject sampling decision (X-B3-Sampled: 0)".
    let map = headers(&[("x-b3-sampled", "0")]);
    assert_eq!(
        extract(&map),
        parsed(None, Some(SamplingState::Deny), false)
    );
}

#[test]
fn no_b3_headers_is_no_context_no_decision_and_not_invalid() {
    // The common case at the edge: nothing to count, the sampler decides.
    let map = headers(&[("host", "backend"), ("x-request-id", "abc")]);
    assert_eq!(extract(&map), Extracted::default());
}

#[test]
fn every_encoding_width_parent_and_sampling_state_is_extracted() {
    // The full matrix: single or multi × 64/128-bit trace × with/without parent × each state.
    let states = [
        None,
        Some(SamplingState::Accept),
        Some(SamplingState::Deny),
        Some(SamplingState::Debug),
    ];
    for single in [false, true] {
        for trace in [TRACE_64, TRACE_128] {
            for parent in [None, Some(PARENT)] {
                for state in states {
                    let map = if single {
                        let mut v = format!("{trace}-{SPAN}");
                        match state {
                            None if parent.is_some() => {
                                // The spec has no defer-with-parent form; skip it.
                                continue;
                            }
                            None => {}
                            Some(SamplingState::Accept) => v.push_str("-1"),
                            Some(SamplingState::Deny) => v.push_str("-0"),
                            Some(SamplingState::Debug) => v.push_str("-d"),
                        }
                        if let Some(p) = parent {
                            v.push('-');
                            v.push_str(p);
                        }
                        headers(&[("b3", &v)])
                    } else {
                        let mut pairs = vec![("x-b3-traceid", trace), ("x-b3-spanid", SPAN)];
                        if let Some(p) = parent {
                            pairs.push(("x-b3-parentspanid", p));
                        }
                        match state {
                            None => {}
                            Some(SamplingState::Accept) => pairs.push(("x-b3-sampled", "1")),
                            Some(SamplingState::Deny) => pairs.push(("x-b3-sampled", "0")),
                            Some(SamplingState::Debug) => pairs.push(("x-b3-flags", "1")),
                        }
                        headers(&pairs)
                    };
                    let case = format!("single={single} trace={trace} parent={parent:?} {state:?}");
                    let got = extract(&map);
                    assert_eq!(
                        got,
                        parsed(Some(ctx(trace, SPAN, parent)), state, single),
                        "{case}"
                    );
                    assert_eq!(
                        got.context.expect("context").trace_id.wide,
                        trace.len() == 32,
                        "{case}: width"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input: ignored as a whole, or read as the README says
// ---------------------------------------------------------------------------------------------

#[test]
fn multi_trace_id_of_wrong_length_is_ignored_as_a_whole() {
    // Trace ids are exactly 16 or 32 characters.
    for len in [15, 17, 31, 33] {
        let trace = "a".repeat(len);
        let map = headers(&[
            ("x-b3-traceid", &trace),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
        ]);
        assert_ignored(&map, &format!("trace len {len}"));
    }
}

#[test]
fn multi_span_or_parent_id_of_wrong_length_is_ignored_as_a_whole() {
    // Span ids are exactly 16 characters; 32 is a trace width, not a span width.
    for len in [15, 17, 31, 32, 33] {
        let id = "b".repeat(len);
        let bad_span = headers(&[("x-b3-traceid", TRACE_128), ("x-b3-spanid", &id)]);
        assert_ignored(&bad_span, &format!("span len {len}"));
        let bad_parent = headers(&[
            ("x-b3-traceid", TRACE_128),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", &id),
        ]);
        assert_ignored(&bad_parent, &format!("parent len {len}"));
    }
}

#[test]
fn single_header_ids_of_wrong_length_are_ignored() {
    // The same lengths inside `b3`; with no multi headers to fall back on, nothing is used.
    for len in [15, 17, 31, 33] {
        let trace = "a".repeat(len);
        let map = headers(&[("b3", &format!("{trace}-{SPAN}-1"))]);
        assert_ignored(&map, &format!("b3 trace len {len}"));
    }
    for len in [15, 17, 32] {
        let id = "b".repeat(len);
        assert_ignored(
            &headers(&[("b3", &format!("{TRACE_128}-{id}-1"))]),
            &format!("b3 span len {len}"),
        );
        assert_ignored(
            &headers(&[("b3", &format!("{TRACE_128}-{SPAN}-1-{id}"))]),
            &format!("b3 parent len {len}"),
        );
    }
}

#[test]
fn non_hex_ids_are_ignored_as_a_whole() {
    // Ids are hex; a prefix, sign, space or letter past `f` makes the context malformed.
    let bad = [
        "g0f198ee56343ba8",
        "0x80f198ee56343b",
        "+0f198ee56343ba8",
        "80f198ee 6343ba8",
        "80f198ee56343ba-",
        "80f198ee56343baZ",
    ];
    for id in bad {
        let bad_trace = headers(&[("x-b3-traceid", id), ("x-b3-spanid", SPAN)]);
        assert_ignored(&bad_trace, &format!("trace {id:?}"));
        let bad_span = headers(&[("x-b3-traceid", TRACE_128), ("x-b3-spanid", id)]);
        assert_ignored(&bad_span, &format!("span {id:?}"));
        let bad_parent = headers(&[
            ("x-b3-traceid", TRACE_128),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", id),
        ]);
        assert_ignored(&bad_parent, &format!("parent {id:?}"));
    }
    let wide = format!("{}g", &TRACE_128[..31]);
    assert_ignored(
        &headers(&[("x-b3-traceid", &wide), ("x-b3-spanid", SPAN)]),
        "128-bit trace with a non-hex last char",
    );
    assert_ignored(
        &headers(&[("b3", &format!("{wide}-{SPAN}-1"))]),
        "b3 128-bit trace with a non-hex last char",
    );
}

#[test]
fn empty_values_are_ignored_as_a_whole() {
    // An empty id is not an absent one: the context is malformed.
    let cases: [&[(&str, &str)]; 5] = [
        &[("x-b3-traceid", ""), ("x-b3-spanid", SPAN)],
        &[("x-b3-traceid", TRACE_128), ("x-b3-spanid", "")],
        &[
            ("x-b3-traceid", TRACE_128),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", ""),
        ],
        &[("b3", "")],
        &[("b3", ""), ("x-b3-sampled", "1")],
    ];
    for pairs in cases {
        assert_ignored(&headers(pairs), &format!("{pairs:?}"));
    }
}

#[test]
fn all_zero_ids_are_ignored_as_a_whole() {
    // Zero is not an id, in either width or position.
    let zero16 = "0".repeat(16);
    let zero32 = "0".repeat(32);
    let cases = [
        headers(&[("x-b3-traceid", &zero16), ("x-b3-spanid", SPAN)]),
        headers(&[("x-b3-traceid", &zero32), ("x-b3-spanid", SPAN)]),
        headers(&[("x-b3-traceid", TRACE_128), ("x-b3-spanid", &zero16)]),
        headers(&[
            ("x-b3-traceid", TRACE_128),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", &zero16),
        ]),
        headers(&[("b3", &format!("{zero16}-{SPAN}-1"))]),
        headers(&[("b3", &format!("{zero32}-{SPAN}-1"))]),
        headers(&[("b3", &format!("{TRACE_128}-{zero16}-1"))]),
        headers(&[("b3", &format!("{TRACE_128}-{SPAN}-1-{zero16}"))]),
    ];
    for (i, map) in cases.iter().enumerate() {
        assert_ignored(map, &format!("zero case {i}"));
    }
}

#[test]
fn a_128_bit_trace_id_with_one_zero_half_is_valid_and_stays_128_bits() {
    // Only an all-zero id is invalid; a zero high half still names a 128-bit trace.
    let zero_high = format!("{}{}", "0".repeat(16), TRACE_64);
    let zero_low = format!("{}{}", TRACE_64, "0".repeat(16));
    for trace in [zero_high, zero_low] {
        let got = extract(&headers(&[("x-b3-traceid", &trace), ("x-b3-spanid", SPAN)]));
        let context = got.context.expect("valid context");
        assert!(!got.invalid);
        assert!(context.trace_id.wide);
        assert_eq!(context.trace_id.to_hex().as_str(), trace);
    }
}

#[test]
fn parent_span_id_dash_is_ignored_as_a_whole() {
    // Some clients send `-` for "no parent"; the README names it malformed.
    let map = headers(&[
        ("x-b3-traceid", TRACE_128),
        ("x-b3-spanid", SPAN),
        ("x-b3-parentspanid", "-"),
        ("x-b3-sampled", "1"),
    ]);
    assert_ignored(&map, "parent -");
}

#[test]
fn malformed_ids_take_their_sampling_state_with_them() {
    // "Ignored as a whole": a deny or debug beside bad ids is not honoured either; the request
    // is treated as having no context (and a new root trace may start).
    for (name, v) in [
        ("x-b3-sampled", "0"),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "1"),
    ] {
        let map = headers(&[("x-b3-traceid", "zz"), ("x-b3-spanid", SPAN), (name, v)]);
        let got = extract(&map);
        assert!(got.invalid, "{name}: {v}");
        assert_eq!(got.context, None, "{name}: {v}");
        assert_eq!(got.sampling, None, "{name}: {v}");
    }
}

#[test]
fn lone_trace_id_is_ignored_as_a_whole() {
    // Multi headers need both ids.
    let map = headers(&[("x-b3-traceid", TRACE_128), ("x-b3-sampled", "1")]);
    assert_ignored(&map, "lone trace id");
}

#[test]
fn lone_span_id_is_ignored_as_a_whole() {
    // Same, the other way round.
    let map = headers(&[("x-b3-spanid", SPAN), ("x-b3-sampled", "1")]);
    assert_ignored(&map, "lone span id");
}

#[test]
fn lone_parent_span_id_is_ignored_as_a_whole() {
    // A parent without the ids it belongs to says nothing usable.
    let map = headers(&[("x-b3-parentspanid", PARENT)]);
    assert_ignored(&map, "lone parent id");
}

#[test]
fn thousand_character_values_are_ignored_as_a_whole() {
    // Oversized values must neither parse nor be truncated into something that does.
    let hex = "a".repeat(1000);
    let cases = [
        headers(&[("x-b3-traceid", &hex), ("x-b3-spanid", SPAN)]),
        headers(&[("x-b3-traceid", TRACE_128), ("x-b3-spanid", &hex)]),
        headers(&[
            ("x-b3-traceid", TRACE_128),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", &hex),
        ]),
        headers(&[("b3", &hex)]),
        headers(&[("b3", &format!("{TRACE_128}-{SPAN}-1-{hex}"))]),
        headers(&[("b3", &format!("{TRACE_128}-{SPAN}-{hex}"))]),
    ];
    for (i, map) in cases.iter().enumerate() {
        assert_ignored(map, &format!("1000-char case {i}"));
    }
}

#[test]
fn thousand_character_sampled_or_flags_value_only_defers() {
    // x-b3-sampled / x-b3-flags carry no ids: an odd value means "no decision", not malformed.
    let junk = "x".repeat(1000);
    for name in ["x-b3-sampled", "x-b3-flags"] {
        let map = headers(&[
            ("x-b3-traceid", TRACE_128),
            ("x-b3-spanid", SPAN),
            (name, &junk),
        ]);
        assert_eq!(
            extract(&map),
            parsed(Some(ctx(TRACE_128, SPAN, None)), None, false),
            "{name}"
        );
    }
}

#[test]
fn malformed_single_header_shapes_are_ignored() {
    // Extra fields, empty fields, bad sampling characters, and multi-header words in `b3`.
    let cases = [
        format!("{TRACE_128}-{SPAN}-1-{PARENT}-extra"),
        format!("{TRACE_128}-{SPAN}--{PARENT}"),
        format!("{TRACE_128}-{SPAN}-"),
        format!("{TRACE_128}-{SPAN}-true"),
        format!("{TRACE_128}-{SPAN}-2"),
        format!("{TRACE_128}-{SPAN}-D"),
        format!("{TRACE_128}-"),
        format!("-{SPAN}-1"),
        TRACE_128.to_owned(),
        "true".to_owned(),
        "2".to_owned(),
        "-".to_owned(),
    ];
    for v in cases {
        assert_ignored(&headers(&[("b3", &v)]), &format!("b3: {v}"));
    }
}

#[test]
fn bad_single_header_falls_back_to_valid_multi_headers() {
    // README: an invalid `b3` is ignored and the multi headers are used; the bad header is counted,
    // and the caller is not answered in the single form.
    let map = headers(&[
        ("b3", "not-a-b3-value"),
        ("x-b3-traceid", TRACE_64),
        ("x-b3-spanid", SPAN),
        ("x-b3-sampled", "1"),
    ]);
    assert_eq!(
        extract(&map),
        Extracted {
            context: Some(ctx(TRACE_64, SPAN, None)),
            sampling: Some(SamplingState::Accept),
            single: false,
            invalid: true,
        }
    );
}

#[test]
fn bad_single_header_and_bad_multi_headers_are_both_ignored() {
    // Nothing valid anywhere: no context, counted.
    let map = headers(&[
        ("b3", "zz"),
        ("x-b3-traceid", TRACE_64),
        ("x-b3-sampled", "1"),
    ]);
    assert_ignored(&map, "both bad");
}

#[test]
fn valid_single_header_wins_over_conflicting_multi_headers() {
    // The specification and the README: `b3` takes precedence, ids and sampling alike.
    let map = headers(&[
        ("x-b3-traceid", TRACE_64),
        ("x-b3-spanid", OTHER_SPAN),
        ("x-b3-sampled", "1"),
        ("b3", &format!("{TRACE_128}-{SPAN}-0-{PARENT}")),
    ]);
    assert_eq!(
        extract(&map),
        parsed(
            Some(ctx(TRACE_128, SPAN, Some(PARENT))),
            Some(SamplingState::Deny),
            true
        )
    );
}

#[test]
fn uppercase_hex_is_accepted_in_multi_headers() {
    // README: upper case accepted (and re-emitted lower-case, see the injection tests).
    let map = headers(&[
        ("x-b3-traceid", &TRACE_128.to_uppercase()),
        ("x-b3-spanid", &SPAN.to_uppercase()),
        ("x-b3-parentspanid", &PARENT.to_uppercase()),
    ]);
    assert_eq!(
        extract(&map).context,
        Some(ctx(TRACE_128, SPAN, Some(PARENT)))
    );
}

#[test]
fn uppercase_hex_is_accepted_in_the_single_header() {
    // Same for `b3` (the sampling field `d` stays lower-case; see malformed shapes).
    let v = format!("{TRACE_128}-{SPAN}-1-{PARENT}").to_uppercase();
    assert_eq!(
        extract(&headers(&[("b3", &v)])).context,
        Some(ctx(TRACE_128, SPAN, Some(PARENT)))
    );
}

#[test]
fn uppercase_hex_is_re_emitted_lower_case() {
    // The next hop sees the canonical lower-case form in both encodings.
    let incoming = headers(&[(
        "b3",
        &format!("{TRACE_128}-{SPAN}-1-{PARENT}").to_uppercase(),
    )]);
    let got = extract(&incoming);
    let mut out = HeaderMap::new();
    inject(
        &mut out,
        &got.context.expect("context"),
        true,
        false,
        got.single,
    );
    assert_eq!(value(&out, "x-b3-traceid").as_deref(), Some(TRACE_128));
    assert_eq!(value(&out, "x-b3-spanid").as_deref(), Some(SPAN));
    assert_eq!(value(&out, "x-b3-parentspanid").as_deref(), Some(PARENT));
    assert_eq!(
        value(&out, "b3"),
        Some(format!("{TRACE_128}-{SPAN}-1-{PARENT}"))
    );
}

#[test]
fn lenient_true_and_false_are_accept_and_deny() {
    // README: "a lenient implementation may accept them"; the README says tracecar does.
    for (v, want) in [
        ("true", SamplingState::Accept),
        ("false", SamplingState::Deny),
    ] {
        let map = headers(&[
            ("x-b3-traceid", TRACE_128),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", v),
        ]);
        assert_eq!(extract(&map).sampling, Some(want), "{v}");
    }
}

#[test]
fn unknown_sampled_value_defers_and_keeps_the_context() {
    // An unknown x-b3-sampled value means "no decision"; the ids are still good.
    for v in ["2", "yes", "no", "", "01", "-1", "sampled"] {
        let map = headers(&[
            ("x-b3-traceid", TRACE_128),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", v),
        ]);
        assert_eq!(
            extract(&map),
            parsed(Some(ctx(TRACE_128, SPAN, None)), None, false),
            "x-b3-sampled: {v:?}"
        );
    }
}

#[test]
fn flags_1_means_debug_even_next_to_sampled_0() {
    // Debug is an emphasised accept and overrides a deny beside it.
    let map = headers(&[
        ("x-b3-traceid", TRACE_128),
        ("x-b3-spanid", SPAN),
        ("x-b3-sampled", "0"),
        ("x-b3-flags", "1"),
    ]);
    assert_eq!(extract(&map).sampling, Some(SamplingState::Debug));
}

#[test]
fn flags_1_alone_is_an_honoured_debug() {
    // A sampling state alone is honoured; debug is one.
    assert_eq!(
        extract(&headers(&[("x-b3-flags", "1")])),
        parsed(None, Some(SamplingState::Debug), false)
    );
}

#[test]
fn other_flag_values_are_ignored() {
    // Only `1` means anything; the sampled header then decides as usual.
    for flags in ["0", "2", "3", "true", "d", ""] {
        for (sampled, want) in [
            (None, None),
            (Some("1"), Some(SamplingState::Accept)),
            (Some("0"), Some(SamplingState::Deny)),
        ] {
            let mut pairs = vec![
                ("x-b3-traceid", TRACE_128),
                ("x-b3-spanid", SPAN),
                ("x-b3-flags", flags),
            ];
            if let Some(s) = sampled {
                pairs.push(("x-b3-sampled", s));
            }
            let got = extract(&headers(&pairs));
            assert_eq!(
                got,
                parsed(Some(ctx(TRACE_128, SPAN, None)), want, false),
                "flags {flags:?} sampled {sampled:?}"
            );
        }
    }
}

#[test]
fn repeated_id_headers_first_value_wins() {
    // "The first value wins", whether the later value is valid or not.
    let map = headers(&[
        ("x-b3-traceid", TRACE_128),
        ("x-b3-traceid", TRACE_64),
        ("x-b3-spanid", SPAN),
        ("x-b3-spanid", "zz"),
    ]);
    assert_eq!(extract(&map).context, Some(ctx(TRACE_128, SPAN, None)));
}

#[test]
fn repeated_id_headers_with_a_bad_first_value_are_malformed() {
    // First wins also when it is the bad one: a later good value does not rescue it.
    let map = headers(&[
        ("x-b3-traceid", "zz"),
        ("x-b3-traceid", TRACE_128),
        ("x-b3-spanid", SPAN),
    ]);
    assert_ignored(&map, "bad first trace id");
}

#[test]
fn repeated_sampled_and_flags_headers_first_value_wins() {
    // Applies to the sampling headers too.
    let base = [("x-b3-traceid", TRACE_128), ("x-b3-spanid", SPAN)];
    let sampled = headers(&[
        base[0],
        base[1],
        ("x-b3-sampled", "0"),
        ("x-b3-sampled", "1"),
    ]);
    assert_eq!(extract(&sampled).sampling, Some(SamplingState::Deny));
    let flags = headers(&[base[0], base[1], ("x-b3-flags", "0"), ("x-b3-flags", "1")]);
    assert_eq!(extract(&flags).sampling, None);
}

#[test]
fn repeated_single_header_first_value_wins() {
    // `b3` twice: the first is read.
    let map = headers(&[
        ("b3", &format!("{TRACE_128}-{SPAN}-1")),
        ("b3", &format!("{TRACE_64}-{OTHER_SPAN}-0")),
    ]);
    assert_eq!(
        extract(&map),
        parsed(
            Some(ctx(TRACE_128, SPAN, None)),
            Some(SamplingState::Accept),
            true
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Injection (README, Tracing: context out)
// ---------------------------------------------------------------------------------------------

fn injected(context: &SpanContext, sampled: bool, debug: bool, single: bool) -> HeaderMap {
    let mut map = HeaderMap::new();
    inject(&mut map, context, sampled, debug, single);
    map
}

#[test]
fn inject_always_writes_the_multi_header_form() {
    // Every combination gets x-b3-traceid and x-b3-spanid, also unsampled ones.
    for (sampled, debug, single) in [
        (false, false, false),
        (true, false, false),
        (true, true, false),
        (false, false, true),
        (true, false, true),
        (true, true, true),
    ] {
        let map = injected(&ctx(TRACE_128, SPAN, None), sampled, debug, single);
        assert_eq!(value(&map, "x-b3-traceid").as_deref(), Some(TRACE_128));
        assert_eq!(value(&map, "x-b3-spanid").as_deref(), Some(SPAN));
    }
}

#[test]
fn inject_keeps_the_trace_id_width() {
    // README: an incoming 64-bit id stays 64 bits (16 chars), a 128-bit one 32.
    for trace in [TRACE_64, TRACE_128] {
        let map = injected(&ctx(trace, SPAN, None), true, false, false);
        assert_eq!(value(&map, "x-b3-traceid").as_deref(), Some(trace));
    }
}

#[test]
fn inject_writes_the_parent_only_when_there_is_one() {
    // A root span has no parent header; a child span has exactly one.
    let root = injected(&ctx(TRACE_128, SPAN, None), true, false, false);
    assert_eq!(value(&root, "x-b3-parentspanid"), None);
    let child = injected(&ctx(TRACE_128, SPAN, Some(PARENT)), true, false, false);
    assert_eq!(value(&child, "x-b3-parentspanid").as_deref(), Some(PARENT));
}

#[test]
fn inject_unsampled_sends_sampled_0() {
    // A deny is propagated so the rest of the trace is not recorded in part.
    let map = injected(&ctx(TRACE_128, SPAN, None), false, false, false);
    assert_eq!(value(&map, "x-b3-sampled").as_deref(), Some("0"));
    assert_eq!(value(&map, "x-b3-flags"), None);
}

#[test]
fn inject_sampled_sends_sampled_1() {
    // Accept is explicit too, so the next hop does not re-decide.
    let map = injected(&ctx(TRACE_128, SPAN, None), true, false, false);
    assert_eq!(value(&map, "x-b3-sampled").as_deref(), Some("1"));
    assert_eq!(value(&map, "x-b3-flags"), None);
}

#[test]
fn inject_debug_sends_flags_1_and_no_sampled() {
    // README: "Debug implies an accept decision, so don't also send the X-B3-Sampled header."
    let map = injected(&ctx(TRACE_128, SPAN, None), true, true, false);
    assert_eq!(value(&map, "x-b3-flags").as_deref(), Some("1"));
    assert_eq!(value(&map, "x-b3-sampled"), None);
}

#[test]
fn inject_does_not_forward_other_flag_values() {
    // Flag values other than 1 are ignored and not forwarded.
    for flags in ["0", "2", "3"] {
        let mut map = headers(&[
            ("x-b3-traceid", TRACE_128),
            ("x-b3-spanid", SPAN),
            ("x-b3-flags", flags),
        ]);
        let got = extract(&map);
        inject(
            &mut map,
            &got.context.expect("context"),
            true,
            false,
            got.single,
        );
        assert_eq!(value(&map, "x-b3-flags"), None, "flags {flags}");
    }
}

#[test]
fn inject_omits_the_single_header_when_the_caller_did_not_use_it() {
    // Only answer in the single form to callers that speak it.
    let map = injected(&ctx(TRACE_128, SPAN, Some(PARENT)), true, false, false);
    assert_eq!(value(&map, "b3"), None);
}

#[test]
fn inject_single_header_matches_the_multi_headers() {
    // `{trace}-{span}-{1|0|d}[-{parent}]`, consistent with the multi headers written beside it.
    for trace in [TRACE_64, TRACE_128] {
        for parent in [None, Some(PARENT)] {
            for (sampled, debug, state) in
                [(true, false, "1"), (false, false, "0"), (true, true, "d")]
            {
                let map = injected(&ctx(trace, SPAN, parent), sampled, debug, true);
                let mut want = format!("{trace}-{SPAN}-{state}");
                if let Some(p) = parent {
                    want.push('-');
                    want.push_str(p);
                }
                assert_eq!(value(&map, "b3"), Some(want.clone()));
                assert_eq!(value(&map, "x-b3-traceid").as_deref(), Some(trace));
                assert_eq!(value(&map, "x-b3-parentspanid").as_deref(), parent);
                // Both forms read back to the same thing.
                let from_single = extract(&headers(&[("b3", &want)]));
                let mut multi_only = map.clone();
                multi_only.remove("b3");
                let from_multi = extract(&multi_only);
                assert_eq!(from_single.context, from_multi.context, "{want}");
                assert_eq!(from_single.sampling, from_multi.sampling, "{want}");
            }
        }
    }
}

#[test]
fn inject_replaces_stale_incoming_b3_headers() {
    // Whatever the caller sent (even repeated) is replaced, not appended to; a stale parent or
    // flags value with no counterpart in the new context is removed; other headers are untouched.
    let mut map = headers(&[
        ("host", "backend.mesh"),
        ("x-request-id", "req-1"),
        ("b3", &format!("{TRACE_64}-{OTHER_SPAN}-1-{PARENT}")),
        ("b3", "0"),
        ("x-b3-traceid", TRACE_64),
        ("x-b3-traceid", TRACE_64),
        ("x-b3-spanid", OTHER_SPAN),
        ("x-b3-parentspanid", PARENT),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "1"),
    ]);
    inject(&mut map, &ctx(TRACE_128, SPAN, None), false, false, true);
    assert_eq!(values(&map, "x-b3-traceid"), [TRACE_128]);
    assert_eq!(values(&map, "x-b3-spanid"), [SPAN]);
    assert!(values(&map, "x-b3-parentspanid").is_empty());
    assert_eq!(values(&map, "x-b3-sampled"), ["0"]);
    assert!(values(&map, "x-b3-flags").is_empty());
    assert_eq!(values(&map, "b3"), [format!("{TRACE_128}-{SPAN}-0")]);
    assert_eq!(values(&map, "host"), ["backend.mesh"]);
    assert_eq!(values(&map, "x-request-id"), ["req-1"]);
}

#[test]
fn inject_without_single_removes_a_stale_single_header() {
    // A stale `b3` left beside fresh multi headers would win at the next hop.
    let mut map = headers(&[("b3", &format!("{TRACE_64}-{OTHER_SPAN}-1"))]);
    inject(&mut map, &ctx(TRACE_128, SPAN, None), true, false, false);
    assert_eq!(value(&map, "b3"), None);
    assert_eq!(extract(&map).context, Some(ctx(TRACE_128, SPAN, None)));
}

#[test]
fn only_b3_headers_are_written() {
    // Injection touches the six B3 names and nothing else.
    let map = injected(&ctx(TRACE_128, SPAN, Some(PARENT)), true, true, true);
    for name in map.keys() {
        assert!(B3_HEADERS.contains(&name.as_str()), "unexpected {name}");
    }
}

#[test]
fn lone_b3_0_starts_a_new_unsampled_context_answered_in_both_forms() {
    // README: a lone `b3: 0` makes a new context; fresh ids go out with x-b3-sampled: 0 and
    // `b3: <trace>-<span>-0`. This is the layer's path through extract/decide/inject.
    let incoming = extract(&headers(&[("b3", "0")]));
    assert_eq!(incoming.context, None);
    let decision = decide(incoming.sampling, b"req-1", basis_points(100.0));
    assert!(!decision.sampled);
    let root = SpanContext {
        trace_id: TraceId::random(false),
        span_id: SpanId::random(),
        parent_id: None,
    };
    let out = injected(&root, decision.sampled, decision.debug, incoming.single);
    let trace = root.trace_id.to_hex();
    let span = root.span_id.to_hex();
    assert_eq!(value(&out, "x-b3-sampled").as_deref(), Some("0"));
    assert_eq!(
        value(&out, "b3"),
        Some(format!("{}-{}-0", trace.as_str(), span.as_str()))
    );
}

// ---------------------------------------------------------------------------------------------
// Sampler (README, Tracing: decision)
// ---------------------------------------------------------------------------------------------

/// `n` UUIDv4-shaped keys from a fixed seed, so a failure can be reproduced.
fn uuid_keys(n: usize, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            let bytes = rng.u128(..).to_le_bytes();
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .hyphenated()
                .to_string()
        })
        .collect()
}

fn share_sampled(keys: &[String], bp: u32) -> f64 {
    let hits = keys
        .iter()
        .filter(|k| decide(None, k.as_bytes(), bp).sampled)
        .count();
    hits as f64 / keys.len() as f64
}

#[test]
fn incoming_debug_forces_sampling_even_at_zero_percent() {
    // Debug is a forced trace.
    for key in uuid_keys(100, 1) {
        assert_eq!(
            decide(Some(SamplingState::Debug), key.as_bytes(), 0),
            Decision {
                sampled: true,
                debug: true
            }
        );
    }
}

#[test]
fn incoming_accept_wins_at_zero_percent() {
    // The caller decided; every hop must agree so traces are whole.
    for key in uuid_keys(100, 2) {
        assert_eq!(
            decide(Some(SamplingState::Accept), key.as_bytes(), 0),
            Decision {
                sampled: true,
                debug: false
            }
        );
    }
}

#[test]
fn incoming_deny_wins_even_at_one_hundred_percent() {
    // Likewise a deny is not overridden by a generous local percentage.
    for key in uuid_keys(100, 3) {
        assert_eq!(
            decide(
                Some(SamplingState::Deny),
                key.as_bytes(),
                basis_points(100.0)
            ),
            Decision {
                sampled: false,
                debug: false
            }
        );
    }
}

#[test]
fn zero_percent_never_samples() {
    // 0 is exact, not "almost never".
    let keys = uuid_keys(10_000, 4);
    assert_eq!(share_sampled(&keys, basis_points(0.0)), 0.0);
    assert!(!decide(None, b"", 0).sampled);
}

#[test]
fn one_hundred_percent_always_samples() {
    // 100 is exact, not "almost always".
    let keys = uuid_keys(10_000, 5);
    assert_eq!(share_sampled(&keys, basis_points(100.0)), 1.0);
    assert!(decide(None, b"", basis_points(100.0)).sampled);
}

#[test]
fn sampler_decisions_are_never_debug_without_an_incoming_debug() {
    // Debug is the caller's to ask for, never the sampler's.
    for key in uuid_keys(1_000, 6) {
        assert!(!decide(None, key.as_bytes(), basis_points(100.0)).debug);
    }
}

#[test]
fn basis_points_are_hundredths_of_a_percent() {
    // Kuma's granularity is 0.01%.
    for (percent, bp) in [
        (0.0, 0),
        (0.01, 1),
        (1.0, 100),
        (12.34, 1234),
        (50.0, 5000),
        (99.99, 9999),
        (100.0, 10_000),
    ] {
        assert_eq!(basis_points(percent), bp, "{percent}");
    }
}

#[test]
fn basis_points_round_half_away_from_zero() {
    // Halves round up (away from zero), not to even: 0.125% → 12.5 bp → 13, 12.345% → 1235.
    for (percent, bp) in [
        (0.125, 13),
        (0.375, 38),
        (12.345, 1235),
        (0.005, 1),
        (0.004, 0),
        (50.005, 5001),
        (99.994, 9999),
        (99.995, 10_000),
    ] {
        assert_eq!(basis_points(percent), bp, "{percent}");
    }
}

#[test]
fn basis_points_clamp_out_of_range_and_nan() {
    // Validation rejects these, but the sampler must not wrap or panic if one slips through.
    for (percent, bp) in [
        (-1.0, 0),
        (-0.0, 0),
        (f64::NEG_INFINITY, 0),
        (f64::NAN, 0),
        (100.5, 10_000),
        (f64::INFINITY, 10_000),
    ] {
        assert_eq!(basis_points(percent), bp, "{percent}");
    }
}

#[test]
fn same_key_same_answer() {
    // Deterministic: every hop that sees the same key agrees.
    for key in uuid_keys(1_000, 7) {
        let b = bucket(key.as_bytes());
        assert_eq!(bucket(key.as_bytes()), b);
        for bp in [1, 100, 5_000, 9_999] {
            assert_eq!(
                decide(None, key.as_bytes(), bp),
                decide(None, key.as_bytes(), bp)
            );
        }
    }
}

#[test]
fn bucket_is_below_ten_thousand() {
    // The bucket is compared with basis points, 0..10_000.
    for key in uuid_keys(10_000, 8) {
        assert!(bucket(key.as_bytes()) < 10_000);
    }
    assert!(bucket(b"") < 10_000);
}

#[test]
fn fifty_percent_samples_half_of_random_keys() {
    // Within 50% ± 2% over 10,000 UUID keys.
    let share = share_sampled(&uuid_keys(10_000, 9), basis_points(50.0));
    assert!((0.48..=0.52).contains(&share), "share {share}");
}

#[test]
fn one_percent_samples_one_percent_of_random_keys() {
    // Within 1% ± 0.5% over 10,000 UUID keys.
    let share = share_sampled(&uuid_keys(10_000, 10), basis_points(1.0));
    assert!((0.005..=0.015).contains(&share), "share {share}");
}

#[test]
fn fifty_percent_samples_half_of_sequential_keys() {
    // The key is hashed "whatever its format"; sequential request ids must spread too.
    let keys: Vec<String> = (0..10_000).map(|i| format!("req-{i}")).collect();
    let share = share_sampled(&keys, basis_points(50.0));
    assert!((0.48..=0.52).contains(&share), "share {share}");
}

#[test]
fn raising_the_percentage_only_adds_traces() {
    // A key sampled at p% is sampled at every higher percentage (bucket < bp is monotone).
    for key in uuid_keys(1_000, 11) {
        let mut was = false;
        for bp in (0..=10_000).step_by(250) {
            let now = decide(None, key.as_bytes(), bp).sampled;
            assert!(now || !was, "{key} dropped at {bp}");
            was = now;
        }
    }
}

#[test]
fn uppercase_and_lowercase_trace_ids_hash_the_same() {
    // The layer hashes the re-emitted lower-case hex, so a caller's case does not change the
    // decision: both spellings give the same key, hence the same bucket.
    for trace in [TRACE_64, TRACE_128] {
        let lower = extract(&headers(&[("x-b3-traceid", trace), ("x-b3-spanid", SPAN)]));
        let upper = extract(&headers(&[
            ("x-b3-traceid", &trace.to_uppercase()),
            ("x-b3-spanid", SPAN),
        ]));
        let lower_key = lower.context.expect("lower").trace_id.to_hex();
        let upper_key = upper.context.expect("upper").trace_id.to_hex();
        assert_eq!(lower_key.as_str(), trace);
        assert_eq!(upper_key.as_str(), trace);
        assert_eq!(bucket(lower_key.as_bytes()), bucket(upper_key.as_bytes()));
    }
}
