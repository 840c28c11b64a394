//! The load benchmark (issue 7): tracecar against a direct connection and against nginx as a
//! plain reverse proxy, on one machine, in one run, configurations alternating round by round.
//! See benches/README.md. Run with `cargo bench --bench load -- [--quick] [options]`.

#[path = "load/grpc.rs"]
mod grpc;
#[path = "load/idle.rs"]
mod idle;
#[path = "load/nginx.rs"]
mod nginx;
#[path = "load/openloop.rs"]
mod openloop;
#[path = "load/ports.rs"]
mod ports;
#[path = "load/procfs.rs"]
mod procfs;
#[path = "load/redirect.rs"]
mod redirect;
#[path = "load/report.rs"]
mod report;
#[path = "load/slices.rs"]
mod slices;
#[path = "load/target.rs"]
mod target;
#[path = "load/tools.rs"]
mod tools;
#[path = "load/zipkin.rs"]
mod zipkin;

use std::time::Duration;

use anyhow::{Context, bail};

use procfs::CpuMeter;
use target::{Config, Upstreams};

const USAGE: &str = "\
usage: cargo bench --bench load -- [options]

  --duration SECS       length of each closed-loop run (default 10)
  --idle-connections N  idle keep-alive connections held per round for the memory figures
                        (default 1000; 10000 for the per-connection run of issue 18)
  --rounds N            rounds; each runs every configuration once, the order rotated by one
                        each round (default 3; 0 with --slices for slices alone)
  --slices N            also N cycles of interleaved slices: every configuration running at
                        once, each HTTP/1.1 load run for --slice SECS against each in turn,
                        ratios taken within a cycle (issue 18's targets, within a few per cent)
  --slice SECS          length of one slice (default 1)
  --rate RPS            fixed-rate run: requests per second (default 1000)
  --rate-duration SECS  fixed-rate run: measured length (default 30), after a warm-up
  --quick               smoke test: 2 s runs, 1 round, 2 s fixed-rate run
  --only NAME[,NAME]    only these configurations and/or loads (repeatable):
                        direct, nginx, nginx-b3 (nginx adding tracecar's headers),
                        tracecar, tracecar-s0, tracecar-s100, tracecar-s0-w1,
                        tracecar-s100-w2, tracecar-down, …; http1, http1-b3, http1-w3c,
                        http1-t1c32, http1-t1c8, h2c, grpc
                        (grpc-unary, grpc-stream),
                        conns, fixed-rate, redirect (the redirected HTTP/1.1 leg; root)
  --out FILE            where to write the results (default benches/results/load-<date>.md)
  --pin                 the proxy under test (tracecar or nginx) on CPU 1, everything else
                        (load tools, upstream, collector, this process) on CPU 0
  --collector-with-proxy
                        with --pin, the Zipkin collector on CPU 1 beside the proxy instead:
                        the load's CPU then does the same work behind every configuration
  --binary BINARY       run the tracecar-* configurations from BINARY (default: the build
                        users deploy, `cargo build --profile dist`, into target/load-bench)
  --baseline BINARY     also run every tracecar configuration from BINARY (an earlier build),
                        as baseline-s*-w*, next to its twin: after it in odd rounds, before it
                        in even ones (give an even --rounds); the report then compares the two
                        (selecting tracecar-… with --only selects its twin too)
";

/// What each round measures, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    Http1,
    /// HTTP/1.1 whose caller sends a sampled B3 context (multi headers).
    Http1B3,
    /// HTTP/1.1 whose caller sends a sampled W3C `traceparent` (the same ids): against
    /// `Http1B3`, the cost of the W3C format on the data path.
    Http1W3c,
    /// HTTP/1.1 from one wrk thread over 32 connections: fewer requests in flight than
    /// `Http1`, so the latency of each one (and of the work around it) shows in the rate.
    Http1T1C32,
    /// As `Http1T1C32` with 8 connections: the proxy often waits, and wakes for each request.
    Http1T1C8,
    H2c,
    GrpcUnary,
    GrpcStream,
}

impl Load {
    pub const ALL: [Load; 8] = [
        Load::Http1,
        Load::Http1B3,
        Load::Http1W3c,
        Load::Http1T1C32,
        Load::Http1T1C8,
        Load::H2c,
        Load::GrpcUnary,
        Load::GrpcStream,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Load::Http1 => "http1",
            Load::Http1B3 => "http1-b3",
            Load::Http1W3c => "http1-w3c",
            Load::Http1T1C32 => "http1-t1c32",
            Load::Http1T1C8 => "http1-t1c8",
            Load::H2c => "h2c",
            Load::GrpcUnary => "grpc-unary",
            Load::GrpcStream => "grpc-stream",
        }
    }

    /// wrk's threads and connections for the HTTP/1.1 loads.
    pub fn wrk_shape(&self) -> tools::WrkShape {
        match self {
            Load::Http1T1C32 => tools::WrkShape {
                threads: 1,
                connections: 32,
            },
            Load::Http1T1C8 => tools::WrkShape {
                threads: 1,
                connections: 8,
            },
            _ => tools::WrkShape::DEFAULT,
        }
    }
}

/// The configurations in the order round `round` runs them. In a fixed order the
/// configuration that ran first read better: by 3–9 % in the main shape, in A/B runs of two
/// builds with the order swapped. So the list is rotated by one each round (round 2 starts with
/// the second configuration), and a build and its `--baseline` twin stay together, the twin
/// first in even rounds.
fn round_order(configs: &[Config], round: u32) -> Vec<Config> {
    let mut groups: Vec<Vec<Config>> = Vec::new();
    for &config in configs {
        let twin = match (groups.last().and_then(|g| g.last()), config) {
            (
                Some(&Config::Tracecar { sampling, workers }),
                Config::Baseline {
                    sampling: twin_sampling,
                    workers: twin_workers,
                },
            ) => (sampling, workers) == (twin_sampling, twin_workers),
            _ => false,
        };
        match groups.last_mut() {
            Some(group) if twin => group.push(config),
            _ => groups.push(vec![config]),
        }
    }
    if !groups.is_empty() {
        let turn = (round as usize).saturating_sub(1) % groups.len();
        groups.rotate_left(turn);
    }
    if round.is_multiple_of(2) {
        for group in &mut groups {
            group.reverse();
        }
    }
    groups.concat()
}

/// The configurations of the fixed-rate run.
fn fixed_rate_configs() -> Vec<Config> {
    let mut configs = vec![Config::Direct, Config::Nginx];
    for workers in [1, 2] {
        configs.push(Config::Tracecar {
            sampling: 100,
            workers,
        });
        // Listed whether or not a baseline was given: `options.configs` decides.
        configs.push(Config::Baseline {
            sampling: 100,
            workers,
        });
    }
    configs.push(Config::TracecarCollectorDown);
    configs
}

pub struct Options {
    pub duration: Duration,
    pub rounds: u32,
    /// Cycles of interleaved slices (0: none), and each slice's length.
    pub slices: u32,
    pub slice: Duration,
    pub rate: u32,
    pub rate_duration: Duration,
    pub warmup: Duration,
    pub quick: bool,
    pub configs: Vec<Config>,
    pub loads: Vec<Load>,
    pub conns: bool,
    pub fixed_rate: bool,
    /// The redirected HTTP/1.1 leg beside the explicit-port one (needs root and nft).
    pub redirect: bool,
    pub out: Option<std::path::PathBuf>,
    pub args: Vec<String>,
}

fn parse_options(args: Vec<String>) -> anyhow::Result<Options> {
    let mut duration = None;
    let mut rounds = None;
    let mut slices = 0;
    let mut slice = 1;
    let mut rate = 1000;
    let mut rate_duration = None;
    let mut quick = false;
    let mut only: Vec<String> = Vec::new();
    let mut out = None;
    let mut collector_with_proxy = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--duration" => duration = Some(value("--duration")?.parse::<u64>()?),
            "--idle-connections" => {
                let n = value("--idle-connections")?.parse::<usize>()?;
                let _ = IDLE_CONNECTIONS.set(n);
            }
            "--rounds" => rounds = Some(value("--rounds")?.parse::<u32>()?),
            "--slices" => slices = value("--slices")?.parse::<u32>()?,
            "--slice" => slice = value("--slice")?.parse::<u64>()?.max(1),
            "--rate" => rate = value("--rate")?.parse::<u32>()?,
            "--rate-duration" => rate_duration = Some(value("--rate-duration")?.parse::<u64>()?),
            "--quick" => quick = true,
            "--only" => only.extend(value("--only")?.split(',').map(|s| s.trim().to_string())),
            "--out" => out = Some(value("--out")?.into()),
            "--pin" => target::set_pinned(),
            "--collector-with-proxy" => collector_with_proxy = true,
            "--binary" => {
                let binary = std::path::PathBuf::from(value("--binary")?);
                if !binary.is_file() {
                    bail!("--binary {}: no such file", binary.display());
                }
                target::set_binary(binary);
            }
            "--baseline" => {
                let binary = std::path::PathBuf::from(value("--baseline")?);
                if !binary.is_file() {
                    bail!("--baseline {}: no such file", binary.display());
                }
                target::set_baseline(binary);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if collector_with_proxy {
        if !target::pinned() {
            bail!(
                "--collector-with-proxy: only with --pin (unpinned, nothing has a CPU of its own)"
            );
        }
        target::set_collector_with_proxy();
    }
    let all_configs = Config::all();
    let mut configs = Vec::new();
    let mut loads = Vec::new();
    let (mut conns, mut fixed_rate, mut redirect) = (false, false, false);
    for item in only.iter().filter(|i| !i.is_empty()) {
        let matching: Vec<Config> = all_configs
            .iter()
            .copied()
            .filter(|c| {
                // nginx-b3 only by its own name (`nginx` would otherwise select it too).
                if *c == Config::NginxB3 {
                    return c.name() == *item;
                }
                // A baseline configuration is selected with its tracecar twin.
                let name = c.name().replace("baseline-", "tracecar-");
                let item = item.replace("baseline-", "tracecar-");
                name == item || name.starts_with(&format!("{item}-"))
            })
            .collect();
        if !matching.is_empty() {
            configs.extend(matching);
            continue;
        }
        match item.as_str() {
            "grpc" => loads.extend([Load::GrpcUnary, Load::GrpcStream]),
            "conns" => conns = true,
            "fixed-rate" => fixed_rate = true,
            "redirect" => redirect = true,
            name => match Load::ALL.iter().find(|l| l.name() == name) {
                Some(load) => loads.push(*load),
                None => bail!("--only {name}: no such configuration or load\n{USAGE}"),
            },
        }
    }
    let no_load_named = loads.is_empty() && !conns && !fixed_rate && !redirect;
    if no_load_named {
        loads = Load::ALL.to_vec();
        conns = true;
        fixed_rate = true;
        redirect = true;
    }
    configs = if configs.is_empty() {
        all_configs
            .into_iter()
            .filter(|c| *c != Config::NginxB3)
            .collect()
    } else {
        all_configs
            .into_iter()
            .filter(|c| configs.contains(c))
            .collect()
    };
    loads = Load::ALL
        .into_iter()
        .filter(|l| loads.contains(l))
        .collect();
    let default_secs = if quick { 2 } else { 10 };
    let rate_duration = Duration::from_secs(rate_duration.unwrap_or(if quick { 2 } else { 30 }));
    Ok(Options {
        duration: Duration::from_secs(duration.unwrap_or(default_secs).max(1)),
        // No rounds only when slices measure instead.
        rounds: match rounds.unwrap_or(if quick { 1 } else { 3 }) {
            0 if slices > 0 => 0,
            n => n.max(1),
        },
        slices,
        slice: Duration::from_secs(slice),
        rate,
        warmup: if quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        },
        rate_duration,
        quick,
        configs,
        loads,
        conns,
        fixed_rate,
        redirect,
        out,
        args,
    })
}

pub struct Sample {
    pub round: u32,
    pub config: Config,
    pub load: Load,
    /// Requests/s (HTTP) or messages/s (gRPC).
    pub rate: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Proxy CPU µs per request (per message for gRPC).
    pub cpu_us: Option<f64>,
    pub completed: u64,
    pub errors: u64,
}

pub struct Memory {
    pub round: u32,
    pub config: Config,
    pub idle_kib: Option<u64>,
    /// VmHWM after the loads, before the idle connections.
    pub load_peak_kib: Option<u64>,
    /// VmHWM at the end of the round.
    pub peak_kib: Option<u64>,
    pub conns_kib: Option<u64>,
    /// Open file descriptors of the proxy while the connections were held.
    pub conns_fds: Option<usize>,
    /// Connect to the end of the first response, over the held connections (opened 50 at a
    /// time): median and 99th percentile, µs.
    pub conns_first_p50_us: Option<u64>,
    pub conns_first_p99_us: Option<u64>,
}

pub struct Export {
    pub round: u32,
    pub config: Config,
    pub received: u64,
    pub sampled: Option<f64>,
    pub dropped: Option<f64>,
    pub exit: String,
}

pub struct Fixed {
    pub config: Config,
    pub run: openloop::RateRun,
    pub cpu_us: Option<f64>,
}

#[derive(Default)]
pub struct Results {
    pub samples: Vec<Sample>,
    pub memory: Vec<Memory>,
    pub export: Vec<Export>,
    pub fixed: Vec<Fixed>,
    pub failures: Vec<String>,
}

/// The number of held idle connections: `--idle-connections`, else 1,000.
pub static IDLE_CONNECTIONS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

pub fn idle_connections() -> usize {
    *IDLE_CONNECTIONS.get_or_init(|| 1000)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs bench binaries too, without `--bench`: this one takes
    // a quarter of an hour and needs wrk, h2load and nginx, so it only runs under `cargo bench`.
    if !args.iter().any(|a| a == "--bench") {
        println!("load benchmark: run it with `cargo bench --bench load` (see benches/README.md)");
        return Ok(());
    }
    let options = parse_options(args)?;
    // Built (or named) before anything is measured; the report names it.
    let binary = target::binary()?;
    eprintln!("tracecar under test: {}", binary.display());
    // Children (wrk, nginx) inherit it: 1,000 held connections need more than the usual
    // soft 1,024.
    let files = tracecar::proxy::raise_open_files_limit().map_or(0, |(_, after)| after);
    let held = idle_connections();
    if files < 4 * held as u64 {
        eprintln!("warning: only {files} open files allowed; the {held}-connection run may fail");
    }
    // The bench holds as many client connections as the proxy does. Its file table grows as
    // the proxy's would, each doubling stopping its threads for an RCU grace period, and those
    // stops would be counted as the proxy's first-response time.
    let wanted = u32::try_from(held + 1024).unwrap_or(u32::MAX);
    if let Err(e) = tracecar::proxy::reserve_file_table(wanted) {
        eprintln!("warning: file table not reserved: {e}");
    }
    if target::pinned() {
        // Before any thread or child exists: all of them inherit CPU 0.
        target::pin_this_process()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(options))
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let started = jiff::Timestamp::now();
    let environment = report::Environment::collect(&options).await;
    let zipkin = zipkin::start().await?;
    let grpc_address = grpc::serve().await?;
    let [up_h1, up_h2c] = ports::free_ports()?;
    let upstream = tokio::task::spawn_blocking(move || nginx::upstream(up_h1, up_h2c)).await??;
    let upstreams = Upstreams {
        h1: ([127, 0, 0, 1], up_h1).into(),
        h2c: ([127, 0, 0, 1], up_h2c).into(),
        grpc: grpc_address,
        zipkin: zipkin.address,
    };
    let (status, body) = target::http_get(upstreams.h1, nginx::PATH).await?;
    if status != 200 || body.len() != nginx::BODY_LEN {
        bail!("the upstream answers {status} with {} bytes", body.len());
    }
    eprintln!(
        "load bench: {} s runs, {} round(s), configurations {:?}",
        options.duration.as_secs(),
        options.rounds,
        options.configs.iter().map(|c| c.name()).collect::<Vec<_>>()
    );

    let mut results = Results::default();
    let round_work = !options.loads.is_empty() || options.conns;
    for round in 1..=options.rounds {
        if !round_work {
            break;
        }
        for config in round_order(&options.configs, round) {
            if let Err(e) = measure(&options, round, config, upstreams, &zipkin, &mut results).await
            {
                let failure = format!("round {round}, {}: {e:#}", config.name());
                eprintln!("FAILED {failure}");
                results.failures.push(failure);
            }
        }
    }
    if options.fixed_rate {
        for config in fixed_rate_configs() {
            if !options.configs.contains(&config) {
                continue;
            }
            if let Err(e) = fixed_rate(&options, config, upstreams, &mut results).await {
                let failure = format!("fixed rate, {}: {e:#}", config.name());
                eprintln!("FAILED {failure}");
                results.failures.push(failure);
            }
        }
    }
    let mut slices_section = String::new();
    if options.slices > 0 {
        let upstream_pid = upstream.pid();
        match slices::run(
            &options,
            options.slices,
            options.slice,
            upstreams,
            upstream_pid,
        )
        .await
        {
            Ok(slices) => {
                slices_section = slices::render(&options, options.slices, options.slice, &slices)
            }
            Err(e) => {
                let failure = format!("interleaved slices: {e:#}");
                eprintln!("FAILED {failure}");
                results.failures.push(failure);
            }
        }
    }
    let mut redirect_section = String::new();
    if options.redirect {
        match redirect::run(&options).await {
            Ok(samples) => redirect_section = redirect::render(&samples),
            Err(e) => {
                let failure = format!("redirected leg: {e:#}");
                eprintln!("FAILED {failure}");
                results.failures.push(failure);
            }
        }
    }
    drop(upstream);

    let mut markdown = report::render(&options, &environment, &results, started);
    if !slices_section.is_empty() {
        markdown.push('\n');
        markdown.push_str(&slices_section);
    }
    if !redirect_section.is_empty() {
        markdown.push('\n');
        markdown.push_str(&redirect_section);
    }
    println!("\n{markdown}");
    let path = report::write(&options, &markdown, started)?;
    eprintln!("results written to {}", path.display());
    Ok(())
}

fn pause(options: &Options) -> Duration {
    if options.quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    }
}

/// One configuration in one round: start it, read its idle memory, run every load while
/// metering the proxy's CPU, hold the idle connections, read its peak memory, stop it.
async fn measure(
    options: &Options,
    round: u32,
    config: Config,
    upstreams: Upstreams,
    zipkin: &zipkin::Receiver,
    results: &mut Results,
) -> anyhow::Result<()> {
    let spans_before = zipkin.spans();
    let target = target::start(config, upstreams).await?;
    let pid = target.pid();
    tokio::time::sleep(pause(options)).await;
    let idle_kib = pid.and_then(|p| procfs::status_kib(p, "VmRSS"));

    for &load in &options.loads {
        let address = match load {
            Load::H2c => target.h2c,
            Load::GrpcUnary | Load::GrpcStream => match target.grpc {
                Some(address) => address,
                None => continue,
            },
            _ => target.h1,
        };
        eprintln!("round {round}: {} {}", config.name(), load.name());
        let url = format!("http://{address}{}", nginx::PATH);
        let meter = CpuMeter::start(pid);
        let sample = match load {
            Load::GrpcUnary | Load::GrpcStream => {
                let kind = if load == Load::GrpcUnary {
                    grpc::Kind::Unary
                } else {
                    grpc::Kind::Stream
                };
                let run = grpc::load(address, kind, options.duration).await?;
                let cpu = meter.micros();
                Sample {
                    round,
                    config,
                    load,
                    rate: run.rate(),
                    p50_us: None,
                    p99_us: None,
                    cpu_us: cpu.map(|c| c / run.messages.max(1) as f64),
                    completed: run.messages,
                    errors: run.errors,
                }
            }
            // HTTP/1.1 (wrk) and h2c (h2load).
            _ => {
                let run = match load {
                    Load::H2c => tools::h2load(&url, options.duration).await?,
                    _ => {
                        let headers = tools::caller_headers(load);
                        tools::wrk(&url, headers, load.wrk_shape(), options.duration).await?
                    }
                };
                let cpu = meter.micros();
                Sample {
                    round,
                    config,
                    load,
                    rate: run.rps,
                    p50_us: run.p50_us,
                    p99_us: run.p99_us,
                    cpu_us: cpu.map(|c| c / run.requests.max(1) as f64),
                    completed: run.requests,
                    errors: run.errors,
                }
            }
        };
        results.samples.push(sample);
        tokio::time::sleep(pause(options)).await;
    }

    let load_peak_kib = pid.and_then(|p| procfs::status_kib(p, "VmHWM"));
    let (mut conns_kib, mut conns_fds) = (None, None);
    let (mut conns_first_p50_us, mut conns_first_p99_us) = (None, None);
    if options.conns && config.is_proxy() {
        eprintln!(
            "round {round}: {} {} idle connections",
            config.name(),
            idle_connections()
        );
        match idle::hold(target.h1, idle_connections(), 50).await {
            Ok((held, mut first)) => {
                first.sort_unstable();
                let at = |q: f64| {
                    first
                        .get(((first.len() as f64 * q) as usize).min(first.len().saturating_sub(1)))
                        .map(|d| d.as_micros() as u64)
                };
                conns_first_p50_us = at(0.5);
                conns_first_p99_us = at(0.99);
                // Past the second after which an idle fast-path connection gives its buffers
                // back (README, The data path): what is measured is idle connections.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                conns_kib = pid.and_then(|p| procfs::status_kib(p, "VmRSS"));
                conns_fds = pid.and_then(|p| {
                    std::fs::read_dir(format!("/proc/{p}/fd"))
                        .ok()
                        .map(|d| d.count())
                });
                drop(held);
            }
            Err(e) => {
                let failure = format!("round {round}, {}: idle connections: {e:#}", config.name());
                eprintln!("FAILED {failure}");
                results.failures.push(failure);
            }
        }
    }
    let peak_kib = pid.and_then(|p| procfs::status_kib(p, "VmHWM"));
    if config.is_proxy() {
        results.memory.push(Memory {
            round,
            config,
            idle_kib,
            load_peak_kib,
            peak_kib,
            conns_kib,
            conns_fds,
            conns_first_p50_us,
            conns_first_p99_us,
        });
    }
    let stopped = target.stop().await;
    if let Config::Tracecar { .. } | Config::Baseline { .. } | Config::TracecarCollectorDown =
        config
    {
        // tracecar flushes its queue on SIGTERM; the receiver counts before it answers.
        results.export.push(Export {
            round,
            config,
            received: zipkin.spans() - spans_before,
            sampled: stopped.sampled,
            dropped: stopped.dropped,
            exit: stopped.exit,
        });
    }
    tokio::time::sleep(pause(options)).await;
    Ok(())
}

async fn fixed_rate(
    options: &Options,
    config: Config,
    upstreams: Upstreams,
    results: &mut Results,
) -> anyhow::Result<()> {
    eprintln!(
        "fixed rate: {} {} rps for {} s",
        config.name(),
        options.rate,
        options.rate_duration.as_secs()
    );
    let target = target::start(config, upstreams).await?;
    tokio::time::sleep(pause(options)).await;
    let url = format!("http://{}{}", target.h1, nginx::PATH);
    let meter = CpuMeter::start(target.pid());
    let run = openloop::run(&url, options.rate, options.rate_duration, options.warmup).await;
    let cpu = meter.micros();
    target.stop().await;
    let run = run?;
    results.fixed.push(Fixed {
        config,
        cpu_us: cpu.map(|c| c / run.sent.max(1) as f64),
        run,
    });
    tokio::time::sleep(pause(options)).await;
    Ok(())
}
