//! Tracing across hops: app → outbound (proxy A) → inbound (proxy B) → app, with real proxies
//! and a real upstream on loopback, spans collected by a test sink.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

use harness::{Collected, Upstream, inbound_yaml, outbound_yaml, proxy_with_observer};
use tracecar::trace::{SpanKind, TraceConfig, TracedBackend, Tracer};

fn tracer(node: &str, sink: &Arc<Collected>, percent: f64, shared: bool) -> Arc<Tracer> {
    Arc::new(Tracer::new(
        node,
        TraceConfig {
            backend: Some(TracedBackend {
                name: Arc::from("test"),
                basis_points: tracecar::trace::sampler::basis_points(percent),
                shared_span_context: shared,
                trace_id_128bit: false,
                propagation: tracecar::trace::Format::B3,
                sink: sink.clone(),
                meshtrace: None,
            }),
        },
    ))
}

/// Two proxies in a chain, each with its own sink.
struct Chain {
    app: Upstream,
    a: harness::Proxy,
    // Kept alive: the inbound proxy A forwards to.
    _b: harness::Proxy,
    client_spans: Arc<Collected>,
    server_spans: Arc<Collected>,
}

async fn chain(percent: f64, shared: bool) -> Chain {
    let app = Upstream::start().await;
    let server_spans = Arc::new(Collected::default());
    let client_spans = Arc::new(Collected::default());
    let b = proxy_with_observer(
        &inbound_yaml(app.address, "http"),
        tracer("default.backend-1", &server_spans, percent, shared),
    )
    .await;
    let a = proxy_with_observer(
        &outbound_yaml(&[b.address(0).to_string()], "http"),
        tracer("default.web-1", &client_spans, percent, shared),
    )
    .await;
    Chain {
        app,
        a,
        _b: b,
        client_spans,
        server_spans,
    }
}

type Client = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Sends one request with `headers`; returns the response headers (the app reports what it
/// received as `x-seen-*`).
async fn call(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> http::HeaderMap {
    let mut request = Request::get(path).header("host", "backend.mesh");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .send_request(request.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let headers = response.headers().clone();
    response.into_body().collect().await.expect("body");
    headers
}

fn seen<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(format!("x-seen-{name}"))
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_request_without_context_gives_a_client_root_and_a_shared_server_span() {
    let chain = chain(100.0, true).await;
    let mut client = connect(chain.a.address(0)).await;
    let received = call(&mut client, "/echo", &[]).await;

    let client_span = chain.client_spans.wait_for(1).await.remove(0);
    let server_span = chain.server_spans.wait_for(1).await.remove(0);
    assert_eq!(client_span.kind, SpanKind::Client);
    assert_eq!(
        client_span.parent_id, None,
        "no context came in: a new root"
    );
    assert!(!client_span.trace_id.wide, "64-bit unless traceId128bit");
    assert_eq!(server_span.kind, SpanKind::Server);
    assert_eq!(server_span.trace_id, client_span.trace_id, "one trace");
    assert_eq!(
        server_span.id, client_span.id,
        "sharedSpanContext: the caller's span id"
    );
    assert_eq!(server_span.parent_id, None);
    assert!(server_span.shared);
    assert!(!client_span.shared);

    // The app behind B gets the SERVER span's context.
    assert_eq!(
        seen(&received, "x-b3-traceid"),
        Some(client_span.trace_id.to_string().as_str())
    );
    assert_eq!(
        seen(&received, "x-b3-spanid"),
        Some(server_span.id.to_string().as_str())
    );
    assert_eq!(seen(&received, "x-b3-sampled"), Some("1"));
    assert_eq!(
        seen(&received, "x-b3-parentspanid"),
        None,
        "a root has no parent"
    );
    assert!(
        seen(&received, "x-request-id").is_some_and(|id| id.len() == 36),
        "a UUID was generated"
    );
    assert_eq!(
        chain.app.requests.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn an_incoming_context_is_continued_on_every_hop() {
    let chain = chain(100.0, true).await;
    let mut client = connect(chain.a.address(0)).await;
    let received = call(
        &mut client,
        "/echo",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
            ("x-request-id", "caller-chosen-id"),
        ],
    )
    .await;
    let client_span = chain.client_spans.wait_for(1).await.remove(0);
    let server_span = chain.server_spans.wait_for(1).await.remove(0);
    assert_eq!(
        client_span.trace_id.to_string(),
        "463ac35c9f6413ad48485a3953bb6124",
        "128-bit kept"
    );
    assert_eq!(
        client_span.parent_id.map(|p| p.to_string()).as_deref(),
        Some("a2fb4a1d1a96d312")
    );
    assert_eq!(server_span.id, client_span.id);
    assert_eq!(
        server_span.parent_id, client_span.parent_id,
        "shared: the caller's parent too"
    );
    assert_eq!(
        seen(&received, "x-b3-parentspanid"),
        Some("a2fb4a1d1a96d312")
    );
    assert_eq!(
        seen(&received, "x-request-id"),
        Some("caller-chosen-id"),
        "never rewritten"
    );
    assert_eq!(
        client_span.tag("guid:x-request-id"),
        Some("caller-chosen-id")
    );
}

#[tokio::test]
async fn without_shared_span_context_the_server_span_is_a_child_of_the_client_span() {
    let chain = chain(100.0, false).await;
    let mut client = connect(chain.a.address(0)).await;
    let received = call(&mut client, "/echo", &[]).await;
    let client_span = chain.client_spans.wait_for(1).await.remove(0);
    let server_span = chain.server_spans.wait_for(1).await.remove(0);
    assert_ne!(server_span.id, client_span.id);
    assert_eq!(server_span.parent_id, Some(client_span.id));
    assert!(!server_span.shared);
    assert_eq!(
        seen(&received, "x-b3-spanid"),
        Some(server_span.id.to_string().as_str())
    );
    assert_eq!(
        seen(&received, "x-b3-parentspanid"),
        Some(client_span.id.to_string().as_str())
    );
}

#[tokio::test]
async fn debug_propagates_on_every_hop() {
    let chain = chain(0.0, true).await;
    let mut client = connect(chain.a.address(0)).await;
    let received = call(&mut client, "/echo", &[("x-b3-flags", "1")]).await;
    let client_span = chain.client_spans.wait_for(1).await.remove(0);
    let server_span = chain.server_spans.wait_for(1).await.remove(0);
    assert!(
        client_span.debug && server_span.debug,
        "debug forces sampling even at 0%"
    );
    assert_eq!(seen(&received, "x-b3-flags"), Some("1"));
    assert_eq!(
        seen(&received, "x-b3-sampled"),
        None,
        "debug implies accept"
    );
}

#[tokio::test]
async fn the_single_b3_header_is_answered_in_kind_and_consistent() {
    let chain = chain(100.0, true).await;
    let mut client = connect(chain.a.address(0)).await;
    let received = call(
        &mut client,
        "/echo",
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
    )
    .await;
    let server_span = chain.server_spans.wait_for(1).await.remove(0);
    let expected = format!(
        "80f198ee56343ba864fe8b2a57d3eff7-{}-1-e457b5a2e4d86bd1",
        server_span.id
    );
    assert_eq!(seen(&received, "b3"), Some(expected.as_str()));
    assert_eq!(
        seen(&received, "x-b3-spanid"),
        Some(server_span.id.to_string().as_str())
    );
}

#[tokio::test]
async fn sampling_zero_records_nothing_yet_ids_propagate_unsampled() {
    let chain = chain(0.0, true).await;
    let mut client = connect(chain.a.address(0)).await;
    let received = call(&mut client, "/echo", &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(chain.client_spans.spans().is_empty());
    assert!(chain.server_spans.spans().is_empty());
    assert_eq!(seen(&received, "x-b3-sampled"), Some("0"));
    assert!(seen(&received, "x-b3-traceid").is_some_and(|t| t.len() == 16));
    assert!(seen(&received, "x-b3-spanid").is_some_and(|s| s.len() == 16));
}

#[tokio::test]
async fn a_lone_b3_0_starts_a_new_unsampled_context() {
    let chain = chain(100.0, true).await;
    let mut client = connect(chain.a.address(0)).await;
    let received = call(&mut client, "/echo", &[("b3", "0")]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(chain.client_spans.spans().is_empty(), "the caller said no");
    assert_eq!(seen(&received, "x-b3-sampled"), Some("0"));
    let trace = seen(&received, "x-b3-traceid").expect("fresh ids forwarded");
    let single = seen(&received, "b3").expect("single header kept");
    assert!(
        single.starts_with(trace) && single.ends_with("-0"),
        "{single}"
    );
}

#[tokio::test]
async fn at_50_percent_two_chained_proxies_agree_on_every_request() {
    let chain = chain(50.0, true).await;
    let mut client = connect(chain.a.address(0)).await;
    for _ in 0..1000 {
        call(&mut client, "/echo", &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut clients: Vec<String> = chain
        .client_spans
        .spans()
        .iter()
        .map(|s| s.trace_id.to_string())
        .collect();
    let mut servers: Vec<String> = chain
        .server_spans
        .spans()
        .iter()
        .map(|s| s.trace_id.to_string())
        .collect();
    clients.sort();
    servers.sort();
    assert_eq!(
        clients, servers,
        "the same requests were sampled on both hops"
    );
    assert!(
        (450..=550).contains(&clients.len()),
        "sampled {} of 1000",
        clients.len()
    );
}

#[tokio::test]
async fn spans_carry_envoys_tags() {
    let chain = chain(100.0, true).await;
    let mut client = connect(chain.a.address(0)).await;
    call(
        &mut client,
        "/echo?q=1",
        &[("user-agent", "curl/8"), ("x-request-id", "rid-1")],
    )
    .await;
    let client_span = chain.client_spans.wait_for(1).await.remove(0);
    let server_span = chain.server_spans.wait_for(1).await.remove(0);
    assert_eq!(client_span.name, "backend.mesh", "name = Host");
    assert_eq!(client_span.tag("node_id"), Some("default.web-1"));
    assert_eq!(server_span.tag("node_id"), Some("default.backend-1"));
    assert_eq!(client_span.tag("component"), Some("proxy"));
    assert_eq!(
        client_span.tag("http.url"),
        Some("http://backend.mesh/echo?q=1")
    );
    assert_eq!(client_span.tag("http.method"), Some("GET"));
    assert_eq!(client_span.tag("http.protocol"), Some("HTTP/1.1"));
    assert_eq!(client_span.tag("user_agent"), Some("curl/8"));
    assert_eq!(client_span.tag("peer.address"), Some("127.0.0.1"));
    assert_eq!(client_span.tag("http.status_code"), Some("200"));
    assert_eq!(client_span.tag("response_flags"), Some("-"));
    assert_eq!(client_span.tag("request_size"), Some("0"));
    assert_eq!(client_span.tag("upstream_cluster"), Some("backend"));
    assert!(
        server_span
            .tag("upstream_cluster")
            .is_some_and(|c| c.starts_with("localhost:"))
    );
    assert_eq!(client_span.tag("error"), None);
    assert_eq!(client_span.local_service.as_ref(), "web");
    assert_eq!(client_span.remote_service.as_deref(), Some("backend"));
    assert!(client_span.duration_us > 0);
}

#[tokio::test]
async fn http_url_path_is_cut_at_256_characters() {
    let chain = chain(100.0, true).await;
    let mut client = connect(chain.a.address(0)).await;
    let long = format!("/echo/{}", "a".repeat(400));
    call(&mut client, &long, &[]).await;
    let span = chain.client_spans.wait_for(1).await.remove(0);
    let url = span.tag("http.url").expect("http.url");
    assert_eq!(url.len(), "http://backend.mesh".len() + 256);
}

#[tokio::test]
async fn an_unreachable_upstream_gives_an_error_span_with_503_uf() {
    let sink = Arc::new(Collected::default());
    let dead = format!("127.0.0.1:{}", harness::refused_port());
    let proxy = proxy_with_observer(
        &outbound_yaml(&[dead], "http"),
        tracer("default.web-1", &sink, 100.0, true),
    )
    .await;
    let mut client = connect(proxy.address(0)).await;
    let response = client
        .send_request(
            Request::get("/")
                .header("host", "backend")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    response.into_body().collect().await.expect("body");
    let span = sink.wait_for(1).await.remove(0);
    assert_eq!(span.tag("http.status_code"), Some("503"));
    assert_eq!(span.tag("response_flags"), Some("UF"));
    assert_eq!(span.tag("error"), Some("true"));
    assert!(span.error);
}

#[tokio::test]
async fn malformed_context_never_fails_the_request_and_is_counted() {
    let app = Upstream::start().await;
    let sink = Arc::new(Collected::default());
    let tracer = tracer("default.backend-1", &sink, 100.0, true);
    let proxy = proxy_with_observer(&inbound_yaml(app.address, "http"), tracer.clone()).await;
    let mut client = connect(proxy.address(0)).await;
    let response = client
        .send_request(
            Request::get("/echo")
                .header("host", "web")
                .header("x-b3-traceid", "not-hex-at-all!!")
                .header("x-b3-spanid", "-")
                .header("b3", "x".repeat(1000))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let received = response.headers().clone();
    response.into_body().collect().await.expect("body");
    let span = sink.wait_for(1).await.remove(0);
    assert_eq!(span.parent_id, None, "ignored as a whole: a new root");
    assert_eq!(
        seen(&received, "x-b3-traceid"),
        Some(span.trace_id.to_string().as_str())
    );
    assert_eq!(tracer.invalid_contexts(), 1);
}

#[tokio::test]
async fn tcp_listeners_are_never_traced() {
    let echo = harness::tcp_echo().await;
    let sink = Arc::new(Collected::default());
    let proxy = proxy_with_observer(
        &outbound_yaml(&[echo.to_string()], "tcp"),
        tracer("n", &sink, 100.0, true),
    )
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(proxy.address(0)).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.expect("echo");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(sink.spans().is_empty());
}
