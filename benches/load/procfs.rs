//! What the kernel says about a process: CPU time from /proc/<pid>/stat, memory from
//! /proc/<pid>/status, and the few process-wide settings the benchmark needs.

use std::process::Child;
use std::time::{Duration, Instant};

/// Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// The machine's online CPUs, whatever this process's affinity (`--pin` narrows it to one).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cpus > 0 { cpus as usize } else { 0 }
}

/// utime + stime of every thread of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces or parentheses; the fields after it start
    // after the last ')', at field 3. utime is field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Time every thread of `pid` has spent on a CPU, in nanoseconds: the first field of each
/// `/proc/<pid>/task/<tid>/schedstat`. Exact where `utime`+`stime` count whole ticks; a
/// thread that exited takes its time with it, which the proxies' long-lived threads do not.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    sum_over_threads(pid, "schedstat", |stat| {
        stat.split_whitespace().next()?.parse().ok()
    })
}

/// `read` of the file `name` of every thread of `pid`, summed: None when any reading fails,
/// a thread that exited meanwhile skipped.
fn sum_over_threads(pid: u32, name: &str, read: impl Fn(&str) -> Option<u64>) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(text) = std::fs::read_to_string(task.path().join(name)) else {
            continue;
        };
        total += read(&text)?;
    }
    Some(total)
}

/// Times the threads of `pid` stopped to wait (`voluntary_ctxt_switches` of each
/// `/proc/<pid>/task/<tid>/status`). A process that waits with its CPU otherwise idle is
/// woken by whatever writes to it next, and in a virtual machine that waker pays for the
/// wake-up (an interrupt to the idle CPU is an exit to the host).
pub fn sleeps(pid: u32) -> Option<u64> {
    sum_over_threads(pid, "status", |status| {
        let switches = status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok());
        Some(switches.unwrap_or(0))
    })
}

/// CPU time (user + system, in nanoseconds) and sleeps ([`sleeps`]) of the benchmark's
/// children that have exited and been waited for: the load tools, wrk
/// (`getrusage(RUSAGE_CHILDREN)`).
pub fn children_usage() -> (u64, u64) {
    // SAFETY: getrusage writes into the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    (
        ns(usage.ru_utime) + ns(usage.ru_stime),
        usage.ru_nvcsw.max(0) as u64,
    )
}

/// The whole machine's CPU time from the first line of /proc/stat, in clock ticks: busy
/// (user, nice, system, irq, softirq), idle (idle, iowait) and stolen by the host.
#[derive(Clone, Copy, Default)]
pub struct MachineTicks {
    pub busy: u64,
    pub idle: u64,
    pub steal: u64,
}

pub fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(MachineTicks {
        busy: field(0) + field(1) + field(2) + field(5) + field(6),
        idle: field(3) + field(4),
        steal: field(7),
    })
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// CPU time a process spends between `start` and `micros`.
pub struct CpuMeter {
    pid: Option<u32>,
    ticks: Option<u64>,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            ticks: pid.and_then(cpu_ticks),
        }
    }

    /// CPU microseconds used since `start`; None when there is no process to measure.
    pub fn micros(&self) -> Option<f64> {
        let now = cpu_ticks(self.pid?)?;
        let ticks = now.checked_sub(self.ticks?)?;
        Some(ticks as f64 * 1e6 / clock_ticks_per_second() as f64)
    }
}

/// Makes this thread's sleeps end within about a microsecond of their deadline instead of the
/// default 50 µs slack, for the open-loop generator's schedule.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL after a grace period) when dropped,
/// so that a failing benchmark leaves no proxy behind.
pub struct Managed {
    pub name: String,
    child: Child,
}

impl Managed {
    pub fn new(name: impl Into<String>, child: Child) -> Managed {
        Managed {
            name: name.into(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has already exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status, if it exited on its own.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        // SAFETY: kill with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within {grace:?}; killed", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
