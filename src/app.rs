//! `tracecar run`: wires the loaded policy to the running parts.

use crate::cli::RunArgs;
use crate::policy::Checked;

pub async fn run(args: RunArgs, checked: Checked) -> anyhow::Result<()> {
    let Some(dataplane) = &checked.dataplane else {
        anyhow::bail!("no dataplane loaded");
    };
    let effective = checked.set.effective(dataplane, 1);
    tracing::info!(
        dataplane = %effective.dataplane.name,
        traffic_trace = effective.traffic_trace.as_ref().map(|t| t.name.as_str()).unwrap_or("-"),
        backend = effective.backend.as_ref().map(|b| b.name.as_str()).unwrap_or("-"),
        reason = effective.reason.as_deref().unwrap_or("-"),
        "policy loaded"
    );
    let _ = args;
    crate::shutdown::signal().await;
    tracing::info!("shutting down");
    Ok(())
}
