//! Test harness: a real upstream HTTP server, a TCP echo server, and tracecar proxies started
//! in-process from Dataplane YAML, all on loopback.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use tracecar::proxy::observe::{End, Exchange, ListenerInfo, Observer};
use tracecar::proxy::{ProxyConfig, Running};

pub mod export;
pub mod grpc;
pub mod otlp;
pub mod raw;

/// A free loopback port (bound, read, released).
/// A port that was free a moment ago. The Dataplane validator wants real ports (1–65535), so
/// a proxy cannot be told to bind port 0. The same port is never handed out twice in one test
/// binary, since tests ask for several before binding any.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A loopback port where every connection is refused, for as long as the test binary runs. A
/// port that was merely free a moment ago (`free_port`) can be taken meanwhile by any bind to
/// port 0 or any outgoing connection's source port, and a "down" collector or endpoint then
/// answers, or hangs. Here a TCP socket stays bound to the port without listening: the kernel
/// gives the port to no one else, and a connection to it gets a reset.
pub fn refused_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<socket2::Socket>> = std::sync::Mutex::new(Vec::new());
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind an ephemeral port");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a bound address")
        .port();
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(socket);
    port
}

/// Deterministic bytes, so corruption anywhere shows.
pub fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

type TestBody = BoxBody<Bytes, hyper::Error>;

/// The application behind the proxy. Routes:
/// - `/echo[?delay_ms=N]`: streams the request body back; reports what it saw in `x-seen-*`.
/// - `/status/N`: answers status N.
/// - `/trailers`: echoes the body, adds response trailers, echoes a request trailer.
/// - `/ws`: a WebSocket echo.
pub struct Upstream {
    pub address: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    /// The path of every request that arrived, in order.
    pub paths: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(address: &str) -> Upstream {
        let listener = TcpListener::bind(address).await.expect("bind upstream");
        let upstream = Upstream {
            address: listener.local_addr().expect("address"),
            connections: Arc::default(),
            requests: Arc::default(),
            max_in_flight: Arc::default(),
            paths: Arc::default(),
        };
        let connections = upstream.connections.clone();
        let requests = upstream.requests.clone();
        let max_in_flight = upstream.max_in_flight.clone();
        let paths = upstream.paths.clone();
        let in_flight = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let requests = requests.clone();
                let in_flight = in_flight.clone();
                let max_in_flight = max_in_flight.clone();
                let paths = paths.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        requests.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut paths) = paths.lock() {
                            paths.push(req.uri().path().to_string());
                        }
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max_in_flight.fetch_max(now, Ordering::SeqCst);
                        let in_flight = in_flight.clone();
                        async move {
                            let response = route(req).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            response
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        upstream
    }
}

fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn route(mut req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if let Some(ms) = query
        .strip_prefix("delay_ms=")
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = path.strip_prefix("/status/") {
        let status = status
            .parse::<u16>()
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok());
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = status.unwrap_or(StatusCode::BAD_REQUEST);
        return Ok(response);
    }
    if path == "/ws" {
        return Ok(websocket_echo(&mut req));
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let seen_headers: Vec<String> = req
        .headers()
        .keys()
        .map(|k| k.as_str().to_string())
        .collect();
    let mut builder = Response::builder()
        .header("x-seen-method", req.method().as_str())
        .header("x-seen-host", host)
        .header("x-seen-version", format!("{:?}", req.version()))
        .header("x-seen-headers", seen_headers.join(","));
    for (name, value) in req.headers() {
        if name.as_str().starts_with("x-b3-") || name == "b3" || name == "x-request-id" {
            builder = builder.header(format!("x-seen-{}", name.as_str()), value.clone());
        }
    }
    if path == "/trailers" {
        let collected = req.into_body().collect().await;
        let Ok(collected) = collected else {
            return Ok(Response::new(full(Bytes::new())));
        };
        let request_trailer = collected
            .trailers()
            .and_then(|t| t.get("x-request-trailer").cloned())
            .unwrap_or_else(|| http::HeaderValue::from_static("missing"));
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-response-trailer", http::HeaderValue::from_static("done"));
        trailers.insert("x-echoed-request-trailer", request_trailer);
        let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = vec![
            Ok(Frame::data(collected.to_bytes())),
            Ok(Frame::trailers(trailers)),
        ];
        let body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)));
        return Ok(builder.body(body).expect("response"));
    }
    // Echo: stream the request body straight back.
    Ok(builder.body(req.into_body().boxed()).expect("response"))
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<TestBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return Response::builder()
            .status(400)
            .body(full(Bytes::new()))
            .expect("response");
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        let Ok(upgraded) = upgrade.await else { return };
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
            if socket.send(message).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .expect("response")
}

/// A TCP server that echoes every byte back.
pub async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

/// A Dataplane with one inbound in front of `app`.
pub fn inbound_yaml(app: SocketAddr, protocol: &str) -> String {
    inbound_yaml_on(free_port(), app, protocol)
}

/// A Dataplane with one inbound on `port` in front of `app`.
pub fn inbound_yaml_on(port: u16, app: SocketAddr, protocol: &str) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {port}\n      servicePort: {}\n      tags: {{kuma.io/service: web, kuma.io/protocol: {protocol}}}\n",
        app.port()
    )
}

/// A Dataplane with a placeholder inbound and one outbound to `endpoints`.
pub fn outbound_yaml(endpoints: &[String], protocol: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {}\n      servicePort: {}\n      tags: {{kuma.io/service: web, kuma.io/protocol: tcp}}\n  outbound:\n    - port: {}\n      tags: {{kuma.io/service: backend, kuma.io/protocol: {protocol}}}\n      endpoints: [{}]\n",
        free_port(),
        free_port(),
        free_port(),
        endpoints.join(", ")
    )
}

/// A running proxy; `address(i)` is the i-th listener of interest (outbound-only proxies
/// index their outbound as 0).
pub struct Proxy {
    pub running: Running,
    skip: usize,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// The i-th listener of interest.
    pub fn address(&self, i: usize) -> SocketAddr {
        self.running.addresses[self.skip + i]
    }

    /// Every bound listener, in order: inbounds, then outbounds.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.running.addresses
    }

    /// Stops accepting and waits for in-flight exchanges; whether they finished in time.
    pub async fn drain(self, deadline: std::time::Duration) -> bool {
        self.running.drain(deadline).await
    }
}

pub async fn proxy_with(yaml: &str, observer: Arc<dyn Observer>, config: &ProxyConfig) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dataplane.yaml");
    std::fs::write(&file, yaml).expect("write dataplane");
    let (dataplane, _) = tracecar::policy::load::load_dataplane(&file)
        .unwrap_or_else(|problems| panic!("dataplane does not load: {problems:?}"));
    let violations = tracecar::policy::validate::validate_dataplane(&dataplane);
    assert!(
        violations.iter().all(|v| v.warning),
        "test dataplane is invalid: {violations:?}"
    );
    let effective = tracecar::policy::PolicySet::default().effective(&dataplane, 1);
    let running = tracecar::proxy::start(&dataplane, &effective, observer, config)
        .await
        .expect("proxy starts");
    // Outbound-only test proxies carry a placeholder inbound first.
    let skip = usize::from(!dataplane.spec.networking().outbound.is_empty());
    Proxy {
        running,
        skip,
        _dir: dir,
    }
}

pub async fn proxy_with_observer(yaml: &str, observer: Arc<dyn Observer>) -> Proxy {
    proxy_with(yaml, observer, &ProxyConfig::default()).await
}

pub async fn inbound_proxy(app: &Upstream, protocol: &str) -> Proxy {
    proxy_with_observer(
        &inbound_yaml(app.address, protocol),
        Arc::new(tracecar::proxy::observe::NoObserver),
    )
    .await
}

pub async fn outbound_proxy(endpoints: &[String], protocol: &str) -> Proxy {
    proxy_with_observer(
        &outbound_yaml(endpoints, protocol),
        Arc::new(tracecar::proxy::observe::NoObserver),
    )
    .await
}

/// An observer that records how each exchange ended.
#[derive(Clone, Default)]
pub struct Observed {
    ends: Arc<Mutex<Vec<Ended>>>,
}

#[derive(Clone, Debug)]
pub struct Ended {
    pub status: u16,
    pub flags: String,
    pub aborted: bool,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

struct Recording(Arc<Mutex<Vec<Ended>>>);

impl Observer for Observed {
    fn on_request(
        &self,
        _: &Arc<ListenerInfo>,
        _: SocketAddr,
        _: &mut tracecar::proxy::observe::Forwarded<'_>,
        _: std::time::Instant,
    ) -> Option<Box<dyn Exchange>> {
        Some(Box::new(Recording(self.ends.clone())))
    }
}

impl Exchange for Recording {
    fn on_end(self: Box<Self>, end: &End<'_>) {
        if let Ok(mut ends) = self.0.lock() {
            ends.push(Ended {
                status: end.status,
                flags: end.response_flags.to_string(),
                aborted: end.aborted,
                request_bytes: end.request_bytes,
                response_bytes: end.response_bytes,
            });
        }
    }
}

impl Observed {
    /// Every exchange that ended so far, in the order they ended.
    pub fn ends(&self) -> Vec<Ended> {
        self.ends.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Waits up to `within` for `n` exchanges to end, then a little longer so that an extra
    /// (double) end would show; returns every end seen.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Ended> {
        let deadline = tokio::time::Instant::now() + within;
        while self.ends().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.ends()
    }

    /// The first exchange to end, waiting up to 5 s.
    pub async fn wait_one(&self) -> Ended {
        for _ in 0..500 {
            if let Some(e) = self.ends.lock().ok().and_then(|e| e.first().cloned()) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no exchange ended within 5 s");
    }
}

// ---------------------------------------------------------------------------------------------
// A Zipkin collector, HTTP clients, policy files, and the real binary: shared by the export,
// reload, shutdown and admin tests.
// ---------------------------------------------------------------------------------------------

/// How an in-test Zipkin collector answers a POST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 202 Accepted at once, as Zipkin and Jaeger do.
    Accept,
    /// 202 Accepted, after this long.
    Slow(Duration),
    /// This status at once (429, 500, 400, …).
    Status(u16),
}

/// A Zipkin collector on loopback (`POST /api/v2/spans`) whose answers the test controls. A
/// collector that is down is just a URL nobody listens on: see [`down_collector_url`].
pub struct Collector {
    pub address: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    /// Statuses answered before falling back to `answer`, first one first.
    script: Arc<Mutex<std::collections::VecDeque<u16>>>,
    /// Every POST that arrived, whatever it was answered.
    pub attempts: Arc<AtomicUsize>,
    /// Spans in the JSON posts answered with 2xx.
    pub accepted_spans: Arc<AtomicUsize>,
}

impl Collector {
    pub async fn start(answer: Answer) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let collector = Collector {
            address: listener.local_addr().expect("address"),
            answer: Arc::new(Mutex::new(answer)),
            script: Arc::default(),
            attempts: Arc::default(),
            accepted_spans: Arc::default(),
        };
        let answer = collector.answer.clone();
        let script = collector.script.clone();
        let attempts = collector.attempts.clone();
        let accepted = collector.accepted_spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (answer, script) = (answer.clone(), script.clone());
                let (attempts, accepted) = (attempts.clone(), accepted.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (answer, script) = (answer.clone(), script.clone());
                        let (attempts, accepted) = (attempts.clone(), accepted.clone());
                        async move {
                            attempts.fetch_add(1, Ordering::SeqCst);
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let scripted = script.lock().ok().and_then(|mut s| s.pop_front());
                            let now = answer.lock().map(|a| *a).unwrap_or(Answer::Accept);
                            let status = match (scripted, now) {
                                (Some(status), _) | (None, Answer::Status(status)) => status,
                                (None, Answer::Accept) => 202,
                                (None, Answer::Slow(delay)) => {
                                    tokio::time::sleep(delay).await;
                                    202
                                }
                            };
                            if (200..300).contains(&status) {
                                let spans = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
                                    .map(|v| v.len())
                                    .unwrap_or(0);
                                accepted.fetch_add(spans, Ordering::SeqCst);
                            }
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() =
                                StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        collector
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v2/spans", self.address)
    }

    /// Changes how the following POSTs are answered.
    pub fn set(&self, answer: Answer) {
        if let Ok(mut a) = self.answer.lock() {
            *a = answer;
        }
    }

    /// Answers the next POSTs with these statuses, then as set.
    pub fn script(&self, statuses: &[u16]) {
        if let Ok(mut s) = self.script.lock() {
            s.extend(statuses.iter().copied());
        }
    }

    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    pub fn spans(&self) -> usize {
        self.accepted_spans.load(Ordering::SeqCst)
    }

    /// Waits up to `within` for at least `n` accepted spans; returns how many arrived.
    pub async fn wait_for_spans(&self, n: usize, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.spans() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.spans()
    }
}

/// The URL of a collector that is down: every connection to it is refused ([`refused_port`]).
pub fn down_collector_url() -> String {
    format!("http://127.0.0.1:{}/api/v2/spans", refused_port())
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    address: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(address: SocketAddr) -> Result<Client, String> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake {address}: {e}"))?;
        tokio::spawn(connection);
        Ok(Client { address, sender })
    }

    /// Sends one request and reads the whole answer: (status, body).
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.address.to_string())
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).to_string()))
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        self.send("GET", path, "").await
    }
}

/// One request on a fresh connection: (status, body).
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    Client::connect(address)
        .await?
        .send(method, path, body)
        .await
}

/// Latencies of `n` sequential GETs of `path` on one keep-alive HTTP/1.1 connection, each
/// timed from send to the end of its body. Panics on a failed request or a status other than
/// 200: the caller measures a client that must keep being served.
pub async fn latencies(address: SocketAddr, path: &str, n: usize) -> Vec<Duration> {
    let mut client = Client::connect(address).await.expect("connect");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), client.get(path))
            .await
            .unwrap_or_else(|_| panic!("request {i} took over 5 s"));
        match answer {
            Ok((200, _)) => samples.push(started.elapsed()),
            other => panic!("request {i}: {other:?}"),
        }
    }
    samples
}

/// The median of `samples`.
pub fn p50(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// The sum of the samples of `name` whose labels include every one of `labels`, from
/// Prometheus text; `None` when no sample matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(split) => split,
            None => continue,
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let matches = labels
            .iter()
            .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
        if let (true, Ok(value)) = (matches, value.parse::<f64>()) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// A Mesh "default" with Zipkin backends `(name, url)`; the first is the default.
pub fn mesh_yaml(backends: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "type: Mesh\nname: default\ntracing:\n  defaultBackend: {}\n  backends:\n",
        backends.first().map_or("none", |b| b.0)
    );
    for (name, url) in backends {
        yaml.push_str(&format!(
            "    - name: {name}\n      type: zipkin\n      sampling: 100.0\n      conf:\n        url: {url}\n"
        ));
    }
    yaml
}

/// A TrafficTrace selecting every proxy of mesh "default", tracing to `backend`.
pub fn traffic_trace_yaml(backend: &str) -> String {
    format!(
        "type: TrafficTrace\nname: trace-all-traffic\nmesh: default\nselectors:\n  - match:\n      kuma.io/service: '*'\nconf:\n  backend: {backend}\n"
    )
}

/// Writes `content` to `path` the way editors do: a temporary file beside it (named with a
/// leading `.`, so a folder load skips it), then a rename over the target.
pub fn replace_file(path: &std::path::Path, content: &str) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temporary, content).expect("write the temporary file");
    std::fs::rename(&temporary, path).expect("rename over the target");
}

/// The files of one sidecar: `dataplane.yaml` (inbound on `inbound`, in front of the app) and a
/// `policy/` folder with `mesh.yaml` and `trace.yaml`.
pub struct SidecarFiles {
    pub dir: tempfile::TempDir,
    pub dataplane: std::path::PathBuf,
    pub policy: std::path::PathBuf,
    pub inbound: SocketAddr,
}

impl SidecarFiles {
    pub fn new(app: SocketAddr, backends: &[(&str, &str)], trace_backend: &str) -> SidecarFiles {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let dataplane = dir.path().join("dataplane.yaml");
        std::fs::write(&dataplane, inbound_yaml_on(port, app, "http")).expect("write dataplane");
        let policy = dir.path().join("policy");
        std::fs::create_dir(&policy).expect("policy folder");
        std::fs::write(policy.join("mesh.yaml"), mesh_yaml(backends)).expect("write mesh");
        std::fs::write(policy.join("trace.yaml"), traffic_trace_yaml(trace_backend))
            .expect("write trace");
        SidecarFiles {
            dir,
            dataplane,
            policy,
            inbound: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

/// `tracecar run` as a user starts it, with its admin server on a free loopback port and its
/// log in a file (a pipe nobody reads would eventually block it).
pub struct Sidecar {
    child: std::process::Child,
    pub admin: SocketAddr,
    log: std::path::PathBuf,
    stdout: std::path::PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts the binary and waits until `/ready` answers 200.
    pub async fn start(
        dataplane: &std::path::Path,
        policy: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Sidecar {
        Sidecar::start_wrapped(&[], dataplane, policy, env).await
    }

    /// As [`Sidecar::start`], with the binary run through `wrapper` (a program and its
    /// arguments that end by executing the rest of the command line, e.g. `setpriv …`).
    pub async fn start_wrapped(
        wrapper: &[&str],
        dataplane: &std::path::Path,
        policy: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Sidecar {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log = log_dir.path().join("tracecar.log");
        let stdout = log_dir.path().join("stdout.log");
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let binary = env!("CARGO_BIN_EXE_tracecar");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = std::process::Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => std::process::Command::new(binary),
        };
        let child = command
            .arg("run")
            .arg("--dataplane")
            .arg(dataplane)
            .arg("--policy")
            .arg(policy)
            .args(["--admin", &admin.to_string()])
            .env_remove("TRACECAR_POLICY")
            .env_remove("TRACECAR_DATAPLANE")
            .env_remove("TRACECAR_ADMIN")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("tracecar starts");
        let mut sidecar = Sidecar {
            child,
            admin,
            log,
            stdout,
            _log_dir: log_dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((200, _)) = sidecar.admin_get("/ready").await {
                return sidecar;
            }
            if let Ok(Some(status)) = sidecar.child.try_wait() {
                panic!(
                    "tracecar exited with {status} before ready:\n{}",
                    sidecar.log()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tracecar not ready within 15 s:\n{}",
                sidecar.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        http(self.admin, "GET", path, "").await
    }

    pub async fn admin_post(&self, path: &str, body: &str) -> Result<(u16, String), String> {
        http(self.admin, "POST", path, body).await
    }

    pub async fn metrics(&self) -> String {
        match self.admin_get("/metrics").await {
            Ok((200, text)) => text,
            other => panic!("/metrics: {other:?}"),
        }
    }

    pub async fn config_dump(&self) -> serde_json::Value {
        match self.admin_get("/config_dump").await {
            Ok((200, json)) => serde_json::from_str(&json).expect("/config_dump is JSON"),
            other => panic!("/config_dump: {other:?}"),
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM could not be sent");
    }

    /// Waits up to `within` for the process to exit.
    pub async fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tracecar did not exit within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What it printed to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // A failed assertion must not leave our own child running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A tracer as `node_id` that samples every request into `sink`.
pub fn tracer_into(node_id: &str, sink: &Arc<Collected>) -> Arc<tracecar::trace::Tracer> {
    Arc::new(tracecar::trace::Tracer::new(
        node_id,
        tracecar::trace::TraceConfig {
            backend: Some(tracecar::trace::TracedBackend {
                name: Arc::from("test"),
                basis_points: 10_000,
                shared_span_context: true,
                trace_id_128bit: false,
                propagation: tracecar::trace::Format::B3,
                sink: sink.clone(),
                meshtrace: None,
            }),
        },
    ))
}

/// A span sink that keeps what it gets, for tests of the tracing layer.
#[derive(Default)]
pub struct Collected(Mutex<Vec<tracecar::trace::Span>>);

impl tracecar::trace::SpanSink for Collected {
    fn try_send(&self, span: &tracecar::trace::Span) {
        if let Ok(mut spans) = self.0.lock() {
            spans.push(span.clone());
        }
    }
}

impl Collected {
    pub fn spans(&self) -> Vec<tracecar::trace::Span> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `n` spans arrived (spans end with the body, a moment after the response).
    pub async fn wait_for(&self, n: usize) -> Vec<tracecar::trace::Span> {
        for _ in 0..300 {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} spans, got {:?}", self.spans());
    }
}
