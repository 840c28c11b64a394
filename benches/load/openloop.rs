//! A fixed-rate, open-loop HTTP/1.1 generator. Requests are scheduled on a fixed timeline by a
//! thread of its own and never wait for earlier ones (a busy connection means a new one), and
//! each latency is measured from the request's *scheduled* start, so a stall shows up in every
//! request it delayed instead of being hidden (no coordinated omission).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::procfs;

#[derive(Clone, Debug, Default)]
pub struct RateRun {
    /// Requests scheduled in the measured window (after the warm-up).
    pub scheduled: u64,
    pub errors: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// How late the generator itself dispatched (p99), included in every latency above.
    pub dispatch_late_p99_us: f64,
    /// Requests sent in all, warm-up included (for CPU per request).
    pub sent: u64,
}

struct Outcome {
    latency_us: f64,
    late_us: f64,
    ok: bool,
}

pub async fn run(
    url: &str,
    rate: u32,
    duration: Duration,
    warmup: Duration,
) -> anyhow::Result<RateRun> {
    let uri: http::Uri = url.parse()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector);

    let rate = u64::from(rate.max(1));
    let total = (warmup + duration).as_nanos() as u64 * rate / 1_000_000_000;
    let origin = Instant::now() + Duration::from_millis(20);
    let measured_from = origin + warmup;

    let (ticks, mut scheduled) = tokio::sync::mpsc::unbounded_channel::<(Instant, Instant)>();
    let timeline = std::thread::spawn(move || {
        procfs::tighten_timer_slack();
        for i in 0..total {
            let at = origin + Duration::from_nanos(i * 1_000_000_000 / rate);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if ticks.send((at, Instant::now())).is_err() {
                break;
            }
        }
    });

    let (done, mut outcomes) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut sent = 0u64;
    while let Some((at, dispatched)) = scheduled.recv().await {
        sent += 1;
        let client = client.clone();
        let uri = uri.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let exchange = async {
                let response = client.get(uri).await?;
                let ok = response.status().is_success();
                response.into_body().collect().await?;
                anyhow::Ok(ok)
            };
            let ok = matches!(
                tokio::time::timeout(Duration::from_secs(10), exchange).await,
                Ok(Ok(true))
            );
            let end = Instant::now();
            if at >= measured_from {
                let _ = done.send(Outcome {
                    latency_us: (end - at).as_secs_f64() * 1e6,
                    late_us: (dispatched - at).as_secs_f64() * 1e6,
                    ok,
                });
            }
        });
    }
    drop(done);
    let _ = timeline.join();

    let mut latencies = Vec::new();
    let mut late = Vec::new();
    let mut errors = 0;
    while let Some(o) = outcomes.recv().await {
        if o.ok {
            latencies.push(o.latency_us);
        } else {
            errors += 1;
        }
        late.push(o.late_us);
    }
    latencies.sort_by(f64::total_cmp);
    late.sort_by(f64::total_cmp);
    Ok(RateRun {
        scheduled: late.len() as u64,
        errors,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied().unwrap_or(0.0),
        dispatch_late_p99_us: percentile(&late, 0.99),
        sent,
    })
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
