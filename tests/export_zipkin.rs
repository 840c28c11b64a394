//! Zipkin export, end to end: real traffic through two tracecar sidecars (web's outbound →
//! backend's inbound → app), spans POSTed by the real exporters to an in-test collector, and
//! checked against the Zipkin v2 API (`ListOfSpans`) and the README (Tracing, Export).

mod harness;

use std::path::PathBuf;
use std::sync::OnceLock;

use http::StatusCode;
use serde_json::Value;

use harness::export::{Chain, Collector, Policy, mesh_with_backend, zipkin_backend};
use tracecar::export::zipkin::proto::{Kind, ProtoSpan};

/// The official Zipkin v2 API (Swagger 2.0), kept in the repository's `spec/`.
fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec/zipkin2-api.yaml")
}

/// `ListOfSpans` from the spec. Swagger 2.0 keeps its schemas under `definitions` (a draft 4
/// subset), so the root is a `$ref` into them.
fn list_of_spans() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = spec_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let api: Value = serde_saphyr::from_str(&text).expect("the spec is YAML");
        let schema = serde_json::json!({
            "$ref": "#/definitions/ListOfSpans",
            "definitions": api["definitions"].clone(),
        });
        jsonschema::draft4::new(&schema).expect("ListOfSpans is a valid schema")
    })
}

fn is_lower_hex(text: &str, lengths: &[usize]) -> bool {
    lengths.contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A chain whose sidecars export to `collector` with the given extra zipkin `conf` lines.
async fn chain(collector: &Collector, conf: &str) -> (Chain, Policy) {
    let policy = Policy::new(&mesh_with_backend(&zipkin_backend(&collector.url(), conf)));
    (Chain::start(&policy.path()).await, policy)
}

fn kind<'a>(spans: &'a [Value], kind: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["kind"] == kind).collect()
}

fn only<'a>(spans: &'a [Value], kind_name: &str) -> &'a Value {
    let found = kind(spans, kind_name);
    assert_eq!(found.len(), 1, "one {kind_name} span in {spans:?}");
    found[0]
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["tags"][key].as_str()
}

const TRACE_128: &str = "463ac35c9f6413ad48485a3953bb6124";

// --- httpJson ---

#[tokio::test]
async fn every_posted_body_validates_against_the_zipkin_list_of_spans_schema() {
    // What a Zipkin (or Jaeger) collector accepts is the spec's ListOfSpans: anything else is
    // refused with 400 and the spans are lost. Plain, 128-bit, debug and failing requests.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo", &[("user-agent", "test/1")]).await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", TRACE_128),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ],
        )
        .await;
    chain.get("/echo", &[("x-b3-flags", "1")]).await;
    chain.get("/status/503", &[]).await;
    collector.wait_for_json(8).await;

    for post in collector.posts() {
        let body: Value = serde_json::from_slice(&post.body).expect("JSON");
        let errors: Vec<String> = list_of_spans()
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\nin {body:#}");
    }
}

#[test]
fn the_schema_refuses_spans_zipkin_refuses() {
    // Guards the check above: a wrong `$ref` would make the schema accept anything.
    let schema = list_of_spans();
    assert!(
        schema.is_valid(
            &serde_json::json!([{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2"}])
        )
    );
    assert!(
        !schema.is_valid(&serde_json::json!([{"id": "352bff9a74ca9ad2"}])),
        "traceId is required"
    );
    assert!(!schema.is_valid(&serde_json::json!([{"traceId": "5af7183fb1d4cf5f", "id": "352b"}])));
    assert!(!schema.is_valid(&serde_json::json!([{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "duration": 0}])));
    assert!(!schema.is_valid(&serde_json::json!([{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "kind": "LOCAL"}])));
}

#[tokio::test]
async fn json_is_posted_as_application_json_to_the_backend_url() {
    // The collector routes on path and content type (`/api/v2/spans`, JSON by default).
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo", &[]).await;
    collector.wait_for_json(2).await;
    for post in collector.posts() {
        assert_eq!(post.content_type, "application/json");
        assert_eq!(post.path, "/api/v2/spans");
    }
}

#[tokio::test]
async fn ids_are_lower_hex_of_zipkin_widths() {
    // The spec's id patterns are unanchored, so the schema alone would accept "xx" + 16 hex.
    // Uppercase incoming ids must be re-emitted lower-case.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo", &[]).await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", "463AC35C9F6413AD48485A3953BB6124"),
                ("x-b3-spanid", "A2FB4A1D1A96D312"),
            ],
        )
        .await;
    let spans = collector.wait_for_json(4).await;
    for span in &spans {
        let trace_id = span["traceId"].as_str().expect("traceId");
        assert!(is_lower_hex(trace_id, &[16, 32]), "traceId {trace_id}");
        let id = span["id"].as_str().expect("id");
        assert!(is_lower_hex(id, &[16]), "id {id}");
        if let Some(parent) = span.get("parentId") {
            let parent = parent.as_str().expect("parentId is a string");
            assert!(is_lower_hex(parent, &[16]), "parentId {parent}");
        }
    }
}

#[tokio::test]
async fn every_span_names_its_local_service() {
    // Zipkin groups, searches and draws dependency links by localEndpoint.serviceName; the
    // spec leaves it optional, the contract does not.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo", &[]).await;
    let spans = collector.wait_for_json(2).await;
    assert_eq!(
        only(&spans, "CLIENT")["localEndpoint"]["serviceName"],
        "web"
    );
    assert_eq!(
        only(&spans, "SERVER")["localEndpoint"]["serviceName"],
        "backend"
    );
}

#[tokio::test]
async fn client_spans_name_the_outbound_service_as_remote_endpoint() {
    // The dependency link web → backend comes from the client span's remote service.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo", &[]).await;
    let spans = collector.wait_for_json(2).await;
    assert_eq!(
        only(&spans, "CLIENT")["remoteEndpoint"]["serviceName"],
        "backend"
    );
    assert!(
        only(&spans, "SERVER").get("remoteEndpoint").is_none(),
        "the server side knows no remote service name"
    );
}

#[tokio::test]
async fn only_the_server_span_is_shared_with_shared_span_context() {
    // sharedSpanContext (default): the SERVER span reuses the caller's span id, and Zipkin
    // needs `shared: true` to merge the two halves; the CLIENT span must not carry the key.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo", &[]).await;
    let spans = collector.wait_for_json(2).await;
    let client = only(&spans, "CLIENT");
    let server = only(&spans, "SERVER");
    assert_eq!(server["shared"], true);
    assert_eq!(server["id"], client["id"], "one span id, two halves");
    assert!(
        client.get("shared").is_none(),
        "absent, not false: {client}"
    );
}

#[tokio::test]
async fn no_span_is_shared_without_shared_span_context() {
    // sharedSpanContext: false makes the SERVER span a new child: nothing is shared.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "        sharedSpanContext: false\n").await;
    chain.get("/echo", &[]).await;
    let spans = collector.wait_for_json(2).await;
    for span in &spans {
        assert!(span.get("shared").is_none(), "{span}");
    }
    assert_eq!(
        only(&spans, "SERVER")["parentId"],
        only(&spans, "CLIENT")["id"]
    );
}

#[tokio::test]
async fn debug_is_set_only_on_debug_requests() {
    // `x-b3-flags: 1` asks the collector to keep the trace whatever its sampling: Zipkin's
    // `debug: true`. Other spans must not carry the key at all.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", "00000000000000aa"),
                ("x-b3-spanid", "00000000000000a1"),
                ("x-b3-flags", "1"),
            ],
        )
        .await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", "00000000000000bb"),
                ("x-b3-spanid", "00000000000000b1"),
                ("x-b3-sampled", "1"),
            ],
        )
        .await;
    let spans = collector.wait_for_json(4).await;
    for span in &spans {
        match span["traceId"].as_str() {
            Some("00000000000000aa") => assert_eq!(span["debug"], true, "{span}"),
            Some("00000000000000bb") => assert!(span.get("debug").is_none(), "{span}"),
            other => panic!("unexpected trace {other:?}"),
        }
    }
}

#[tokio::test]
async fn root_spans_have_no_parent_id_key() {
    // A root is a span without parentId; an all-zero or null parentId makes Zipkin look for a
    // parent that never comes (the deprecated OpenTelemetry exporter sent zeros).
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo", &[]).await;
    let spans = collector.wait_for_json(2).await;
    // With a shared context, the SERVER half of a root is a root as well.
    for span in &spans {
        assert!(span.get("parentId").is_none(), "{span}");
    }
}

#[tokio::test]
async fn a_caller_span_becomes_the_client_span_parent() {
    // Continuing a caller's trace: the CLIENT span is a child of the caller's span.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", "0af7651916cd43dd"),
                ("x-b3-spanid", "b7ad6b7169203331"),
            ],
        )
        .await;
    let spans = collector.wait_for_json(2).await;
    assert_eq!(only(&spans, "CLIENT")["parentId"], "b7ad6b7169203331");
    assert_eq!(only(&spans, "CLIENT")["traceId"], "0af7651916cd43dd");
}

#[tokio::test]
async fn new_roots_get_64_bit_trace_ids() {
    // traceId128bit defaults to false: 16 characters, never zero-padded to 32.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo", &[]).await;
    for span in collector.wait_for_json(2).await {
        assert_eq!(span["traceId"].as_str().map(str::len), Some(16), "{span}");
    }
}

#[tokio::test]
async fn new_roots_get_128_bit_trace_ids_with_trace_id_128bit() {
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "        traceId128bit: true\n").await;
    chain.get("/echo", &[]).await;
    for span in collector.wait_for_json(2).await {
        assert_eq!(span["traceId"].as_str().map(str::len), Some(32), "{span}");
    }
}

#[tokio::test]
async fn an_incoming_128_bit_trace_id_keeps_its_32_characters() {
    // A caller's trace id keeps its width on every hop, or the trace falls apart.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", TRACE_128),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ],
        )
        .await;
    for span in collector.wait_for_json(2).await {
        assert_eq!(span["traceId"], TRACE_128);
    }
}

#[tokio::test]
async fn spans_carry_envoy_tags() {
    // The tags Envoy's Zipkin tracer writes, so dashboards and queries built on Kuma + Envoy
    // keep working.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain
        .get(
            "/echo?x=1",
            &[("user-agent", "curl/8"), ("x-request-id", "req-42")],
        )
        .await;
    let spans = collector.wait_for_json(2).await;
    for (kind, node) in [("CLIENT", "default.web-1"), ("SERVER", "default.backend-1")] {
        let span = only(&spans, kind);
        assert_eq!(tag(span, "node_id"), Some(node), "{span}");
        assert_eq!(tag(span, "component"), Some("proxy"));
        assert_eq!(tag(span, "guid:x-request-id"), Some("req-42"));
        assert_eq!(tag(span, "http.url"), Some("http://backend.mesh/echo?x=1"));
        assert_eq!(tag(span, "http.method"), Some("GET"));
        assert_eq!(tag(span, "http.protocol"), Some("HTTP/1.1"));
        assert_eq!(tag(span, "user_agent"), Some("curl/8"));
        assert_eq!(tag(span, "peer.address"), Some("127.0.0.1"));
        assert_eq!(tag(span, "request_size"), Some("0"));
        assert_eq!(tag(span, "response_size"), Some("0"));
        assert!(tag(span, "upstream_cluster").is_some_and(|c| !c.is_empty()));
        assert_eq!(tag(span, "http.status_code"), Some("200"));
        assert_eq!(tag(span, "response_flags"), Some("-"));
        assert_eq!(tag(span, "error"), None, "a 200 is no error");
        assert_eq!(span["name"], "backend.mesh", "named for the Host");
    }
}

#[tokio::test]
async fn a_5xx_answer_marks_both_spans_error() {
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    assert_eq!(
        chain.get("/status/503", &[]).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    for span in collector.wait_for_json(2).await {
        assert_eq!(tag(&span, "error"), Some("true"), "{span}");
        assert_eq!(tag(&span, "http.status_code"), Some("503"));
    }
}

#[tokio::test]
async fn timestamps_and_durations_are_in_microseconds() {
    // Zipkin reads epoch microseconds; milliseconds or nanoseconds put spans in 1970 or 2500.
    let now_us = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    };
    let before = now_us();
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo?delay_ms=20", &[]).await;
    let spans = collector.wait_for_json(2).await;
    let after = now_us();
    for span in &spans {
        let timestamp = span["timestamp"].as_u64().expect("timestamp");
        let duration = span["duration"].as_u64().expect("duration");
        assert!((before..=after).contains(&timestamp), "{span}");
        assert!(
            (20_000..after - before).contains(&duration),
            "the app took 20 ms: {span}"
        );
        // Start and end on the same clock as the caller's: the span ends before it is sent.
        assert!(timestamp + duration <= after, "{span}");
    }
}

#[tokio::test]
async fn every_sampled_span_is_exported_to_a_healthy_collector() {
    // The accounting operators alert on: sampled = exported + dropped, and nothing is dropped
    // when the collector takes everything.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    for _ in 0..5 {
        chain.get("/echo", &[]).await;
    }
    let spans = collector.wait_for_json(10).await;
    assert_eq!(spans.len(), 10);
    assert_eq!(chain.web.all_exported("collector").await, 5);
    assert_eq!(chain.backend.all_exported("collector").await, 5);
}

#[tokio::test]
async fn unsampled_requests_export_nothing() {
    // A caller's `x-b3-sampled: 0` wins on every hop: no span is recorded, sent or counted.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, "").await;
    chain.get("/echo", &[("x-b3-sampled", "0")]).await;
    chain.get("/echo", &[]).await;
    let spans = collector.wait_for_json(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        collector.json_spans().len(),
        2,
        "only the sampled request: {spans:?}"
    );
    assert_eq!(chain.web.all_exported("collector").await, 1);
    assert_eq!(chain.backend.all_exported("collector").await, 1);
}

// --- httpProto ---

const PROTO: &str = "        apiVersion: httpProto\n";

fn only_proto(spans: &[ProtoSpan], kind: Kind) -> &ProtoSpan {
    let found: Vec<&ProtoSpan> = spans.iter().filter(|s| s.kind == kind as i32).collect();
    assert_eq!(found.len(), 1, "one {kind:?} span in {spans:?}");
    found[0]
}

#[tokio::test]
async fn http_proto_posts_a_protobuf_list_of_spans() {
    // httpProto: the body is `zipkin.proto3.ListOfSpans`, with its content type.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, PROTO).await;
    chain.get("/echo", &[]).await;
    assert_eq!(collector.wait_for_proto(2).await.len(), 2);
    for post in collector.posts() {
        assert_eq!(post.content_type, "application/x-protobuf");
        assert_eq!(post.path, "/api/v2/spans");
    }
}

#[tokio::test]
async fn http_proto_spans_carry_kind_services_shared_and_tags() {
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, PROTO).await;
    chain.get("/echo", &[("x-request-id", "req-7")]).await;
    let spans = collector.wait_for_proto(2).await;
    let client = only_proto(&spans, Kind::Client);
    let server = only_proto(&spans, Kind::Server);

    let service = |e: &Option<tracecar::export::zipkin::proto::Endpoint>| {
        e.as_ref().map(|e| e.service_name.clone())
    };
    assert_eq!(service(&client.local_endpoint).as_deref(), Some("web"));
    assert_eq!(service(&client.remote_endpoint).as_deref(), Some("backend"));
    assert_eq!(service(&server.local_endpoint).as_deref(), Some("backend"));
    assert!(server.shared && !client.shared, "shared only on SERVER");
    assert!(!client.debug && !server.debug);
    assert_eq!(server.id, client.id);
    for span in [client, server] {
        assert_eq!(span.name, "backend.mesh");
        assert!(span.timestamp > 0 && span.duration > 0);
        assert_eq!(
            span.tags.get("guid:x-request-id").map(String::as_str),
            Some("req-7")
        );
        assert_eq!(
            span.tags.get("http.status_code").map(String::as_str),
            Some("200")
        );
        assert_eq!(
            span.tags.get("response_flags").map(String::as_str),
            Some("-")
        );
    }
}

#[tokio::test]
async fn http_proto_ids_are_8_or_16_bytes_and_roots_have_no_parent() {
    // proto3 bytes: a 64-bit trace id is 8 bytes, never 16 with zeros; an absent parent is
    // empty bytes.
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, PROTO).await;
    chain.get("/echo", &[]).await;
    for span in collector.wait_for_proto(2).await {
        assert_eq!(span.trace_id.len(), 8, "{span:?}");
        assert_eq!(span.id.len(), 8);
        assert!(span.parent_id.is_empty(), "a root: {span:?}");
    }
}

#[tokio::test]
async fn http_proto_keeps_a_128_bit_trace_id_as_16_bytes() {
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, PROTO).await;
    chain
        .get(
            "/echo",
            &[
                ("x-b3-traceid", TRACE_128),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-flags", "1"),
            ],
        )
        .await;
    let spans = collector.wait_for_proto(2).await;
    let expected: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&TRACE_128[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    for span in &spans {
        assert_eq!(span.trace_id, expected);
        assert!(span.debug, "x-b3-flags: 1 is debug");
    }
    assert_eq!(
        only_proto(&spans, Kind::Client).parent_id,
        0xa2fb4a1d1a96d312u64.to_be_bytes().to_vec()
    );
}

#[tokio::test]
async fn http_proto_exports_every_sampled_span() {
    let collector = Collector::start().await;
    let (chain, _policy) = chain(&collector, PROTO).await;
    for _ in 0..3 {
        chain.get("/echo", &[]).await;
    }
    assert_eq!(collector.wait_for_proto(6).await.len(), 6);
    assert_eq!(chain.web.all_exported("collector").await, 3);
    assert_eq!(chain.backend.all_exported("collector").await, 3);
}
