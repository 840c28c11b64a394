//! Mixed formats (README, Propagation): which context wins, what is written for the next hop, and
//! what rides along, for each backend's native format.

use http::{HeaderMap, HeaderValue};
use tracecar::proxy::observe::{FieldLines, Forwarded};
use tracecar::trace::Format;
use tracecar::trace::context::{SamplingState, SpanContext};
use tracecar::trace::id::{SpanId, TraceId};
use tracecar::trace::propagation::{Incoming, Outgoing, extract, inject};

const W3C_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const W3C_SPAN: &str = "b7ad6b7169203331";
const B3_TRACE: &str = "463ac35c9f6413ad48485a3953bb6124";
const B3_SPAN: &str = "a2fb4a1d1a96d312";

fn traceparent() -> String {
    format!("00-{W3C_TRACE}-{W3C_SPAN}-01")
}

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

fn source_trace(incoming: &Incoming) -> String {
    incoming.context.ids.unwrap().trace_id.to_string()
}

fn all_formats() -> HeaderMap {
    headers(&[
        ("traceparent", &traceparent()),
        ("x-b3-traceid", B3_TRACE),
        ("x-b3-spanid", B3_SPAN),
        ("x-b3-sampled", "1"),
        ("x-datadog-trace-id", "42"),
        ("x-datadog-parent-id", "43"),
        ("x-datadog-sampling-priority", "0"),
    ])
}

#[test]
fn the_native_format_is_read_first() {
    let map = all_formats();
    let zipkin = extract(&map, Format::B3);
    assert_eq!(zipkin.source, Some(Format::B3));
    assert_eq!(source_trace(&zipkin), B3_TRACE);
    let otel = extract(&map, Format::W3c);
    assert_eq!(otel.source, Some(Format::W3c));
    assert_eq!(source_trace(&otel), W3C_TRACE);
    let datadog = extract(&map, Format::Datadog);
    assert_eq!(datadog.source, Some(Format::Datadog));
    assert_eq!(datadog.context.ids.unwrap().trace_id.low, 42);
    assert_eq!(datadog.context.sampling, Some(SamplingState::Deny));
}

#[test]
fn after_the_native_format_w3c_comes_before_b3_and_datadog() {
    let map = headers(&[
        ("traceparent", &traceparent()),
        ("b3", &format!("{B3_TRACE}-{B3_SPAN}-1")),
        ("x-datadog-trace-id", "42"),
        ("x-datadog-parent-id", "43"),
    ]);
    // Datadog native, but absent is not the case here; with it removed, W3C is next.
    let mut no_dd = map.clone();
    no_dd.remove("x-datadog-trace-id");
    no_dd.remove("x-datadog-parent-id");
    assert_eq!(extract(&no_dd, Format::Datadog).source, Some(Format::W3c));
    // B3 and Datadog only, W3C native: B3 before Datadog.
    let mut no_w3c = map.clone();
    no_w3c.remove("traceparent");
    assert_eq!(extract(&no_w3c, Format::W3c).source, Some(Format::B3));
}

#[test]
fn the_b3_single_header_comes_before_the_multi_headers() {
    let map = headers(&[
        ("b3", &format!("{B3_TRACE}-{B3_SPAN}-1")),
        ("x-b3-traceid", W3C_TRACE),
        ("x-b3-spanid", W3C_SPAN),
    ]);
    let got = extract(&map, Format::W3c);
    assert_eq!(source_trace(&got), B3_TRACE);
    assert!(got.b3_single);
}

#[test]
fn an_invalid_native_format_is_counted_and_the_next_is_used() {
    let map = headers(&[
        ("x-b3-traceid", "not-hex"),
        ("x-b3-spanid", B3_SPAN),
        ("traceparent", &traceparent()),
    ]);
    let got = extract(&map, Format::B3);
    assert_eq!(got.source, Some(Format::W3c));
    assert_eq!(got.invalid().collect::<Vec<_>>(), [Format::B3]);
}

#[test]
fn every_invalid_format_is_counted_once() {
    let map = headers(&[
        ("b3", "zz"),
        ("traceparent", "ff-x"),
        ("x-datadog-trace-id", "0"),
        ("x-datadog-parent-id", "1"),
    ]);
    let got = extract(&map, Format::Datadog);
    assert_eq!(got.source, None);
    assert_eq!(
        got.invalid().collect::<Vec<_>>(),
        [Format::B3, Format::W3c, Format::Datadog]
    );
}

#[test]
fn a_b3_only_caller_is_not_counted_for_other_formats() {
    let map = headers(&[("x-b3-traceid", B3_TRACE), ("x-b3-spanid", B3_SPAN)]);
    let got = extract(&map, Format::Datadog);
    assert_eq!(got.invalid().count(), 0);
    assert!(got.b3 && !got.w3c && !got.datadog);
}

#[test]
fn a_lone_b3_sampling_state_counts_when_no_format_carries_ids() {
    let got = extract(&headers(&[("b3", "0")]), Format::W3c);
    assert_eq!(got.source, None);
    assert_eq!(got.context.sampling, Some(SamplingState::Deny));
}

fn hop(trace: TraceId) -> SpanContext {
    SpanContext {
        trace_id: trace,
        span_id: SpanId(0x1111_2222_3333_4444),
        parent_id: Some(SpanId(0x5555_6666_7777_8888)),
    }
}

fn forwarded(map: &HeaderMap, native: Format, sampled: bool) -> (HeaderMap, SpanContext) {
    let incoming = extract(map, native);
    let trace = incoming
        .context
        .ids
        .map_or(TraceId::random(true), |c| c.trace_id);
    let hop = hop(trace);
    let out = Outgoing {
        hop: &hop,
        sampled,
        debug: false,
        continued: incoming.context.ids.is_some(),
    };
    let mut in_map = request(map.clone());
    inject(&mut Forwarded::new(&mut in_map), native, &incoming, out);
    // The fast path's way, new fields as lines after the map's, forwards the same fields.
    let mut with_lines = request(map.clone());
    let mut lines = FieldLines::default();
    inject(
        &mut Forwarded::with_lines(&mut with_lines, &mut lines),
        native,
        &incoming,
        out,
    );
    assert_eq!(
        as_sent(&with_lines.headers, lines.as_bytes()),
        as_sent(&in_map.headers, &[]),
        "lines and map differ"
    );
    (in_map.headers, hop)
}

fn request(headers: HeaderMap) -> http::request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.headers = headers;
    parts
}

/// The fields an upstream reads, in order: the map's, then the lines'.
fn as_sent(map: &HeaderMap, lines: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<(String, Vec<u8>)> = map
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    let text = std::str::from_utf8(lines).expect("lines are text");
    for line in text.split_terminator("\r\n") {
        let (name, value) = line.split_once(": ").expect("a field line");
        fields.push((name.to_string(), value.as_bytes().to_vec()));
    }
    fields
}

#[test]
fn the_native_format_is_always_written_and_others_only_when_they_came_in() {
    let (out, _) = forwarded(
        &headers(&[("traceparent", &traceparent())]),
        Format::B3,
        true,
    );
    assert!(out.contains_key("x-b3-traceid"));
    assert!(out.contains_key("traceparent"));
    assert!(!out.contains_key("x-datadog-trace-id"));
    let (out, _) = forwarded(&headers(&[]), Format::Datadog, true);
    assert!(out.contains_key("x-datadog-trace-id"));
    assert!(!out.contains_key("traceparent"));
    assert!(!out.contains_key("x-b3-traceid"));
    let (out, _) = forwarded(&headers(&[]), Format::W3c, true);
    assert!(out.contains_key("traceparent"));
    assert!(!out.contains_key("x-b3-traceid"));
}

#[test]
fn every_format_written_carries_the_same_trace_span_and_decision() {
    let (out, hop) = forwarded(&all_formats(), Format::W3c, false);
    let trace = hop.trace_id;
    assert_eq!(
        out["traceparent"],
        format!("00-{W3C_TRACE}-{}-00", hop.span_id)
    );
    assert_eq!(out["x-b3-traceid"], W3C_TRACE);
    assert_eq!(out["x-b3-spanid"], hop.span_id.to_string().as_str());
    assert_eq!(out["x-b3-sampled"], "0");
    assert_eq!(out["x-datadog-trace-id"], trace.low.to_string().as_str());
    assert_eq!(
        out["x-datadog-parent-id"],
        hop.span_id.0.to_string().as_str()
    );
    assert_eq!(out["x-datadog-sampling-priority"], "0");
    assert_eq!(
        out["x-datadog-tags"],
        format!("_dd.p.tid={:016x}", trace.high).as_str()
    );
    // Read back in any order, the next hop sees one context.
    for native in [Format::B3, Format::W3c, Format::Datadog] {
        let next = extract(&out, native);
        assert_eq!(next.context.ids.unwrap().trace_id, trace, "{native:?}");
        assert_eq!(next.context.ids.unwrap().span_id, hop.span_id, "{native:?}");
        assert_eq!(next.context.sampling, Some(SamplingState::Deny));
        assert_eq!(next.invalid().count(), 0);
    }
}

#[test]
fn an_invalid_traceparent_is_replaced_and_its_tracestate_dropped() {
    let map = headers(&[
        ("x-b3-traceid", B3_TRACE),
        ("x-b3-spanid", B3_SPAN),
        ("traceparent", "00-zz"),
        ("tracestate", "a=1"),
    ]);
    let (out, hop) = forwarded(&map, Format::B3, true);
    assert_eq!(
        out["traceparent"],
        format!("00-{B3_TRACE}-{}-01", hop.span_id)
    );
    assert!(!out.contains_key("tracestate"));
}

#[test]
fn tracestate_travels_unchanged_when_the_traceparent_is_used() {
    let map = headers(&[
        ("traceparent", &traceparent()),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("tracestate", "rojo=00f067aa0ba902b7"),
    ]);
    let (out, _) = forwarded(&map, Format::W3c, true);
    assert_eq!(out["tracestate"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    assert_eq!(out.get_all("tracestate").iter().count(), 1);
}

#[test]
fn tracestate_is_dropped_when_another_trace_wins() {
    let map = headers(&[
        ("x-b3-traceid", B3_TRACE),
        ("x-b3-spanid", B3_SPAN),
        ("traceparent", &traceparent()),
        ("tracestate", "a=1"),
    ]);
    let (out, _) = forwarded(&map, Format::B3, true);
    assert!(!out.contains_key("tracestate"));
}

#[test]
fn tracestate_rides_with_the_same_trace_read_from_the_native_format() {
    // An OpenTelemetry SDK with the B3 and W3C propagators sends both for one trace.
    let map = headers(&[
        ("x-b3-traceid", W3C_TRACE),
        ("x-b3-spanid", W3C_SPAN),
        ("traceparent", &traceparent()),
        ("tracestate", "a=1"),
    ]);
    let (out, _) = forwarded(&map, Format::B3, true);
    assert_eq!(out["tracestate"], "a=1");
}

#[test]
fn new_root_traces_set_the_random_flag_and_kept_ones_keep_theirs() {
    let (out, _) = forwarded(&headers(&[("traceparent", "bad")]), Format::W3c, true);
    assert!(out["traceparent"].to_str().unwrap().ends_with("-03"));
    let (out, _) = forwarded(
        &headers(&[("traceparent", &traceparent())]),
        Format::W3c,
        true,
    );
    assert!(out["traceparent"].to_str().unwrap().ends_with("-01"));
}

#[test]
fn datadog_origin_and_tags_travel_with_their_trace() {
    let map = headers(&[
        ("x-datadog-trace-id", "5208512171318403364"),
        ("x-datadog-parent-id", "7"),
        ("x-datadog-sampling-priority", "-1"),
        ("x-datadog-origin", "synthetics"),
        ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=463ac35c9f6413ad"),
    ]);
    let (out, _) = forwarded(&map, Format::Datadog, false);
    assert_eq!(out["x-datadog-origin"], "synthetics");
    assert_eq!(out["x-datadog-sampling-priority"], "-1");
    assert_eq!(
        out["x-datadog-tags"],
        "_dd.p.dm=-4,_dd.p.tid=463ac35c9f6413ad"
    );
}

#[test]
fn a_64_bit_b3_trace_is_padded_in_w3c_and_plain_in_datadog() {
    let map = headers(&[
        ("x-b3-traceid", "48485a3953bb6124"),
        ("x-b3-spanid", B3_SPAN),
        ("traceparent", "00-zz"),
        ("x-datadog-trace-id", "x"),
        ("x-datadog-parent-id", "1"),
    ]);
    let (out, _) = forwarded(&map, Format::B3, true);
    assert!(
        out["traceparent"]
            .to_str()
            .unwrap()
            .starts_with("00-000000000000000048485a3953bb6124-")
    );
    assert_eq!(out["x-datadog-trace-id"], "5208512171318403364");
    assert!(!out.contains_key("x-datadog-tags"));
}
