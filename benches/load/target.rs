//! The configurations under test and what the load tools point at: the upstream itself, the
//! nginx reverse proxy, or a `tracecar run` process.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::nginx::{self, Nginx};
use crate::ports::{free_port, free_ports};
use crate::procfs::Managed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Direct,
    Nginx,
    /// nginx as above that also writes the headers tracecar adds to a request it forwards
    /// (`x-request-id`, B3 ids and sampling, `x-forwarded-proto`), from `$request_id`. Not a
    /// tracer: it shows what those headers cost the application behind the proxy, and nginx.
    /// Run only when named (`--only nginx-b3`).
    NginxB3,
    Tracecar {
        sampling: u8,
        workers: u8,
    },
    /// tracecar with every inbound `kuma.io/protocol: tcp`, one worker: bytes copied both
    /// ways, no HTTP at all. The floor for any proxy process between client and server.
    TracecarTcp,
    /// `tracecar-s100-w1` with its Zipkin collector down (connections refused): every batch
    /// fails, is retried and dropped. Next to `tracecar-s100-w1` it shows whether a failing
    /// export slows the requests, which must never wait for the exporter.
    TracecarCollectorDown,
    /// The same as `Tracecar`, run from the `--baseline` binary (an earlier build), so that a
    /// change is measured against what it replaces in one run, rounds alternating.
    Baseline {
        sampling: u8,
        workers: u8,
    },
}

/// The `--baseline` binary, when one was given.
static BASELINE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// `--pin`: the proxy under test on a CPU of its own (see [`command`]).
static PINNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The CPU the proxy under test gets with `--pin`; everything else runs on CPU 0.
const PROXY_CPU: usize = 1;

pub fn set_pinned() {
    PINNED.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn pinned() -> bool {
    PINNED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `--collector-with-proxy`: with `--pin`, the Zipkin collector on the proxy's CPU instead of
/// the load's (see [`collector_cpu`]).
static COLLECTOR_WITH_PROXY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub fn set_collector_with_proxy() {
    COLLECTOR_WITH_PROXY.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The CPU the collector's thread is moved to, if any. Pinned, the load's CPU sets the rate,
/// and the collector there takes its time from `wrk` and the upstream behind a proxy that
/// exports spans, and from no one behind nginx. On the proxy's CPU, the load's CPU does the
/// same work behind every configuration, and what spans cost the collector counts against
/// the proxy that sent them.
pub fn collector_cpu() -> Option<usize> {
    (pinned() && COLLECTOR_WITH_PROXY.load(std::sync::atomic::Ordering::Relaxed))
        .then_some(PROXY_CPU)
}

/// Puts this process (the load tools' parent, the gRPC client and the collector) on CPU 0.
/// On two shared cores, a proxy's CPU per request otherwise moves by ±15 % from round to
/// round with how the scheduler happens to interleave it with the load tools and the upstream
/// (how many requests each wake-up finds); with a core of its own it mostly does not.
pub fn pin_this_process() -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", "0"])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset -p -c 0 failed ({status})");
    }
    Ok(())
}

/// Which CPUs ran what, for the report: a sentence that starts with a space, or nothing.
pub fn layout() -> &'static str {
    if collector_cpu().is_some() {
        " Pinned (`--pin --collector-with-proxy`): the proxy under test and the collector on \
         CPU 1, the load tools and upstream on CPU 0."
    } else if pinned() {
        " Pinned (`--pin`): the proxy under test on CPU 1, the load tools, upstream and \
         collector on CPU 0."
    } else {
        ""
    }
}

/// A command for a proxy under test: on [`PROXY_CPU`] with `--pin` (`taskset` execs the
/// program, so the pid is the proxy's own), as it is otherwise.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if pinned() {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(PROXY_CPU.to_string()).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The binary the `tracecar-*` configurations run (see [`binary`]).
static UNDER_TEST: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Runs the `tracecar-*` configurations from `binary` (`--binary`) instead of a fresh build.
pub fn set_binary(binary: std::path::PathBuf) {
    let _ = UNDER_TEST.set(binary);
}

/// The tracecar the `tracecar-*` configurations run: `--binary`, else the binary users deploy,
/// built by `scripts/dist` (the `dist` profile, thin LTO and one codegen unit, optimised with
/// a profile of its training run), which the Docker image ships. The one `cargo bench` builds
/// for its benches is another program: the dev-dependencies' features are unified into it
/// (the fuzz entry points, tokio's process driver, …), which made it 5 % larger. So the
/// benchmark builds the binary itself, into a target directory of its own
/// (`target/load-bench`, also the lock the script's own cargo runs take, not this one's).
pub fn binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(binary) = UNDER_TEST.get() {
        return Ok(binary.clone());
    }
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = manifest.join("target/load-bench");
    eprintln!(
        "building the binary under test (scripts/dist) into {}",
        target_dir.display()
    );
    let status = Command::new(manifest.join("scripts/dist"))
        .current_dir(manifest)
        .env("CARGO_TARGET_DIR", &target_dir)
        // Its last line, the binary's path, would land in the middle of the report's output.
        .stdout(Stdio::null())
        .status()
        .context("run scripts/dist")?;
    if !status.success() {
        bail!("scripts/dist failed ({status})");
    }
    let binary = target_dir.join("dist/tracecar");
    let _ = UNDER_TEST.set(binary.clone());
    Ok(binary)
}

/// Drops `binary`'s pages from the page cache, so that every start reads it from disk as on a
/// node that never ran it. Idle RSS is mostly the binary's code, mapped in 64 KiB blocks
/// around each page start-up touches, but only from pages the cache already holds: the same
/// binary measured 0.9 MB more when freshly written (wholly cached) than when it had been
/// partly evicted. A build and an older baseline would otherwise differ by their cache state.
pub fn evict_from_page_cache(binary: &std::path::Path) {
    let mut input = std::ffi::OsString::from("if=");
    input.push(binary);
    let evicted = Command::new("dd")
        .arg(input)
        .args(["iflag=nocache", "count=0", "status=none"])
        .status();
    if !matches!(evicted, Ok(s) if s.success()) {
        eprintln!(
            "warning: could not drop {} from the page cache",
            binary.display()
        );
    }
}

/// Adds the `baseline-*` configurations, run from `binary`.
pub fn set_baseline(binary: std::path::PathBuf) {
    let _ = BASELINE.set(binary);
}

impl Config {
    /// Every configuration, in the order each round runs them.
    pub fn all() -> Vec<Config> {
        let mut all = vec![Config::Direct, Config::Nginx, Config::NginxB3];
        for workers in [1, 2] {
            for sampling in [0, 100] {
                all.push(Config::Tracecar { sampling, workers });
                if BASELINE.get().is_some() {
                    all.push(Config::Baseline { sampling, workers });
                }
            }
        }
        all.push(Config::TracecarTcp);
        all.push(Config::TracecarCollectorDown);
        all
    }

    pub fn name(&self) -> String {
        match self {
            Config::Direct => "direct".to_string(),
            Config::Nginx => "nginx".to_string(),
            Config::NginxB3 => "nginx-b3".to_string(),
            Config::Tracecar { sampling, workers } => format!("tracecar-s{sampling}-w{workers}"),
            Config::TracecarTcp => "tracecar-tcp-w1".to_string(),
            Config::TracecarCollectorDown => "tracecar-down-w1".to_string(),
            Config::Baseline { sampling, workers } => format!("baseline-s{sampling}-w{workers}"),
        }
    }

    pub fn is_proxy(&self) -> bool {
        !matches!(self, Config::Direct)
    }
}

/// Where the real services listen.
#[derive(Clone, Copy)]
pub struct Upstreams {
    pub h1: SocketAddr,
    pub h2c: SocketAddr,
    pub grpc: SocketAddr,
    pub zipkin: SocketAddr,
}

/// A started configuration: the addresses to load, and the proxy process, if any.
pub struct Target {
    pub h1: SocketAddr,
    pub h2c: SocketAddr,
    /// None when the configuration does not carry gRPC (nginx).
    pub grpc: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    proxy: Proxy,
}

enum Proxy {
    None,
    Nginx(Nginx),
    Tracecar {
        process: Managed,
        dir: tempfile::TempDir,
    },
}

/// What a proxy reported when it was stopped.
#[derive(Default, Clone)]
pub struct Stopped {
    /// `tracecar_spans_*_total` summed over labels, read just before SIGTERM.
    pub sampled: Option<f64>,
    pub dropped: Option<f64>,
    /// "0", "signal"…, or "killed" when it did not exit within the grace period.
    pub exit: String,
}

impl Target {
    pub fn pid(&self) -> Option<u32> {
        match &self.proxy {
            Proxy::None => None,
            Proxy::Nginx(n) => Some(n.pid()),
            Proxy::Tracecar { process, .. } => Some(process.pid()),
        }
    }

    pub async fn stop(self) -> Stopped {
        let mut stopped = Stopped::default();
        if let Some(admin) = self.admin
            && let Ok((200, metrics)) = http_get(admin, "/metrics").await
        {
            stopped.sampled = Some(metric_sum(&metrics, "tracecar_spans_sampled_total"));
            stopped.dropped = Some(metric_sum(&metrics, "tracecar_spans_dropped_total"));
        }
        let process = match self.proxy {
            Proxy::None => return stopped,
            Proxy::Nginx(n) => Some(n),
            Proxy::Tracecar { mut process, dir } => {
                let status = tokio::task::spawn_blocking(move || {
                    let status = process.stop(Duration::from_secs(15));
                    drop(process);
                    status
                })
                .await
                .ok()
                .flatten();
                stopped.exit = match status {
                    Some(s) => match s.code() {
                        Some(code) => code.to_string(),
                        None => format!("{s}"),
                    },
                    None => "killed".to_string(),
                };
                if stopped.exit != "0" {
                    let log =
                        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                    eprintln!("tracecar exited with {}; stderr:\n{log}", stopped.exit);
                }
                None
            }
        };
        if let Some(nginx) = process {
            tokio::task::spawn_blocking(move || drop(nginx)).await.ok();
            stopped.exit = "0".to_string();
        }
        stopped
    }
}

pub async fn start(config: Config, upstreams: Upstreams) -> anyhow::Result<Target> {
    match config {
        Config::Direct => Ok(Target {
            h1: upstreams.h1,
            h2c: upstreams.h2c,
            grpc: Some(upstreams.grpc),
            admin: None,
            proxy: Proxy::None,
        }),
        Config::Nginx | Config::NginxB3 => {
            let [h1, h2c] = free_ports()?;
            let b3 = config == Config::NginxB3;
            let nginx = tokio::task::spawn_blocking(move || {
                nginx::reverse_proxy(h1, h2c, upstreams.h1, b3)
            })
            .await??;
            Ok(Target {
                h1: loopback(h1),
                h2c: loopback(h2c),
                grpc: None,
                admin: None,
                proxy: Proxy::Nginx(nginx),
            })
        }
        Config::Tracecar { sampling, workers } => {
            start_tracecar(
                config,
                sampling,
                workers,
                ["http", "http2", "grpc"],
                upstreams,
            )
            .await
        }
        Config::TracecarTcp => {
            start_tracecar(config, 100, 1, ["tcp", "tcp", "tcp"], upstreams).await
        }
        Config::TracecarCollectorDown => {
            // A port that was free a moment ago: nothing listens, connections are refused.
            let down = Upstreams {
                zipkin: loopback(free_port()?),
                ..upstreams
            };
            start_tracecar(config, 100, 1, ["http", "http2", "grpc"], down).await
        }
        Config::Baseline { sampling, workers } => {
            start_tracecar(
                config,
                sampling,
                workers,
                ["http", "http2", "grpc"],
                upstreams,
            )
            .await
        }
    }
}

async fn start_tracecar(
    config: Config,
    sampling: u8,
    workers: u8,
    protocols: [&str; 3],
    upstreams: Upstreams,
) -> anyhow::Result<Target> {
    let dir = tempfile::Builder::new()
        .prefix("tracecar-bench-proxy-")
        .tempdir()?;
    let [h1, h2c, grpc, admin] = free_ports()?;
    let dataplane = format!(
        "type: Dataplane\n\
         mesh: default\n\
         name: bench-1\n\
         networking:\n  \
           address: 127.0.0.1\n  \
           inbound:\n    \
             - port: {h1}\n      servicePort: {}\n      tags: {{kuma.io/service: bench-http, kuma.io/protocol: {}}}\n    \
             - port: {h2c}\n      servicePort: {}\n      tags: {{kuma.io/service: bench-h2c, kuma.io/protocol: {}}}\n    \
             - port: {grpc}\n      servicePort: {}\n      tags: {{kuma.io/service: bench-grpc, kuma.io/protocol: {}}}\n",
        upstreams.h1.port(),
        protocols[0],
        upstreams.h2c.port(),
        protocols[1],
        upstreams.grpc.port(),
        protocols[2],
    );
    let policy = format!(
        "type: Mesh\n\
         name: default\n\
         tracing:\n  \
           defaultBackend: zipkin\n  \
           backends:\n    \
             - name: zipkin\n      \
               type: zipkin\n      \
               sampling: {sampling}\n      \
               conf:\n        \
                 url: http://{}/api/v2/spans\n\
         ---\n\
         type: TrafficTrace\n\
         name: trace-all\n\
         mesh: default\n\
         selectors:\n  \
           - match:\n      \
               kuma.io/service: '*'\n",
        upstreams.zipkin
    );
    let dataplane_file = dir.path().join("dataplane.yaml");
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&dataplane_file, dataplane)?;
    std::fs::write(&policy_file, policy)?;
    let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
    let binary = match config {
        Config::Baseline { .. } => BASELINE.get().context("no --baseline binary")?.clone(),
        _ => binary()?,
    };
    evict_from_page_cache(&binary);
    let child = command(binary)
        .arg("run")
        .arg("--dataplane")
        .arg(&dataplane_file)
        .arg("--policy")
        .arg(&policy_file)
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--workers", &workers.to_string()])
        .env("TRACECAR_LOG", "warn")
        .env_remove("TRACECAR_DATAPLANE")
        .env_remove("TRACECAR_POLICY")
        .env_remove("TRACECAR_ADMIN")
        .env_remove("TRACECAR_WORKERS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("start tracecar")?;
    let mut process = Managed::new(config.name(), child);
    let admin = loopback(admin);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok((200, _)) = http_get(admin, "/ready").await {
            break;
        }
        if process.exited().is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            bail!("{} did not become ready:\n{log}", config.name());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Target {
        h1: loopback(h1),
        h2c: loopback(h2c),
        grpc: Some(loopback(grpc)),
        admin: Some(admin),
        proxy: Proxy::Tracecar { process, dir },
    })
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One GET on a fresh connection: status and body (for /ready, /metrics, sanity checks).
pub async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange).await??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The sum of a Prometheus counter over all its label sets.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
