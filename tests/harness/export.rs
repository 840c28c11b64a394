//! Export peers and sidecars for the export tests: an in-test Zipkin collector, the Datadog
//! test agent (`ddapm-test-agent`) as a child process, and tracecar sidecars wired the way
//! `tracecar run` wires them: policy files → `Effective` → `TraceConfig` → `Tracer` → proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::net::TcpListener;

use tracecar::export::zipkin::proto::{ListOfSpans, ProtoSpan};
use tracecar::export::{ExportSettings, Exporters};
use tracecar::metrics::Metrics;
use tracecar::policy::Effective;
use tracecar::policy::effective::Direction;
use tracecar::proxy::ProxyConfig;
use tracecar::trace::Tracer;

use super::{Proxy, Upstream, free_port};

/// Batches go every 100 ms, so a test waits for spans in tenths of a second, not seconds.
pub fn fast_export() -> ExportSettings {
    ExportSettings {
        interval: Duration::from_millis(100),
        ..ExportSettings::default()
    }
}

/// One POST the collector received.
#[derive(Clone, Debug)]
pub struct Post {
    pub path: String,
    pub content_type: String,
    pub body: Bytes,
}

/// A Zipkin collector on loopback: stores every POST (path, content type, body) and answers
/// 202 Accepted, as Zipkin does.
pub struct Collector {
    pub address: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        Collector::on(listener)
    }

    /// A collector on a socket bound elsewhere (e.g. inside a network namespace).
    pub fn on(listener: TcpListener) -> Collector {
        let address = listener.local_addr().expect("address");
        let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
        let stored = posts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let stored = stored.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let stored = stored.clone();
                        async move {
                            let post = req.method() == http::Method::POST;
                            let path = req.uri().path().to_string();
                            let content_type = req
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let status = if post {
                                if let Ok(mut posts) = stored.lock() {
                                    posts.push(Post {
                                        path,
                                        content_type,
                                        body,
                                    });
                                }
                                StatusCode::ACCEPTED
                            } else {
                                StatusCode::METHOD_NOT_ALLOWED
                            };
                            let mut response = Response::new(Empty::<Bytes>::new());
                            *response.status_mut() = status;
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { address, posts }
    }

    /// The url a Mesh backend points at.
    pub fn url(&self) -> String {
        format!("http://{}/api/v2/spans", self.address)
    }

    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Every span of every JSON post, in arrival order. A body that is not a JSON array fails
    /// the test.
    pub fn json_spans(&self) -> Vec<serde_json::Value> {
        let mut spans = Vec::new();
        for post in self.posts() {
            let list: Vec<serde_json::Value> = serde_json::from_slice(&post.body)
                .unwrap_or_else(|e| panic!("a POST body is not a JSON list of spans: {e}"));
            spans.extend(list);
        }
        spans
    }

    /// Every span of every protobuf post, decoded as `zipkin.proto3.ListOfSpans`.
    pub fn proto_spans(&self) -> Vec<ProtoSpan> {
        let mut spans = Vec::new();
        for post in self.posts() {
            let list = ListOfSpans::decode(post.body.as_ref())
                .unwrap_or_else(|e| panic!("a POST body is not a ListOfSpans: {e}"));
            spans.extend(list.spans);
        }
        spans
    }

    /// Waits until at least `n` JSON spans arrived (batches go on an interval).
    pub async fn wait_for_json(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..500 {
            let spans = self.json_spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} spans, got {:?}", self.json_spans());
    }

    /// Waits until at least `n` protobuf spans arrived.
    pub async fn wait_for_proto(&self, n: usize) -> Vec<ProtoSpan> {
        for _ in 0..500 {
            let spans = self.proto_spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} spans, got {:?}", self.proto_spans());
    }
}

/// `ddapm-test-agent`, Datadog's own test agent, as a child process on free ports. Killed when
/// dropped.
pub struct DatadogAgent {
    pub port: u16,
    _child: tokio::process::Child,
}

impl DatadogAgent {
    pub async fn start() -> DatadogAgent {
        let port = free_port();
        // Its OTLP defaults (4317/4318) would collide between agents started in parallel.
        let child = tokio::process::Command::new("ddapm-test-agent")
            .args(["--port", &port.to_string()])
            .args(["--otlp-http-port", &free_port().to_string()])
            .args(["--otlp-grpc-port", &free_port().to_string()])
            // Its `--enabled-checks` flag is broken; the environment variable works.
            .env(
                "ENABLED_CHECKS",
                "trace_count_header,meta_tracer_version_header,trace_content_length",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("ddapm-test-agent starts (pip install ddapm-test-agent)");
        let agent = DatadogAgent {
            port,
            _child: child,
        };
        for _ in 0..300 {
            if let Ok((StatusCode::OK, _)) = http_get(&agent.url("/test/session/traces")).await {
                return agent;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ddapm-test-agent did not answer on port {port} within 30 s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `/test/session/traces`: every trace received, each a list of spans as JSON.
    pub async fn traces(&self) -> Vec<Vec<serde_json::Value>> {
        let (status, body) = http_get(&self.url("/test/session/traces"))
            .await
            .expect("agent answers");
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("traces as JSON")
    }

    /// Waits until the agent holds at least `n` spans; returns them all.
    pub async fn wait_for_spans(&self, n: usize) -> Vec<serde_json::Value> {
        let mut spans = Vec::new();
        // Up to 10 s: the agent is a Python process on a busy machine.
        for _ in 0..200 {
            spans = self.traces().await.into_iter().flatten().collect();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} spans at the agent, got {spans:?}");
    }
}

/// GET `url`: status and body.
pub async fn http_get(url: &str) -> Result<(StatusCode, Bytes), String> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let response = client.get(uri).await.map_err(|e| format!("{e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e}"))?
        .to_bytes();
    Ok((status, body))
}

/// Policy files in a temporary folder, as `--policy DIR` reads them.
pub struct Policy {
    pub dir: tempfile::TempDir,
}

impl Policy {
    /// One `policy.yaml` with `yaml`.
    pub fn new(yaml: &str) -> Policy {
        Policy::files(&[("policy.yaml", yaml)])
    }

    pub fn files(files: &[(&str, &str)]) -> Policy {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write policy");
        }
        Policy { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// A Mesh with one backend and a TrafficTrace for every service.
pub fn mesh_with_backend(backend: &str) -> String {
    format!(
        "type: Mesh\nname: default\ntracing:\n  defaultBackend: collector\n  backends:\n{backend}\n---\ntype: TrafficTrace\nname: trace-all-traffic\nmesh: default\nselectors:\n  - match:\n      kuma.io/service: '*'\n"
    )
}

/// A Zipkin backend named `collector` with extra `conf` lines (YAML, indented 8).
pub fn zipkin_backend(url: &str, extra_conf: &str) -> String {
    format!(
        "    - name: collector\n      type: zipkin\n      conf:\n        url: {url}\n{extra_conf}"
    )
}

/// A Datadog backend named `collector` at the agent.
pub fn datadog_backend(agent: &DatadogAgent, split_service: bool) -> String {
    format!(
        "    - name: collector\n      type: datadog\n      conf:\n        address: 127.0.0.1\n        port: {}\n        splitService: {split_service}\n",
        agent.port
    )
}

/// A tracecar sidecar running in this process, with its own exporters and metrics (as its own
/// `tracecar run` would have).
pub struct Sidecar {
    pub proxy: Proxy,
    pub tracer: Arc<Tracer>,
    pub exporters: Arc<Exporters>,
    pub metrics: Arc<Metrics>,
    pub effective: Effective,
}

impl Sidecar {
    /// Loads `policy` and the dataplane, validates both, and starts the proxy as `run` does.
    pub async fn start(policy: &Path, dataplane_yaml: &str) -> Sidecar {
        Sidecar::start_with_backend(policy, dataplane_yaml, None).await
    }

    /// As `start`, with the policy's backend replaced by `backend` when given (a backend the
    /// policy files cannot declare yet reaches the sidecar the way a policy would bring it).
    pub async fn start_with_backend(
        policy: &Path,
        dataplane_yaml: &str,
        backend: Option<tracecar::policy::effective::Backend>,
    ) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("dataplane.yaml");
        std::fs::write(&file, dataplane_yaml).expect("write dataplane");
        let checked = tracecar::policy::check(&[policy.to_path_buf()], Some(&file));
        assert!(
            !checked.failed(false),
            "policy and dataplane are valid: {:?}",
            checked.diagnostics
        );
        let dataplane = checked.dataplane.clone().expect("dataplane loaded");
        let mut effective = checked.set.effective(&dataplane, 1);
        if backend.is_some() {
            effective.backend = backend;
        }
        let metrics = Metrics::new();
        let exporters = Arc::new(Exporters::new(fast_export(), metrics.clone()));
        let config = tracecar::app::trace_config(&effective, &exporters).expect("trace config");
        let node_id = format!("{}.{}", dataplane.meta.mesh, dataplane.meta.name);
        let tracer = Arc::new(Tracer::with_invalid_counter(
            &node_id,
            config,
            metrics.trace_context_invalid.clone(),
        ));
        let proxy_config = ProxyConfig {
            metrics: Some(metrics.clone()),
            ..ProxyConfig::default()
        };
        let running = tracecar::proxy::start(&dataplane, &effective, tracer.clone(), &proxy_config)
            .await
            .expect("proxy starts");
        Sidecar {
            proxy: Proxy {
                running,
                skip: 0,
                _dir: dir,
            },
            tracer,
            exporters,
            metrics,
            effective,
        }
    }

    /// The address of the first listener in `direction`.
    pub fn listener(&self, direction: Direction) -> SocketAddr {
        let i = self
            .effective
            .listeners
            .iter()
            .position(|l| l.direction == direction)
            .expect("a listener in that direction");
        self.proxy.running.addresses[i]
    }

    /// Waits until every span sampled for `backend` was exported, and none dropped.
    /// Returns the count.
    pub async fn all_exported(&self, backend: &str) -> u64 {
        let mut text = String::new();
        for _ in 0..300 {
            text = self.metrics.encode();
            let sampled = metric(&text, "tracecar_spans_sampled_total", backend);
            let exported = metric(&text, "tracecar_spans_exported_total", backend);
            if sampled > 0 && sampled == exported {
                assert_eq!(
                    metric(&text, "tracecar_spans_dropped_total", backend),
                    0,
                    "a healthy collector: nothing dropped\n{text}"
                );
                return exported;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("spans_sampled never equalled spans_exported for {backend}:\n{text}");
    }
}

/// The sum of the samples of `name` labelled `backend="<backend>"` in Prometheus text.
pub fn metric(text: &str, name: &str, backend: &str) -> u64 {
    let label = format!("backend=\"{backend}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A Dataplane `name` for service `service` in `zone`, with one http inbound in front of `app`.
pub fn server_dataplane(name: &str, service: &str, zone: &str, app: SocketAddr) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {}\n      servicePort: {}\n      tags: {{kuma.io/service: {service}, kuma.io/protocol: http, kuma.io/zone: {zone}}}\n",
        free_port(),
        app.port()
    )
}

/// A Dataplane `name` for service `service` in `zone` that calls `remote` at `endpoint` over
/// http (its inbound is an untraced tcp placeholder).
pub fn client_dataplane(
    name: &str,
    service: &str,
    zone: &str,
    remote: &str,
    endpoint: SocketAddr,
) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {}\n      servicePort: {}\n      tags: {{kuma.io/service: {service}, kuma.io/protocol: tcp, kuma.io/zone: {zone}}}\n  outbound:\n    - port: {}\n      tags: {{kuma.io/service: {remote}, kuma.io/protocol: http}}\n      endpoints: [\"{endpoint}\"]\n",
        free_port(),
        free_port(),
        free_port()
    )
}

/// app → `web` sidecar (outbound) → `backend` sidecar (inbound) → app: one CLIENT span from
/// `web`, one SERVER span from `backend` per request.
pub struct Chain {
    pub app: Upstream,
    pub web: Sidecar,
    pub backend: Sidecar,
}

impl Chain {
    pub async fn start(policy: &Path) -> Chain {
        Chain::in_zones(policy, "eu-west", "eu-west").await
    }

    pub async fn in_zones(policy: &Path, web_zone: &str, backend_zone: &str) -> Chain {
        Chain::traced_by(policy, web_zone, backend_zone, None).await
    }

    /// A chain whose sidecars trace to `backend` instead of the policy's (see
    /// `Sidecar::start_with_backend`).
    pub async fn with_backend(
        policy: &Path,
        backend: tracecar::policy::effective::Backend,
    ) -> Chain {
        Chain::traced_by(policy, "eu-west", "eu-west", Some(backend)).await
    }

    async fn traced_by(
        policy: &Path,
        web_zone: &str,
        backend_zone: &str,
        traced_by: Option<tracecar::policy::effective::Backend>,
    ) -> Chain {
        let app = Upstream::start().await;
        let backend = Sidecar::start_with_backend(
            policy,
            &server_dataplane("backend-1", "backend", backend_zone, app.address),
            traced_by.clone(),
        )
        .await;
        let web = Sidecar::start_with_backend(
            policy,
            &client_dataplane(
                "web-1",
                "web",
                web_zone,
                "backend",
                backend.listener(Direction::Inbound),
            ),
            traced_by,
        )
        .await;
        Chain { app, web, backend }
    }

    /// One GET through the chain, `Host: backend.mesh`, with `headers`; the status.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> StatusCode {
        get(self.web.listener(Direction::Outbound), path, headers).await
    }
}

/// One HTTP/1.1 GET on a new connection to `address`, `Host: backend.mesh`; reads the whole
/// response (spans end with the body) and returns its status.
pub async fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> StatusCode {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "backend.mesh");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    response.into_body().collect().await.expect("body");
    status
}
