//! Upstream faults: an upstream that closes mid-body, resets h2 streams, hangs, or flaps. The
//! caller always gets a clean error (a status, or a body that fails) within the timeout, and
//! every exchange ends exactly once, counted with the right response flags.

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use harness::{Ended, Observed, Upstream, free_port, outbound_yaml, proxy_with};
use tracecar::proxy::ProxyConfig;

/// What a caller saw of one request: the status, and the body or how it failed.
#[derive(Debug)]
struct Seen {
    status: u16,
    body: Result<Bytes, String>,
}

/// One GET on a fresh HTTP/1.1 (or h2c) connection to the proxy, bounded by `limit`.
async fn get(address: SocketAddr, path: &str, h2: bool, limit: Duration) -> Seen {
    let call = async {
        let stream = TcpStream::connect(address).await.expect("connect");
        let io = TokioIo::new(stream);
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(connection);
            let request = Request::get(format!("http://backend{path}"))
                .body(Empty::<Bytes>::new())
                .expect("request");
            sender.send_request(request).await
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(connection);
            let request = Request::get(path)
                .header("host", "backend")
                .body(Empty::<Bytes>::new())
                .expect("request");
            sender.send_request(request).await
        };
        let response = response.expect("a response head");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string());
        Seen { status, body }
    };
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no clean end within {limit:?}"))
}

/// A proxy with one outbound to `endpoints` speaking `protocol` upstream, observed.
async fn observed_proxy(
    endpoints: &[String],
    protocol: &str,
    config: &ProxyConfig,
) -> (harness::Proxy, Observed) {
    let observed = Observed::default();
    let proxy = proxy_with(
        &outbound_yaml(endpoints, protocol),
        Arc::new(observed.clone()),
        config,
    )
    .await;
    (proxy, observed)
}

/// Exactly `n` exchanges ended (waiting up to 5 s, then checking that no extra end follows).
async fn ends(observed: &Observed, n: usize) -> Vec<Ended> {
    let ends = observed.wait_for(n, Duration::from_secs(5)).await;
    assert_eq!(ends.len(), n, "exchanges ended: {ends:?}");
    ends
}

// ---------------------------------------------------------------------------------------------
// Closing mid-body
// ---------------------------------------------------------------------------------------------

/// An HTTP/1.1 upstream that answers every request with `Content-Length: 1000`, sends 10 bytes
/// of it, and closes the connection.
async fn closing_mid_body_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

async fn closing_mid_body(h2_caller: bool) {
    let upstream = closing_mid_body_upstream().await;
    let (proxy, observed) =
        observed_proxy(&[upstream.to_string()], "http", &ProxyConfig::default()).await;
    for i in 0..10 {
        let seen = get(proxy.address(0), "/", h2_caller, Duration::from_secs(5)).await;
        assert_eq!(seen.status, 200, "request {i}");
        assert!(
            seen.body.is_err(),
            "request {i}: 10 of 1000 bytes must not look complete: {seen:?}"
        );
    }
    for end in ends(&observed, 10).await {
        assert_eq!(end.status, 200, "{end:?}");
        assert_eq!(end.flags, "UC", "{end:?}");
        assert!(end.aborted, "{end:?}");
        assert_eq!(end.response_bytes, 10, "{end:?}");
    }
}

#[tokio::test]
async fn upstream_closing_mid_body_fails_the_http1_callers_body_and_ends_once_with_uc() {
    // The head (200, Content-Length 1000) is already on its way: all the proxy can do is cut
    // the caller's connection short so the truncation shows, and record the abort once.
    closing_mid_body(false).await;
}

#[tokio::test]
async fn upstream_closing_mid_body_resets_the_h2_callers_stream_and_ends_once_with_uc() {
    // The same for an h2 caller: its stream is reset, the connection lives on.
    closing_mid_body(true).await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 upstreams that reset streams or hang
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum H2Fault {
    /// RST_STREAM instead of a response.
    ResetBeforeResponse,
    /// 200, 10 bytes of body, then RST_STREAM.
    ResetMidBody,
    /// Accepts the stream and never answers.
    Hang,
    /// Answers the first stream of each connection with 200 and refuses every later one
    /// (`REFUSED_STREAM`), as a server does that takes a set number of requests per
    /// connection.
    RefuseAfterFirst,
}

/// An h2c upstream that commits `fault` on every stream.
async fn h2_upstream(fault: H2Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else {
                    return;
                };
                let mut hanging = Vec::new();
                let mut streams = 0;
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    streams += 1;
                    match fault {
                        H2Fault::RefuseAfterFirst if streams > 1 => {
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                        }
                        H2Fault::RefuseAfterFirst => {
                            let _ = respond.send_response(Response::new(()), true);
                        }
                        H2Fault::ResetBeforeResponse => {
                            respond.send_reset(h2::Reason::INTERNAL_ERROR);
                        }
                        H2Fault::ResetMidBody => {
                            tokio::spawn(async move {
                                let Ok(mut body) = respond.send_response(Response::new(()), false)
                                else {
                                    return;
                                };
                                let _ = body.send_data(Bytes::from_static(b"0123456789"), false);
                                // Let the data go out before the reset discards what is queued.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                body.send_reset(h2::Reason::INTERNAL_ERROR);
                            });
                        }
                        H2Fault::Hang => hanging.push((request, respond)),
                    }
                }
            });
        }
    });
    address
}

/// Ten GETs, one after another on one keep-alive connection, through a proxy to an h2
/// upstream committing `fault`: each is answered with `status` within 5 s. Returns how the ten
/// exchanges ended.
async fn ten_gets_answered(fault: H2Fault, status: u16) -> Vec<Ended> {
    let upstream = h2_upstream(fault).await;
    let (proxy, observed) =
        observed_proxy(&[upstream.to_string()], "http2", &ProxyConfig::default()).await;
    let mut client = harness::Client::connect(proxy.address(0))
        .await
        .expect("connect");
    for i in 0..10 {
        let answer = tokio::time::timeout(Duration::from_secs(5), client.get("/"))
            .await
            .expect("an answer within 5 s");
        assert_eq!(answer.map(|a| a.0), Ok(status), "request {i}");
    }
    ends(&observed, 10).await
}

#[tokio::test]
async fn h2_upstream_resetting_streams_before_the_response_gives_503_uc() {
    // Envoy's "upstream reset before response started": a local 503 with UC, and the shared
    // h2 connection to the upstream keeps serving the next streams.
    for end in ten_gets_answered(H2Fault::ResetBeforeResponse, 503).await {
        assert_eq!((end.status, end.flags.as_str()), (503, "UC"), "{end:?}");
        assert!(!end.aborted, "a local reply ends normally: {end:?}");
    }
}

#[tokio::test]
async fn a_get_the_h2_upstream_refused_goes_again_on_a_new_connection() {
    // A refused stream was never processed (RFC 9113 §8.7): the caller gets the answer of a
    // new connection, not a 503. Servers that close a connection after N requests (nginx's
    // default is 1,000) refuse the streams that were already on their way.
    for end in ten_gets_answered(H2Fault::RefuseAfterFirst, 200).await {
        assert_eq!((end.status, end.flags.as_str()), (200, "-"), "{end:?}");
    }
}

#[tokio::test]
async fn h2_upstream_resetting_a_stream_mid_body_fails_the_callers_body_with_uc() {
    // The response started: the caller's body must fail rather than end as if complete.
    let upstream = h2_upstream(H2Fault::ResetMidBody).await;
    let (proxy, observed) =
        observed_proxy(&[upstream.to_string()], "http2", &ProxyConfig::default()).await;
    for i in 0..10 {
        let seen = get(proxy.address(0), "/", false, Duration::from_secs(5)).await;
        assert_eq!(seen.status, 200, "request {i}");
        assert!(seen.body.is_err(), "request {i}: {seen:?}");
    }
    for end in ends(&observed, 10).await {
        assert_eq!((end.status, end.flags.as_str()), (200, "UC"), "{end:?}");
        assert!(end.aborted, "{end:?}");
        assert_eq!(end.response_bytes, 10, "{end:?}");
    }
}

/// Ten concurrent GETs through a proxy whose request timeout is 300 ms to `upstream`, which
/// never answers: each gets a 504 soon after the timeout, and ends once with UT.
async fn hanging(upstream: SocketAddr, protocol: &str) {
    let timeout = Duration::from_millis(300);
    let config = ProxyConfig {
        request_timeout: Some(timeout),
        ..ProxyConfig::default()
    };
    let (proxy, observed) = observed_proxy(&[upstream.to_string()], protocol, &config).await;
    let started = Instant::now();
    let calls = (0..10).map(|_| get(proxy.address(0), "/", false, Duration::from_secs(3)));
    for seen in futures_util::future::join_all(calls).await {
        assert_eq!(seen.status, 504, "{seen:?}");
        assert!(seen.body.is_ok(), "{seen:?}");
    }
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout * 4,
        "{took:?} for a {timeout:?} timeout"
    );
    for end in ends(&observed, 10).await {
        assert_eq!((end.status, end.flags.as_str()), (504, "UT"), "{end:?}");
    }
}

#[tokio::test]
async fn hanging_http1_upstream_gives_504_ut_at_the_request_timeout() {
    // Accepts, reads, never writes: only the proxy's timeout stands between the caller and a
    // request that never ends.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    hanging(address, "http").await;
}

#[tokio::test]
async fn hanging_h2_upstream_gives_504_ut_at_the_request_timeout() {
    // The same on a multiplexed h2 connection: the hung streams are cancelled, not the others.
    hanging(h2_upstream(H2Fault::Hang).await, "http2").await;
}

// ---------------------------------------------------------------------------------------------
// Flapping endpoints
// ---------------------------------------------------------------------------------------------

/// An HTTP/1.1 endpoint that is up for `up` (answering 200), then down for `down` (not
/// listening; its connections closed gracefully, after the response in flight), and so on
/// until dropped.
struct Flapping {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Flapping {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn flapping(up: Duration, down: Duration) -> Flapping {
    let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok(listener) = TcpListener::bind(address).await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let graceful = hyper_util::server::graceful::GracefulShutdown::new();
            let until = tokio::time::sleep(up);
            tokio::pin!(until);
            loop {
                tokio::select! {
                    _ = &mut until => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let counter = counter.clone();
                        let service = hyper::service::service_fn(move |_: Request<hyper::body::Incoming>| {
                            counter.fetch_add(1, Ordering::SeqCst);
                            async { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
                        });
                        let connection = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            let _ = connection.await;
                        });
                    }
                }
            }
            drop(listener);
            let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
            tokio::time::sleep(down).await;
        }
    });
    // Up before the first request.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Flapping {
        address,
        requests,
        task,
    }
}

/// 200 GETs, 4 callers × 50 on their own keep-alive connections, paced so that they span
/// several flaps. Returns every status; panics if any request got no answer.
async fn two_hundred_requests(address: SocketAddr) -> Vec<u16> {
    let callers = (0..4).map(|_| async move {
        let mut client = harness::Client::connect(address).await.expect("connect");
        let mut statuses = Vec::new();
        for i in 0..50 {
            let answer = tokio::time::timeout(Duration::from_secs(5), client.get("/"))
                .await
                .unwrap_or_else(|_| panic!("request {i}: no answer within 5 s"));
            statuses.push(answer.expect("an answer").0);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        statuses
    });
    futures_util::future::join_all(callers).await.concat()
}

/// Endpoints marked down are tried again after 20 ms, so flaps are noticed both ways.
fn flapping_config() -> ProxyConfig {
    let mut config = ProxyConfig::default();
    config.upstream.retry_after = Duration::from_millis(20);
    config
}

/// An HTTP/1.1 endpoint that answers the first request of each connection (keep-alive), and
/// closes the connection when the next one arrives, without answering: a keep-alive close
/// crossing the proxy's reuse of the connection, made deterministic. Counts answered requests.
async fn closing_idle_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buf = [0u8; 4096];
                for answer in [true, false] {
                    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.extend_from_slice(&buf[..n]),
                        }
                    }
                    received.clear();
                    if answer {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
                // Second request: closed unanswered.
            });
        }
    });
    (address, answered)
}

#[tokio::test]
async fn a_get_on_a_pooled_connection_the_endpoint_closed_is_retried_on_a_new_one() {
    // The keep-alive race behind a flapping (or idle-timing-out) endpoint: the endpoint closes
    // an idle connection just as the proxy sends the next request on it. Nothing was answered,
    // and a GET is idempotent, so it may be retried automatically (RFC 9110 §9.2.2, RFC 9112
    // §9.3.1); the caller should not pay for the proxy's choice of connection with a 503.
    let (upstream, answered) = closing_idle_upstream().await;
    let (proxy, observed) =
        observed_proxy(&[upstream.to_string()], "http", &ProxyConfig::default()).await;
    let mut client = harness::Client::connect(proxy.address(0))
        .await
        .expect("connect");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = tokio::time::timeout(Duration::from_secs(5), client.get("/"))
            .await
            .expect("an answer within 5 s");
        statuses.push(answer.expect("an answer").0);
    }
    let ends = ends(&observed, 4).await;
    assert_eq!(statuses, [200, 200, 200, 200], "ends: {ends:?}");
    assert_eq!(answered.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn flapping_endpoint_next_to_a_steady_one_every_request_succeeds() {
    // With one endpoint always up, a flapping neighbour must cost nothing: refused connects go
    // to the next endpoint, and connections it closed while idle are not used.
    let steady = Upstream::start().await;
    let flapper = flapping(Duration::from_millis(5), Duration::from_millis(5)).await;
    let (proxy, observed) = observed_proxy(
        &[steady.address.to_string(), flapper.address.to_string()],
        "http",
        &flapping_config(),
    )
    .await;
    let statuses = two_hundred_requests(proxy.address(0)).await;
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    let ends = ends(&observed, 200).await;
    let flags: Vec<_> = ends.iter().filter(|e| e.flags != "-").collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {failed:?}; flags: {flags:?}",
        failed.len()
    );
    assert!(flags.is_empty(), "{flags:?}");
    assert!(
        flapper.requests.load(Ordering::SeqCst) > 0,
        "the flapping endpoint was never used: the test proves nothing"
    );
}

#[tokio::test]
async fn two_flapping_endpoints_every_request_gets_2xx_or_503() {
    // When both may be down at once some requests fail, but each gets an answer — 200, or a
    // 503 that says why (UF: refused; UC: closed under it) — and is counted once.
    let a = flapping(Duration::from_millis(10), Duration::from_millis(20)).await;
    let b = flapping(Duration::from_millis(25), Duration::from_millis(15)).await;
    let (proxy, observed) = observed_proxy(
        &[a.address.to_string(), b.address.to_string()],
        "http",
        &flapping_config(),
    )
    .await;
    let statuses = two_hundred_requests(proxy.address(0)).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    let ends = ends(&observed, 200).await;
    for end in &ends {
        match end.status {
            200 => assert_eq!(end.flags, "-", "{end:?}"),
            503 => assert!(end.flags == "UF" || end.flags == "UC", "{end:?}"),
            _ => panic!("{end:?}"),
        }
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let ok_ends = ends.iter().filter(|e| e.status == 200).count();
    assert_eq!(ok, ok_ends, "answers and ends disagree");
    eprintln!("{ok} of 200 succeeded");
    assert!(ok > 0, "no request succeeded: the endpoints were never up?");
}
