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

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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
        };
        let connections = upstream.connections.clone();
        let requests = upstream.requests.clone();
        let max_in_flight = upstream.max_in_flight.clone();
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
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        requests.fetch_add(1, Ordering::SeqCst);
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
    format!(
        "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {}\n      servicePort: {}\n      tags: {{kuma.io/service: web, kuma.io/protocol: {protocol}}}\n",
        free_port(),
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
    pub fn address(&self, i: usize) -> SocketAddr {
        self.running.addresses[self.skip + i]
    }
}

pub async fn proxy_with(yaml: &str, observer: Arc<dyn Observer>, config: &ProxyConfig) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dataplane.yaml");
    std::fs::write(&file, yaml).expect("write dataplane");
    let (dataplane, _) = tracecar::policy::load::load_dataplane(&file).expect("valid dataplane");
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
        _: &mut http::request::Parts,
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
