//! OTLP export to a real receiver: Datadog's `ddapm-test-agent` takes OTLP/gRPC and OTLP/HTTP
//! and gives back what it stored. Spans of a two-sidecar chain arrive with the right
//! resource, names, kinds, parent links and attributes, on both transports.

mod harness;

use serde_json::{Value, json};

use harness::export::{Chain, Policy, mesh_with_backend, zipkin_backend};
use harness::otlp::{OtlpAgent, agent_attribute};
use tracecar::policy::effective::OtlpProtocol;

/// Standard base64 with padding, as the agent's JSON writes bytes.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn find<'a>(spans: &'a [(Value, Value)], kind: &str) -> &'a (Value, Value) {
    spans
        .iter()
        .find(|(_, s)| s["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind} span in {spans:?}"))
}

async fn chain_reaches_the_agent(protocol: OtlpProtocol) {
    let agent = OtlpAgent::start().await;
    // The TrafficTrace makes the listeners traced; the sidecars are given the agent.
    let policy = Policy::new(&mesh_with_backend(&zipkin_backend(
        "http://127.0.0.1:9/api/v2/spans",
        "",
    )));
    let chain = Chain::with_backend(&policy.path(), agent.backend("otel", protocol)).await;
    chain
        .get(
            "/items?page=2",
            &[
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-sampled", "1"),
                ("user-agent", "curl/8.0"),
            ],
        )
        .await;
    let spans = agent.wait_for_spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let (client_resource, client) = find(&spans, "SPAN_KIND_CLIENT");
    let (server_resource, server) = find(&spans, "SPAN_KIND_SERVER");

    for (resource, service) in [(client_resource, "web"), (server_resource, "backend")] {
        assert_eq!(
            agent_attribute(resource, "service.name"),
            Some(json!({"string_value": service}))
        );
        assert_eq!(
            agent_attribute(resource, "telemetry.sdk.name"),
            Some(json!({"string_value": "tracecar"}))
        );
        assert_eq!(
            agent_attribute(resource, "telemetry.sdk.language"),
            Some(json!({"string_value": "rust"}))
        );
    }
    assert_eq!(client["name"], "egress backend.mesh");
    assert_eq!(server["name"], "ingress");

    let trace_id = b64(&[[0u8; 8], 0x463a_c35c_9f64_13ad_u64.to_be_bytes()].concat());
    assert_eq!(client["trace_id"], trace_id.as_str());
    assert_eq!(server["trace_id"], trace_id.as_str());
    assert_eq!(
        client["parent_span_id"],
        b64(&0xa2fb_4a1d_1a96_d312_u64.to_be_bytes()).as_str()
    );
    assert_eq!(server["parent_span_id"], client["span_id"]);
    assert_ne!(server["span_id"], client["span_id"]);

    for span in [client, server] {
        let attributes = &span["attributes"];
        assert_eq!(
            agent_attribute(attributes, "http.request.method"),
            Some(json!({"string_value": "GET"}))
        );
        // protobuf's JSON writes int64 as a string.
        assert_eq!(
            agent_attribute(attributes, "http.response.status_code"),
            Some(json!({"int_value": "200"}))
        );
        assert_eq!(
            agent_attribute(attributes, "http.status_code"),
            Some(json!({"string_value": "200"}))
        );
        assert_eq!(
            agent_attribute(attributes, "component"),
            Some(json!({"string_value": "proxy"}))
        );
        assert_eq!(
            agent_attribute(attributes, "user_agent.original"),
            Some(json!({"string_value": "curl/8.0"}))
        );
        assert_eq!(
            agent_attribute(attributes, "server.address"),
            Some(json!({"string_value": "backend.mesh"}))
        );
    }
    assert_eq!(
        agent_attribute(&client["attributes"], "url.full"),
        Some(json!({"string_value": "http://backend.mesh/items?page=2"}))
    );
    assert_eq!(
        agent_attribute(&server["attributes"], "url.path"),
        Some(json!({"string_value": "/items"}))
    );
    assert_eq!(
        agent_attribute(&server["attributes"], "url.query"),
        Some(json!({"string_value": "page=2"}))
    );
    for metrics in [&chain.web.metrics, &chain.backend.metrics] {
        let text = metrics.encode();
        assert_eq!(
            harness::export::metric(&text, "tracecar_spans_dropped_total", "otel"),
            0,
            "the agent accepted every span (no partial success)\n{text}"
        );
    }
}

#[tokio::test]
async fn a_chains_spans_reach_the_agent_over_otlp_grpc() {
    chain_reaches_the_agent(OtlpProtocol::Grpc).await;
}

#[tokio::test]
async fn a_chains_spans_reach_the_agent_over_otlp_http() {
    chain_reaches_the_agent(OtlpProtocol::Http).await;
}
