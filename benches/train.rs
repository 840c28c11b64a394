//! The training run of the profile-guided release build (`scripts/dist`): drives a tracecar
//! binary built with `-Cprofile-generate` through every path users run, so that the profile
//! it leaves behind tells the compiler what is hot. A function never run here is optimised
//! for size in the release build, so the run covers each listener protocol (HTTP/1.1,
//! HTTP/2, gRPC, TCP), inbound and outbound, TLS terminated and originated, every propagation
//! format, sampled and unsampled requests, and every exporter (Zipkin JSON and protobuf, Datadog, OTLP over gRPC and HTTP),
//! one proxy process per backend, each against loopback peers in this process.
//!
//! `cargo bench --bench train -- --binary PATH [--seconds S]`; without `--binary` it does
//! nothing (so that a plain `cargo bench` passes over it), and under `cargo test` it makes a
//! short run through the test build. It fails when a proxy does not serve or a backend
//! receives nothing: a profile of a broken run would mislead the build.

#[path = "common/mod.rs"]
mod common;
// Only `free_ports`: the load bench uses the rest.
#[allow(dead_code)]
#[path = "load/ports.rs"]
mod ports;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The application's answer to a plain request, as in the load benchmark.
const BODY_BYTES: usize = 1024;

/// What the incoming requests carry, in turn: no context, and each propagation format.
const CALLERS: [&[(&str, &str)]; 6] = [
    &[],
    &[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
    ],
    &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")],
    &[
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
    ],
    &[
        ("x-datadog-trace-id", "5208512171318403364"),
        ("x-datadog-parent-id", "8425198411390283581"),
        ("x-datadog-tags", "_dd.p.dm=-4"),
    ],
    &[("x-client-trace-id", "1"), ("user-agent", "train/1")],
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut binary = None;
    let mut seconds = 2.0_f64;
    let mut benching = false;
    // The training run logs as its caller's `TRACECAR_LOG` says; the short run under `cargo
    // test` keeps the seven proxies' start-up lines out of the suite's output, and still
    // shows warnings.
    let mut log = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--binary" => binary = args.next(),
            "--seconds" => {
                seconds = args
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds: a number")?;
            }
            // What `cargo bench` passes to every bench target.
            "--bench" => benching = true,
            other => bail!("train: unknown argument {other:?}"),
        }
    }
    let binary = match binary {
        Some(binary) => binary,
        None if benching => {
            eprintln!("train: no --binary given; nothing to do (see scripts/dist)");
            return Ok(());
        }
        // `cargo test --all-targets` runs this without arguments: a short run through the
        // test build of the proxy, so that the suite catches a scenario the proxy no longer
        // takes (a training run that fails stops the release build).
        None => {
            seconds = 0.2;
            log = Some("warn");
            env!("CARGO_BIN_EXE_tracecar").to_string()
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(train(&binary, Duration::from_secs_f64(seconds), log))
}

/// Every scenario in turn, each a proxy of its own, against one application, one TCP echo and
/// two collectors (HTTP, and OTLP's gRPC) that outlive them all.
/// `log` is the proxies' log filter (`TRACECAR_LOG`), when not the caller's.
async fn train(binary: &str, each: Duration, log: Option<&str>) -> anyhow::Result<()> {
    let app = serve_app().await?;
    let echo = serve_echo().await?;
    let (http_collector, http_received) = common::start_receiver(false).await;
    let (grpc_collector, grpc_received) = common::grpc::start_counting_receiver().await;
    let zipkin = |api: &str, sampling: u32| {
        format!(
            "type: Mesh\nname: default\ntracing:\n  defaultBackend: z\n  backends:\n    - name: z\n      type: zipkin\n      sampling: {sampling}\n      conf:\n        url: http://{http_collector}/api/v2/spans\n        apiVersion: {api}\n        traceId128bit: true\n---\n{TRAFFIC_TRACE}"
        )
    };
    let scenarios: Vec<(&str, String)> = vec![
        (
            "zipkin JSON, every request sampled",
            zipkin("httpJson", 100),
        ),
        ("zipkin JSON, none sampled", zipkin("httpJson", 0)),
        ("zipkin protobuf", zipkin("httpProto", 100)),
        (
            "datadog",
            format!(
                "type: Mesh\nname: default\ntracing:\n  defaultBackend: d\n  backends:\n    - name: d\n      type: datadog\n      conf: {{address: 127.0.0.1, port: {}, splitService: true}}\n---\n{TRAFFIC_TRACE}",
                http_collector.port()
            ),
        ),
        (
            "MeshTrace zipkin, half sampled, with tags",
            meshtrace(
                &format!(
                    "{{type: Zipkin, zipkin: {{url: 'http://{http_collector}/api/v2/spans'}}}}"
                ),
                "{overall: 100, client: 100, random: 50}",
            ),
        ),
        (
            "MeshTrace OpenTelemetry over gRPC",
            opentelemetry(
                &format!("{{address: 127.0.0.1, port: {}}}", grpc_collector.port()),
                "grpc",
            ),
        ),
        (
            "MeshTrace OpenTelemetry over HTTP",
            opentelemetry(
                &format!(
                    "{{address: 127.0.0.1, port: {}, path: /otlp}}",
                    http_collector.port()
                ),
                "http",
            ),
        ),
    ];
    for (name, policy) in scenarios {
        let before = (
            http_received.bytes.load(Ordering::Relaxed),
            grpc_received.load(Ordering::Relaxed),
        );
        let started = Instant::now();
        let served = run_scenario(binary, &policy, app, echo, each, log)
            .await
            .with_context(|| format!("scenario {name:?}"))?;
        let exported = http_received.bytes.load(Ordering::Relaxed) - before.0
            + grpc_received.load(Ordering::Relaxed)
            - before.1;
        eprintln!(
            "train: {name}: {served} exchanges, {exported} bytes exported, {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // With sampling 0, only callers whose context says "sampled" are exported.
        if exported == 0 && !name.contains("none sampled") {
            bail!("scenario {name:?}: the backend received no spans");
        }
    }
    Ok(())
}

const TRAFFIC_TRACE: &str =
    "type: TrafficTrace\nname: all\nmesh: default\nselectors:\n  - match: {kuma.io/service: '*'}\n";

/// A MeshTrace over the whole mesh to `backend`, with `sampling` and a literal and a header tag.
fn meshtrace(backend: &str, sampling: &str) -> String {
    format!(
        "type: MeshTrace\nname: all\nmesh: default\nspec:\n  targetRef: {{kind: Mesh}}\n  default:\n    backends: [{backend}]\n    sampling: {sampling}\n    tags:\n      - {{name: team, literal: core}}\n      - {{name: env, header: {{name: x-env, default: prod}}}}\n"
    )
}

/// A MeshTrace to the MeshOpenTelemetryBackend at `endpoint` over `protocol`.
fn opentelemetry(endpoint: &str, protocol: &str) -> String {
    format!(
        "{}---\ntype: MeshOpenTelemetryBackend\nname: collector\nmesh: default\nlabels: {{kuma.io/display-name: collector}}\nspec:\n  endpoint: {endpoint}\n  protocol: {protocol}\n",
        meshtrace(
            "{type: OpenTelemetry, openTelemetry: {backendRef: {kind: MeshOpenTelemetryBackend, labels: {kuma.io/display-name: collector}}}}",
            "{overall: 100}",
        )
    )
}

/// The listeners of one proxy: a port each.
struct Ports {
    http: u16,
    http2: u16,
    grpc: u16,
    tcp: u16,
    /// An http inbound that terminates TLS, reached through `tls_outbound`, which originates it.
    tls: u16,
    outbound: u16,
    tls_outbound: u16,
    admin: u16,
}

/// Starts the binary on `policy`, runs every kind of traffic through it for `each`, stops it
/// with SIGTERM (the profile is written as it exits), and returns how many exchanges it served.
async fn run_scenario(
    binary: &str,
    policy: &str,
    app: SocketAddr,
    echo: SocketAddr,
    each: Duration,
    log: Option<&str>,
) -> anyhow::Result<u64> {
    let [http, http2, grpc, tcp, tls, outbound, tls_outbound, admin] = ports::free_ports()?;
    let ports = Ports {
        http,
        http2,
        grpc,
        tcp,
        tls,
        outbound,
        tls_outbound,
        admin,
    };
    let dir = tempfile::tempdir()?;
    write_pki(dir.path())?;
    let dataplane = dir.path().join("dataplane.yaml");
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&dataplane, dataplane_yaml(&ports, app, echo))?;
    std::fs::write(&policy_file, policy)?;
    let mut command = Command::new(binary);
    if let Some(log) = log {
        command.env("TRACECAR_LOG", log);
    }
    let mut proxy = Proxy(
        command
            .arg("run")
            .arg("--dataplane")
            .arg(&dataplane)
            .arg("--policy")
            .arg(&policy_file)
            .args(["--admin", &format!("127.0.0.1:{}", ports.admin)])
            .args(["--workers", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {binary}"))?,
    );
    wait_ready(ports.admin, &mut proxy).await?;

    let deadline = Instant::now() + each;
    let served = Arc::new(AtomicU64::new(0));
    let h1: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut tasks = tokio::task::JoinSet::new();
    let lane = |client: &Client<HttpConnector, Full<Bytes>>, port: u16, first: usize| Lane {
        client: client.clone(),
        port,
        first,
        deadline,
        served: served.clone(),
    };
    for first in 0..8 {
        let port = match first {
            0..4 => ports.http,
            4 => ports.outbound,
            5 => ports.tls_outbound,
            _ => ports.http2,
        };
        let client = if first < 6 { &h1 } else { &h2 };
        tasks.spawn(lane(client, port, first).http());
    }
    for first in 0..2 {
        tasks.spawn(lane(&h2, ports.grpc, first).grpc());
    }
    let (served_tcp, tcp_port) = (served.clone(), ports.tcp);
    tasks.spawn(async move { tcp_lane(tcp_port, deadline, &served_tcp).await });
    while let Some(done) = tasks.join_next().await {
        done.context("a traffic lane panicked")??;
    }
    // Give the export worker its interval to send the last batch before the stop drains it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.stop().await?;
    Ok(served.load(Ordering::Relaxed))
}

fn dataplane_yaml(ports: &Ports, app: SocketAddr, echo: SocketAddr) -> String {
    let inbound = |port: u16, service_port: u16, service: &str, protocol: &str| {
        format!(
            "    - port: {port}\n      servicePort: {service_port}\n      tags: {{kuma.io/service: {service}, kuma.io/protocol: {protocol}, kuma.io/zone: east}}\n"
        )
    };
    // The TLS inbound and the outbound that reaches it name the PEM files of `write_pki`.
    let tls = "      tls: {certFile: server.pem, keyFile: server-key.pem}\n";
    format!(
        "type: Dataplane\nmesh: default\nname: train-1\nlabels: {{kuma.io/workload: train}}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n{}{}{}{}{}{tls}  outbound:\n    - port: {}\n      tags: {{kuma.io/service: remote, kuma.io/protocol: http}}\n      endpoints: [\"{app}\"]\n    - port: {}\n      tags: {{kuma.io/service: web-tls, kuma.io/protocol: http}}\n      endpoints: [\"127.0.0.1:{}\"]\n      tls: {{caFile: ca.pem, serverName: localhost}}\n",
        inbound(ports.http, app.port(), "web", "http"),
        inbound(ports.http2, app.port(), "web-h2", "http2"),
        inbound(ports.grpc, app.port(), "web-grpc", "grpc"),
        inbound(ports.tcp, echo.port(), "web-tcp", "tcp"),
        inbound(ports.tls, app.port(), "web-tls", "http"),
        ports.outbound,
        ports.tls_outbound,
        ports.tls,
    )
}

/// One client's requests to one listener, one after another until `deadline`.
struct Lane {
    client: Client<HttpConnector, Full<Bytes>>,
    port: u16,
    /// Where in the caller and failure cycles this lane starts.
    first: usize,
    deadline: Instant,
    served: Arc<AtomicU64>,
}

impl Lane {
    /// GETs in turn with each caller's headers, every eighth a POST with a body, every 64th
    /// to a path the app answers with 503.
    async fn http(self) -> anyhow::Result<()> {
        let port = self.port;
        let mut i = self.first;
        while Instant::now() < self.deadline {
            let fail = i % 64 == 63;
            let path = if fail { "/fail" } else { "/1k?lane=x" };
            let mut request = Request::builder()
                .uri(format!("http://127.0.0.1:{port}{path}"))
                .header("x-env", "train");
            for (name, value) in CALLERS[i % CALLERS.len()] {
                request = request.header(*name, *value);
            }
            let body = if i % 8 == 7 {
                request = request.method("POST");
                Full::new(Bytes::from_static(&[b'x'; 300]))
            } else {
                Full::new(Bytes::new())
            };
            let response = self.client.request(request.body(body)?).await?;
            let status = response.status();
            response.into_body().collect().await?;
            let expected = if fail {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            if status != expected {
                bail!("port {port} answered {path} with {status}");
            }
            self.served.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
        Ok(())
    }

    /// Unary gRPC calls over HTTP/2, each a one-message request; the app answers every 16th
    /// with `UNAVAILABLE` in its trailers.
    async fn grpc(self) -> anyhow::Result<()> {
        let port = self.port;
        let mut i = self.first;
        while Instant::now() < self.deadline {
            let mut message = vec![0u8, 0, 0, 0, 32];
            message.extend_from_slice(&[b'g'; 32]);
            let method = if i % 16 == 15 { "Fail" } else { "Say" };
            let mut request = Request::post(format!("http://127.0.0.1:{port}/train.Echo/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            for (name, value) in CALLERS[i % CALLERS.len()] {
                request = request.header(*name, *value);
            }
            let response = self
                .client
                .request(request.body(Full::new(Bytes::from(message)))?)
                .await?;
            if response.status() != StatusCode::OK {
                bail!("gRPC port {port} answered {}", response.status());
            }
            response.into_body().collect().await?;
            self.served.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
        Ok(())
    }
}

/// Bytes through the TCP passthrough, echoed back, until `deadline`.
async fn tcp_lane(port: u16, deadline: Instant, served: &AtomicU64) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let sent = [b't'; 4096];
    let mut back = [0u8; 4096];
    while Instant::now() < deadline {
        stream.write_all(&sent).await?;
        stream.read_exact(&mut back).await?;
        served.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// The application: HTTP/1.1 and HTTP/2 (prior knowledge) on one port. A plain request gets
/// 1 KiB (`/fail`: 503); a gRPC call gets one message and `grpc-status` in the trailers.
async fn serve_app() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .await;
            });
        }
    });
    Ok(address)
}

type AppBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn answer(request: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    let grpc = request
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let fail = request.uri().path().ends_with("/Fail") || request.uri().path() == "/fail";
    let _ = request.into_body().collect().await;
    let body = |frames: Vec<Frame<Bytes>>| {
        StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        ))
    };
    let response = if grpc {
        let mut trailers = http::HeaderMap::new();
        let status = if fail { "14" } else { "0" };
        trailers.insert("grpc-status", http::HeaderValue::from_static(status));
        if fail {
            trailers.insert("grpc-message", http::HeaderValue::from_static("try later"));
        }
        let mut message = vec![0u8, 0, 0, 0, 16];
        message.extend_from_slice(&[b'r'; 16]);
        Response::builder()
            .header("content-type", "application/grpc")
            .body(body(vec![
                Frame::data(Bytes::from(message)),
                Frame::trailers(trailers),
            ]))
    } else {
        Response::builder()
            .status(if fail {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            })
            .header("content-type", "text/plain")
            .body(body(vec![Frame::data(Bytes::from_static(
                &[b'a'; BODY_BYTES],
            ))]))
    };
    Ok(response.expect("a well-formed response"))
}

/// A TCP echo server: what the passthrough carries back.
async fn serve_echo() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    Ok(address)
}

/// A CA and a certificate it issued for `localhost`, as the PEM files the Dataplane names.
fn write_pki(dir: &std::path::Path) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &ca)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("server.pem"), server.pem())?;
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem())?;
    Ok(())
}

/// The proxy process, stopped with SIGTERM when dropped (a failed run leaves none behind).
struct Proxy(Child);

impl Proxy {
    /// SIGTERM, then up to 10 s to exit: the profile is written at exit, so a kill would lose it.
    async fn stop(&mut self) -> anyhow::Result<()> {
        if self.0.try_wait()?.is_some() {
            bail!("the proxy had already exited");
        }
        // SAFETY: kill with the pid of a child this process spawned and has not reaped.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    bail!("the proxy exited with {status}")
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("the proxy did not stop within 10 s of SIGTERM")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn wait_ready(admin: u16, proxy: &mut Proxy) -> anyhow::Result<()> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = proxy.0.try_wait()? {
            bail!("the proxy exited at its start ({status})");
        }
        let request = Request::get(format!("http://127.0.0.1:{admin}/ready"))
            .body(Full::new(Bytes::new()))?;
        if let Ok(response) = client.request(request).await
            && response.status() == StatusCode::OK
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the proxy was not ready within 20 s")
}
