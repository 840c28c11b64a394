//! gRPC deadlines and cancels through a chain of two sidecars (README, The data path and
//! Tracing): each sidecar enforces `grpc-timeout` itself, so a call whose deadline passes
//! ends with `grpc.status_code: 4`, `UT` and `error: true` on both spans, every time; a caller
//! that cancels before its deadline is a cancel (`DC`, no error).

mod harness;

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use harness::grpc::{EchoClient, EchoRequest, method, start_echo_server};
use harness::{Collected, free_port, metric, proxy_with, tracer_into};
use tracecar::metrics::Metrics;
use tracecar::proxy::ProxyConfig;
use tracecar::trace::{Span, SpanKind};

struct Chain {
    outbound: std::net::SocketAddr,
    sink: Arc<Collected>,
    /// Both sidecars' request metrics.
    metrics: Arc<Metrics>,
    _proxies: (harness::Proxy, harness::Proxy),
    _app: harness::grpc::EchoServer,
}

/// caller → web's outbound sidecar → backend's inbound sidecar → the echo app; both sidecars
/// traced into one sink.
async fn chain() -> Chain {
    let app = start_echo_server().await;
    let sink = Arc::new(Collected::default());
    let metrics = Metrics::new();
    let config = ProxyConfig {
        metrics: Some(metrics.clone()),
        ..ProxyConfig::default()
    };
    let backend_inbound = free_port();
    let server_side = proxy_with(
        &format!(
            "type: Dataplane\nmesh: default\nname: backend-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {backend_inbound}\n      servicePort: {}\n      tags: {{kuma.io/service: backend, kuma.io/protocol: grpc}}\n",
            app.address.port()
        ),
        tracer_into("default.backend-1", &sink),
        &config,
    )
    .await;
    let client_side = proxy_with(
        &format!(
            "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {}\n      servicePort: {}\n      tags: {{kuma.io/service: web, kuma.io/protocol: http}}\n  outbound:\n    - port: {}\n      tags: {{kuma.io/service: backend, kuma.io/protocol: grpc}}\n      endpoints: [\"127.0.0.1:{backend_inbound}\"]\n",
            free_port(),
            free_port(),
            free_port()
        ),
        tracer_into("default.web-1", &sink),
        &config,
    )
    .await;
    Chain {
        outbound: client_side.address(0),
        sink,
        metrics,
        _proxies: (client_side, server_side),
        _app: app,
    }
}

fn spans_of(spans: &[Span], kind: SpanKind) -> Vec<&Span> {
    spans.iter().filter(|s| s.kind == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_marks_both_spans_every_time() {
    let c = chain().await;
    const CALLS: usize = 8;
    for _ in 0..CALLS {
        // A bare h2 client: it sends `grpc-timeout` and leaves enforcing it to the proxies.
        let mut client = EchoClient::bare_h2(c.outbound);
        let mut request = tonic::Request::new(EchoRequest {
            delay_ms: 3_000,
            ..EchoRequest::default()
        });
        request.set_timeout(Duration::from_millis(300));
        let status = client
            .unary(method::SLOW, request)
            .await
            .expect_err("the deadline passes");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    let spans = c.sink.wait_for(2 * CALLS).await;
    for kind in [SpanKind::Client, SpanKind::Server] {
        let of_kind = spans_of(&spans, kind);
        assert_eq!(of_kind.len(), CALLS, "{kind:?}: {spans:?}");
        for span in of_kind {
            assert_eq!(
                span.tag("grpc.status_code"),
                Some("4"),
                "{kind:?}: {span:?}"
            );
            assert_eq!(span.tag("response_flags"), Some("UT"), "{kind:?}: {span:?}");
            assert!(span.error, "{kind:?}: {span:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_the_deadline_stays_a_cancel() {
    let c = chain().await;
    let mut client = EchoClient::bare_h2(c.outbound);
    let mut request = tonic::Request::new(EchoRequest {
        delay_ms: 3_000,
        ..EchoRequest::default()
    });
    request.set_timeout(Duration::from_secs(10));
    let call = tokio::time::timeout(
        Duration::from_millis(300),
        client.unary(method::SLOW, request),
    )
    .await;
    assert!(call.is_err(), "the caller gave up first");
    drop(client);

    let spans = c.sink.wait_for(2).await;
    for span in &spans {
        assert_eq!(span.tag("response_flags"), Some("DC"), "{span:?}");
        assert!(!span.error, "a cancelled gRPC call is no error: {span:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_cancels_mid_stream_is_counted_as_a_cancel() {
    let c = chain().await;
    let mut client = EchoClient::connect(c.outbound).await;
    let mut stream = client
        .server_streaming(method::ENDLESS, EchoRequest::default())
        .await
        .expect("the stream starts")
        .into_inner();
    for _ in 0..3 {
        stream.message().await.expect("a tick").expect("open");
    }
    drop(stream);

    let spans = c.sink.wait_for(2).await;
    for span in &spans {
        assert_eq!(span.tag("http.status_code"), Some("200"), "{span:?}");
        assert_eq!(span.tag("response_flags"), Some("DC"), "{span:?}");
        assert!(!span.error, "a cancelled gRPC call is no error: {span:?}");
    }
    // Counted once by each sidecar, with the status that was sent.
    let counted = metric(
        &c.metrics.encode(),
        "tracecar_requests_total",
        &[("status_code", "200")],
    );
    assert_eq!(counted, Some(2.0));
}
