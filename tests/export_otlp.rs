//! OTLP export (README, Export: OTLP) against an in-process OTLP receiver: `opentelemetry-proto`'s own
//! tonic `TraceService` server for gRPC, and `POST /v1/traces` for HTTP. The mapping of spans,
//! batching, OTLP's retry rules, partial success, drain, and switching backends.

mod harness;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::export::{Chain, Collector, Policy, mesh_with_backend, zipkin_backend};
use harness::otlp::{Receiver, Reply, int_attribute, string_attribute};
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as OtlpKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatus;
use tracecar::export::otlp::Otlp;
use tracecar::export::otlp::encoding::request;
use tracecar::export::{Encode, ExportSettings, Exporters};
use tracecar::metrics::Metrics;
use tracecar::policy::effective::{Direction, OtlpProtocol};
use tracecar::trace::id::{SpanId, TraceId};
use tracecar::trace::{Span, SpanKind};

const BACKEND: &str = "otel";

/// Fast batches and short backoffs: tests wait tenths of a second, not seconds.
fn settings() -> ExportSettings {
    ExportSettings {
        interval: Duration::from_millis(50),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..ExportSettings::default()
    }
}

/// A policy whose TrafficTrace makes the chain's listeners traced; the chain's sidecars are
/// given the OpenTelemetry backend in place of its Zipkin one.
fn traced_policy() -> Policy {
    Policy::new(&mesh_with_backend(&zipkin_backend(
        "http://127.0.0.1:9/api/v2/spans",
        "",
    )))
}

async fn chain(receiver: &Receiver, protocol: OtlpProtocol) -> (Policy, Chain) {
    let policy = traced_policy();
    let chain = Chain::with_backend(&policy.path(), receiver.backend(BACKEND, protocol)).await;
    (policy, chain)
}

/// The CLIENT span (web's) and the SERVER span (backend's) of one request, with their services.
async fn client_and_server(receiver: &Receiver) -> ((String, OtlpSpan), (String, OtlpSpan)) {
    let spans = receiver.wait_for_spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let find = |kind: OtlpKind| {
        spans
            .iter()
            .find(|(_, s)| s.kind == kind as i32)
            .cloned()
            .unwrap_or_else(|| panic!("a {kind:?} span in {spans:?}"))
    };
    (find(OtlpKind::Client), find(OtlpKind::Server))
}

fn attr(span: &OtlpSpan, key: &str) -> Option<String> {
    string_attribute(&span.attributes, key)
}

fn int(span: &OtlpSpan, key: &str) -> Option<i64> {
    int_attribute(&span.attributes, key)
}

fn is_error(span: &OtlpSpan) -> bool {
    span.status
        .as_ref()
        .is_some_and(|s| s.code == OtlpStatus::Error as i32)
}

// --- mapping, through a two-sidecar chain -------------------------------------------------

#[tokio::test]
async fn each_sidecar_sends_its_spans_under_a_resource_of_its_service() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Grpc).await;
    chain.get("/", &[]).await;
    receiver.wait_for_spans(2).await;
    for received in receiver.received() {
        for resource_spans in received.request.resource_spans {
            let attributes = resource_spans.resource.expect("a resource").attributes;
            let service = string_attribute(&attributes, "service.name").expect("service.name");
            assert!(service == "web" || service == "backend", "{service}");
            assert_eq!(
                string_attribute(&attributes, "telemetry.sdk.name").as_deref(),
                Some("tracecar")
            );
            assert_eq!(
                string_attribute(&attributes, "telemetry.sdk.language").as_deref(),
                Some("rust")
            );
            assert_eq!(
                string_attribute(&attributes, "telemetry.sdk.version").as_deref(),
                Some(env!("CARGO_PKG_VERSION"))
            );
        }
    }
    let ((client_service, _), (server_service, _)) = client_and_server(&receiver).await;
    assert_eq!(
        (client_service.as_str(), server_service.as_str()),
        ("web", "backend")
    );
}

#[tokio::test]
async fn spans_are_named_ingress_and_egress_host_with_server_and_client_kinds() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Grpc).await;
    chain.get("/", &[]).await;
    let ((_, client), (_, server)) = client_and_server(&receiver).await;
    assert_eq!(client.name, "egress backend.mesh");
    assert_eq!(server.name, "ingress");
}

#[tokio::test]
async fn a_64_bit_trace_id_is_zero_padded_and_the_server_span_is_a_child_of_the_client_span() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Grpc).await;
    chain
        .get(
            "/",
            &[
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-sampled", "1"),
            ],
        )
        .await;
    let ((_, client), (_, server)) = client_and_server(&receiver).await;
    let expected: Vec<u8> = [[0u8; 8], 0x463a_c35c_9f64_13ad_u64.to_be_bytes()].concat();
    assert_eq!(client.trace_id, expected);
    assert_eq!(server.trace_id, expected);
    // The caller's span is the CLIENT span's parent; the inbound span is a new child of the
    // CLIENT span, never a reuse of its id.
    assert_eq!(
        client.parent_span_id,
        0xa2fb_4a1d_1a96_d312_u64.to_be_bytes()
    );
    assert_eq!(server.parent_span_id, client.span_id);
    assert_ne!(server.span_id, client.span_id);
    assert_eq!(server.span_id.len(), 8);
}

#[tokio::test]
async fn a_128_bit_trace_id_is_kept_whole() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Grpc).await;
    chain
        .get(
            "/",
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
        )
        .await;
    let ((_, client), (_, server)) = client_and_server(&receiver).await;
    let expected = 0x80f1_98ee_5634_3ba8_64fe_8b2a_57d3_eff7_u128.to_be_bytes();
    assert_eq!(client.trace_id, expected);
    assert_eq!(server.trace_id, expected);
}

#[tokio::test]
async fn a_root_client_span_has_no_parent() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Grpc).await;
    chain.get("/", &[]).await;
    let ((_, client), _) = client_and_server(&receiver).await;
    assert!(client.parent_span_id.is_empty());
}

#[tokio::test]
async fn envoy_tags_are_string_attributes() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Grpc).await;
    chain
        .get(
            "/items?page=2",
            &[("user-agent", "curl/8.0"), ("x-request-id", "req-1")],
        )
        .await;
    let ((_, client), (_, server)) = client_and_server(&receiver).await;
    for span in [&client, &server] {
        assert_eq!(attr(span, "component").as_deref(), Some("proxy"));
        assert_eq!(attr(span, "http.method").as_deref(), Some("GET"));
        assert_eq!(attr(span, "http.status_code").as_deref(), Some("200"));
        assert_eq!(attr(span, "http.protocol").as_deref(), Some("HTTP/1.1"));
        assert_eq!(attr(span, "user_agent").as_deref(), Some("curl/8.0"));
        assert_eq!(attr(span, "guid:x-request-id").as_deref(), Some("req-1"));
        assert_eq!(
            attr(span, "http.url").as_deref(),
            Some("http://backend.mesh/items?page=2")
        );
        for key in [
            "node_id",
            "peer.address",
            "request_size",
            "response_size",
            "upstream_cluster",
            "response_flags",
        ] {
            assert!(attr(span, key).is_some(), "{key} as a string in {span:?}");
        }
    }
    assert_eq!(attr(&client, "node_id").as_deref(), Some("default.web-1"));
    assert_eq!(
        attr(&server, "node_id").as_deref(),
        Some("default.backend-1")
    );
}

#[tokio::test]
async fn http_semantic_conventions_have_their_types_on_both_kinds() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Grpc).await;
    chain
        .get("/items?page=2", &[("user-agent", "curl/8.0")])
        .await;
    let ((_, client), (_, server)) = client_and_server(&receiver).await;
    for span in [&client, &server] {
        assert_eq!(attr(span, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(int(span, "http.response.status_code"), Some(200));
        assert_eq!(
            attr(span, "network.protocol.version").as_deref(),
            Some("1.1")
        );
        assert_eq!(
            attr(span, "server.address").as_deref(),
            Some("backend.mesh")
        );
        assert_eq!(
            attr(span, "user_agent.original").as_deref(),
            Some("curl/8.0")
        );
        assert_eq!(attr(span, "error.type"), None);
        assert!(!is_error(span));
    }
    // CLIENT: the full url and the port (the default one: the Host named none).
    assert_eq!(
        attr(&client, "url.full").as_deref(),
        Some("http://backend.mesh/items?page=2")
    );
    assert_eq!(int(&client, "server.port"), Some(80));
    assert_eq!(attr(&client, "url.path"), None);
    // SERVER: scheme, path and query apart.
    assert_eq!(attr(&server, "url.scheme").as_deref(), Some("http"));
    assert_eq!(attr(&server, "url.path").as_deref(), Some("/items"));
    assert_eq!(attr(&server, "url.query").as_deref(), Some("page=2"));
    assert_eq!(attr(&server, "url.full"), None);
}

#[tokio::test]
async fn a_5xx_is_an_error_on_both_kinds() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Grpc).await;
    chain.get("/status/503", &[]).await;
    let ((_, client), (_, server)) = client_and_server(&receiver).await;
    for span in [&client, &server] {
        assert!(is_error(span), "{span:?}");
        assert_eq!(attr(span, "error.type").as_deref(), Some("503"));
        assert_eq!(int(span, "http.response.status_code"), Some(503));
    }
}

#[tokio::test]
async fn a_4xx_is_an_error_on_the_client_span_only() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Grpc).await;
    chain.get("/status/404", &[]).await;
    let ((_, client), (_, server)) = client_and_server(&receiver).await;
    assert!(is_error(&client));
    assert_eq!(attr(&client, "error.type").as_deref(), Some("404"));
    assert!(!is_error(&server));
    assert_eq!(attr(&server, "error.type"), None);
}

#[tokio::test]
async fn otlp_http_posts_protobuf_to_v1_traces() {
    let receiver = Receiver::start().await;
    let (_policy, chain) = chain(&receiver, OtlpProtocol::Http).await;
    chain.get("/", &[]).await;
    let ((_, client), (_, server)) = client_and_server(&receiver).await;
    assert_eq!(client.name, "egress backend.mesh");
    assert_eq!(server.parent_span_id, client.span_id);
    for received in receiver.received() {
        assert_eq!(received.transport, "http");
        assert_eq!(received.path, "/v1/traces");
        assert_eq!(received.content_type, "application/x-protobuf");
    }
}

#[tokio::test]
async fn otlp_http_puts_the_path_prefix_before_v1_traces() {
    let receiver = Receiver::start().await;
    let mut backend = receiver.backend(BACKEND, OtlpProtocol::Http);
    if let tracecar::policy::effective::BackendConf::OpenTelemetry(conf) = &mut backend.conf {
        conf.path = Some("/otlp".to_string());
    }
    let metrics = export(backend, vec![span("web", Direction::Inbound)], settings()).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/otlp/v1/traces");
    assert_eq!(count(&metrics, "tracecar_spans_exported_total", &[]), 1.0);
}

#[tokio::test]
async fn otlp_grpc_sends_the_protobuf_content_type() {
    let receiver = Receiver::start().await;
    export(
        receiver.backend(BACKEND, OtlpProtocol::Grpc),
        vec![span("web", Direction::Inbound)],
        settings(),
    )
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].transport, "grpc");
    assert!(received[0].content_type.starts_with("application/grpc"));
}

// --- mapping of span records the chain cannot produce on demand ----------------------------

/// A finished span record of `service`, as the tracing layer hands it over.
fn span(service: &str, direction: Direction) -> Span {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    Span {
        trace_id: TraceId::random(false),
        id: SpanId::random(),
        parent_id: Some(SpanId::random()),
        kind: match direction {
            Direction::Inbound => SpanKind::Server,
            Direction::Outbound => SpanKind::Client,
        },
        direction,
        name: "backend.mesh:8080".to_string(),
        timestamp_us: now,
        duration_us: 1_500,
        local_service: Arc::from(service),
        remote_service: None,
        shared: false,
        debug: false,
        error: false,
        tags: [
            ("http.method", "GET"),
            ("http.url", "https://backend.mesh:8080/a"),
            ("http.status_code", "200"),
        ]
        .into_iter()
        .collect(),
        trace_state: None,
    }
}

fn only_span(spans: &[Span]) -> OtlpSpan {
    let request = request(spans);
    request.resource_spans[0].scope_spans[0].spans[0].clone()
}

#[test]
fn one_resource_spans_per_service_in_a_batch() {
    let batch = [
        span("web", Direction::Inbound),
        span("backend", Direction::Outbound),
        span("web", Direction::Outbound),
    ];
    let request = request(&batch);
    let services: Vec<(String, usize)> = request
        .resource_spans
        .iter()
        .map(|r| {
            (
                string_attribute(
                    &r.resource.as_ref().expect("resource").attributes,
                    "service.name",
                )
                .expect("service.name"),
                r.scope_spans.iter().map(|s| s.spans.len()).sum(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [("web".to_string(), 2), ("backend".to_string(), 1)]
    );
}

#[test]
fn times_are_nanoseconds_from_the_start_and_duration() {
    let record = span("web", Direction::Inbound);
    let otlp = only_span(std::slice::from_ref(&record));
    assert_eq!(otlp.start_time_unix_nano, record.timestamp_us * 1000);
    assert_eq!(
        otlp.end_time_unix_nano,
        (record.timestamp_us + record.duration_us) * 1000
    );
}

#[test]
fn a_shared_server_span_becomes_a_new_child_of_the_callers_span() {
    // With Zipkin's sharedSpanContext the SERVER record reuses the caller's span id and
    // parent. OTLP has no shared ids: the span gets its own id, and the caller's span (the
    // id it shared) becomes its parent, so the chain caller → server stays whole.
    let mut record = span("backend", Direction::Inbound);
    record.shared = true;
    let otlp = only_span(std::slice::from_ref(&record));
    assert_eq!(otlp.parent_span_id, record.id.0.to_be_bytes());
    assert_ne!(otlp.span_id, record.id.0.to_be_bytes());
    assert_ne!(otlp.span_id, [0u8; 8]);
    // The same record always maps to the same id.
    assert_eq!(
        only_span(std::slice::from_ref(&record)).span_id,
        otlp.span_id
    );
}

#[test]
fn trace_state_is_carried_as_propagated() {
    let mut record = span("web", Direction::Inbound);
    assert_eq!(only_span(std::slice::from_ref(&record)).trace_state, "");
    record.trace_state = Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into());
    assert_eq!(
        only_span(std::slice::from_ref(&record)).trace_state,
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
}

#[test]
fn the_client_port_comes_from_the_host() {
    let otlp = only_span(&[span("web", Direction::Outbound)]);
    assert_eq!(int(&otlp, "server.port"), Some(8080));
    assert_eq!(
        attr(&otlp, "server.address").as_deref(),
        Some("backend.mesh")
    );
}

#[test]
fn envoys_grpc_error_codes_are_errors_with_the_code_as_error_type() {
    for (code, error) in [
        ("14", true),
        ("13", true),
        ("2", true),
        ("5", false),
        ("0", false),
    ] {
        let mut record = span("web", Direction::Outbound);
        record.error = error; // as the tracing layer sets it for these codes (README, Tracing)
        record.tags.push("grpc.status_code", code);
        let otlp = only_span(std::slice::from_ref(&record));
        assert_eq!(is_error(&otlp), error, "grpc-status {code}");
        assert_eq!(
            attr(&otlp, "error.type"),
            error.then(|| code.to_string()),
            "grpc-status {code}"
        );
    }
}

#[test]
fn no_response_is_an_error_named_by_its_response_flags() {
    let mut record = span("web", Direction::Outbound);
    record.tags = record
        .tags
        .iter()
        .filter(|(k, _)| *k != "http.status_code")
        .collect();
    record.tags.push("http.status_code", "0");
    record.tags.push("response_flags", "UF");
    record.error = true;
    let otlp = only_span(std::slice::from_ref(&record));
    assert!(is_error(&otlp));
    assert_eq!(attr(&otlp, "error.type").as_deref(), Some("UF"));
    assert_eq!(int(&otlp, "http.response.status_code"), None);
}

#[test]
fn a_batch_over_the_size_limit_is_split_and_a_span_that_alone_is_too_large_is_counted() {
    let mut batch: Vec<Span> = (0..10).map(|_| span("web", Direction::Inbound)).collect();
    batch[3].tags.push("http.url", &"u".repeat(20_000));
    let encoded = Otlp::with_max_payload(2_000).encode(&batch);
    assert_eq!(encoded.too_large, 1);
    assert!(encoded.payloads.len() > 1);
    assert_eq!(encoded.payloads.iter().map(|p| p.spans).sum::<usize>(), 9);
    assert!(encoded.payloads.iter().all(|p| p.body.len() <= 2_000));
}

// --- the exporter: batching, retries, partial success, drain --------------------------------

/// Sends `spans` through an exporter for `backend`, then shuts down (flushing within 10 s).
async fn export(
    backend: tracecar::policy::effective::Backend,
    spans: Vec<Span>,
    settings: ExportSettings,
) -> Arc<Metrics> {
    let metrics = Metrics::new();
    let exporters = Exporters::new(settings, metrics.clone());
    let handle = exporters
        .use_backend(Some(&backend))
        .expect("the backend resolves")
        .expect("an exporter");
    for span in spans {
        tracecar::trace::SpanSink::try_send(&*handle, &span);
    }
    drop(handle);
    exporters.shutdown(Duration::from_secs(10)).await;
    metrics
}

fn count(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("backend", BACKEND)];
    all.extend_from_slice(labels);
    harness::metric(&metrics.encode(), name, &all).unwrap_or(0.0)
}

fn some_spans(n: usize) -> Vec<Span> {
    (0..n).map(|_| span("web", Direction::Inbound)).collect()
}

#[tokio::test]
async fn spans_go_in_batches_of_at_most_the_batch_size() {
    let receiver = Receiver::start().await;
    let settings = ExportSettings {
        batch_size: 100,
        ..settings()
    };
    let metrics = export(
        receiver.backend(BACKEND, OtlpProtocol::Grpc),
        some_spans(250),
        settings,
    )
    .await;
    let sizes: Vec<usize> = receiver
        .received()
        .iter()
        .map(|r| {
            r.request
                .resource_spans
                .iter()
                .flat_map(|s| &s.scope_spans)
                .map(|s| s.spans.len())
                .sum()
        })
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 250);
    assert!(
        sizes.len() >= 3 && sizes.iter().all(|n| *n <= 100),
        "{sizes:?}"
    );
    assert_eq!(count(&metrics, "tracecar_spans_exported_total", &[]), 250.0);
}

/// Exports 5 spans to a receiver answering `script` then `otherwise`; returns the receiver
/// and the metrics.
async fn export_against(
    protocol: OtlpProtocol,
    script: Vec<Reply>,
    otherwise: Option<Reply>,
) -> (Receiver, Arc<Metrics>) {
    let receiver = Receiver::scripted(script, otherwise).await;
    let metrics = export(
        receiver.backend(BACKEND, protocol),
        some_spans(5),
        settings(),
    )
    .await;
    (receiver, metrics)
}

fn exported(metrics: &Metrics) -> f64 {
    count(metrics, "tracecar_spans_exported_total", &[])
}

fn dropped(metrics: &Metrics, reason: &str) -> f64 {
    count(
        metrics,
        "tracecar_spans_dropped_total",
        &[("reason", reason)],
    )
}

fn grpc(code: tonic::Code) -> Reply {
    Reply::Grpc {
        code,
        retry_delay: None,
    }
}

#[tokio::test]
async fn grpc_transient_codes_are_retried() {
    for code in [
        tonic::Code::Cancelled,
        tonic::Code::DeadlineExceeded,
        tonic::Code::Aborted,
        tonic::Code::OutOfRange,
        tonic::Code::Unavailable,
        tonic::Code::DataLoss,
    ] {
        let (receiver, metrics) = export_against(OtlpProtocol::Grpc, vec![grpc(code)], None).await;
        assert_eq!(receiver.answered(), 2, "{code:?} is tried again");
        assert_eq!(exported(&metrics), 5.0, "{code:?}");
        assert_eq!(
            count(
                &metrics,
                "tracecar_export_requests_total",
                &[("result", "failure")]
            ),
            1.0
        );
    }
}

#[tokio::test]
async fn grpc_final_codes_are_not_retried() {
    for code in [
        tonic::Code::InvalidArgument,
        tonic::Code::PermissionDenied,
        tonic::Code::Unauthenticated,
        tonic::Code::Unimplemented,
        tonic::Code::Internal,
    ] {
        let (receiver, metrics) = export_against(OtlpProtocol::Grpc, vec![grpc(code)], None).await;
        assert_eq!(receiver.answered(), 1, "{code:?} is final");
        assert_eq!(dropped(&metrics, "export_failed"), 5.0, "{code:?}");
        assert_eq!(exported(&metrics), 0.0);
    }
}

#[tokio::test]
async fn grpc_resource_exhausted_is_retried_only_with_retry_info() {
    let (receiver, metrics) = export_against(
        OtlpProtocol::Grpc,
        vec![grpc(tonic::Code::ResourceExhausted)],
        None,
    )
    .await;
    assert_eq!(receiver.answered(), 1);
    assert_eq!(dropped(&metrics, "export_failed"), 5.0);

    let (receiver, metrics) = export_against(
        OtlpProtocol::Grpc,
        vec![Reply::Grpc {
            code: tonic::Code::ResourceExhausted,
            retry_delay: Some(Duration::from_millis(10)),
        }],
        None,
    )
    .await;
    assert_eq!(receiver.answered(), 2);
    assert_eq!(exported(&metrics), 5.0);
}

#[tokio::test]
async fn a_retry_delay_beyond_the_retry_budget_ends_the_tries() {
    // The collector's wait is honoured, not shortened: when it is longer than the budget the
    // exporter gives up instead of trying early.
    let (receiver, metrics) = export_against(
        OtlpProtocol::Grpc,
        vec![Reply::Grpc {
            code: tonic::Code::Unavailable,
            retry_delay: Some(Duration::from_secs(3600)),
        }],
        None,
    )
    .await;
    assert_eq!(receiver.answered(), 1);
    assert_eq!(dropped(&metrics, "export_failed"), 5.0);

    let (receiver, metrics) = export_against(
        OtlpProtocol::Http,
        vec![Reply::Http {
            status: 503,
            retry_after: Some(3600),
        }],
        None,
    )
    .await;
    assert_eq!(receiver.answered(), 1);
    assert_eq!(dropped(&metrics, "export_failed"), 5.0);
}

#[tokio::test]
async fn http_429_502_503_504_are_retried_honouring_retry_after() {
    for status in [429, 502, 503, 504] {
        let (receiver, metrics) = export_against(
            OtlpProtocol::Http,
            vec![Reply::Http {
                status,
                retry_after: Some(0),
            }],
            None,
        )
        .await;
        assert_eq!(receiver.answered(), 2, "{status} is tried again");
        assert_eq!(exported(&metrics), 5.0, "{status}");
    }
}

#[tokio::test]
async fn other_http_statuses_are_not_retried() {
    for status in [400, 401, 404, 413, 500, 501] {
        let (receiver, metrics) = export_against(
            OtlpProtocol::Http,
            vec![Reply::Http {
                status,
                retry_after: None,
            }],
            None,
        )
        .await;
        assert_eq!(receiver.answered(), 1, "{status} is final");
        assert_eq!(dropped(&metrics, "export_failed"), 5.0, "{status}");
    }
}

#[tokio::test]
async fn retries_stop_after_three_tries() {
    let (receiver, metrics) = export_against(
        OtlpProtocol::Grpc,
        Vec::new(),
        Some(grpc(tonic::Code::Unavailable)),
    )
    .await;
    assert_eq!(receiver.answered(), 3);
    assert_eq!(dropped(&metrics, "export_failed"), 5.0);
    assert_eq!(
        count(
            &metrics,
            "tracecar_export_requests_total",
            &[("result", "failure")]
        ),
        3.0
    );
}

#[tokio::test]
async fn partial_success_counts_the_rejected_spans_as_dropped_rejected() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::Http] {
        let (receiver, metrics) =
            export_against(protocol, vec![Reply::Accept { rejected: 3 }], None).await;
        assert_eq!(
            receiver.answered(),
            1,
            "{protocol:?}: partial success is not retried"
        );
        assert_eq!(exported(&metrics), 2.0, "{protocol:?}");
        assert_eq!(dropped(&metrics, "rejected"), 3.0, "{protocol:?}");
        assert_eq!(
            count(
                &metrics,
                "tracecar_export_requests_total",
                &[("result", "success")]
            ),
            1.0
        );
    }
}

#[tokio::test]
async fn shutdown_flushes_what_is_queued() {
    // A long interval: only the drain sends these.
    let receiver = Receiver::start().await;
    let settings = ExportSettings {
        interval: Duration::from_secs(3600),
        ..settings()
    };
    let metrics = export(
        receiver.backend(BACKEND, OtlpProtocol::Grpc),
        some_spans(40),
        settings,
    )
    .await;
    assert_eq!(receiver.spans().len(), 40);
    assert_eq!(exported(&metrics), 40.0);
}

#[tokio::test]
async fn what_a_slow_collector_holds_past_the_deadline_is_counted_as_shutdown() {
    let receiver = Receiver::scripted(Vec::new(), Some(Reply::Slow(Duration::from_secs(30)))).await;
    let metrics = Metrics::new();
    let exporters = Exporters::new(settings(), metrics.clone());
    let handle = exporters
        .use_backend(Some(&receiver.backend(BACKEND, OtlpProtocol::Grpc)))
        .expect("resolves")
        .expect("an exporter");
    for span in some_spans(10) {
        tracecar::trace::SpanSink::try_send(&*handle, &span);
    }
    drop(handle);
    exporters.shutdown(Duration::from_millis(300)).await;
    assert_eq!(
        exported(&metrics) + dropped(&metrics, "shutdown") + dropped(&metrics, "export_failed"),
        10.0
    );
    assert_eq!(count(&metrics, "tracecar_spans_sampled_total", &[]), 10.0);
}

#[tokio::test]
async fn a_retired_exporter_whose_handle_is_still_held_is_drained_at_shutdown_too() {
    // A policy change retired the slow backend while a request still held its handle: the
    // drain reaches the retired worker anyway, and what it held is counted, not waited for.
    let slow = Receiver::scripted(Vec::new(), Some(Reply::Slow(Duration::from_secs(30)))).await;
    let next = Receiver::start().await;
    let metrics = Metrics::new();
    let exporters = Exporters::new(settings(), metrics.clone());
    let held = exporters
        .use_backend(Some(&slow.backend(BACKEND, OtlpProtocol::Grpc)))
        .expect("resolves")
        .expect("an exporter");
    for span in some_spans(10) {
        tracecar::trace::SpanSink::try_send(&*held, &span);
    }
    exporters
        .use_backend(Some(&next.backend("next", OtlpProtocol::Grpc)))
        .expect("resolves");
    tokio::time::timeout(
        Duration::from_secs(10),
        exporters.shutdown(Duration::from_millis(300)),
    )
    .await
    .expect("shutdown ends at its deadline, handle or not");
    assert_eq!(
        exported(&metrics) + dropped(&metrics, "shutdown") + dropped(&metrics, "export_failed"),
        10.0
    );
    drop(held);
}

#[tokio::test]
async fn switching_backends_sends_new_spans_to_the_new_one_and_queued_ones_to_the_old() {
    let zipkin = Collector::start().await;
    let receiver = Receiver::start().await;
    let zipkin_backend = tracecar::policy::effective::Backend {
        name: "zipkin".to_string(),
        kind: tracecar::policy::effective::BackendKind::Zipkin,
        sampling: 100.0,
        conf: tracecar::policy::effective::BackendConf::Zipkin(
            tracecar::policy::effective::ZipkinBackend {
                url: zipkin.url(),
                trace_id_128bit: false,
                api_version: tracecar::policy::effective::ApiVersion::HttpJson,
                shared_span_context: true,
            },
        ),
    };
    let otel_backend = receiver.backend(BACKEND, OtlpProtocol::Grpc);
    let metrics = Metrics::new();
    let exporters = Exporters::new(settings(), metrics.clone());

    let to_zipkin = exporters
        .use_backend(Some(&zipkin_backend))
        .expect("ok")
        .expect("zipkin");
    for span in some_spans(3) {
        tracecar::trace::SpanSink::try_send(&*to_zipkin, &span);
    }
    drop(to_zipkin);
    let to_otel = exporters
        .use_backend(Some(&otel_backend))
        .expect("ok")
        .expect("otel");
    for span in some_spans(4) {
        tracecar::trace::SpanSink::try_send(&*to_otel, &span);
    }
    receiver.wait_for_spans(4).await;
    zipkin.wait_for_json(3).await;

    // And back: the OpenTelemetry exporter retires, Zipkin takes the new spans.
    drop(to_otel);
    let back = exporters
        .use_backend(Some(&zipkin_backend))
        .expect("ok")
        .expect("zipkin");
    for span in some_spans(2) {
        tracecar::trace::SpanSink::try_send(&*back, &span);
    }
    drop(back);
    exporters.shutdown(Duration::from_secs(5)).await;
    assert_eq!(zipkin.json_spans().len(), 5);
    assert_eq!(receiver.spans().len(), 4);
}
