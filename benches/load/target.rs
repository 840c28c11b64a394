//! The configurations under test and what the load tools point at: the upstream itself, the
//! nginx reverse proxy, or a `tracecar run` process.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::nginx::{self, Nginx};
use crate::procfs::Managed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Direct,
    Nginx,
    Tracecar {
        sampling: u8,
        workers: u8,
    },
    /// tracecar with every inbound `kuma.io/protocol: tcp`, one worker: bytes copied both
    /// ways, no HTTP at all. The floor for any proxy process between client and server.
    TracecarTcp,
    /// The same as `Tracecar`, run from the `--baseline` binary (an earlier build), so that a
    /// change is measured against what it replaces in one run, rounds alternating.
    Baseline {
        sampling: u8,
        workers: u8,
    },
}

/// The `--baseline` binary, when one was given.
static BASELINE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Adds the `baseline-*` configurations, run from `binary`.
pub fn set_baseline(binary: std::path::PathBuf) {
    let _ = BASELINE.set(binary);
}

impl Config {
    /// Every configuration, in the order each round runs them.
    pub fn all() -> Vec<Config> {
        let mut all = vec![Config::Direct, Config::Nginx];
        for workers in [1, 2] {
            for sampling in [0, 100] {
                all.push(Config::Tracecar { sampling, workers });
                if BASELINE.get().is_some() {
                    all.push(Config::Baseline { sampling, workers });
                }
            }
        }
        all.push(Config::TracecarTcp);
        all
    }

    pub fn name(&self) -> String {
        match self {
            Config::Direct => "direct".to_string(),
            Config::Nginx => "nginx".to_string(),
            Config::Tracecar { sampling, workers } => format!("tracecar-s{sampling}-w{workers}"),
            Config::TracecarTcp => "tracecar-tcp-w1".to_string(),
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
        Config::Nginx => {
            let (h1, h2c) = (free_port()?, free_port()?);
            let nginx =
                tokio::task::spawn_blocking(move || nginx::reverse_proxy(h1, h2c, upstreams.h1))
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
    let (h1, h2c, grpc, admin) = (free_port()?, free_port()?, free_port()?, free_port()?);
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
        _ => std::path::PathBuf::from(env!("CARGO_BIN_EXE_tracecar")),
    };
    let child = Command::new(binary)
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

/// A port that was free a moment ago (the Dataplane validator wants real ports, not 0).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
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
