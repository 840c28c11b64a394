//! The admin server (contract A7) of the real binary: readiness, Prometheus metrics with the
//! contract's names, `/config_dump` as `tracecar explain` prints it, the log filter, and 404
//! for anything else.

mod harness;

use std::time::Duration;

use harness::{Answer, Client, Collector, Sidecar, SidecarFiles, Upstream};

/// The metric names A7 promises.
const A7_METRICS: [&str; 9] = [
    "tracecar_requests_total",
    "tracecar_request_duration_seconds",
    "tracecar_spans_sampled_total",
    "tracecar_spans_exported_total",
    "tracecar_spans_dropped_total",
    "tracecar_export_requests_total",
    "tracecar_export_queue_spans",
    "tracecar_policy_reloads_total",
    "tracecar_trace_context_invalid_total",
];

struct Running {
    _app: Upstream,
    collector: Collector,
    files: SidecarFiles,
    sidecar: Sidecar,
}

async fn running(env: &[(&str, &str)]) -> Running {
    let app = Upstream::start().await;
    let collector = Collector::start(Answer::Accept).await;
    let files = SidecarFiles::new(app.address, &[("zipkin", &collector.url())], "zipkin");
    let sidecar = Sidecar::start(&files.dataplane, &files.policy, env).await;
    Running {
        _app: app,
        collector,
        files,
        sidecar,
    }
}

/// Some requests, and their spans exported, so the metric families have samples.
async fn traffic(running: &Running) {
    let mut client = Client::connect(running.files.inbound)
        .await
        .expect("connect");
    for _ in 0..10 {
        assert_eq!(client.get("/echo").await.expect("request").0, 200);
    }
    let arrived = running
        .collector
        .wait_for_spans(10, Duration::from_secs(3))
        .await;
    assert_eq!(arrived, 10, "spans exported");
}

/// The A7 names with no sample in `text` (a histogram's samples are its `_count`, `_sum`
/// and `_bucket` series).
fn missing(text: &str) -> Vec<&'static str> {
    A7_METRICS
        .iter()
        .copied()
        .filter(|name| {
            !text.lines().filter(|l| !l.starts_with('#')).any(|line| {
                let series = line.split(['{', ' ']).next().unwrap_or("");
                series == *name || series.strip_prefix(name).is_some_and(|s| s == "_count")
            })
        })
        .collect()
}

#[tokio::test]
async fn ready_is_200_when_up() {
    let running = running(&[]).await;
    let (status, _) = running.sidecar.admin_get("/ready").await.expect("/ready");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn metrics_has_every_a7_metric_after_traffic() {
    let running = running(&[]).await;
    traffic(&running).await;
    let (status, text) = running
        .sidecar
        .admin_get("/metrics")
        .await
        .expect("/metrics");
    assert_eq!(status, 200);
    assert_eq!(missing(&text), Vec::<&str>::new(), "missing from:\n{text}");
}

/// The series of Prometheus text, without their values.
fn series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect()
}

#[tokio::test]
async fn stats_prometheus_is_an_alias_of_metrics() {
    let running = running(&[]).await;
    traffic(&running).await;
    let (_, metrics) = running
        .sidecar
        .admin_get("/metrics")
        .await
        .expect("/metrics");
    let (status, stats) = running
        .sidecar
        .admin_get("/stats/prometheus")
        .await
        .expect("/stats/prometheus");
    assert_eq!(status, 200);
    assert_eq!(series(&stats), series(&metrics));
}

#[tokio::test]
async fn config_dump_is_what_explain_prints_but_the_policy_version() {
    let running = running(&[]).await;
    let mut dump = running.sidecar.config_dump().await;
    let explained = std::process::Command::new(env!("CARGO_BIN_EXE_tracecar"))
        .arg("explain")
        .arg("--dataplane")
        .arg(&running.files.dataplane)
        .arg("--policy")
        .arg(&running.files.policy)
        .env_remove("TRACECAR_POLICY")
        .env_remove("TRACECAR_DATAPLANE")
        .output()
        .expect("explain runs");
    assert!(explained.status.success(), "{explained:?}");
    let mut explained: serde_json::Value =
        serde_json::from_slice(&explained.stdout).expect("explain prints JSON");
    for document in [&mut dump, &mut explained] {
        let version = document
            .as_object_mut()
            .and_then(|o| o.remove("policyVersion"));
        assert!(
            version.is_some_and(|v| v.is_u64()),
            "policyVersion is an integer"
        );
    }
    assert_eq!(dump, explained);
}

#[tokio::test]
async fn config_dump_and_explain_hide_a_collector_urls_userinfo() {
    // Dumps get pasted into tickets: credentials in a collector url are shown as the logs
    // show them.
    let app = Upstream::start().await;
    let collector = Collector::start(Answer::Accept).await;
    let url = collector
        .url()
        .replacen("http://", "http://user:secret@", 1);
    let files = SidecarFiles::new(app.address, &[("zipkin", &url)], "zipkin");
    let sidecar = Sidecar::start(&files.dataplane, &files.policy, &[]).await;
    let shown = collector.url().replacen("http://", "http://***@", 1);

    let dump = sidecar.config_dump().await;
    assert_eq!(dump["backend"]["conf"]["url"], shown.as_str());
    let explained = std::process::Command::new(env!("CARGO_BIN_EXE_tracecar"))
        .arg("explain")
        .arg("--dataplane")
        .arg(&files.dataplane)
        .arg("--policy")
        .arg(&files.policy)
        .env_remove("TRACECAR_POLICY")
        .env_remove("TRACECAR_DATAPLANE")
        .output()
        .expect("explain runs");
    assert!(explained.status.success(), "{explained:?}");
    let explained: serde_json::Value =
        serde_json::from_slice(&explained.stdout).expect("explain prints JSON");
    assert_eq!(explained["backend"]["conf"]["url"], shown.as_str());
    for document in [&dump, &explained] {
        assert!(!document.to_string().contains("secret"), "{document}");
    }
}

#[tokio::test]
async fn logging_shows_the_filter() {
    let running = running(&[("TRACECAR_LOG", "info,tracecar=info")]).await;
    let (status, body) = running
        .sidecar
        .admin_get("/logging")
        .await
        .expect("/logging");
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "info,tracecar=info");
}

#[tokio::test]
async fn posting_a_logging_filter_changes_it() {
    let running = running(&[("TRACECAR_LOG", "info")]).await;
    let (status, _) = running
        .sidecar
        .admin_post("/logging?filter=debug", "")
        .await
        .expect("POST /logging");
    assert_eq!(status, 200);
    let (_, body) = running
        .sidecar
        .admin_get("/logging")
        .await
        .expect("/logging");
    assert_eq!(body.trim(), "debug");
}

#[tokio::test]
async fn an_unknown_admin_path_is_404() {
    let running = running(&[]).await;
    let (status, _) = running.sidecar.admin_get("/nope").await.expect("/nope");
    assert_eq!(status, 404);
}
