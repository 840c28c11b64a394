//! A caller that goes away while its request waits for, or reads, the upstream's response
//! (README, The data path and Tracing): the upstream side is cancelled at once (its HTTP/1.1
//! connection closed, never pooled), the span ends with `http.status_code` 0 (or the status
//! already sent), `response_flags: DC` and `error: true`, and the request is counted in
//! `tracecar_requests_total`. The same on the fast path, the general path and h2c. An upstream
//! whose first chunk-size line is malformed is recorded as what the caller got.

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use harness::raw::Raw;
use harness::{Collected, inbound_yaml, metric, proxy_with, tracer_into};
use tracecar::metrics::Metrics;
use tracecar::proxy::ProxyConfig;
use tracecar::proxy::limits::Limits;
use tracecar::trace::Span;

const WAIT: Duration = Duration::from_secs(5);

/// What a hand-written upstream sees of each connection.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A whole request head arrived.
    Request,
    /// The proxy closed the connection.
    Closed,
}

/// An upstream that answers each request with `answer` (possibly nothing, or a response cut
/// short) and then keeps the connection open, reporting what it sees.
async fn upstream(answer: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Seen::Closed);
                            return;
                        }
                        Ok(n) => read.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        read.drain(..end + 4);
                        let _ = tx.send(Seen::Request);
                        let _ = stream.write_all(answer).await;
                    }
                }
            });
        }
    });
    (address, rx)
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>, within: Duration) -> Option<Seen> {
    tokio::time::timeout(within, seen.recv())
        .await
        .ok()
        .flatten()
}

struct Traced {
    address: SocketAddr,
    sink: Arc<Collected>,
    metrics: Arc<Metrics>,
    _proxy: harness::Proxy,
}

async fn traced_proxy(app: SocketAddr, fast_path: bool) -> Traced {
    let sink = Arc::new(Collected::default());
    let tracer = tracer_into("default.web-1", &sink);
    let metrics = Metrics::new();
    let config = ProxyConfig {
        metrics: Some(metrics.clone()),
        limits: Limits {
            http1_fast_path: fast_path,
            ..Limits::default()
        },
        ..ProxyConfig::default()
    };
    let proxy = proxy_with(&inbound_yaml(app, "http"), tracer, &config).await;
    Traced {
        address: proxy.address(0),
        sink,
        metrics,
        _proxy: proxy,
    }
}

impl Traced {
    async fn span(&self) -> Span {
        self.sink.wait_for(1).await.remove(0)
    }

    fn requests(&self, status: &str) -> Option<f64> {
        metric(
            &self.metrics.encode(),
            "tracecar_requests_total",
            &[("status_code", status)],
        )
    }
}

fn assert_caller_left(span: &Span, status: &str) {
    assert_eq!(span.tag("http.status_code"), Some(status), "{span:?}");
    assert_eq!(span.tag("response_flags"), Some("DC"), "{span:?}");
    assert!(span.error, "a caller that left is an error: {span:?}");
    assert_eq!(span.tag("error"), Some("true"), "{span:?}");
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: web\r\n\r\n";

/// The caller sends its request, the upstream takes it and says nothing; the caller leaves.
async fn caller_leaves_before_the_response_head(fast_path: bool) {
    let (app, mut seen) = upstream(b"").await;
    let proxy = traced_proxy(app, fast_path).await;
    let mut caller = TcpStream::connect(proxy.address).await.expect("connect");
    caller.write_all(GET).await.expect("write");
    assert_eq!(next(&mut seen, WAIT).await, Some(Seen::Request));
    drop(caller);

    let span = proxy.span().await;
    // The span ends as the proxy lets go of the upstream: its connection is closed then.
    assert_eq!(
        next(&mut seen, Duration::from_millis(100)).await,
        Some(Seen::Closed),
        "the upstream connection is closed when the caller leaves"
    );
    assert_caller_left(&span, "0");
    assert_eq!(proxy.requests("0"), Some(1.0), "counted with code 0");
}

#[tokio::test]
async fn fast_path_a_caller_that_leaves_before_the_head_cancels_the_upstream() {
    caller_leaves_before_the_response_head(true).await;
}

#[tokio::test]
async fn general_path_a_caller_that_leaves_before_the_head_cancels_the_upstream() {
    caller_leaves_before_the_response_head(false).await;
}

/// The upstream sends the head and the first chunk, then nothing; the caller reads the head
/// and leaves.
async fn caller_leaves_mid_body(fast_path: bool) {
    let (app, mut seen) =
        upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").await;
    let proxy = traced_proxy(app, fast_path).await;
    let mut caller = TcpStream::connect(proxy.address).await.expect("connect");
    caller.write_all(GET).await.expect("write");
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, caller.read_exact(&mut head))
        .await
        .expect("the head in time")
        .expect("the head");
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_eq!(next(&mut seen, WAIT).await, Some(Seen::Request));
    drop(caller);

    let span = proxy.span().await;
    assert_eq!(
        next(&mut seen, Duration::from_millis(100)).await,
        Some(Seen::Closed),
        "the upstream connection is closed when the caller leaves"
    );
    assert_caller_left(&span, "200");
    assert_eq!(
        proxy.requests("200"),
        Some(1.0),
        "counted with the status sent"
    );
}

#[tokio::test]
async fn fast_path_a_caller_that_leaves_mid_body_cancels_the_upstream() {
    caller_leaves_mid_body(true).await;
}

#[tokio::test]
async fn general_path_a_caller_that_leaves_mid_body_cancels_the_upstream() {
    caller_leaves_mid_body(false).await;
}

#[tokio::test]
async fn a_pipelined_request_behind_a_caller_that_left_never_reaches_the_upstream() {
    let (app, mut seen) = upstream(b"").await;
    let proxy = traced_proxy(app, true).await;
    let mut caller = TcpStream::connect(proxy.address).await.expect("connect");
    let mut two = GET.to_vec();
    two.extend_from_slice(b"GET /y HTTP/1.1\r\nHost: web\r\n\r\n");
    caller.write_all(&two).await.expect("write");
    assert_eq!(next(&mut seen, WAIT).await, Some(Seen::Request));
    drop(caller);

    let span = proxy.span().await;
    assert_caller_left(&span, "0");
    // The first request's connection closes; the second request is never sent anywhere.
    assert_eq!(next(&mut seen, WAIT).await, Some(Seen::Closed));
    assert_eq!(next(&mut seen, Duration::from_millis(300)).await, None);
    assert_eq!(proxy.sink.spans().len(), 1, "one request, one span");
}

#[tokio::test]
async fn h2c_a_caller_that_resets_before_the_head_cancels_the_upstream() {
    let (app, mut seen) = upstream(b"").await;
    let proxy = traced_proxy(app, true).await;
    let stream = TcpStream::connect(proxy.address).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get("http://web/x")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let call = tokio::spawn(async move { sender.send_request(request).await });
    assert_eq!(next(&mut seen, WAIT).await, Some(Seen::Request));
    // Abandoning the call resets its stream.
    call.abort();

    let span = proxy.span().await;
    assert_eq!(
        next(&mut seen, Duration::from_millis(100)).await,
        Some(Seen::Closed)
    );
    assert_caller_left(&span, "0");
    assert_eq!(proxy.requests("0"), Some(1.0), "counted with code 0");
    connection.abort();
}

/// Nothing of the response reached the caller when the first chunk-size line is garbage:
/// the span and the metrics say what the caller got instead.
async fn a_malformed_first_chunk_is_recorded_as_what_the_caller_got(fast_path: bool) {
    let (app, _seen) =
        upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
            .await;
    let proxy = traced_proxy(app, fast_path).await;
    let mut caller = Raw::connect(proxy.address).await;
    caller.send(GET).await;
    // Either a local reply, or the connection closed with nothing.
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(WAIT, caller.stream.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
    }
    let received = String::from_utf8_lossy(&received).into_owned();
    let span = proxy.span().await;
    let status = span.tag("http.status_code").unwrap_or("").to_string();
    assert_eq!(span.tag("response_flags"), Some("UC"), "{span:?}");
    if received.is_empty() {
        assert_eq!(status, "0", "nothing reached the caller: {span:?}");
        assert!(span.error, "no response is an error: {span:?}");
    } else {
        // Whatever status line went out is the one recorded.
        assert!(
            received.starts_with(&format!("HTTP/1.1 {status} ")),
            "the span says {status}, the caller got {received:?}"
        );
    }
    assert_eq!(proxy.requests(&status), Some(1.0), "counted as {status}");
}

#[tokio::test]
async fn fast_path_a_malformed_first_chunk_is_recorded_as_what_the_caller_got() {
    a_malformed_first_chunk_is_recorded_as_what_the_caller_got(true).await;
}

#[tokio::test]
async fn general_path_a_malformed_first_chunk_is_recorded_as_what_the_caller_got() {
    a_malformed_first_chunk_is_recorded_as_what_the_caller_got(false).await;
}
