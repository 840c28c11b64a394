//! `tracecar run`: wires the policy, the tracer, the exporters, the data path and the admin
//! server together, follows policy changes, and shuts down in order.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::admin::{self, AdminState, LogControl};
use crate::drain;
use crate::export::{ExportSettings, Exporters};
use crate::metrics::{Metrics, ResultLabels};
use crate::policy::effective::{BackendConf, Effective};
use crate::policy::{self, Checked, Dataplane};
use crate::proxy::{self, ProxyConfig};
use crate::trace::meshtrace::{MeshTraceSettings, TagRule};
use crate::trace::{Format, TraceConfig, TracedBackend, Tracer, sampler};

/// How long queued spans may take to reach their backends at shutdown, after the drain.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Quiet time after a file event before the policy is re-read (editors write in bursts).
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

/// The tracing layer's view of an effective config: the backend's sink and settings.
pub fn trace_config(effective: &Effective, exporters: &Exporters) -> anyhow::Result<TraceConfig> {
    let Some(backend) = &effective.backend else {
        exporters.use_backend(None)?;
        return Ok(TraceConfig::default());
    };
    let Some(sink) = exporters.use_backend(Some(backend))? else {
        return Ok(TraceConfig::default());
    };
    let (shared, wide, propagation) = match &backend.conf {
        BackendConf::Zipkin(z) => (z.shared_span_context, z.trace_id_128bit, Format::B3),
        // sharedSpanContext is a Zipkin notion: Datadog spans are always new children.
        BackendConf::Datadog(_) => (false, false, Format::Datadog),
        // No shared span ids in OTLP; W3C is its native format.
        BackendConf::OpenTelemetry(_) => (false, false, Format::W3c),
    };
    Ok(TraceConfig {
        backend: Some(TracedBackend {
            name: Arc::from(backend.name.as_str()),
            basis_points: sampler::basis_points(backend.sampling),
            shared_span_context: shared,
            trace_id_128bit: wide,
            propagation,
            sink,
            meshtrace: effective.mesh_trace.as_ref().map(meshtrace_settings),
        }),
    })
}

/// What `run` needs from the command line; `cli` builds it.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Policy files or folders, followed for changes.
    pub policy: Vec<PathBuf>,
    /// Admin server address.
    pub admin: String,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Plain HTTP/1.1 requests to HTTP/1.1 upstreams take the fast path.
    pub http1_fast_path: bool,
}

/// MeshTrace's knobs and tags as the data path applies them, built once per policy.
pub fn meshtrace_settings(applied: &crate::policy::meshtrace::Applied) -> Arc<MeshTraceSettings> {
    let knobs = sampler::Knobs {
        overall: sampler::basis_points(applied.sampling.overall),
        client: sampler::basis_points(applied.sampling.client),
        random: sampler::basis_points(applied.sampling.random),
    };
    let tags = applied.tags.iter().filter_map(|t| {
        let rule = match (&t.literal, &t.header) {
            (Some(literal), _) => TagRule::Literal(literal),
            (None, Some(h)) => TagRule::Header {
                name: &h.name,
                default: h.default.as_deref(),
            },
            (None, None) => return None,
        };
        Some((t.name.as_str(), rule))
    });
    Arc::new(MeshTraceSettings::new(knobs, tags))
}

pub async fn run(
    args: RunConfig,
    checked: Checked,
    log: Option<Box<dyn LogControl>>,
) -> anyhow::Result<()> {
    let Some(dataplane) = checked.dataplane.clone() else {
        anyhow::bail!("no dataplane loaded");
    };
    let metrics = Metrics::new();
    let exporters = Arc::new(
        Exporters::on_own_thread(ExportSettings::default(), metrics.clone())
            .map_err(|e| anyhow::anyhow!("cannot start the export thread: {e}"))?,
    );
    let node_id = format!("{}.{}", dataplane.meta.mesh, dataplane.meta.name);
    let tracer = Arc::new(Tracer::with_invalid_counter(
        &node_id,
        TraceConfig::default(),
        metrics.trace_context_invalid.clone(),
    ));
    let effective = checked.set.effective(&dataplane, 1);
    tracer.set_config(trace_config(&effective, &exporters)?);
    log_effective(&effective);

    let state = Arc::new(AdminState::new(effective.clone(), metrics.clone(), log));
    let (admin_drain, admin_watcher) = drain::channel();
    let admin_address = admin::serve(&args.admin, state.clone(), admin_watcher).await?;
    tracing::info!(address = %admin_address, "admin listening");

    let config = ProxyConfig {
        metrics: Some(metrics.clone()),
        limits: proxy::limits::Limits {
            http1_fast_path: args.http1_fast_path,
            ..Default::default()
        },
        ..ProxyConfig::default()
    };
    let running = proxy::start(&dataplane, &effective, tracer.clone(), &config).await?;

    let (changed_tx, changed_rx) = mpsc::unbounded_channel();
    let _watch = match policy::watch::watch(&args.policy, changed_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("policy changes will not be picked up: {e:#}");
            None
        }
    };
    let reloader = tokio::spawn(follow_policy(
        args.policy.clone(),
        dataplane,
        changed_rx,
        tracer.clone(),
        exporters.clone(),
        state.clone(),
        metrics,
    ));
    state.ready.store(true, Ordering::Relaxed);

    tokio::select! {
        _ = crate::drain::signal() => tracing::info!("signal received"),
        _ = state.quit.notified() => tracing::info!("/quitquitquit received"),
    }
    state.draining.store(true, Ordering::Relaxed);
    reloader.abort();
    tracing::info!(drain_timeout = ?args.drain_timeout, "draining");
    if !running.drain(args.drain_timeout).await {
        tracing::warn!("drain timeout reached with requests still in flight");
    }
    // No new spans can start; dropping the tracer's handles lets the exporters finish.
    tracer.set_config(TraceConfig::default());
    exporters.shutdown(FLUSH_TIMEOUT).await;
    admin_drain.drain(FLUSH_TIMEOUT).await;
    tracing::info!("stopped");
    Ok(())
}

fn log_effective(effective: &Effective) {
    tracing::info!(
        version = effective.policy_version,
        dataplane = %effective.dataplane.name,
        traffic_trace = effective.traffic_trace.as_ref().map_or("-", |t| t.name.as_str()),
        backend = effective.backend.as_ref().map_or("-", |b| b.name.as_str()),
        reason = effective.reason.as_deref().unwrap_or("-"),
        "policy applied"
    );
}

/// Re-reads the policy after each (debounced) change. A valid change is applied whole; an
/// invalid one keeps the last good policy and is counted and logged.
async fn follow_policy(
    paths: Vec<PathBuf>,
    dataplane: Dataplane,
    mut changed: mpsc::UnboundedReceiver<()>,
    tracer: Arc<Tracer>,
    exporters: Arc<Exporters>,
    state: Arc<AdminState>,
    metrics: Arc<Metrics>,
) {
    let count = |result: &'static str| {
        metrics
            .policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc()
    };
    while changed.recv().await.is_some() {
        tokio::time::sleep(RELOAD_DEBOUNCE).await;
        while changed.try_recv().is_ok() {}
        let reading = paths.clone();
        let Ok(checked) = tokio::task::spawn_blocking(move || policy::check(&reading, None)).await
        else {
            count("failure");
            continue;
        };
        if checked.failed(false) {
            count("failure");
            for d in checked.diagnostics.iter().filter(|d| d.is_error()) {
                tracing::warn!("policy change refused, keeping the last good policy: {d}");
            }
            continue;
        }
        let current = state.effective.load();
        let mut next = checked.set.effective(&dataplane, current.policy_version);
        if next == **current {
            // A touch or a rewrite with the same content: nothing to apply.
            continue;
        }
        next.policy_version = current.policy_version + 1;
        match trace_config(&next, &exporters) {
            Ok(config) => tracer.set_config(config),
            Err(e) => {
                count("failure");
                tracing::warn!("policy change refused, keeping the last good policy: {e:#}");
                continue;
            }
        }
        log_effective(&next);
        state.effective.store(Arc::new(next));
        count("success");
    }
}
