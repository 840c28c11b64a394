//! Issue 18's targets judged from interleaved slices (`--slices N`): every configuration
//! runs at once, and each HTTP/1.1 load runs in short slices (`--slice SECS`, default 1),
//! one configuration after another, cycle after cycle. Each ratio is taken within a cycle,
//! between slices seconds apart, so the host's drifts (other guests on the two cores, the
//! scheduler's interleaving with the load tools) fall on both of its sides. Ratios of whole
//! runs minutes apart (the rounds) swung by ±15 % on this kind of machine; ratios of
//! slices of one cycle hold within a few per cent (the report gives their quartiles).
//!
//! CPU time is each thread's time on a CPU from `/proc/<pid>/task/*/schedstat`, in
//! nanoseconds: `utime`+`stime` count 10 ms ticks, a percent of a one-second slice.

use std::fmt::Write as _;
use std::time::Duration;

use crate::report::quantile;
use crate::target::{self, Config, Upstreams};
use crate::{Load, Options, nginx, round_order, tools};

/// One configuration under one load for one slice.
pub struct Slice {
    pub cycle: u32,
    pub config: Config,
    pub load: Load,
    pub cpu_us: Option<f64>,
    /// The upstream nginx's CPU per request meanwhile: what the headers a proxy adds cost
    /// the application behind it.
    pub upstream_us: Option<f64>,
    /// wrk's own CPU per request: the load tool pays for every wake-up the proxy causes it.
    pub wrk_us: f64,
    /// The whole machine's busy CPU per request, and the shares of the slice's CPU time that
    /// were idle and stolen by the host, all CPUs together.
    pub machine_us: f64,
    pub idle: f64,
    pub steal: f64,
    /// Per request, how often the proxy, the upstream and wrk stopped to wait
    /// ([`crate::procfs::sleeps`]): each sleep is a wake-up another process pays for.
    pub sleeps: Sleeps,
    pub rate: f64,
    pub errors: u64,
}

#[derive(Clone, Copy)]
pub struct Sleeps {
    pub proxy: Option<f64>,
    pub upstream: Option<f64>,
    pub wrk: f64,
}

/// The loads a slice can run: wrk's HTTP/1.1 shapes.
fn sliced(load: Load) -> bool {
    matches!(
        load,
        Load::Http1 | Load::Http1B3 | Load::Http1W3c | Load::Http1T1C32 | Load::Http1T1C8
    )
}

/// The configurations slices compare: the proxies that carry HTTP/1.1 (not `direct`, which
/// has no process to meter, nor the TCP passthrough or the collector-down variant).
fn compared(config: Config) -> bool {
    matches!(
        config,
        Config::Nginx | Config::NginxB3 | Config::Tracecar { .. } | Config::Baseline { .. }
    )
}

/// Of the configurations and loads selected, those slices run.
fn selected(options: &Options) -> (Vec<Config>, Vec<Load>) {
    let configs = options.configs.iter().copied().filter(|&c| compared(c));
    let loads = options.loads.iter().copied().filter(|&l| sliced(l));
    (configs.collect(), loads.collect())
}

/// Starts every compared configuration, then runs `cycles` cycles of each sliced load.
pub async fn run(
    options: &Options,
    cycles: u32,
    slice: Duration,
    upstreams: Upstreams,
    upstream_pid: u32,
) -> anyhow::Result<Vec<Slice>> {
    let (configs, loads) = selected(options);
    let mut targets = Vec::new();
    for &config in &configs {
        targets.push((config, target::start(config, upstreams).await?));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut slices = Vec::new();
    for &load in &loads {
        eprintln!(
            "slices: {} × {cycles} cycles of {} s each",
            load.name(),
            slice.as_secs()
        );
        // One slice of each first, unrecorded: the connections, pools and caches of the
        // load are then set up in every process.
        for cycle in 0..=cycles {
            for config in round_order(&configs, cycle.max(1)) {
                let Some((_, target)) = targets.iter().find(|(c, _)| *c == config) else {
                    continue;
                };
                let url = format!("http://{}{}", target.h1, nginx::PATH);
                let pid = target.pid();
                let before = pid.and_then(crate::procfs::cpu_ns);
                let sleeps_before = pid.and_then(crate::procfs::sleeps);
                let upstream_before = crate::procfs::cpu_ns(upstream_pid);
                let upstream_sleeps_before = crate::procfs::sleeps(upstream_pid);
                let (wrk_before, wrk_sleeps_before) = crate::procfs::children_usage();
                let machine_before = crate::procfs::machine_ticks().unwrap_or_default();
                let headers = tools::caller_headers(load);
                let run = tools::wrk(&url, headers, load.wrk_shape(), slice).await?;
                let after = pid.and_then(crate::procfs::cpu_ns);
                let sleeps_after = pid.and_then(crate::procfs::sleeps);
                let upstream_after = crate::procfs::cpu_ns(upstream_pid);
                let upstream_sleeps_after = crate::procfs::sleeps(upstream_pid);
                let machine_after = crate::procfs::machine_ticks().unwrap_or_default();
                let (wrk_after, wrk_sleeps_after) = crate::procfs::children_usage();
                if cycle == 0 {
                    continue;
                }
                // How much a counter grew per request; CPU nanoseconds become microseconds.
                let per_request = |before: Option<u64>, after: Option<u64>| match (before, after) {
                    (Some(b), Some(a)) if a >= b => {
                        Some((a - b) as f64 / run.requests.max(1) as f64)
                    }
                    _ => None,
                };
                let us = |before, after| per_request(before, after).map(|ns| ns / 1e3);
                let sleeps = Sleeps {
                    proxy: per_request(sleeps_before, sleeps_after),
                    upstream: per_request(upstream_sleeps_before, upstream_sleeps_after),
                    wrk: per_request(Some(wrk_sleeps_before), Some(wrk_sleeps_after))
                        .unwrap_or(0.0),
                };
                let cpu_us = us(before, after);
                let upstream_us = us(upstream_before, upstream_after);
                let requests = run.requests.max(1) as f64;
                let tick_us = 1e6 / crate::procfs::clock_ticks_per_second() as f64;
                let busy = machine_after.busy.saturating_sub(machine_before.busy) as f64;
                let idle = machine_after.idle.saturating_sub(machine_before.idle) as f64;
                let steal = machine_after.steal.saturating_sub(machine_before.steal) as f64;
                let all = (busy + idle + steal).max(1.0);
                slices.push(Slice {
                    cycle,
                    config,
                    load,
                    cpu_us,
                    upstream_us,
                    wrk_us: wrk_after.saturating_sub(wrk_before) as f64 / 1e3 / requests,
                    machine_us: busy * tick_us / requests,
                    idle: idle / all,
                    steal: steal / all,
                    sleeps,
                    rate: run.rps,
                    errors: run.errors,
                });
            }
        }
    }
    for (_, target) in targets {
        target.stop().await;
    }
    Ok(slices)
}

/// `f` of `a` over `f` of `b`, cycle by cycle.
fn per_cycle(
    slices: &[Slice],
    load: Load,
    a: Config,
    b: Config,
    f: impl Fn(&Slice) -> Option<f64>,
) -> Vec<f64> {
    let of = |config: Config| {
        slices
            .iter()
            .filter(move |s| s.load == load && s.config == config)
    };
    of(a)
        .filter_map(|x| {
            let y = of(b).find(|y| y.cycle == x.cycle)?;
            match (f(x), f(y)) {
                (Some(x), Some(y)) if y > 0.0 => Some(x / y),
                _ => None,
            }
        })
        .collect()
}

/// `median (first–third quartile)`, and how many cycles met `target` when there is one
/// (`below`: at or under it).
fn ratio_cell(values: &[f64], target: Option<(f64, bool)>) -> String {
    let (Some(mid), Some(q1), Some(q3)) = (
        quantile(values, 0.5),
        quantile(values, 0.25),
        quantile(values, 0.75),
    ) else {
        return "—".to_string();
    };
    match target {
        Some((target, below)) => {
            let met = values
                .iter()
                .filter(|&&v| if below { v <= target } else { v >= target })
                .count();
            format!("{mid:.3} ({q1:.3}–{q3:.3}; {met} of {})", values.len())
        }
        None => format!("{mid:.3} ({q1:.3}–{q3:.3})"),
    }
}

/// The configuration `config` is compared with for the cost of sampling: the same build and
/// workers at sampling 0.
fn unsampled(config: Config) -> Option<Config> {
    match config {
        Config::Tracecar { sampling, workers } if sampling > 0 => Some(Config::Tracecar {
            sampling: 0,
            workers,
        }),
        Config::Baseline { sampling, workers } if sampling > 0 => Some(Config::Baseline {
            sampling: 0,
            workers,
        }),
        _ => None,
    }
}

pub fn render(options: &Options, cycles: u32, slice: Duration, slices: &[Slice]) -> String {
    let mut w = String::new();
    let _ = writeln!(w, "## Interleaved slices\n");
    let _ = writeln!(
        w,
        "The upstream nginx answers `GET /1k` with 1 KiB over keep-alive HTTP/1.1; the \
         collector only counts spans. Every configuration running at once; each load in \
         {cycles} cycles of one {} s wrk run per configuration, the order rotated each cycle, \
         after one unrecorded cycle. A ratio is taken within a cycle, then the median over \
         cycles with the first and third quartiles (and, against a target, in how many cycles \
         it was met). CPU is the process's time on a CPU (`/proc/<pid>/task/*/schedstat`) per request; the upstream's is nginx's \
         (the application's) meanwhile, which grows with the headers the proxy adds.{}\n",
        slice.as_secs(),
        crate::target::layout(),
    );
    let (configs, loads) = selected(options);
    let cpu = |s: &Slice| s.cpu_us;
    let rate = |s: &Slice| Some(s.rate);
    let has_nginx = configs.contains(&Config::Nginx);
    for &load in &loads {
        let shape = load.wrk_shape();
        let _ = writeln!(
            w,
            "### {} (`wrk -t{} -c{}`)\n",
            load.name(),
            shape.threads,
            shape.connections
        );
        let _ = writeln!(
            w,
            "| configuration | req/s | CPU µs/req | upstream µs/req | CPU ÷ nginx | req/s ÷ nginx | CPU ÷ sampling 0 | CPU ÷ baseline | errors |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &config in &configs {
            let own: Vec<&Slice> = slices
                .iter()
                .filter(|s| s.load == load && s.config == config)
                .collect();
            let rates: Vec<f64> = own.iter().map(|s| s.rate).collect();
            let cpus: Vec<f64> = own.iter().filter_map(|s| s.cpu_us).collect();
            let upstream: Vec<f64> = own.iter().filter_map(|s| s.upstream_us).collect();
            let errors: u64 = own.iter().map(|s| s.errors).sum();
            let against_nginx = |f: &dyn Fn(&Slice) -> Option<f64>, below: bool| {
                if !has_nginx || config == Config::Nginx {
                    return "—".to_string();
                }
                let target = matches!(config, Config::Tracecar { sampling: 100, .. })
                    .then_some((1.0, below));
                ratio_cell(&per_cycle(slices, load, config, Config::Nginx, f), target)
            };
            let against_unsampled = match unsampled(config) {
                Some(s0) if configs.contains(&s0) => ratio_cell(
                    &per_cycle(slices, load, config, s0, cpu),
                    Some((1.05, true)),
                ),
                _ => "—".to_string(),
            };
            let twin = match config {
                Config::Tracecar { sampling, workers } => {
                    Some(Config::Baseline { sampling, workers })
                }
                _ => None,
            };
            let against_baseline = match twin {
                Some(twin) if configs.contains(&twin) => {
                    ratio_cell(&per_cycle(slices, load, config, twin, cpu), None)
                }
                _ => "—".to_string(),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {errors} |",
                config.name(),
                quantile(&rates, 0.5).map_or("—".to_string(), |v| format!("{v:.0}")),
                quantile(&cpus, 0.5).map_or("—".to_string(), |v| format!("{v:.2}")),
                quantile(&upstream, 0.5).map_or("—".to_string(), |v| format!("{v:.2}")),
                against_nginx(&cpu, true),
                against_nginx(&rate, false),
                against_unsampled,
                against_baseline,
            );
        }
        let _ = writeln!(w);
        where_the_machine_went(&mut w, &configs, load, slices);
    }
    w
}

/// Per configuration, the medians of the whole machine's CPU per request split by process,
/// and of the idle and stolen shares: on two cores shared by the load, the application and
/// the proxy, a proxy's throughput is also what it costs the others.
fn where_the_machine_went(w: &mut String, configs: &[Config], load: Load, slices: &[Slice]) {
    let _ = writeln!(
        w,
        "The whole machine's CPU per request by process (wrk's from `getrusage`, the rest is \
         `/proc/stat`'s busy time less the three: the collector, the bench, other tasks), and \
         the shares of the slice's CPU time idle and stolen; and how often per request each \
         process stopped to wait (voluntary context switches), since in a virtual machine \
         whoever wakes a waiting process on an idle CPU pays for it; medians over cycles.\n"
    );
    let _ = writeln!(
        w,
        "| configuration | proxy µs/req | upstream µs/req | wrk µs/req | the rest µs/req | machine µs/req | idle | stolen | sleeps/req: proxy | upstream | wrk |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &config in configs {
        let own: Vec<&Slice> = slices
            .iter()
            .filter(|s| s.load == load && s.config == config)
            .collect();
        let median = |f: &dyn Fn(&Slice) -> Option<f64>| {
            let values: Vec<f64> = own.iter().filter_map(|s| f(s)).collect();
            quantile(&values, 0.5)
        };
        let us = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
        let share = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.1} %", v * 100.0));
        let per = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
        let rest = |s: &Slice| Some(s.machine_us - s.cpu_us? - s.upstream_us? - s.wrk_us);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            config.name(),
            us(median(&|s| s.cpu_us)),
            us(median(&|s| s.upstream_us)),
            us(median(&|s| Some(s.wrk_us))),
            us(median(&rest)),
            us(median(&|s| Some(s.machine_us))),
            share(median(&|s| Some(s.idle))),
            share(median(&|s| Some(s.steal))),
            per(median(&|s| s.sleeps.proxy)),
            per(median(&|s| s.sleeps.upstream)),
            per(median(&|s| Some(s.sleeps.wrk))),
        );
    }
    let _ = writeln!(w);
}
