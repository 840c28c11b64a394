//! The HTTP/1.1 fast path (`proxy::h1`): what it does on its own, and that it is the general
//! (hyper) path's equal wherever both can serve a request. Clients speak raw HTTP/1.1 over
//! TCP, so framing, field-name case and connection reuse are seen as sent; upstreams that must
//! misbehave or frame a response a particular way are written by hand. All on loopback, every
//! wait bounded.

mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use harness::raw::{Raw, chunked_end};
use harness::{Collected, Ended, Observed, Upstream, free_port, inbound_yaml, pattern, proxy_with};
use tracecar::proxy::ProxyConfig;
use tracecar::proxy::observe::{End, Exchange, ListenerInfo, Observer};
use tracecar::trace::{Span, Tracer};

/// How long any one read, answer or poll may take before the test fails.
const WAIT: Duration = Duration::from_secs(5);

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: web.local\r\n\r\n").into_bytes()
}

/// A POST with a Content-Length body.
fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: web.local\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

// ---------------------------------------------------------------------------------------------
// A hand-written upstream
// ---------------------------------------------------------------------------------------------

/// A request as the hand-written upstream received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    /// The head as sent by the proxy (field-name case included).
    head: String,
    body: Vec<u8>,
}

/// What the hand-written upstream does with a request.
enum Reply {
    /// Writes these bytes and waits for the next request.
    Send(Vec<u8>),
    /// Writes these bytes and closes the connection.
    SendAndClose(Vec<u8>),
    /// Answers nothing; the connection stays open until the proxy closes it.
    Hang,
}

type Script = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// An HTTP/1.1 upstream whose bytes on the wire are the test's: it reads each request
/// (Content-Length or chunked body) and answers as `script` says.
struct Scripted {
    address: SocketAddr,
    /// Connections accepted.
    accepts: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Scripted {
    async fn start(script: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Scripted {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let upstream = Scripted {
            address: listener.local_addr().expect("address"),
            accepts: Arc::default(),
            received: Arc::default(),
        };
        let (accepts, received) = (upstream.accepts.clone(), upstream.received.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepts.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_scripted(stream, script.clone(), received.clone()));
            }
        });
        upstream
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

async fn serve_scripted(
    mut stream: TcpStream,
    script: Script,
    received: Arc<Mutex<Vec<Received>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // A request head, then its body.
        let parsed = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut fields);
            if let Ok(httparse::Status::Complete(len)) = request.parse(&buf) {
                let field = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let length = field("content-length").and_then(|v| v.trim().parse().ok());
                let chunked = field("transfer-encoding").is_some();
                break (
                    len,
                    request.method.unwrap_or("").to_string(),
                    request.path.unwrap_or("").to_string(),
                    length.unwrap_or(0usize),
                    chunked,
                );
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let (len, method, path, length, chunked) = parsed;
        let head = String::from_utf8_lossy(&buf[..len]).into_owned();
        buf.drain(..len);
        let body = loop {
            if chunked {
                if let Some((end, data)) = chunked_end(&buf) {
                    buf.drain(..end);
                    break data;
                }
            } else if buf.len() >= length {
                break buf.drain(..length).collect();
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let request = Received {
            method,
            path,
            head,
            body,
        };
        if let Ok(mut r) = received.lock() {
            r.push(request.clone());
        }
        match script(&request) {
            Reply::Send(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::SendAndClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
            Reply::Hang => {
                // Until the proxy gives up and closes.
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                }
                return;
            }
        }
    }
}

fn ok(body: &str) -> Reply {
    Reply::Send(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// Proxies
// ---------------------------------------------------------------------------------------------

fn config(fast_path: bool) -> ProxyConfig {
    let mut config = ProxyConfig::default();
    config.limits.http1_fast_path = fast_path;
    config
}

/// An observed inbound proxy in front of `app`, with the fast path on or off.
async fn inbound(app: SocketAddr, fast_path: bool) -> (harness::Proxy, Observed) {
    inbound_with(app, &config(fast_path)).await
}

async fn inbound_with(app: SocketAddr, config: &ProxyConfig) -> (harness::Proxy, Observed) {
    let observed = Observed::default();
    let proxy = proxy_with(
        &inbound_yaml(app, "http"),
        Arc::new(observed.clone()),
        config,
    )
    .await;
    (proxy, observed)
}

/// Exactly `n` exchanges ended.
async fn ends(observed: &Observed, n: usize) -> Vec<Ended> {
    let ends = observed.wait_for(n, WAIT).await;
    assert_eq!(ends.len(), n, "exchanges ended: {ends:?}");
    ends
}

/// Waits until `done` holds, polling; panics after `WAIT`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two observers on one proxy: the real tracer and the end recorder.
struct Both(Arc<dyn Observer>, Arc<dyn Observer>);

struct BothExchanges(Option<Box<dyn Exchange>>, Option<Box<dyn Exchange>>);

impl Observer for Both {
    fn on_request(
        &self,
        listener: &Arc<ListenerInfo>,
        peer: SocketAddr,
        head: &mut tracecar::proxy::observe::Forwarded<'_>,
        started: std::time::Instant,
    ) -> Option<Box<dyn Exchange>> {
        let first = self.0.on_request(listener, peer, head, started);
        let second = self.1.on_request(listener, peer, head, started);
        Some(Box::new(BothExchanges(first, second)))
    }
}

impl Exchange for BothExchanges {
    fn on_response(&mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        for e in [&mut self.0, &mut self.1].into_iter().flatten() {
            e.on_response(status, headers);
        }
    }

    fn on_end(self: Box<Self>, end: &End<'_>) {
        let BothExchanges(first, second) = *self;
        for e in [first, second].into_iter().flatten() {
            e.on_end(end);
        }
    }
}

fn tracer(sink: &Arc<Collected>) -> Arc<Tracer> {
    harness::tracer_into("default.web-1", sink)
}

// ---------------------------------------------------------------------------------------------
// Equivalence with the general path
// ---------------------------------------------------------------------------------------------

/// What one exchange looked like from every side, minus what differs by nature (ids, times,
/// framing the two paths may choose differently).
#[derive(Debug, PartialEq)]
struct Observation {
    status: u16,
    body: Vec<u8>,
    /// Response field names the client got, lower-cased and sorted, framing and Date aside.
    response_fields: Vec<String>,
    /// Request field names the upstream got, sorted.
    upstream_fields: Vec<String>,
    upstream_host: String,
    upstream_method: String,
    sampled: String,
    end: (u16, String, bool, u64, u64),
    span: SpanShape,
}

#[derive(Debug, PartialEq)]
struct SpanShape {
    name: String,
    kind: String,
    has_parent: bool,
    shared: bool,
    error: bool,
    local_service: String,
    tags: Vec<(String, String)>,
}

fn shape(span: &Span) -> SpanShape {
    SpanShape {
        name: span.name.clone(),
        kind: format!("{:?}", span.kind),
        has_parent: span.parent_id.is_some(),
        shared: span.shared,
        error: span.error,
        local_service: span.local_service.to_string(),
        tags: span
            .tags
            .iter()
            .filter(|(k, _)| *k != "guid:x-request-id")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A plain GET and a small Content-Length POST on one connection through a traced, observed
/// inbound in front of `app`, with the fast path on or off.
async fn observe_plain_requests(app: &Upstream, fast_path: bool) -> Vec<Observation> {
    let sink = Arc::new(Collected::default());
    let observed = Observed::default();
    let proxy = proxy_with(
        &inbound_yaml(app.address, "http"),
        Arc::new(Both(tracer(&sink), Arc::new(observed.clone()))),
        &config(fast_path),
    )
    .await;
    let requests: [&[u8]; 2] = [
        b"GET /echo?q=1 HTTP/1.1\r\nHost: web.local\r\nUser-Agent: equivalence/1\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: web.local\r\nUser-Agent: equivalence/1\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    ];
    let mut client = Raw::connect(proxy.address(0)).await;
    let mut answers = Vec::new();
    for request in requests {
        answers.push(client.exchange(request).await);
    }
    let ends = ends(&observed, 2).await;
    let spans = sink.wait_for(2).await;
    answers
        .into_iter()
        .zip(ends)
        .zip(spans)
        .map(|((answer, end), span)| {
            let mut response_fields: Vec<String> = answer
                .headers
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
                .filter(|n| !["content-length", "transfer-encoding", "date"].contains(&n.as_str()))
                .collect();
            response_fields.sort();
            let mut upstream_fields: Vec<String> = answer
                .header("x-seen-headers")
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect();
            upstream_fields.sort();
            Observation {
                status: answer.status,
                body: answer.data.clone(),
                response_fields,
                upstream_fields,
                upstream_host: answer.header("x-seen-host").unwrap_or("").to_string(),
                upstream_method: answer.header("x-seen-method").unwrap_or("").to_string(),
                sampled: answer
                    .header("x-seen-x-b3-sampled")
                    .unwrap_or("")
                    .to_string(),
                end: (
                    end.status,
                    end.flags,
                    end.aborted,
                    end.request_bytes,
                    end.response_bytes,
                ),
                span: shape(&span),
            }
        })
        .collect()
}

#[tokio::test]
async fn plain_requests_look_the_same_on_the_fast_and_the_general_path() {
    // The fast path is an optimisation, not a second proxy: the client, the app, the observer
    // and the tracer must not be able to tell which path served a plain request.
    let app = Upstream::start().await;
    let fast = observe_plain_requests(&app, true).await;
    let general = observe_plain_requests(&app, false).await;
    for (i, observation) in fast.iter().enumerate() {
        let fields = &observation.upstream_fields;
        for expected in [
            "host",
            "x-request-id",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-sampled",
            "x-forwarded-proto",
        ] {
            assert!(
                fields.iter().any(|f| f == expected),
                "request {i}: {expected} not forwarded: {fields:?}"
            );
        }
        assert!(
            !fields.iter().any(|f| f == "connection"),
            "request {i}: Connection forwarded: {fields:?}"
        );
        assert_eq!(observation.upstream_host, "web.local", "request {i}");
        assert_eq!(observation.sampled, "1", "request {i}");
        assert_eq!(observation.status, 200, "request {i}");
    }
    assert_eq!(fast[1].body, b"hello world");
    assert_eq!(fast[1].end.3, 11, "request bytes of the POST");
    assert_eq!(fast, general);
}

#[tokio::test]
async fn a_request_naming_hop_by_hop_fields_in_connection_reaches_the_app_without_them() {
    // The fast path does not remove fields named in Connection itself: it hands such a
    // request to the general path, which must, so nothing hop-by-hop leaks either way.
    let app = Upstream::start().await;
    let (proxy, _observed) = inbound(app.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let answer = client
        .exchange(b"GET /echo HTTP/1.1\r\nHost: web.local\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nX-Kept: 1\r\n\r\n")
        .await;
    assert_eq!(answer.status, 200);
    let seen = answer.header("x-seen-headers").unwrap_or("").to_string();
    assert!(seen.split(',').any(|f| f == "x-kept"), "{seen}");
    assert!(!seen.split(',').any(|f| f == "x-hop"), "{seen}");
    assert!(!seen.split(',').any(|f| f == "connection"), "{seen}");
}

#[tokio::test]
async fn each_request_reaches_the_app_with_only_its_own_fields_after_requests_with_others() {
    // The worker keeps the header maps of requests it forwarded, emptied, for the next ones:
    // nothing of an earlier request may come along, on its connection or on another one.
    let app = Upstream::start().await;
    let (proxy, _observed) = inbound(app.address, true).await;
    let mut many = String::from("GET /echo HTTP/1.1\r\nHost: web.local\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-First-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let second = b"GET /echo HTTP/1.1\r\nHost: web.local\r\nX-Second: 2\r\n\r\n";
    let mut one = Raw::connect(proxy.address(0)).await;
    let mut other = Raw::connect(proxy.address(0)).await;
    assert_eq!(one.exchange(many.as_bytes()).await.status, 200);
    for answer in [one.exchange(second).await, other.exchange(second).await] {
        assert_eq!(answer.status, 200);
        let seen = answer.header("x-seen-headers").unwrap_or("").to_string();
        assert!(seen.split(',').any(|f| f == "x-second"), "{seen}");
        assert!(!seen.split(',').any(|f| f.starts_with("x-first")), "{seen}");
    }
}

#[tokio::test]
async fn a_span_carries_only_its_own_name_and_tags_after_spans_with_others() {
    // A finished span's tag list and name are kept by the thread, emptied, for the next span.
    let app = Upstream::start().await;
    let sink = Arc::new(Collected::default());
    let proxy = proxy_with(
        &inbound_yaml(app.address, "http"),
        tracer(&sink),
        &config(true),
    )
    .await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let first = format!(
        "GET /{} HTTP/1.1\r\nHost: a-long-first-host.example\r\nUser-Agent: {}\r\n\r\n",
        "p".repeat(200),
        "u".repeat(300)
    );
    assert_eq!(client.exchange(first.as_bytes()).await.status, 200);
    let second = b"GET /b HTTP/1.1\r\nHost: b.local\r\n\r\n";
    assert_eq!(client.exchange(second).await.status, 200);
    let spans = sink.wait_for(2).await;
    let span = &spans[1];
    assert_eq!(span.name, "b.local");
    assert_eq!(span.tag("http.url"), Some("http://b.local/b"));
    assert_eq!(span.tag("user_agent"), None);
    assert_eq!(span.tag("node_id"), Some("default.web-1"));
    let keys: Vec<&str> = span.tags.iter().map(|(k, _)| k).collect();
    let mut unique = keys.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(keys.len(), unique.len(), "a tag twice: {keys:?}");
}

// ---------------------------------------------------------------------------------------------
// One connection, several requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_chunked_request_mid_connection_is_handed_over_with_what_was_read_and_all_are_answered_in_order()
 {
    // A connection starts on the fast path and moves to the general path at its first request
    // that is not plain. The bytes already read (the chunked request and the GET written with
    // it) must reach the general path intact, or a request is lost or misread.
    let app = Upstream::start().await;
    let (proxy, observed) = inbound(app.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    assert_eq!(client.exchange(&get("/first")).await.status, 200);
    let mut both = b"POST /chunked HTTP/1.1\r\nHost: web.local\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec();
    both.extend_from_slice(&get("/last"));
    client.send(&both).await;
    let echoed = client.answer(false).await;
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.data, b"hello world");
    assert_eq!(client.answer(false).await.status, 200);
    assert_eq!(
        *app.paths.lock().expect("paths"),
        ["/first", "/chunked", "/last"]
    );
    let ends = ends(&observed, 3).await;
    assert_eq!(ends[1].request_bytes, 11, "{ends:?}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_upstream_connection() {
    // Requests written back to back in one write are read from one buffer: each must be
    // answered in turn, none dropped or answered twice.
    let app = Upstream::start().await;
    let (proxy, observed) = inbound(app.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let mut three = get("/status/201");
    three.extend_from_slice(&get("/status/202"));
    three.extend_from_slice(&get("/status/203"));
    client.send(&three).await;
    for expected in [201, 202, 203] {
        assert_eq!(client.answer(false).await.status, expected);
    }
    let statuses: Vec<u16> = ends(&observed, 3).await.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [201, 202, 203]);
    assert_eq!(app.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_asking_to_close_gets_connection_close_and_the_connection_ends() {
    // `Connection: close` is plain enough for the fast path; it must then say so in the
    // response and close, as RFC 9112 §9.6 asks.
    let app = Upstream::start().await;
    let (proxy, _observed) = inbound(app.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let answer = client
        .exchange(b"GET /echo HTTP/1.1\r\nHost: web.local\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.says_close(), "{}", answer.head);
    assert!(client.closes().await, "the connection stays open");
}

// ---------------------------------------------------------------------------------------------
// Upstream response framings, passed through as sent
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_chunked_response_with_extensions_and_trailers_passes_through_byte_exact() {
    // The fast path does not decode a chunked body, only follows its framing: what the client
    // gets must be exactly what the upstream sent, ending exactly where it ends (or the next
    // response on the connection would be misread), with the decoded size recorded.
    const BODY: &[u8] =
        b"5;name=value\r\nhello\r\n6\r\n world\r\n0;last\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n";
    let upstream = Scripted::start(|r| match r.path.as_str() {
        "/chunked" => {
            let mut bytes =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-More\r\n\r\n"
                    .to_vec();
            bytes.extend_from_slice(BODY);
            Reply::Send(bytes)
        }
        _ => ok("next"),
    })
    .await;
    let (proxy, observed) = inbound(upstream.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let answer = client.exchange(&get("/chunked")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert_eq!(answer.header("trailer"), Some("X-Checksum, X-More"));
    assert_eq!(
        String::from_utf8_lossy(&answer.wire_body),
        String::from_utf8_lossy(BODY)
    );
    assert_eq!(answer.data, b"hello world");
    let next = client.exchange(&get("/next")).await;
    assert_eq!(next.data, b"next");
    let ends = ends(&observed, 2).await;
    assert_eq!(ends[0].response_bytes, 11, "decoded size: {ends:?}");
    assert!(!ends[0].aborted, "{ends:?}");
    assert_eq!(
        upstream.accepts.load(Ordering::SeqCst),
        1,
        "reused after the body"
    );
}

#[tokio::test]
async fn a_close_delimited_response_reaches_the_client_whole_then_the_connection_closes() {
    // Without a length the body ends when the upstream closes. The client can only learn the
    // end the same way, so it must be told `connection: close` and see the close.
    let body = pattern(10_000);
    let sent = body.clone();
    let upstream = Scripted::start(move |_| {
        let mut bytes =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        bytes.extend_from_slice(&sent);
        Reply::SendAndClose(bytes)
    })
    .await;
    let (proxy, observed) = inbound(upstream.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    // Reads to the close: the answer returning at all is the close.
    let answer = client.exchange(&get("/unframed")).await;
    assert_eq!(answer.status, 200);
    assert!(answer.says_close(), "{}", answer.head);
    assert!(answer.header("content-length").is_none(), "{}", answer.head);
    assert!(
        answer.data == body,
        "body differs: {} bytes",
        answer.data.len()
    );
    let end = &ends(&observed, 1).await[0];
    assert_eq!(end.response_bytes, body.len() as u64, "{end:?}");
    assert!(!end.aborted, "{end:?}");
}

#[tokio::test]
async fn a_head_response_with_content_length_has_no_body_and_the_connection_goes_on() {
    // A HEAD response's Content-Length describes the GET's body, not bytes that follow.
    // Waiting for them would hang the connection; forwarding them would desync it.
    let upstream = Scripted::start(|r| match r.method.as_str() {
        "HEAD" => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec()),
        _ => ok("after head"),
    })
    .await;
    let (proxy, observed) = inbound(upstream.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let head = client
        .exchange(b"HEAD /resource HTTP/1.1\r\nHost: web.local\r\n\r\n")
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1234"));
    let next = client.exchange(&get("/resource")).await;
    assert_eq!(next.data, b"after head");
    assert!(client.buf.is_empty(), "stray bytes: {:?}", client.buf);
    let ends = ends(&observed, 2).await;
    assert_eq!(ends[0].response_bytes, 0, "{ends:?}");
    assert_eq!(upstream.accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_204_response_has_no_body_and_the_connection_goes_on() {
    // 204 never has a body whatever its fields say; the next response must follow at once.
    let upstream = Scripted::start(|r| match r.path.as_str() {
        "/empty" => Reply::Send(b"HTTP/1.1 204 No Content\r\nX-Id: 7\r\n\r\n".to_vec()),
        _ => ok("after 204"),
    })
    .await;
    let (proxy, _observed) = inbound(upstream.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let empty = client.exchange(&get("/empty")).await;
    assert_eq!(empty.status, 204);
    assert_eq!(empty.header("x-id"), Some("7"));
    assert_eq!(client.exchange(&get("/next")).await.data, b"after 204");
    assert_eq!(upstream.accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_informational_response_before_the_final_one_is_skipped() {
    // The client sent no `Expect`, so a `100 Continue` means nothing to it: it gets the final
    // response only, as from the general path's client.
    let upstream = Scripted::start(|_| {
        Reply::Send(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
                .to_vec(),
        )
    })
    .await;
    let (proxy, observed) = inbound(upstream.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let answer = client.exchange(&post("/upload", b"data")).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.data, b"final");
    assert_eq!(client.exchange(&get("/again")).await.data, b"final");
    let ends = ends(&observed, 2).await;
    assert!(ends.iter().all(|e| e.status == 200), "{ends:?}");
}

/// Everything the proxy sends on `client` until it closes (at most `WAIT`).
async fn until_closed(client: &mut Raw) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, client.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => client.buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "the connection stays open: {:?}",
                String::from_utf8_lossy(&client.buf)
            ),
        }
    }
    String::from_utf8_lossy(&client.buf).into_owned()
}

/// What a client and the observer see of a chunked response whose first chunk size is not
/// hex, with the fast path on or off.
async fn bad_chunk_size(fast_path: bool) -> (String, Vec<Ended>) {
    let upstream = Scripted::start(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let (proxy, observed) = inbound(upstream.address, fast_path).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    client.send(&get("/")).await;
    let seen = until_closed(&mut client).await;
    (seen, ends(&observed, 1).await)
}

#[tokio::test]
async fn a_malformed_chunked_response_ends_the_exchange_as_on_the_general_path() {
    // The fast path follows chunk framing itself instead of trusting hyper's: a framing error
    // must never pass for a complete body (the connection could desync), and must end the
    // exchange exactly as the general path ends it: the caller's connection closed, the end
    // recorded once as an upstream reset (UC), aborted.
    let fast = bad_chunk_size(true).await;
    let general = bad_chunk_size(false).await;
    assert!(!fast.0.contains("hello"), "{:?}", fast.0);
    assert_eq!(fast.1.len(), 1);
    assert_eq!(fast.1[0].flags, "UC", "{:?}", fast.1);
    assert!(fast.1[0].aborted, "{:?}", fast.1);
    assert_eq!(format!("{fast:?}"), format!("{general:?}"));
}

// ---------------------------------------------------------------------------------------------
// Upstream connections
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_upstream_closing_its_connection_leaves_the_client_connection_open() {
    // `Connection: close` is hop-by-hop: it ends the upstream connection only. The client
    // keeps its own, and the next request goes on a new upstream connection.
    let upstream = Scripted::start(|_| {
        Reply::SendAndClose(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        )
    })
    .await;
    let (proxy, _observed) = inbound(upstream.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    for i in 0..2 {
        let answer = client.exchange(&get("/")).await;
        assert_eq!(answer.status, 200, "request {i}");
        assert!(!answer.says_close(), "request {i}: {}", answer.head);
        assert!(answer.header("connection").is_none(), "{}", answer.head);
    }
    assert_eq!(upstream.accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_while_idle_is_replaced_unnoticed() {
    // An upstream may close an idle keep-alive connection at any time without saying so. A
    // GET sent on it must go again on a fresh connection rather than fail the caller.
    let upstream = Scripted::start(|_| {
        Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
    })
    .await;
    let (proxy, observed) = inbound(upstream.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    for i in 0..3 {
        let answer = client.exchange(&get("/")).await;
        assert_eq!(
            (answer.status, answer.data.as_slice()),
            (200, &b"ok"[..]),
            "request {i}"
        );
    }
    let ends = ends(&observed, 3).await;
    assert!(ends.iter().all(|e| e.flags == "-"), "{ends:?}");
    assert_eq!(upstream.accepts.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------------------
// Request bodies at the limit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bodies_at_and_past_the_fast_path_limit_reach_the_upstream_byte_exact() {
    // MAX_BODY is where buffering stops and streaming begins: a body of exactly the limit is
    // read whole by the fast path, one byte more streams through the general path. Neither
    // side of the boundary may lose, add or reorder a byte. (Which path answered shows in the
    // field-name case: only the fast path keeps the upstream's.)
    let limit = tracecar::proxy::limits::MAX_BODY as usize;
    let upstream = Scripted::start(|r| {
        Reply::Send(
            format!(
                "HTTP/1.1 200 OK\r\nX-Received-Bytes: {}\r\nContent-Length: 0\r\n\r\n",
                r.body.len()
            )
            .into_bytes(),
        )
    })
    .await;
    let (proxy, observed) = inbound(upstream.address, true).await;
    for (size, fast) in [(limit, true), (limit + 1, false)] {
        let body = pattern(size);
        let mut client = Raw::connect(proxy.address(0)).await;
        let answer = client.exchange(&post("/upload", &body)).await;
        assert_eq!(answer.status, 200, "{size} B");
        assert_eq!(
            answer.header("x-received-bytes"),
            Some(size.to_string().as_str())
        );
        assert_eq!(
            answer.head.contains("X-Received-Bytes"),
            fast,
            "{size} B served by the wrong path: {}",
            answer.head
        );
        let received = upstream.received();
        let last = received.last().expect("a request arrived");
        assert!(
            last.body == body,
            "{size} B: the upstream got different bytes"
        );
        // Framed as the client framed it, on both paths: not re-chunked.
        assert!(
            last.head
                .to_ascii_lowercase()
                .contains(&format!("\r\ncontent-length: {size}\r\n")),
            "{size} B: {}",
            last.head
        );
    }
    let ends = ends(&observed, 2).await;
    assert_eq!(ends[0].request_bytes, limit as u64, "{ends:?}");
    assert_eq!(ends[1].request_bytes, limit as u64 + 1, "{ends:?}");
}

// ---------------------------------------------------------------------------------------------
// Local replies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_503_for_an_unreachable_upstream_keeps_the_client_connection_usable() {
    // A local reply is an ordinary response on a keep-alive connection: once the upstream is
    // back, the same client connection is served again.
    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let (proxy, observed) = inbound(address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let down = client.exchange(&get("/echo")).await;
    assert_eq!(down.status, 503);
    assert!(!down.says_close(), "{}", down.head);
    assert_eq!(down.data, b"upstream connect error", "the reason as body");
    let app = Upstream::start_on(&address.to_string()).await;
    let up = client.exchange(&get("/echo")).await;
    assert_eq!(up.status, 200);
    let ends = ends(&observed, 2).await;
    assert_eq!((ends[0].status, ends[0].flags.as_str()), (503, "UF"));
    assert_eq!((ends[1].status, ends[1].flags.as_str()), (200, "-"));
    assert_eq!(app.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_garbage_response_head_gives_503_uc_and_the_proxy_serves_on() {
    // An upstream that answers nonsense is a reset before headers (Envoy's UC); nothing of the
    // nonsense reaches the client, and neither the client's connection nor the proxy suffer.
    let upstream = Scripted::start(|r| match r.path.as_str() {
        "/garbage" => Reply::Send(b"this is \x00 not HTTP at all\r\n\r\n".to_vec()),
        _ => ok("fine"),
    })
    .await;
    let (proxy, observed) = inbound(upstream.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let garbage = client.exchange(&get("/garbage")).await;
    assert_eq!(garbage.status, 503);
    assert!(!String::from_utf8_lossy(&garbage.data).contains("not HTTP"));
    assert_eq!(client.exchange(&get("/fine")).await.data, b"fine");
    let mut other = Raw::connect(proxy.address(0)).await;
    assert_eq!(other.exchange(&get("/fine")).await.data, b"fine");
    let ends = ends(&observed, 3).await;
    assert_eq!((ends[0].status, ends[0].flags.as_str()), (503, "UC"));
}

/// A proxy with a 300 ms request timeout in front of an upstream that never answers `/hang`
/// and answers `fine` to anything else.
async fn with_a_hanging_path(mut config: ProxyConfig) -> (Scripted, harness::Proxy, Observed) {
    let upstream = Scripted::start(|r| match r.path.as_str() {
        "/hang" => Reply::Hang,
        _ => ok("fine"),
    })
    .await;
    config.request_timeout = Some(Duration::from_millis(300));
    let (proxy, observed) = inbound_with(upstream.address, &config).await;
    (upstream, proxy, observed)
}

#[tokio::test]
async fn an_upstream_too_slow_for_the_request_timeout_gets_504_ut_and_the_connection_goes_on() {
    // The request timeout bounds the wait for a response head on the fast path too; the
    // client's connection survives it.
    let (_upstream, proxy, observed) = with_a_hanging_path(config(true)).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let started = std::time::Instant::now();
    let slow = client.exchange(&get("/hang")).await;
    assert_eq!(slow.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.exchange(&get("/fine")).await.data, b"fine");
    let ends = ends(&observed, 2).await;
    assert_eq!((ends[0].status, ends[0].flags.as_str()), (504, "UT"));
}

#[tokio::test]
async fn the_head_read_and_the_upstream_keep_their_own_deadlines_from_request_to_request() {
    // A connection's head read deadline and its upstream deadline are moved per request:
    // after an idle wait the upstream's (300 ms) must not be the head read's (2 s from the
    // start of the wait), and after a forwarded request the head read's must not be the
    // upstream's, long past.
    let mut config = config(true);
    config.limits.header_read_timeout = Duration::from_secs(2);
    let (_upstream, proxy, _observed) = with_a_hanging_path(config).await;

    let mut client = Raw::connect(proxy.address(0)).await;
    assert_eq!(client.exchange(&get("/fine")).await.data, b"fine");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    assert_eq!(client.exchange(&get("/hang")).await.status, 504);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1_500),
        "504 after {waited:?}"
    );

    let started = std::time::Instant::now();
    client.send(b"GET /fine HTTP/1.1\r\nhost: a\r\n").await;
    assert!(client.closes().await, "a head never finished is cut off");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1_800),
        "cut off after {waited:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Drain
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_drain_closes_idle_fast_path_connections_and_lets_in_flight_requests_finish() {
    // Fast-path connections are not hyper's, so hyper's graceful shutdown does not reach
    // them: the fast path must close its idle ones itself, finish the ones in flight, and tell
    // their clients not to send more (`connection: close`).
    let app = Upstream::start().await;
    let (proxy, _observed) = inbound(app.address, true).await;
    let address = proxy.address(0);
    let mut idle = Raw::connect(address).await;
    assert_eq!(idle.exchange(&get("/echo")).await.status, 200);
    let mut busy = Raw::connect(address).await;
    busy.send(&get("/echo?delay_ms=700")).await;
    until("the slow request reached the app", || {
        app.requests.load(Ordering::SeqCst) == 2
    })
    .await;
    let drain = tokio::spawn(proxy.drain(WAIT));
    assert!(idle.closes().await, "the idle connection stays open");
    let answer = busy.answer(false).await;
    assert_eq!(answer.status, 200);
    assert!(answer.says_close(), "{}", answer.head);
    assert!(busy.closes().await, "the drained connection stays open");
    let drained = tokio::time::timeout(WAIT, drain)
        .await
        .expect("the drain ends")
        .expect("the drain task");
    assert!(
        drained,
        "in-flight work did not finish within the drain deadline"
    );
}

// ---------------------------------------------------------------------------------------------
// Response fields
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn response_fields_keep_the_upstream_case_and_lose_what_connection_names() {
    // The fast path copies field names as sent (clients that match case-sensitively keep
    // working), but hop-by-hop fields, including those the upstream's Connection names, are
    // the upstream connection's own and must not reach the client.
    let upstream = Scripted::start(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nX-Custom-Header: Value\r\nConnection: X-Hop, keep-alive\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    })
    .await;
    let (proxy, _observed) = inbound(upstream.address, true).await;
    let mut client = Raw::connect(proxy.address(0)).await;
    let answer = client.exchange(&get("/")).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.head.contains("\r\nX-Custom-Header: Value"),
        "{}",
        answer.head
    );
    for gone in ["x-hop", "keep-alive", "connection"] {
        assert!(
            answer.header(gone).is_none(),
            "{gone} forwarded: {}",
            answer.head
        );
    }
    assert_eq!(answer.data, b"ok");
}
