//! `tracecar demo`: a self-contained tour on loopback.
//!
//! Two demo services — `frontend`, which calls `backend` through its outbound — each behind a
//! tracecar sidecar, traced by the example policy in `config/` to a Zipkin-compatible receiver
//! in this process (or to `--zipkin-url`). A few dozen requests go through; the traces come
//! out as trees.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::export::{ExportSettings, Exporters};
use crate::metrics::Metrics;
use crate::policy::resource::Resource;
use crate::policy::{PolicySet, load};
use crate::proxy::{self, ProxyConfig};
use crate::trace::{Span, SpanKind, SpanSink, TraceConfig, Tracer};

const MESH_YAML: &str = include_str!("../config/mesh.yaml");
const TRACE_YAML: &str = include_str!("../config/trace-all-traffic.yaml");
const MESHTRACE_YAML: &str = include_str!("../config/meshtrace/meshtrace.yaml");

/// Which of the example tracing policies the tour runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DemoPolicy {
    /// config/trace-all-traffic.yaml (with config/mesh.yaml's backend).
    #[default]
    TrafficTrace,
    /// config/meshtrace/meshtrace.yaml.
    Meshtrace,
}
/// The collector url written in the example mesh, replaced by the demo's receiver.
const EXAMPLE_URL: &str = "http://127.0.0.1:9411/api/v2/spans";
const REQUESTS: usize = 24;

/// Runs the tour; returns the text to print.
pub async fn run(zipkin_url: Option<String>, which: DemoPolicy) -> anyhow::Result<String> {
    let started = Instant::now();
    let receiver = match &zipkin_url {
        Some(_) => None,
        None => Some(Receiver::start().await?),
    };
    let url = match (&zipkin_url, &receiver) {
        (Some(url), _) => url.clone(),
        (None, Some(r)) => format!("http://{}/api/v2/spans", r.address),
        (None, None) => anyhow::bail!("no collector"),
    };

    // The embedded example policy, pointed at this run's collector.
    let mut resources = load::parse_str(
        Path::new("config/mesh.yaml"),
        &MESH_YAML.replace(EXAMPLE_URL, &url),
    )
    .0;
    resources.extend(match which {
        DemoPolicy::TrafficTrace => {
            load::parse_str(Path::new("config/trace-all-traffic.yaml"), TRACE_YAML).0
        }
        DemoPolicy::Meshtrace => {
            load::parse_str(
                Path::new("config/meshtrace/meshtrace.yaml"),
                &MESHTRACE_YAML.replace(EXAMPLE_URL, &url),
            )
            .0
        }
    });
    let policy = PolicySet::from_resources(resources);

    let backend_app = serve_app(|req| async move { backend(req).await }).await?;
    let [frontend_in, frontend_out, backend_in] = [free_port()?, free_port()?, free_port()?];
    let frontend_app = {
        let outbound = format!("127.0.0.1:{frontend_out}");
        serve_app(move |req| {
            let outbound = outbound.clone();
            async move { frontend(req, &outbound).await }
        })
        .await?
    };

    let metrics = Metrics::new();
    let settings = ExportSettings {
        interval: Duration::from_millis(200),
        ..ExportSettings::default()
    };
    let exporters = Exporters::new(settings, metrics.clone());
    let captured = Arc::new(Captured::default());
    let backend_dp = dataplane("backend-1", "backend", backend_in, backend_app.port(), None)?;
    let frontend_dp = dataplane(
        "frontend-1",
        "frontend",
        frontend_in,
        frontend_app.port(),
        Some((frontend_out, backend_in)),
    )?;
    let mut sidecars = Vec::new();
    for dp in [&backend_dp, &frontend_dp] {
        let effective = policy.effective(dp, 1);
        let config = crate::app::trace_config(&effective, &exporters)?;
        let tracer = Tracer::new(
            &format!("{}.{}", dp.meta.mesh, dp.meta.name),
            tee(config, &captured),
        );
        let running =
            proxy::start(dp, &effective, Arc::new(tracer), &ProxyConfig::default()).await?;
        sidecars.push(running);
    }

    // Traffic: a few dozen requests to the frontend's sidecar, a few of them failing.
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut statuses = BTreeMap::new();
    for i in 0..REQUESTS {
        let path = match i % 8 {
            7 => "/checkout".to_string(),
            3 => "/cart?fail=1".to_string(),
            _ => format!("/product/{}", 100 + i),
        };
        let request = Request::get(format!("http://127.0.0.1:{frontend_in}{path}"))
            .header("host", "frontend.demo")
            .header("user-agent", "tracecar-demo")
            .body(Full::new(Bytes::new()))?;
        let response = client.request(request).await?;
        *statuses.entry(response.status().as_u16()).or_insert(0usize) += 1;
        response.into_body().collect().await?;
    }

    for running in sidecars {
        running.drain(Duration::from_secs(2)).await;
    }
    exporters.use_backend(None)?;
    exporters.shutdown(Duration::from_secs(3)).await;
    let spans = captured.take();
    let received = receiver.as_ref().map(Receiver::spans);
    Ok(render(
        &spans,
        &statuses,
        &url,
        received,
        &metrics,
        started.elapsed(),
    ))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn dataplane(
    name: &str,
    service: &str,
    port: u16,
    app_port: u16,
    outbound: Option<(u16, u16)>,
) -> anyhow::Result<crate::policy::Dataplane> {
    let mut yaml = format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {port}\n      servicePort: {app_port}\n      tags: {{kuma.io/service: {service}, kuma.io/protocol: http}}\n"
    );
    if let Some((out_port, target)) = outbound {
        yaml.push_str(&format!(
            "  outbound:\n    - port: {out_port}\n      tags: {{kuma.io/service: backend, kuma.io/protocol: http}}\n      endpoints: [\"127.0.0.1:{target}\"]\n"
        ));
    }
    let (resources, diagnostics) = load::parse_str(Path::new(name), &yaml);
    match resources.into_iter().next() {
        Some(Resource::Dataplane(dp)) => Ok(dp),
        _ => anyhow::bail!("demo dataplane {name}: {diagnostics:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The two demo services.

type AppBody = Full<Bytes>;

async fn serve_app<F, Fut>(handler: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<AppBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

/// The backend: answers, slowly for a checkout, with 503 when asked to fail.
async fn backend(req: Request<Incoming>) -> Response<AppBody> {
    let path = req.uri().path().to_string();
    if req.uri().query().is_some_and(|q| q.contains("fail=1")) {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend is having a bad day\n",
        );
    }
    if path == "/checkout" {
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    reply(StatusCode::OK, &format!("{{\"item\": \"{path}\"}}\n"))
}

/// The frontend: calls the backend through its sidecar's outbound, forwarding the trace
/// headers as an instrumented application does.
async fn frontend(req: Request<Incoming>, outbound: &str) -> Response<AppBody> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let target = format!(
        "http://{outbound}{}",
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let mut call = Request::get(target).header("host", "backend.demo");
    for (name, value) in req.headers() {
        let n = name.as_str();
        if n.starts_with("x-b3-") || n == "b3" || n == "x-request-id" {
            call = call.header(name, value);
        }
    }
    let Ok(call) = call.body(Full::new(Bytes::new())) else {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "bad request\n");
    };
    match client.request(call).await {
        Ok(response) => {
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut reply = Response::new(Full::new(body));
            *reply.status_mut() = if status.is_server_error() {
                StatusCode::BAD_GATEWAY
            } else {
                status
            };
            reply
        }
        Err(_) => reply(StatusCode::BAD_GATEWAY, "backend unreachable\n"),
    }
}

fn reply(status: StatusCode, text: &str) -> Response<AppBody> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(text.as_bytes())));
    *response.status_mut() = status;
    response
}

// ---------------------------------------------------------------------------------------------
// Seeing the spans: a tee in front of the exporter, and a Zipkin-compatible receiver.

#[derive(Default)]
struct Captured(Mutex<Vec<Span>>);

impl Captured {
    fn take(&self) -> Vec<Span> {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// Keeps a copy of every span and passes it on to the exporter.
struct Tee {
    inner: Arc<dyn SpanSink>,
    captured: Arc<Captured>,
}

impl SpanSink for Tee {
    fn try_send(&self, span: &Span) {
        if let Ok(mut spans) = self.captured.0.lock() {
            spans.push(span.clone());
        }
        self.inner.try_send(span);
    }
}

fn tee(mut config: TraceConfig, captured: &Arc<Captured>) -> TraceConfig {
    if let Some(backend) = &mut config.backend {
        let inner = backend.sink.clone();
        backend.sink = Arc::new(Tee {
            inner,
            captured: captured.clone(),
        });
    }
    config
}

/// Accepts Zipkin JSON v2 POSTs and counts the spans.
struct Receiver {
    address: SocketAddr,
    spans: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let spans = Arc::new(AtomicUsize::new(0));
        let counter = spans.clone();
        let address = serve_app(move |req: Request<Incoming>| {
            let counter = counter.clone();
            async move {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                match serde_json::from_slice::<Vec<serde_json::Value>>(&body) {
                    Ok(list) => {
                        counter.fetch_add(list.len(), Ordering::Relaxed);
                        reply(StatusCode::ACCEPTED, "")
                    }
                    Err(_) => reply(StatusCode::BAD_REQUEST, "not a Zipkin JSON v2 list\n"),
                }
            }
        })
        .await?;
        Ok(Receiver { address, spans })
    }

    fn spans(&self) -> usize {
        self.spans.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// Trees.

fn status_of(span: &Span) -> &str {
    span.tag("http.status_code").unwrap_or("-")
}

fn line(span: &Span, depth: usize) -> String {
    let kind = match span.kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
    };
    let who = match (&span.remote_service, span.shared) {
        (Some(remote), _) => format!("{} → {remote}", span.local_service),
        (None, true) => format!("{} (shared)", span.local_service),
        (None, false) => span.local_service.to_string(),
    };
    let error = if span.error { "  error" } else { "" };
    // Columns line up whatever the depth of the tree.
    let label = format!("{}└─ {kind} {who}", "   ".repeat(depth));
    format!(
        "{label:<44} {:<14} {:>8.2} ms  {}{error}",
        span.name,
        span.duration_us as f64 / 1000.0,
        status_of(span)
    )
}

fn render(
    spans: &[Span],
    statuses: &BTreeMap<u16, usize>,
    url: &str,
    received: Option<usize>,
    metrics: &Metrics,
    elapsed: Duration,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "tracecar demo: frontend → backend, each with a tracecar sidecar; spans to {url}\n\n"
    ));
    // Traces in the order they started.
    let mut traces: Vec<(u64, String, Vec<&Span>)> = Vec::new();
    for span in spans {
        let id = span.trace_id.to_string();
        match traces.iter_mut().find(|(_, t, _)| *t == id) {
            Some((start, _, group)) => {
                *start = (*start).min(span.timestamp_us);
                group.push(span);
            }
            None => traces.push((span.timestamp_us, id, vec![span])),
        }
    }
    traces.sort_by_key(|(start, _, _)| *start);
    let mut complete = 0;
    for (_, id, group) in &traces {
        let url = group
            .iter()
            .find(|s| s.parent_id.is_none() && !s.shared)
            .and_then(|s| s.tag("http.url"))
            .unwrap_or("");
        out.push_str(&format!("trace {id}  {url}\n"));
        let has_client = group.iter().any(|s| s.kind == SpanKind::Client);
        let has_server = group.iter().any(|s| s.kind == SpanKind::Server);
        if has_client && has_server {
            complete += 1;
        }
        write_children(&mut out, group, None, 0);
        out.push('\n');
    }
    let clients = spans.iter().filter(|s| s.kind == SpanKind::Client).count();
    let sampled = metric_sum(metrics, "tracecar_spans_sampled_total");
    let exported = metric_sum(metrics, "tracecar_spans_exported_total");
    let dropped = metric_sum(metrics, "tracecar_spans_dropped_total");
    let requests: usize = statuses.values().sum();
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{n}× {s}")).collect();
    out.push_str(&format!(
        "summary: {} requests ({}), {} traces ({} complete), {} spans ({} CLIENT, {} SERVER); sampled {sampled}, exported {exported}, dropped {dropped}{}; {:.1} s\n",
        requests,
        statuses.join(", "),
        traces.len(),
        complete,
        spans.len(),
        clients,
        spans.len() - clients,
        received.map_or(String::new(), |n| format!(", receiver accepted {n}")),
        elapsed.as_secs_f64()
    ));
    out
}

/// Children of `parent` (a span id; a shared SERVER span hangs under the CLIENT whose id it
/// shares), depth-first.
fn write_children(out: &mut String, group: &[&Span], parent: Option<(u64, bool)>, depth: usize) {
    let mut children: Vec<&&Span> = group
        .iter()
        .filter(|s| match parent {
            // Roots: no parent, not a shared copy of a client span.
            None => s.parent_id.is_none() && !s.shared,
            Some((id, from_client)) => {
                if s.shared {
                    from_client && s.id.0 == id
                } else {
                    s.parent_id.map(|p| p.0) == Some(id)
                }
            }
        })
        .collect();
    children.sort_by_key(|s| s.timestamp_us);
    for child in children {
        out.push_str(&line(child, depth));
        out.push('\n');
        write_children(
            out,
            group,
            Some((child.id.0, child.kind == SpanKind::Client)),
            depth + 1,
        );
    }
}

fn metric_sum(metrics: &Metrics, name: &str) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
