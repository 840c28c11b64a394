//! Real tracers as the applications (README, Propagation): an OpenTelemetry SDK app (default W3C
//! propagator) and a ddtrace app (default Datadog + W3C style), each as client and server
//! through a tracecar pair — client app → `web` outbound sidecar → `backend` inbound sidecar →
//! server app — with a Zipkin backend and with a Datadog backend (the real
//! `ddapm-test-agent`). Every span of a request must be one trace with the parent chain
//! app client span → tracecar CLIENT → tracecar SERVER → app server span, 128-bit ids kept,
//! and an unsampled decision respected by every hop.
//!
//! The apps are `tests/interop/*.py`, run by the python of the venv `./scripts/test` makes
//! (`TRACECAR_INTEROP_PYTHON`, else `target/interop-venv/bin/python`).

mod harness;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use harness::export::{
    Collector, DatadogAgent, Policy, Sidecar, client_dataplane, datadog_backend, mesh_with_backend,
    server_dataplane, zipkin_backend,
};
use tracecar::policy::effective::Direction;

fn python() -> PathBuf {
    let path = std::env::var_os("TRACECAR_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python")
        });
    assert!(
        path.exists(),
        "no python with opentelemetry-sdk and ddtrace at {} (TRACECAR_INTEROP_PYTHON): run \
         `./scripts/test --peers-only` to install them",
        path.display()
    );
    path
}

fn app_script(app: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/interop/{app}_app.py"))
}

fn command(app: &str) -> Command {
    let mut command = Command::new(python());
    command
        .arg(app_script(app))
        // ddtrace's own export is not under test: no agent, no telemetry, quiet.
        .env("DD_TRACE_AGENT_URL", "http://127.0.0.1:9")
        .env("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
        .env("DD_REMOTE_CONFIGURATION_ENABLED", "false")
        .env("DD_TRACE_STARTUP_LOGS", "false")
        .env_remove("DD_TRACE_PROPAGATION_STYLE")
        .env_remove("OTEL_PROPAGATORS")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The server app: one JSON line per request it served.
struct ServerApp {
    address: SocketAddr,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl ServerApp {
    async fn start(app: &str) -> ServerApp {
        let mut child = command(app)
            .arg("server")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server app starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = next_line(&mut lines).await;
        let port: u16 = ready
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server app said {ready:?}, not `ready <port>`"));
        ServerApp {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            lines,
            _child: child,
        }
    }

    async fn span(&mut self) -> Value {
        let line = next_line(&mut self.lines).await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    // Generous: a Python process importing a tracer on a busy machine.
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the app answers within 60 s")
        .expect("read the app's output")
        .expect("the app is still running")
}

/// Runs the client app once against `url`; its span.
async fn client_span(app: &str, url: &str, drop: bool) -> Value {
    let mut command = command(app);
    command.args(["client", url]);
    if drop {
        command.arg("drop");
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the client app finishes within 60 s")
        .expect("the client app runs");
    assert!(output.status.success(), "client app failed: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .last()
        .expect("the client app printed its span");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn text(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .to_string()
}

/// client app → `web` outbound → `backend` inbound → server app.
struct Mesh {
    web: Sidecar,
    _backend: Sidecar,
    server: ServerApp,
}

impl Mesh {
    async fn start(app: &str, policy: &Policy) -> Mesh {
        let server = ServerApp::start(app).await;
        let backend = Sidecar::start(
            &policy.path(),
            &server_dataplane("backend-1", "backend", "eu-west", server.address),
        )
        .await;
        let web = Sidecar::start(
            &policy.path(),
            &client_dataplane(
                "web-1",
                "web",
                "eu-west",
                "backend",
                backend.listener(Direction::Inbound),
            ),
        )
        .await;
        Mesh {
            web,
            _backend: backend,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hello", self.web.listener(Direction::Outbound))
    }

    /// An unsampled request, then a sampled one: the app client's and server's spans of each.
    async fn requests(&mut self, app: &str) -> [(Value, Value); 2] {
        let dropped = client_span(app, &self.url(), true).await;
        let dropped_server = self.server.span().await;
        let kept = client_span(app, &self.url(), false).await;
        let kept_server = self.server.span().await;
        [(dropped, dropped_server), (kept, kept_server)]
    }
}

/// The unsampled request: one trace end to end, and nobody sampled it.
fn assert_unsampled(client: &Value, server: &Value) {
    assert_eq!(client["sampled"], false, "{client}");
    assert_eq!(
        server["sampled"], false,
        "the decision reached the server: {server}"
    );
    assert_eq!(text(server, "trace_id"), text(client, "trace_id"));
}

async fn zipkin_chain(app: &str) {
    let collector = Collector::start().await;
    let policy = Policy::new(&mesh_with_backend(&zipkin_backend(&collector.url(), "")));
    let mut mesh = Mesh::start(app, &policy).await;
    let [(dropped, dropped_server), (client, server)] = mesh.requests(app).await;
    assert_unsampled(&dropped, &dropped_server);

    // Exported in order: had the unsampled request made spans, they would be here too.
    let spans = collector.wait_for_json(2).await;
    assert_eq!(
        spans.len(),
        2,
        "only the sampled request's spans: {spans:#?}"
    );
    let trace = text(&client, "trace_id");
    assert_eq!(trace.len(), 32);
    for span in &spans {
        assert_eq!(text(span, "traceId"), trace, "128-bit id kept: {span}");
    }
    let by_kind = |kind: &str| {
        spans
            .iter()
            .find(|s| s["kind"] == kind)
            .unwrap_or_else(|| panic!("a {kind} span in {spans:#?}"))
    };
    let (sidecar_client, sidecar_server) = (by_kind("CLIENT"), by_kind("SERVER"));
    assert_eq!(text(sidecar_client, "parentId"), text(&client, "span_id"));
    // Zipkin's shared span: the SERVER side reuses the CLIENT's id.
    assert_eq!(text(sidecar_server, "id"), text(sidecar_client, "id"));
    assert_eq!(sidecar_server["shared"], true);
    assert_eq!(text(&server, "trace_id"), trace);
    assert_eq!(text(&server, "parent_id"), text(sidecar_server, "id"));
    assert_eq!(server["sampled"], true);
}

async fn datadog_chain(app: &str) {
    let agent = DatadogAgent::start().await;
    let policy = Policy::new(&mesh_with_backend(&datadog_backend(&agent, false)));
    let mut mesh = Mesh::start(app, &policy).await;
    let [(dropped, dropped_server), (client, server)] = mesh.requests(app).await;
    assert_unsampled(&dropped, &dropped_server);

    let spans = agent.wait_for_spans(2).await;
    assert_eq!(
        spans.len(),
        2,
        "only the sampled request's spans: {spans:#?}"
    );
    let trace = text(&client, "trace_id");
    let low = u64::from_str_radix(&trace[16..], 16).expect("hex");
    for span in &spans {
        assert_eq!(span["trace_id"].as_u64(), Some(low), "{span}");
        assert_eq!(
            span["meta"]["_dd.p.tid"],
            trace[..16],
            "128-bit id kept: {span}"
        );
    }
    let by_resource = |resource: &str| {
        spans
            .iter()
            .find(|s| s["resource"] == resource)
            .unwrap_or_else(|| panic!("a {resource} span in {spans:#?}"))
    };
    let (sidecar_client, sidecar_server) =
        (by_resource("egress backend.mesh"), by_resource("ingress"));
    let id = |v: &Value, key: &str| v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"));
    let hex = |v: &Value, key: &str| u64::from_str_radix(&text(v, key), 16).expect("hex");
    assert_eq!(id(sidecar_client, "parent_id"), hex(&client, "span_id"));
    assert_eq!(
        id(sidecar_server, "parent_id"),
        id(sidecar_client, "span_id")
    );
    assert_eq!(text(&server, "trace_id"), trace);
    assert_eq!(hex(&server, "parent_id"), id(sidecar_server, "span_id"));
    assert_eq!(server["sampled"], true);
}

#[tokio::test]
async fn opentelemetry_apps_form_one_trace_through_tracecar_with_zipkin() {
    zipkin_chain("otel").await;
}

#[tokio::test]
async fn opentelemetry_apps_form_one_trace_through_tracecar_with_datadog() {
    datadog_chain("otel").await;
}

#[tokio::test]
async fn ddtrace_apps_form_one_trace_through_tracecar_with_zipkin() {
    zipkin_chain("dd").await;
}

#[tokio::test]
async fn ddtrace_apps_form_one_trace_through_tracecar_with_datadog() {
    datadog_chain("dd").await;
}
