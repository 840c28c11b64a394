//! `tracecar run`: wires the loaded policy to the data path and waits for the end.

use std::sync::Arc;

use crate::cli::RunArgs;
use crate::policy::Checked;
use crate::proxy::{self, ProxyConfig, observe::NoObserver};

pub async fn run(args: RunArgs, checked: Checked) -> anyhow::Result<()> {
    let Some(dataplane) = &checked.dataplane else {
        anyhow::bail!("no dataplane loaded");
    };
    let effective = checked.set.effective(dataplane, 1);
    tracing::info!(
        dataplane = %effective.dataplane.name,
        traffic_trace = effective.traffic_trace.as_ref().map_or("-", |t| t.name.as_str()),
        backend = effective.backend.as_ref().map_or("-", |b| b.name.as_str()),
        reason = effective.reason.as_deref().unwrap_or("-"),
        "policy loaded"
    );
    let running = proxy::start(
        dataplane,
        &effective,
        Arc::new(NoObserver),
        &ProxyConfig::default(),
    )
    .await?;
    crate::shutdown::signal().await;
    tracing::info!(drain_timeout = ?args.drain_timeout, "draining");
    if !running.drain(args.drain_timeout).await {
        tracing::warn!("drain timeout reached with requests still in flight");
    }
    tracing::info!("stopped");
    Ok(())
}
