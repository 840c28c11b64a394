//! Datadog export, end to end: real traffic through two tracecar sidecars (web's outbound →
//! backend's inbound → app), spans sent by the real exporters to Datadog's own test agent
//! (`ddapm-test-agent`, one per test so no test sees another's traces), read back from
//! `/test/session/traces` and checked against the README (Tracing, Export) and the
//! agent's own checks.

mod harness;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::Value;

use harness::export::{
    Chain, DatadogAgent, Policy, datadog_backend, http_get, mesh_with_backend, metric,
};
use tracecar::export::datadog::Datadog;
use tracecar::export::{Encode, ExportSettings, Exporters, Target, client::ExportClient};
use tracecar::metrics::Metrics;
use tracecar::policy::effective::Direction;
use tracecar::trace::id::{SpanId, TraceId};
use tracecar::trace::{Span, SpanKind, SpanSink};

async fn chain(agent: &DatadogAgent, split_service: bool) -> (Chain, Policy) {
    let policy = Policy::new(&mesh_with_backend(&datadog_backend(agent, split_service)));
    (Chain::start(&policy.path()).await, policy)
}

fn by_resource<'a>(spans: &'a [Value], resource: &str) -> &'a Value {
    let found: Vec<&Value> = spans.iter().filter(|s| s["resource"] == resource).collect();
    assert_eq!(
        found.len(),
        1,
        "one span with resource {resource} in {spans:?}"
    );
    found[0]
}

fn client(spans: &[Value]) -> &Value {
    by_resource(spans, "egress backend.mesh")
}

fn server(spans: &[Value]) -> &Value {
    by_resource(spans, "ingress")
}

const TRACE_128: &str = "463ac35c9f6413ad48485a3953bb6124";

#[tokio::test]
async fn spans_are_envoy_proxy_web_spans_with_ingress_and_egress_resources() {
    // Envoy's Datadog tracer names every span `envoy.proxy` and tells the sides apart by
    // resource; Datadog's UI groups on name, resource and type.
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    chain.get("/echo", &[]).await;
    let spans = agent.wait_for_spans(2).await;
    assert_eq!(spans.len(), 2);
    for span in [client(&spans), server(&spans)] {
        assert_eq!(span["name"], "envoy.proxy", "{span}");
        assert_eq!(span["type"], "web");
        assert_eq!(span["error"], 0);
    }
}

#[tokio::test]
async fn the_service_is_the_proxy_service_without_split_service() {
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    chain.get("/echo", &[]).await;
    let spans = agent.wait_for_spans(2).await;
    assert_eq!(client(&spans)["service"], "web");
    assert_eq!(server(&spans)["service"], "backend");
}

#[tokio::test]
async fn split_service_names_the_inbound_and_outbound_sides_apart() {
    // splitService (Kuma's option) shows each direction as its own service in Datadog.
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, true).await;
    chain.get("/echo", &[]).await;
    let spans = agent.wait_for_spans(2).await;
    assert_eq!(client(&spans)["service"], "web_OUTBOUND_backend");
    assert_eq!(server(&spans)["service"], "backend_INBOUND");
}

#[tokio::test]
async fn meta_carries_the_envoy_tags() {
    // The same tags as Zipkin, as Datadog `meta` (strings only, or the agent refuses them).
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    chain
        .get(
            "/echo",
            &[("user-agent", "curl/8"), ("x-request-id", "req-42")],
        )
        .await;
    let spans = agent.wait_for_spans(2).await;
    for (span, node, kind) in [
        (client(&spans), "default.web-1", "client"),
        (server(&spans), "default.backend-1", "server"),
    ] {
        let meta = &span["meta"];
        assert_eq!(meta["node_id"], node, "{span}");
        assert_eq!(meta["component"], "proxy");
        assert_eq!(meta["guid:x-request-id"], "req-42");
        assert_eq!(meta["http.url"], "http://backend.mesh/echo");
        assert_eq!(meta["http.method"], "GET");
        assert_eq!(meta["http.protocol"], "HTTP/1.1");
        assert_eq!(meta["user_agent"], "curl/8");
        assert_eq!(meta["peer.address"], "127.0.0.1");
        assert_eq!(meta["request_size"], "0");
        assert_eq!(meta["response_size"], "0");
        assert!(
            meta["upstream_cluster"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
        assert_eq!(meta["http.status_code"], "200");
        assert_eq!(meta["response_flags"], "-");
        assert_eq!(meta["span.kind"], kind);
    }
}

#[tokio::test]
async fn a_5xx_answer_marks_both_spans_error() {
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    assert_eq!(
        chain.get("/status/503", &[]).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    for span in agent.wait_for_spans(2).await {
        assert_eq!(span["error"], 1, "{span}");
        assert_eq!(span["meta"]["http.status_code"], "503");
    }
}

#[tokio::test]
async fn sampled_requests_carry_sampling_priority_1() {
    // Priority 1 (auto keep): the agent and backend keep what tracecar sampled.
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    chain.get("/echo", &[("x-b3-sampled", "1")]).await;
    for span in agent.wait_for_spans(2).await {
        assert_eq!(
            span["metrics"]["_sampling_priority_v1"].as_f64(),
            Some(1.0),
            "{span}"
        );
    }
}

#[tokio::test]
async fn debug_requests_carry_sampling_priority_2() {
    // `x-b3-flags: 1` (debug) maps to user keep, so Datadog never drops the trace.
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", "0af7651916cd43dd"),
                ("x-b3-spanid", "b7ad6b7169203331"),
                ("x-b3-flags", "1"),
            ],
        )
        .await;
    for span in agent.wait_for_spans(2).await {
        assert_eq!(
            span["metrics"]["_sampling_priority_v1"].as_f64(),
            Some(2.0),
            "{span}"
        );
    }
}

#[tokio::test]
async fn a_128_bit_trace_id_is_split_into_dd_p_tid_and_the_low_64_bits() {
    // Datadog ids are 64-bit: the low half is `trace_id`, the high half travels as the
    // `_dd.p.tid` tag, so the backend can join the trace with 128-bit tracers.
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", TRACE_128),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ],
        )
        .await;
    for span in agent.wait_for_spans(2).await {
        assert_eq!(span["meta"]["_dd.p.tid"], "463ac35c9f6413ad", "{span}");
        assert_eq!(span["trace_id"].as_u64(), Some(0x48485a3953bb6124));
    }
}

#[tokio::test]
async fn a_64_bit_trace_id_has_no_dd_p_tid() {
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", "0af7651916cd43dd"),
                ("x-b3-spanid", "b7ad6b7169203331"),
            ],
        )
        .await;
    for span in agent.wait_for_spans(2).await {
        assert!(span["meta"].get("_dd.p.tid").is_none(), "{span}");
        assert_eq!(span["trace_id"].as_u64(), Some(0x0af7651916cd43dd));
    }
}

#[tokio::test]
async fn the_inbound_span_is_a_new_child_of_the_outbound_span() {
    // sharedSpanContext is a Zipkin notion: in Datadog every span has its own id, and the
    // server side hangs under the client side (one tree, not two halves of one span).
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    chain.get("/echo", &[]).await;
    let spans = agent.wait_for_spans(2).await;
    let (client, server) = (client(&spans), server(&spans));
    assert_eq!(server["trace_id"], client["trace_id"], "one trace");
    assert_ne!(server["span_id"], client["span_id"]);
    assert_eq!(server["parent_id"], client["span_id"]);
    assert_eq!(client["parent_id"], 0, "a root has parent 0");
}

#[tokio::test]
async fn start_and_duration_are_in_nanoseconds() {
    // Datadog reads epoch nanoseconds (Zipkin microseconds): a wrong unit misplaces spans by
    // a factor of 1000.
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    chain.get("/echo?delay_ms=20", &[]).await;
    for span in agent.wait_for_spans(2).await {
        let start = span["start"].as_u64().expect("start");
        let duration = span["duration"].as_u64().expect("duration");
        assert!(start >= before - 1_000_000, "{span}");
        assert!(
            (20_000_000..10_000_000_000).contains(&duration),
            "the app took 20 ms: {span}"
        );
    }
}

#[tokio::test]
async fn the_agent_checks_find_no_failures() {
    // The agent checks what real tracers must send: the trace count header matching the
    // payload, the tracer version header, the content length.
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, true).await;
    for _ in 0..3 {
        chain.get("/echo", &[]).await;
    }
    chain.get("/status/500", &[("x-b3-flags", "1")]).await;
    agent.wait_for_spans(8).await;

    let (status, summary) = http_get(&agent.url("/test/trace_check/summary"))
        .await
        .expect("summary");
    assert_eq!(status, StatusCode::OK);
    let summary: Value = serde_json::from_slice(&summary).expect("JSON summary");
    for check in [
        "trace_count_header",
        "meta_tracer_version_header",
        "trace_content_length",
    ] {
        assert!(
            summary[check]["Passed_Checks"].as_u64() > Some(0),
            "{check} ran and passed: {summary}"
        );
        assert_eq!(summary[check]["Failed_Checks"], 0, "{check}: {summary}");
    }
    let (status, failures) = http_get(&agent.url("/test/trace_check/failures"))
        .await
        .expect("failures");
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&failures)
    );
}

#[tokio::test]
async fn every_sampled_span_is_exported_to_a_healthy_agent() {
    let agent = DatadogAgent::start().await;
    let (chain, _policy) = chain(&agent, false).await;
    for _ in 0..5 {
        chain.get("/echo", &[]).await;
    }
    assert_eq!(agent.wait_for_spans(10).await.len(), 10);
    assert_eq!(chain.web.all_exported("collector").await, 5);
    assert_eq!(chain.backend.all_exported("collector").await, 5);
}

// --- payload size ---

/// A span of trace `trace` whose `http.url` is `url_len` characters long.
fn span(trace: u64, url_len: usize) -> Span {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    Span {
        trace_id: TraceId {
            high: 0,
            low: trace,
            wide: false,
        },
        id: SpanId::random(),
        parent_id: None,
        kind: SpanKind::Server,
        direction: Direction::Inbound,
        name: "backend.mesh".to_string(),
        timestamp_us: now,
        duration_us: 10,
        local_service: Arc::from("web"),
        remote_service: None,
        shared: false,
        debug: false,
        error: false,
        tags: [("http.url", "u".repeat(url_len))].into_iter().collect(),
        trace_state: None,
    }
}

fn trace_count(payload: &tracecar::export::Payload) -> Option<usize> {
    payload
        .headers
        .iter()
        .find(|(name, _)| name == "x-datadog-trace-count")
        .and_then(|(_, v)| v.to_str().ok()?.parse().ok())
}

#[test]
fn the_encoder_splits_payloads_under_the_size_limit() {
    // The agent refuses bodies over its limit (and loses every trace in them): many traces
    // go in several payloads, each under the limit, each with its own trace count.
    let spans: Vec<Span> = (1..=20).map(|t| span(t, 200)).collect();
    let encoded = Datadog::with_max_payload(false, 2_000).encode(&spans);
    assert!(encoded.payloads.len() > 1, "split");
    assert_eq!(encoded.too_large, 0);
    let mut spans_seen = 0;
    for payload in &encoded.payloads {
        assert!(payload.body.len() <= 2_000, "{} bytes", payload.body.len());
        let traces: Vec<Vec<Value>> =
            rmp_serde::from_slice(&payload.body).expect("msgpack array of traces");
        assert_eq!(trace_count(payload), Some(traces.len()));
        let in_payload: usize = traces.iter().map(Vec::len).sum();
        assert_eq!(payload.spans, in_payload);
        spans_seen += in_payload;
    }
    assert_eq!(spans_seen, 20, "every span in exactly one payload");
}

#[test]
fn a_trace_larger_than_the_limit_is_counted_too_large() {
    // A trace is never cut in half: one that cannot fit alone is dropped whole, counted,
    // and the others still go.
    let mut spans = vec![span(1, 100), span(2, 5_000), span(2, 10), span(3, 100)];
    spans.push(span(1, 100));
    let encoded = Datadog::with_max_payload(false, 2_000).encode(&spans);
    assert_eq!(encoded.too_large, 2, "both spans of trace 2");
    let sent: usize = encoded.payloads.iter().map(|p| p.spans).sum();
    assert_eq!(sent, 3);
    for payload in &encoded.payloads {
        let traces: Vec<Vec<Value>> = rmp_serde::from_slice(&payload.body).expect("msgpack");
        for trace in traces {
            for span in trace {
                assert_ne!(span["trace_id"], 2, "trace 2 was dropped");
            }
        }
    }
}

#[tokio::test]
async fn split_payloads_reach_the_agent_and_oversize_traces_are_counted() {
    // The same limit end to end: the agent accepts every split payload (its checks pass),
    // and the metrics account for every span: exported or dropped as too_large.
    let agent = DatadogAgent::start().await;
    let metrics = Metrics::new();
    let target = Target::post(
        "agent",
        agent.url("/v0.4/traces").parse().expect("uri"),
        Box::new(Datadog::with_max_payload(false, 2_000)),
        ExportClient::new(),
    );
    let settings = ExportSettings {
        interval: Duration::from_millis(100),
        ..ExportSettings::default()
    };
    let exporters = Exporters::new(settings, metrics.clone());
    let handle = exporters.start_target(target).expect("a live exporter");
    for t in 1..=20 {
        handle.try_send(&span(t, 200));
    }
    handle.try_send(&span(99, 5_000));
    drop(handle);
    exporters.shutdown(Duration::from_secs(5)).await;

    let spans = agent.wait_for_spans(20).await;
    assert_eq!(spans.len(), 20);
    let text = metrics.encode();
    assert_eq!(metric(&text, "tracecar_spans_sampled_total", "agent"), 21);
    assert_eq!(metric(&text, "tracecar_spans_exported_total", "agent"), 20);
    assert!(
        text.contains("tracecar_spans_dropped_total{backend=\"agent\",reason=\"too_large\"} 1"),
        "{text}"
    );
    assert!(
        metric(&text, "tracecar_export_requests_total", "agent") > 1,
        "several payloads: {text}"
    );
    let (status, failures) = http_get(&agent.url("/test/trace_check/failures"))
        .await
        .expect("failures");
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&failures)
    );
}
