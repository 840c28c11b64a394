//! The external load tools: wrk for HTTP/1.1, h2load for h2c. Their output is parsed here.

use std::time::Duration;

use anyhow::{Context, bail};

/// One closed-loop run of a load tool.
#[derive(Clone, Debug, Default)]
pub struct HttpRun {
    /// Requests completed.
    pub requests: u64,
    pub rps: f64,
    /// wrk's latency distribution; h2load prints no percentiles.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Socket errors, timeouts and non-2xx answers.
    pub errors: u64,
}

/// wrk's threads and connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrkShape {
    pub threads: u32,
    pub connections: u32,
}

impl WrkShape {
    /// The shape of the main HTTP/1.1 loads.
    pub const DEFAULT: WrkShape = WrkShape {
        threads: 2,
        connections: 64,
    };
}

pub const H2LOAD_CLIENTS: u32 = 16;
pub const H2LOAD_STREAMS: u32 = 16;

pub fn wrk_args(url: &str, headers: &[&str], shape: WrkShape, duration: Duration) -> Vec<String> {
    let mut args = vec![
        format!("-t{}", shape.threads),
        format!("-c{}", shape.connections),
        format!("-d{}s", duration.as_secs().max(1)),
        "--latency".to_string(),
    ];
    for header in headers {
        args.push("-H".to_string());
        args.push(header.to_string());
    }
    args.push(url.to_string());
    args
}

/// What the caller of an HTTP/1.1 load sends as its trace context: nothing, B3, or W3C,
/// the same sampled trace either way (so only the format differs).
pub fn caller_headers(load: crate::Load) -> &'static [&'static str] {
    match load {
        crate::Load::Http1B3 => &[
            "x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7",
            "x-b3-spanid: e457b5a2e4d86bd1",
            "x-b3-sampled: 1",
        ],
        crate::Load::Http1W3c => {
            &["traceparent: 00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"]
        }
        _ => &[],
    }
}

pub fn h2load_args(url: &str, duration: Duration) -> Vec<String> {
    vec![
        format!("-c{H2LOAD_CLIENTS}"),
        format!("-m{H2LOAD_STREAMS}"),
        format!("-D{}", duration.as_secs().max(1)),
        url.to_string(),
    ]
}

pub async fn wrk(
    url: &str,
    headers: &[&str],
    shape: WrkShape,
    duration: Duration,
) -> anyhow::Result<HttpRun> {
    let out = run("wrk", &wrk_args(url, headers, shape, duration)).await?;
    parse_wrk(&out).with_context(|| format!("unexpected wrk output:\n{out}"))
}

/// wrk run through `prefix` (e.g. `ip netns exec NS setpriv …`), which must exec it.
pub async fn wrk_via(prefix: &[String], url: &str, duration: Duration) -> anyhow::Result<HttpRun> {
    let (program, first) = prefix.split_first().context("an empty command prefix")?;
    let mut args = first.to_vec();
    args.push("wrk".to_string());
    args.extend(wrk_args(url, &[], WrkShape::DEFAULT, duration));
    let out = run(program, &args).await?;
    parse_wrk(&out).with_context(|| format!("unexpected wrk output:\n{out}"))
}

pub async fn h2load(url: &str, duration: Duration) -> anyhow::Result<HttpRun> {
    let out = run("h2load", &h2load_args(url, duration)).await?;
    parse_h2load(&out).with_context(|| format!("unexpected h2load output:\n{out}"))
}

async fn run(tool: &str, args: &[String]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(tool)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("run {tool} (apt-get install wrk nghttp2-client)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{tool} {} failed ({}):\n{stdout}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The first whitespace-separated token after `prefix` on a line that starts with it.
fn after<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
}

/// wrk prints durations as `250.00us`, `1.36ms`, `2.01s`, `1.50m`.
fn wrk_duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number * scale)
}

pub fn parse_wrk(out: &str) -> anyhow::Result<HttpRun> {
    let rps: f64 = after(out, "Requests/sec:")
        .context("no Requests/sec")?
        .parse()?;
    // "  1119201 requests in 10.10s, 1.10GB read"
    let requests: u64 = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .context("no request count")?
        .parse()?;
    let p50_us = after(out, "50%").and_then(wrk_duration_us);
    let p99_us = after(out, "99%").and_then(wrk_duration_us);
    let mut errors = 0;
    // "  Socket errors: connect 0, read 0, write 0, timeout 0"
    if let Some(line) = out.lines().find(|l| l.contains("Socket errors:")) {
        errors += line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u64>().ok())
            .sum::<u64>();
    }
    if let Some(n) = after(out, "Non-2xx or 3xx responses:") {
        errors += n.parse::<u64>().unwrap_or(0);
    }
    Ok(HttpRun {
        requests,
        rps,
        p50_us,
        p99_us,
        errors,
    })
}

pub fn parse_h2load(out: &str) -> anyhow::Result<HttpRun> {
    // "finished in 10.00s, 51234.50 req/s, 55.32MB/s"
    let rps: f64 = out
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.strip_suffix(" req/s"))
        .context("no req/s")?
        .parse()?;
    // "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout"
    let line = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .context("no requests line")?;
    let count = |label: &str| -> u64 {
        line.split(',')
            .find_map(|part| part.trim().strip_suffix(label))
            .and_then(|n| n.trim_start_matches("requests:").trim().parse().ok())
            .unwrap_or(0)
    };
    let succeeded = count(" succeeded");
    let mut errors = count(" failed") + count(" errored") + count(" timeout");
    // "status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx"
    if let Some(line) = out.lines().find(|l| l.starts_with("status codes:")) {
        for part in line.split(',').skip(1) {
            if let Some(n) = part.split_whitespace().next() {
                errors += n.parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(HttpRun {
        requests: succeeded,
        rps,
        p50_us: None,
        p99_us: None,
        errors,
    })
}

pub async fn version(tool: &str, arg: &str) -> String {
    match tokio::process::Command::new(tool).arg(arg).output().await {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(_) => "not installed".to_string(),
    }
}
