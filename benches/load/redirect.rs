//! The redirected HTTP/1.1 leg (README, Transparent proxying) beside the explicit-port
//! leg. Both run through ONE tracecar process inside a network namespace of their own, with
//! the upstream nginx and the Zipkin receiver in it too: wrk (as an unprivileged uid, so the
//! nftables rules apply to it) calls a service VIP that is redirected to tracecar, or the
//! loopback outbound listener of the same service. The legs alternate within each round, and
//! tracecar's CPU per request is compared between them: the cost of redirection is the
//! original-destination lookup and the hand-over to the matched listener.
//!
//! Needs root (to create the namespace and install the rules), `ip`, `nft`, `setpriv` and
//! `curl`; without them it reports why and the rest of the benchmark runs as usual.

use std::fmt::Write as _;
use std::net::TcpListener as StdListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::nginx::{self, Nginx};
use crate::procfs::{CpuMeter, Managed};
use crate::{Options, tools, zipkin};

const UPSTREAM_H1: u16 = 18080;
const UPSTREAM_H2C: u16 = 18081;
const EXPLICIT: &str = "127.0.0.1:15101";
const VIP: &str = "10.96.0.1:80";
/// The uid wrk runs as: any but tracecar's (root here), whose connections the rules skip.
const CLIENT_UID: &str = "65534";

pub struct LegSample {
    pub round: u32,
    pub redirected: bool,
    pub run: tools::HttpRun,
    pub cpu_us: Option<f64>,
}

/// The namespace, deleted (after the processes in it stop) on drop.
struct Namespace {
    name: String,
    tracecar: Option<Managed>,
    upstream: Option<Nginx>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut t) = self.tracecar.take() {
            t.stop(Duration::from_secs(10));
        }
        drop(self.upstream.take());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Namespace {
    fn create() -> anyhow::Result<Namespace> {
        let name = format!("tracecar-bench-{}", std::process::id());
        ip(&["netns", "add", &name]).context("network namespaces are not allowed here")?;
        let ns = Namespace {
            name,
            tracecar: None,
            upstream: None,
        };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        // The VIP needs a route out of the namespace for the output hook to see it. A veth
        // pair with both ends inside gives it one (not every kernel has the dummy device).
        ip(&[
            "-n", n, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ])?;
        ip(&["-n", n, "addr", "add", "10.202.0.1/24", "dev", "d0"])?;
        ip(&["-n", n, "link", "set", "d1", "up"])?;
        ip(&["-n", n, "link", "set", "d0", "up"])?;
        ip(&["-n", n, "route", "add", "10.96.0.0/16", "dev", "d0"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread inside the namespace: sockets it binds and processes it starts
    /// belong to the namespace.
    fn within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).with_context(|| path.clone())?;
            use std::os::fd::AsRawFd;
            // SAFETY: a descriptor we own and keep open across the call; setns changes only
            // this thread's network namespace, and the thread ends with `f`.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    fn exec_prefix(&self, as_client: bool) -> Vec<String> {
        let mut prefix: Vec<String> = ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if as_client {
            prefix.extend(
                [
                    "setpriv",
                    "--reuid",
                    CLIENT_UID,
                    "--regid",
                    CLIENT_UID,
                    "--clear-groups",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
        }
        prefix
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (apt-get install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn dataplane() -> String {
    let upstream = format!("127.0.0.1:{UPSTREAM_H1}");
    let (vip_host, vip_port) = VIP.split_once(':').unwrap_or((VIP, "80"));
    let (explicit_host, explicit_port) = EXPLICIT.split_once(':').unwrap_or((EXPLICIT, "0"));
    format!(
        "type: Dataplane\nmesh: default\nname: bench-1\nnetworking:\n  address: 127.0.0.1\n  \
         transparentProxying: {{}}\n  inbound:\n    \
         - port: 18090\n      servicePort: {UPSTREAM_H1}\n      tags: {{kuma.io/service: bench, kuma.io/protocol: http}}\n  \
         outbound:\n    \
         - address: {explicit_host}\n      port: {explicit_port}\n      tags: {{kuma.io/service: upstream, kuma.io/protocol: http}}\n      endpoints: [\"{upstream}\"]\n    \
         - address: {vip_host}\n      port: {vip_port}\n      tags: {{kuma.io/service: upstream, kuma.io/protocol: http}}\n      endpoints: [\"{upstream}\"]\n"
    )
}

fn policy(zipkin: std::net::SocketAddr) -> String {
    format!(
        "type: Mesh\nname: default\ntracing:\n  defaultBackend: zipkin\n  backends:\n    \
         - name: zipkin\n      type: zipkin\n      sampling: 100\n      conf:\n        url: http://{zipkin}/api/v2/spans\n\
         ---\ntype: TrafficTrace\nname: trace-all\nmesh: default\nselectors:\n  - match:\n      kuma.io/service: '*'\n"
    )
}

/// Runs both legs for every round; returns the samples (explicit first in each round).
pub async fn run(options: &Options) -> anyhow::Result<Vec<LegSample>> {
    let mut ns = Namespace::create()?;
    ns.upstream = Some(ns.within(|| nginx::upstream(UPSTREAM_H1, UPSTREAM_H2C))?);
    let listener = ns.within(|| Ok(StdListener::bind("127.0.0.1:0")?))?;
    let receiver = zipkin::start_on(listener)?;

    let dir = tempfile::Builder::new()
        .prefix("tracecar-bench-redirect-")
        .tempdir()?;
    let (dp_file, policy_file) = (
        dir.path().join("dataplane.yaml"),
        dir.path().join("policy.yaml"),
    );
    std::fs::write(&dp_file, dataplane())?;
    std::fs::write(&policy_file, policy(receiver.address))?;
    let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
    let tracecar = crate::target::binary()?;
    let program = tracecar.clone();
    let child = ns.within(move || {
        Command::new(&program)
            .arg("run")
            .arg("--dataplane")
            .arg(&dp_file)
            .arg("--policy")
            .arg(&policy_file)
            .args(["--admin", "127.0.0.1:9901", "--workers", "1"])
            .env("TRACECAR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("start tracecar")
    })?;
    ns.tracecar = Some(Managed::new("tracecar-redirect", child));
    let pid = ns.tracecar.as_ref().map(Managed::pid);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ready = ns.exec_prefix(false);
    ready.extend(
        [
            "curl",
            "-sf",
            "-o",
            "/dev/null",
            "http://127.0.0.1:9901/ready",
        ]
        .map(String::from),
    );
    while !Command::new(&ready[0])
        .args(&ready[1..])
        .status()
        .is_ok_and(|s| s.success())
    {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            bail!("tracecar did not become ready in the namespace:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut install = ns.exec_prefix(false);
    install.push(tracecar.display().to_string());
    install.extend(["redirect", "install", "--uid", "0"].map(String::from));
    let out = Command::new(&install[0]).args(&install[1..]).output()?;
    if !out.status.success() {
        bail!(
            "redirect install: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    let client = ns.exec_prefix(true);
    let mut samples = Vec::new();
    for round in 1..=options.rounds {
        for redirected in [false, true] {
            let address = if redirected { VIP } else { EXPLICIT };
            let url = format!("http://{address}{}", nginx::PATH);
            eprintln!(
                "round {round}: tracecar {} http1",
                if redirected {
                    "redirected"
                } else {
                    "explicit-port"
                }
            );
            let meter = CpuMeter::start(pid);
            let run = tools::wrk_via(&client, &url, options.duration).await?;
            let cpu_us = meter.micros().map(|c| c / run.requests.max(1) as f64);
            samples.push(LegSample {
                round,
                redirected,
                run,
                cpu_us,
            });
            tokio::time::sleep(if options.quick {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(1)
            })
            .await;
        }
    }
    drop(ns);
    eprintln!("redirect leg: {} spans received", receiver.spans());
    Ok(samples)
}

/// The report section: every sample, and the median ratio of CPU per request.
pub fn render(samples: &[LegSample]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Transparent proxying: redirected vs explicit port (HTTP/1.1)\n"
    );
    let _ = writeln!(
        md,
        "One tracecar (sampling 100 %, 1 worker) in a network namespace; wrk calls the \
         service VIP (redirected by nftables) or the loopback outbound port.\n"
    );
    let _ = writeln!(
        md,
        "| round | leg | req/s | p50 µs | p99 µs | CPU µs/req | errors |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let show = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    for s in samples {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            s.round,
            if s.redirected {
                "redirected"
            } else {
                "explicit"
            },
            s.run.rps,
            show(s.run.p50_us),
            show(s.run.p99_us),
            show(s.cpu_us),
            s.run.errors
        );
    }
    let mut ratios: Vec<f64> = samples
        .chunks(2)
        .filter_map(|pair| match pair {
            [e, r] => Some(r.cpu_us? / e.cpu_us?),
            _ => None,
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    if let Some(median) = ratios.get(ratios.len() / 2) {
        let _ = writeln!(
            md,
            "\nCPU per request, redirected / explicit (median of rounds): **{median:.3}** \
             (target ≤ 1.05)"
        );
    }
    md
}
