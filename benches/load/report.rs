//! The results as markdown: medians over rounds, the ratios against the targets of issue 7,
//! and every per-round figure underneath.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::target::Config;
use crate::{Load, Options, Results, grpc, tools};

pub struct Environment {
    pub commit: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub loadavg: String,
    pub nginx: String,
    pub wrk: String,
    pub h2load: String,
    pub clock_ticks: u64,
    /// How an idle CPU waits (the cpuidle driver, and a KVM guest's halt-polling limit): it
    /// decides what waking a proxy that went to sleep costs the CPU that wakes it.
    pub idle: String,
}

impl Environment {
    pub async fn collect(_options: &Options) -> Environment {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        let commit = tokio::process::Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "describe",
                "--always",
                "--dirty",
            ])
            .output()
            .await
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Environment {
            commit,
            cpu,
            cores: crate::procfs::online_cpus(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            loadavg: read("/proc/loadavg").trim().to_string(),
            nginx: tools::version("nginx", "-v").await,
            wrk: tools::version("wrk", "--version").await,
            h2load: tools::version("h2load", "--version").await,
            clock_ticks: crate::procfs::clock_ticks_per_second(),
            idle: idle_setting(&read),
        }
    }
}

/// `cpuidle <driver>`, with `guest_halt_poll_ns <n>` in a guest that has the haltpoll
/// driver: 0 there means an idle vCPU halts at once, and its waker pays for the wake-up.
fn idle_setting(read: &dyn Fn(&str) -> String) -> String {
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
    let driver = match driver.trim() {
        "" => "none",
        driver => driver,
    };
    let poll = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
    match poll.trim() {
        "" => format!("cpuidle {driver}"),
        poll => format!("cpuidle {driver}, guest_halt_poll_ns {poll}"),
    }
}

fn median(values: Vec<f64>) -> Option<f64> {
    quantile(&values, 0.5)
}

/// The `q` quantile of `values`, interpolated between the two nearest (the median of an even
/// count is the mean of the middle two).
pub(crate) fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len().checked_sub(1)?;
    let at = q * last as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64))
}

fn rate(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.0}"))
}

fn micros(v: Option<f64>) -> String {
    match v {
        None => "—".to_string(),
        Some(v) if v.abs() >= 1000.0 => format!("{:.2} ms", v / 1000.0),
        Some(v) => format!("{v:.0} µs"),
    }
}

fn cpu(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.1}"))
}

fn mib(kib: Option<f64>) -> String {
    kib.map_or("—".to_string(), |k| format!("{:.1} MiB", k / 1024.0))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

struct View<'a> {
    results: &'a Results,
}

impl View<'_> {
    fn samples(&self, config: Config, load: Load) -> impl Iterator<Item = &crate::Sample> {
        self.results
            .samples
            .iter()
            .filter(move |s| s.config == config && s.load == load)
    }
    fn rate(&self, config: Config, load: Load) -> Option<f64> {
        median(self.samples(config, load).map(|s| s.rate).collect())
    }
    fn p50(&self, config: Config, load: Load) -> Option<f64> {
        median(
            self.samples(config, load)
                .filter_map(|s| s.p50_us)
                .collect(),
        )
    }
    fn p99(&self, config: Config, load: Load) -> Option<f64> {
        median(
            self.samples(config, load)
                .filter_map(|s| s.p99_us)
                .collect(),
        )
    }
    fn cpu(&self, config: Config, load: Load) -> Option<f64> {
        median(
            self.samples(config, load)
                .filter_map(|s| s.cpu_us)
                .collect(),
        )
    }
    /// `f` of `a` over `f` of `b` in each round that ran both under `load`: a ratio of two
    /// runs minutes apart, where a ratio of medians would set runs of different rounds
    /// against each other.
    fn per_round(
        &self,
        a: Config,
        b: Config,
        load: Load,
        f: impl Fn(&crate::Sample) -> Option<f64>,
    ) -> Vec<f64> {
        self.samples(a, load)
            .filter_map(|x| {
                let y = self.samples(b, load).find(|y| y.round == x.round)?;
                ratio(f(x), f(y))
            })
            .collect()
    }
    fn memory(&self, config: Config, f: impl Fn(&crate::Memory) -> Option<u64>) -> Option<f64> {
        median(
            self.results
                .memory
                .iter()
                .filter(|m| m.config == config)
                .filter_map(|m| f(m).map(|v| v as f64))
                .collect(),
        )
    }
    fn fixed(&self, config: Config) -> Option<&crate::Fixed> {
        self.results.fixed.iter().find(|f| f.config == config)
    }
}

fn tracecar(sampling: u8, workers: u8) -> Config {
    Config::Tracecar { sampling, workers }
}

pub fn render(
    options: &Options,
    env: &Environment,
    results: &Results,
    started: jiff::Timestamp,
) -> String {
    let view = View { results };
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(
        w,
        "# tracecar load benchmark — {}",
        started.strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(w);
    if options.quick {
        let _ = writeln!(
            w,
            "> **Smoke run (`--quick`)**: {} s runs, one round. These figures check that the \
             harness works; they are not a measurement.\n",
            options.duration.as_secs()
        );
    }
    let _ = writeln!(
        w,
        "Command: `cargo bench --bench load -- {}`  \ncommit {} · {} × {} · Linux {} · load average at start {}  \n{} · {} · {} · CLK_TCK {} · {}\n",
        options
            .args
            .iter()
            .filter(|a| *a != "--bench")
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
        env.commit,
        env.cores,
        env.cpu,
        env.kernel,
        env.loadavg,
        env.nginx,
        env.wrk,
        env.h2load,
        env.clock_ticks,
        env.idle,
    );
    if options.rounds == 0 {
        // Slices alone (`--rounds 0 --slices N`): their section follows, with its own setup.
        return md;
    }
    let _ = writeln!(
        w,
        "Setup: upstream nginx answers `GET /1k` with {} bytes from memory over keep-alive \
         HTTP/1.1 and h2c. HTTP/1.1: `wrk {}`. h2c: `h2load {}`. gRPC: {} connections × {} \
         unary calls (or {} server streams of {} messages) in flight, {} B replies. {} round(s) \
         of {} s per run, configurations alternating in the order of the tables. Figures are \
         medians over rounds; CPU is the proxy process's utime+stime from /proc per request \
         (per message for gRPC), all its threads. tracecar is the build users deploy, \
         `scripts/dist`, the profile-guided `dist` build (or `--binary`), and every tracecar binary is dropped \
         from the page cache before it starts, so idle RSS is that of a first start.{}\n",
        crate::nginx::BODY_LEN,
        tools::wrk_args("URL", &[], tools::WrkShape::DEFAULT, options.duration).join(" "),
        tools::h2load_args("URL", options.duration).join(" "),
        grpc::CHANNELS,
        grpc::UNARY_PER_CHANNEL,
        grpc::STREAMS_PER_CHANNEL,
        grpc::STREAM_MESSAGES,
        grpc::REPLY_BYTES,
        options.rounds,
        options.duration.as_secs(),
        crate::target::layout(),
    );

    let configs = &options.configs;
    let _ = writeln!(w, "## Throughput and CPU\n");
    let _ = writeln!(
        w,
        "| configuration | HTTP/1.1 req/s | p50 | p99 | CPU µs/req | h2c req/s | CPU µs/req | gRPC unary msg/s | CPU µs/msg | gRPC stream msg/s | CPU µs/msg |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &c in configs {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.name(),
            rate(view.rate(c, Load::Http1)),
            micros(view.p50(c, Load::Http1)),
            micros(view.p99(c, Load::Http1)),
            cpu(view.cpu(c, Load::Http1)),
            rate(view.rate(c, Load::H2c)),
            cpu(view.cpu(c, Load::H2c)),
            rate(view.rate(c, Load::GrpcUnary)),
            cpu(view.cpu(c, Load::GrpcUnary)),
            rate(view.rate(c, Load::GrpcStream)),
            cpu(view.cpu(c, Load::GrpcStream)),
        );
    }
    let _ = writeln!(
        w,
        "\nh2load prints no latency percentiles, so h2c has none. `direct` has no proxy process, \
         hence no CPU figure; nginx does not carry the gRPC runs.\n"
    );

    if options.loads.contains(&Load::Http1B3) || options.loads.contains(&Load::Http1W3c) {
        let _ = writeln!(w, "## HTTP/1.1 by caller format\n");
        let _ = writeln!(
            w,
            "The caller sends one sampled context, as B3 multi headers or as a W3C `traceparent` \
             (same ids); the backend is Zipkin (native B3), so a W3C caller gets both formats \
             written back.\n"
        );
        let _ = writeln!(
            w,
            "| configuration | B3 caller req/s | CPU µs/req | W3C caller req/s | CPU µs/req | W3C/B3 CPU |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
        for &c in configs.iter().filter(|c| c.is_proxy()) {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} |",
                c.name(),
                rate(view.rate(c, Load::Http1B3)),
                cpu(view.cpu(c, Load::Http1B3)),
                rate(view.rate(c, Load::Http1W3c)),
                cpu(view.cpu(c, Load::Http1W3c)),
                fmt_ratio(ratio(
                    view.cpu(c, Load::Http1W3c),
                    view.cpu(c, Load::Http1B3)
                )),
            );
        }
        let _ = writeln!(w);
    }

    if options.loads.contains(&Load::Http1T1C32) || options.loads.contains(&Load::Http1T1C8) {
        let _ = writeln!(w, "## HTTP/1.1 from one wrk thread\n");
        let _ = writeln!(
            w,
            "`wrk -t1 -c32` and `wrk -t1 -c8`: fewer requests in flight than the main shape, so \
             what each request waits for shows in the rate. Ratios are against nginx in the same \
             rounds (CPU < 1 and rate > 1 are better).\n"
        );
        let _ = writeln!(
            w,
            "| configuration | c32 req/s | p99 | CPU µs/req | CPU ÷ nginx | req/s ÷ nginx | c8 req/s | p99 | CPU µs/req | CPU ÷ nginx | req/s ÷ nginx |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &c in configs.iter().filter(|c| c.is_proxy()) {
            let mut row = format!("| {} |", c.name());
            for load in [Load::Http1T1C32, Load::Http1T1C8] {
                row.push_str(&format!(
                    " {} | {} | {} | {} | {} |",
                    rate(view.rate(c, load)),
                    micros(view.p99(c, load)),
                    cpu(view.cpu(c, load)),
                    fmt_ratio(ratio(view.cpu(c, load), view.cpu(Config::Nginx, load))),
                    fmt_ratio(ratio(view.rate(c, load), view.rate(Config::Nginx, load))),
                ));
            }
            let _ = writeln!(w, "{row}");
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Memory\n");
    let _ = writeln!(
        w,
        "| configuration | RSS idle | RSS peak under load | RSS with {} idle connections | open fds then | first response p50 / p99 | RSS peak (end) |",
        crate::idle_connections()
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|");
    for &c in configs.iter().filter(|c| c.is_proxy()) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.name(),
            mib(view.memory(c, |m| m.idle_kib)),
            mib(view.memory(c, |m| m.load_peak_kib)),
            mib(view.memory(c, |m| m.conns_kib)),
            view.memory(c, |m| m.conns_fds.map(|n| n as u64))
                .map_or("—".to_string(), |n| format!("{n:.0}")),
            match (
                view.memory(c, |m| m.conns_first_p50_us),
                view.memory(c, |m| m.conns_first_p99_us),
            ) {
                (Some(p50), Some(p99)) => format!("{p50:.0} / {p99:.0} µs"),
                _ => "—".to_string(),
            },
            mib(view.memory(c, |m| m.peak_kib)),
        );
    }
    let _ = writeln!(
        w,
        "\nIdle: VmRSS after start, before any load. Peak under load: VmHWM after the loads, \
         before the held connections. Held connections: each sent one keep-alive request to the \
         HTTP/1.1 listener (50 connecting at a time) and stays open while VmRSS and the fd count \
         are read, 1.5 s after the last answer. First response: connect to the end of that \
         request's answer. Peak (end): VmHWM at the end of the round. MiB = 2^20 bytes.\n"
    );

    if !results.fixed.is_empty() {
        let _ = writeln!(
            w,
            "## Fixed rate: {} rps for {} s, open loop\n",
            options.rate,
            options.rate_duration.as_secs()
        );
        let direct = view.fixed(Config::Direct);
        let _ = writeln!(
            w,
            "| configuration | requests | errors | p50 | p99 | p99.9 | max | added p50 | added p99 | CPU µs/req | generator late p99 |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for f in &results.fixed {
            let added = |pick: fn(&crate::openloop::RateRun) -> f64| {
                direct
                    .filter(|d| d.config != f.config)
                    .map(|d| pick(&f.run) - pick(&d.run))
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.config.name(),
                f.run.scheduled,
                f.run.errors,
                micros(Some(f.run.p50_us)),
                micros(Some(f.run.p99_us)),
                micros(Some(f.run.p999_us)),
                micros(Some(f.run.max_us)),
                micros(added(|r| r.p50_us)),
                micros(added(|r| r.p99_us)),
                cpu(f.cpu_us),
                micros(Some(f.run.dispatch_late_p99_us)),
            );
        }
        let _ = writeln!(
            w,
            "\nLatency runs from each request's scheduled start to the end of its response body, \
             so generator or proxy stalls count (no coordinated omission). Added = this \
             configuration − direct. After a {:.1} s warm-up that is not recorded. \"generator \
             late\": how far behind schedule the generator itself dispatched, included in every \
             latency.\n",
            options.warmup.as_secs_f64()
        );
    }

    let s100 = tracecar(100, 1);
    let s0 = tracecar(0, 1);
    let shapes = [Load::Http1, Load::Http1T1C32, Load::Http1T1C8];
    if configs.contains(&s100)
        && shapes.iter().any(|l| options.loads.contains(l))
        && (configs.contains(&Config::Nginx) || configs.contains(&s0))
    {
        let _ = writeln!(w, "## Issue 18's targets, round by round\n");
        let _ = writeln!(
            w,
            "Each ratio is taken within a round (the two runs minutes apart), then the median \
             over rounds, with the lowest and highest and how many rounds were within the \
             target. Sampling 100 with one worker against nginx (CPU per request ≤ 1.0, rate ≥ \
             1.0), and against sampling 0 (CPU per request ≤ 1.05).\n"
        );
        let _ = writeln!(
            w,
            "| shape | CPU ÷ nginx (≤ 1.0) | req/s ÷ nginx (≥ 1.0) | CPU ÷ sampling 0 (≤ 1.05) |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|");
        let cpu = |s: &crate::Sample| s.cpu_us;
        let rate = |s: &crate::Sample| Some(s.rate);
        for load in shapes.into_iter().filter(|l| options.loads.contains(l)) {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} |",
                load.name(),
                spread(&view.per_round(s100, Config::Nginx, load, cpu), 1.0, true),
                spread(&view.per_round(s100, Config::Nginx, load, rate), 1.0, false),
                spread(&view.per_round(s100, s0, load, cpu), 1.05, true),
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Ratios and the targets of issue 7\n");
    let _ = writeln!(w, "| figure | measured | target | met |");
    let _ = writeln!(w, "|---|---:|---:|:---:|");
    let mut row =
        |figure: String, value: Option<f64>, shown: String, target: &str, ok: fn(f64) -> bool| {
            let met = match value {
                None => "—",
                Some(v) if ok(v) => "yes",
                Some(_) => "no",
            };
            let _ = writeln!(w, "| {figure} | {shown} | {target} | {met} |");
        };
    let v = ratio(
        view.rate(Config::TracecarTcp, Load::GrpcStream),
        view.rate(Config::Direct, Load::GrpcStream),
    );
    row(
        format!(
            "{} / direct gRPC streaming throughput (bytes only: the floor)",
            Config::TracecarTcp.name()
        ),
        v,
        fmt_ratio(v),
        "(info)",
        |_| true,
    );
    let nginx = Config::Nginx;
    for workers in [1u8, 2] {
        let s0 = tracecar(0, workers);
        let s100 = tracecar(100, workers);
        let n100 = s100.name();
        let v = ratio(view.cpu(s100, Load::Http1), view.cpu(nginx, Load::Http1));
        row(
            format!("{n100} / nginx CPU per HTTP/1.1 request"),
            v,
            fmt_ratio(v),
            "≤ 1.0",
            |v| v <= 1.0,
        );
        let v = view.cpu(s100, Load::Http1);
        row(
            format!("{n100} CPU per HTTP/1.1 request"),
            v,
            v.map_or("—".into(), |v| format!("{v:.1} µs")),
            "≤ 30 µs",
            |v| v <= 30.0,
        );
        let v = ratio(view.rate(s100, Load::Http1), view.rate(nginx, Load::Http1));
        row(
            format!("{n100} / nginx HTTP/1.1 throughput"),
            v,
            fmt_ratio(v),
            "≥ 1.0",
            |v| v >= 1.0,
        );
        let v = ratio(view.rate(s100, Load::H2c), view.rate(nginx, Load::H2c));
        row(
            format!("{n100} / nginx h2c throughput"),
            v,
            fmt_ratio(v),
            "(info)",
            |_| true,
        );
        let v = ratio(view.rate(s100, Load::Http1), view.rate(s0, Load::Http1));
        row(
            format!("{n100} / {} HTTP/1.1 throughput", s0.name()),
            v,
            fmt_ratio(v),
            "≥ 0.9",
            |v| v >= 0.9,
        );
        let v = ratio(
            view.rate(s100, Load::GrpcStream),
            view.rate(Config::Direct, Load::GrpcStream),
        );
        row(
            format!("{n100} / direct gRPC streaming throughput"),
            v,
            fmt_ratio(v),
            "≥ 0.8",
            |v| v >= 0.8,
        );
        let v = ratio(
            view.rate(s100, Load::GrpcUnary),
            view.rate(Config::Direct, Load::GrpcUnary),
        );
        row(
            format!("{n100} / direct gRPC unary throughput"),
            v,
            fmt_ratio(v),
            "(info)",
            |_| true,
        );
        let v = view.memory(s100, |m| m.idle_kib);
        row(format!("{n100} RSS idle"), v, mib(v), "≤ 10 MB", |v| {
            v * 1024.0 <= 10e6
        });
        let v = view.memory(s100, |m| m.load_peak_kib);
        row(
            format!("{n100} RSS peak under load"),
            v,
            mib(v),
            "(info)",
            |_| true,
        );
        let v = view.memory(s100, |m| m.conns_kib);
        row(
            format!("{n100} RSS with {} connections", crate::idle_connections()),
            v,
            mib(v),
            "≤ 30 MB",
            |v| v * 1024.0 <= 30e6,
        );
        if let (Some(d), Some(t)) = (view.fixed(Config::Direct), view.fixed(s100)) {
            let v = Some(t.run.p50_us - d.run.p50_us);
            row(
                format!("{n100} added p50 at {} rps", options.rate),
                v,
                micros(v),
                "≤ 100 µs",
                |v| v <= 100.0,
            );
            let v = Some(t.run.p99_us - d.run.p99_us);
            row(
                format!("{n100} added p99 at {} rps", options.rate),
                v,
                micros(v),
                "≤ 1 ms",
                |v| v <= 1000.0,
            );
        }
    }
    // A collector that is down must not slow the requests: the data path never waits for the
    // exporter (README, Export). Measured here, against the healthy configuration of the same run.
    let (down, up) = (Config::TracecarCollectorDown, tracecar(100, 1));
    let (nd, nu) = (down.name(), up.name());
    if let (Some(d), Some(u)) = (view.fixed(down), view.fixed(up)) {
        let v = ratio(Some(d.run.p99_us), Some(u.run.p99_us));
        row(
            format!("{nd} / {nu} p99 at {} rps (collector down)", options.rate),
            v,
            fmt_ratio(v),
            "≤ 1.5",
            |v| v <= 1.5,
        );
    }
    let v = ratio(view.p99(down, Load::Http1), view.p99(up, Load::Http1));
    row(
        format!("{nd} / {nu} HTTP/1.1 p99, closed loop (collector down)"),
        v,
        fmt_ratio(v),
        "(info)",
        |_| true,
    );
    let v = ratio(view.rate(down, Load::Http1), view.rate(up, Load::Http1));
    row(
        format!("{nd} / {nu} HTTP/1.1 throughput (collector down)"),
        v,
        fmt_ratio(v),
        "(info)",
        |_| true,
    );
    let v = ratio(view.cpu(down, Load::Http1), view.cpu(up, Load::Http1));
    row(
        format!("{nd} / {nu} CPU per HTTP/1.1 request (collector down)"),
        v,
        fmt_ratio(v),
        "(info)",
        |_| true,
    );
    let _ = writeln!(
        w,
        "\nnginx runs one worker, so `-w1` is the like-for-like comparison. Anchors (issue 7): \
         Envoy sidecar ≈ 200 µs CPU per request at 1,000 rps and +1–1.4 ms p99 per hop; \
         linkerd2-proxy 18–26 MB peak; ztunnel 60 µs and 12 MB. Compare figures only within \
         one run.\n"
    );

    let pairs: Vec<(Config, Config)> = configs
        .iter()
        .filter_map(|&c| match c {
            Config::Baseline { sampling, workers } => Some((tracecar(sampling, workers), c)),
            _ => None,
        })
        .filter(|(t, _)| configs.contains(t))
        .collect();
    if !pairs.is_empty() {
        let _ = writeln!(w, "## Against the baseline binary\n");
        let _ = writeln!(
            w,
            "Each figure is this build's median over the baseline build's, both run in the same \
             rounds (< 1 is better for CPU, p99 and RSS; > 1 for throughput).\n"
        );
        let _ = writeln!(
            w,
            "| configuration | HTTP/1.1 CPU/req | HTTP/1.1 req/s | HTTP/1.1 p99 | h2c CPU/req | h2c req/s | gRPC unary msg/s | gRPC stream msg/s | RSS idle | RSS held conns |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (t, b) in pairs {
            let r = |f: &dyn Fn(Config) -> Option<f64>| fmt_ratio(ratio(f(t), f(b)));
            let _ = writeln!(
                w,
                "| {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name(),
                b.name(),
                r(&|c| view.cpu(c, Load::Http1)),
                r(&|c| view.rate(c, Load::Http1)),
                r(&|c| view.p99(c, Load::Http1)),
                r(&|c| view.cpu(c, Load::H2c)),
                r(&|c| view.rate(c, Load::H2c)),
                r(&|c| view.rate(c, Load::GrpcUnary)),
                r(&|c| view.rate(c, Load::GrpcStream)),
                r(&|c| view.memory(c, |m| m.idle_kib)),
                r(&|c| view.memory(c, |m| m.conns_kib)),
            );
        }
        let _ = writeln!(w);
    }

    if !results.export.is_empty() {
        let _ = writeln!(w, "## Export\n");
        let _ = writeln!(
            w,
            "| round | configuration | spans received | sampled (metric) | dropped (metric) | exit |"
        );
        let _ = writeln!(w, "|---:|---|---:|---:|---:|---|");
        for e in &results.export {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} |",
                e.round,
                e.config.name(),
                e.received,
                rate(e.sampled),
                rate(e.dropped),
                e.exit
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Every run\n");
    let _ = writeln!(
        w,
        "| round | configuration | load | req/s or msg/s | p50 | p99 | CPU µs/req | completed | errors |"
    );
    let _ = writeln!(w, "|---:|---|---|---:|---:|---:|---:|---:|---:|");
    for s in &results.samples {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            s.round,
            s.config.name(),
            s.load.name(),
            s.rate,
            micros(s.p50_us),
            micros(s.p99_us),
            cpu(s.cpu_us),
            s.completed,
            s.errors
        );
    }
    if !results.failures.is_empty() {
        let _ = writeln!(w, "\n## Failures\n");
        for f in &results.failures {
            let _ = writeln!(w, "- {}", f.replace('\n', " "));
        }
    }
    md
}

/// "median (lowest–highest; k of n rounds within `target`)", for a ratio whose target is an
/// upper bound (`below`) or a lower bound.
fn spread(values: &[f64], target: f64, below: bool) -> String {
    let Some(mid) = median(values.to_vec()) else {
        return "—".to_string();
    };
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let within = values
        .iter()
        .filter(|&&v| if below { v <= target } else { v >= target })
        .count();
    format!(
        "{mid:.2} ({low:.2}–{high:.2}; {within} of {})",
        values.len()
    )
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.2}"))
}

/// Writes to `--out`, or benches/results/load-<date>[-quick][-N].md without overwriting.
pub fn write(
    options: &Options,
    markdown: &str,
    started: jiff::Timestamp,
) -> anyhow::Result<PathBuf> {
    let path = match &options.out {
        Some(path) => path.clone(),
        None => {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
            std::fs::create_dir_all(&dir)?;
            let stem = format!(
                "load-{}{}",
                started.strftime("%Y-%m-%d"),
                if options.quick { "-quick" } else { "" }
            );
            let mut path = dir.join(format!("{stem}.md"));
            let mut n = 2;
            while path.exists() {
                path = dir.join(format!("{stem}-{n}.md"));
                n += 1;
            }
            path
        }
    };
    std::fs::write(&path, markdown)?;
    Ok(path)
}
