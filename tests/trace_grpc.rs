//! gRPC spans: the status comes from the trailers (or the headers of a trailers-only answer),
//! and only Envoy's list of codes marks a span as an error.

mod harness;

use std::sync::Arc;

use tonic::Code;

use harness::grpc::{EchoClient, EchoRequest, EchoServer, method, start_echo_server};
use harness::{Collected, free_port, proxy_with};
use tracecar::proxy::ProxyConfig;
use tracecar::trace::{Span, TraceConfig, TracedBackend, Tracer};

/// A traced gRPC inbound in front of the echo service, and a client connected to it.
async fn traced_inbound() -> (EchoServer, harness::Proxy, EchoClient, Arc<Collected>) {
    let app = start_echo_server().await;
    let sink = Arc::new(Collected::default());
    let tracer = Arc::new(Tracer::new(
        "default.backend-1",
        TraceConfig {
            backend: Some(TracedBackend {
                name: Arc::from("test"),
                basis_points: 10_000,
                shared_span_context: true,
                trace_id_128bit: false,
                propagation: tracecar::trace::Format::B3,
                sink: sink.clone(),
                meshtrace: None,
            }),
        },
    ));
    let yaml = format!(
        "type: Dataplane\nmesh: default\nname: backend-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {}\n      servicePort: {}\n      tags: {{kuma.io/service: backend, kuma.io/protocol: grpc}}\n",
        free_port(),
        app.address.port()
    );
    let proxy = proxy_with(&yaml, tracer, &ProxyConfig::default()).await;
    let client = EchoClient::connect(proxy.addresses()[0]).await;
    (app, proxy, client, sink)
}

async fn one_span(sink: &Collected) -> Span {
    sink.wait_for(1).await.remove(0)
}

#[tokio::test]
async fn a_successful_call_has_status_0_and_no_error() {
    let (_app, _proxy, mut client, sink) = traced_inbound().await;
    client
        .unary(method::UNARY, EchoRequest::default())
        .await
        .expect("the call succeeds");
    let span = one_span(&sink).await;
    assert_eq!(span.tag("grpc.path"), Some(method::UNARY));
    assert_eq!(span.tag("grpc.status_code"), Some("0"));
    assert_eq!(span.tag("http.status_code"), Some("200"));
    assert_eq!(span.tag("http.protocol"), Some("HTTP/2"));
    assert!(!span.error);
}

#[tokio::test]
async fn not_found_from_the_trailers_is_tagged_but_not_an_error() {
    let (_app, _proxy, mut client, sink) = traced_inbound().await;
    let request = EchoRequest {
        code: Code::NotFound as i32,
        message: "no such item".to_string(),
        ..EchoRequest::default()
    };
    // One message first, so the status travels in real trailers after the body.
    let mut stream = client
        .server_streaming(method::FAIL_AFTER_ONE, request)
        .await
        .expect("stream starts")
        .into_inner();
    let _ = stream.message().await;
    let status = stream
        .message()
        .await
        .expect_err("the stream ends with NOT_FOUND");
    assert_eq!(status.code(), Code::NotFound);
    let span = one_span(&sink).await;
    assert_eq!(
        span.tag("grpc.status_code"),
        Some("5"),
        "the numeric code, as a string"
    );
    // As received: gRPC percent-encodes the message on the wire.
    assert_eq!(span.tag("grpc.message"), Some("no%20such%20item"));
    assert!(!span.error, "NOT_FOUND is an answer, not a failure");
    assert_eq!(span.tag("error"), None);
}

#[tokio::test]
async fn unavailable_in_a_trailers_only_answer_is_an_error() {
    let (_app, _proxy, mut client, sink) = traced_inbound().await;
    let request = EchoRequest {
        code: Code::Unavailable as i32,
        message: "try later".to_string(),
        ..EchoRequest::default()
    };
    let status = client
        .unary(method::FAIL, request)
        .await
        .expect_err("the call fails");
    assert_eq!(status.code(), Code::Unavailable);
    let span = one_span(&sink).await;
    assert_eq!(span.tag("grpc.status_code"), Some("14"));
    assert_eq!(span.tag("grpc.message"), Some("try%20later"), "as received");
    assert_eq!(
        span.tag("http.status_code"),
        Some("200"),
        "gRPC errors ride on HTTP 200"
    );
    assert!(span.error);
    assert_eq!(span.tag("error"), Some("true"));
}

#[tokio::test]
async fn every_code_on_envoys_list_is_an_error_and_no_other() {
    let (_app, _proxy, mut client, sink) = traced_inbound().await;
    let errors = [2, 4, 8, 12, 13, 14, 15];
    for code in 1..=16 {
        let request = EchoRequest {
            code,
            message: format!("code {code}"),
            ..EchoRequest::default()
        };
        let _ = client.unary(method::FAIL, request).await;
    }
    let spans = sink.wait_for(16).await;
    for span in spans {
        let code: i32 = span
            .tag("grpc.status_code")
            .and_then(|c| c.parse().ok())
            .expect("a numeric grpc.status_code");
        assert_eq!(span.error, errors.contains(&code), "code {code}");
    }
}
