//! Policy hot reload (contract A8) with the real binary: a valid change applies within 2 s
//! without dropping a request, spans follow it to the new backend, an invalid change keeps the
//! last good policy, and a Kubernetes ConfigMap `..data` swap applies once.

mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{
    Answer, Client, Collector, Sidecar, SidecarFiles, Upstream, metric, replace_file,
    traffic_trace_yaml,
};
use serde_json::Value;

/// Requests sent back to back on keep-alive connections until stopped; a failure is any
/// answer but 200 or any connection error.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Traffic {
    fn start(address: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let (mut ok, mut failures) = (0, Vec::new());
            let mut client: Option<Client> = None;
            while !stopping.load(Ordering::SeqCst) {
                let outcome = match client.as_mut() {
                    Some(c) => c.get("/echo").await,
                    None => match Client::connect(address).await {
                        Ok(c) => client.insert(c).get("/echo").await,
                        Err(e) => Err(e),
                    },
                };
                match outcome {
                    Ok((200, _)) => ok += 1,
                    Ok((status, body)) => failures.push(format!("{status} {body}")),
                    Err(e) => {
                        failures.push(e);
                        client = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failures)
        });
        Traffic { stop, task }
    }

    /// Stops and returns (successes, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("traffic task")
    }
}

/// Polls `/config_dump` until `done` holds or `within` passes; returns the last document and
/// how long it took.
async fn config_dump_until(
    sidecar: &Sidecar,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let dump = sidecar.config_dump().await;
        if done(&dump) || started.elapsed() >= within {
            return (dump, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn backend_name(dump: &Value) -> &str {
    dump["backend"]["name"].as_str().unwrap_or("-")
}

/// A sidecar tracing to A, with B declared in the mesh; traffic flowing and A receiving spans.
struct TwoBackends {
    _app: Upstream,
    a: Collector,
    b: Collector,
    files: SidecarFiles,
    sidecar: Sidecar,
    traffic: Traffic,
}

impl TwoBackends {
    async fn start() -> TwoBackends {
        let app = Upstream::start().await;
        let a = Collector::start(Answer::Accept).await;
        let b = Collector::start(Answer::Accept).await;
        let files = SidecarFiles::new(app.address, &[("a", &a.url()), ("b", &b.url())], "a");
        let sidecar = Sidecar::start(&files.dataplane, &files.policy, &[]).await;
        let traffic = Traffic::start(files.inbound);
        assert!(
            a.wait_for_spans(1, Duration::from_secs(3)).await > 0,
            "A receives spans before the change"
        );
        TwoBackends {
            _app: app,
            a,
            b,
            files,
            sidecar,
            traffic,
        }
    }

    fn trace_file(&self) -> std::path::PathBuf {
        self.files.policy.join("trace.yaml")
    }
}

#[tokio::test]
async fn a_retargeted_traffic_trace_shows_in_config_dump_within_2s_with_the_next_policy_version() {
    let setup = TwoBackends::start().await;
    let before = setup.sidecar.config_dump().await;
    assert_eq!(backend_name(&before), "a");
    assert_eq!(before["policyVersion"], 1);

    replace_file(&setup.trace_file(), &traffic_trace_yaml("b"));
    let (after, took) = config_dump_until(&setup.sidecar, Duration::from_secs(2), |d| {
        backend_name(d) == "b"
    })
    .await;
    assert_eq!(
        backend_name(&after),
        "b",
        "not applied within 2 s:\n{}",
        setup.sidecar.log()
    );
    assert_eq!(after["policyVersion"], 2, "applied in {took:?}");
    setup.traffic.finish().await;
}

#[tokio::test]
async fn after_a_retarget_spans_reach_the_new_backend_within_3s() {
    let setup = TwoBackends::start().await;
    assert_eq!(setup.b.spans(), 0);
    replace_file(&setup.trace_file(), &traffic_trace_yaml("b"));
    let started = Instant::now();
    let arrived = setup.b.wait_for_spans(1, Duration::from_secs(3)).await;
    assert!(
        arrived > 0,
        "no span at B {:?} after the change (A has {}):\n{}",
        started.elapsed(),
        setup.a.spans(),
        setup.sidecar.log()
    );
    setup.traffic.finish().await;
}

#[tokio::test]
async fn policy_changes_fail_no_request() {
    // A retarget, then an invalid file: requests keep flowing on the same connections.
    let setup = TwoBackends::start().await;
    replace_file(&setup.trace_file(), &traffic_trace_yaml("b"));
    setup.b.wait_for_spans(1, Duration::from_secs(3)).await;
    replace_file(
        &setup.trace_file(),
        "type: TrafficTrace\nname: trace-all-traffic\nmesh: default\nselectors: []\n",
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failures) = setup.traffic.finish().await;
    assert!(ok > 0, "traffic flowed");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across policy changes, e.g. {:?}",
        failures.len(),
        ok + failures.len(),
        failures.first()
    );
}

#[tokio::test]
async fn an_invalid_policy_keeps_the_last_good_one_and_counts_a_failure() {
    let setup = TwoBackends::start().await;
    let before = setup.sidecar.config_dump().await;
    let failures_before = metric(
        &setup.sidecar.metrics().await,
        "tracecar_policy_reloads_total",
        &[("result", "failure")],
    )
    .unwrap_or(0.0);

    // `selectors` must have at least one element.
    replace_file(
        &setup.trace_file(),
        "type: TrafficTrace\nname: trace-all-traffic\nmesh: default\nselectors: []\nconf:\n  backend: b\n",
    );
    let started = Instant::now();
    let failures = loop {
        let text = setup.sidecar.metrics().await;
        let failures = metric(
            &text,
            "tracecar_policy_reloads_total",
            &[("result", "failure")],
        )
        .unwrap_or(0.0);
        if failures > failures_before || started.elapsed() > Duration::from_secs(3) {
            break failures;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        failures,
        failures_before + 1.0,
        "the refused change is counted once:\n{}",
        setup.sidecar.log()
    );
    assert_eq!(
        setup.sidecar.config_dump().await,
        before,
        "the last good policy stays, version included"
    );
    setup.traffic.finish().await;
}

/// Lays out `folder` as the kubelet mounts a ConfigMap: the data in a timestamped folder, a
/// `..data` symlink to it, and one symlink per key through `..data`.
fn configmap_mount(folder: &Path, mesh: &str, trace: &str) {
    for key in ["mesh.yaml", "trace.yaml"] {
        let _ = std::fs::remove_file(folder.join(key));
    }
    let data = folder.join("..2024_01_01_00_00_00.000000001");
    std::fs::create_dir(&data).expect("data folder");
    std::fs::write(data.join("mesh.yaml"), mesh).expect("mesh");
    std::fs::write(data.join("trace.yaml"), trace).expect("trace");
    std::os::unix::fs::symlink("..2024_01_01_00_00_00.000000001", folder.join("..data"))
        .expect("..data");
    for key in ["mesh.yaml", "trace.yaml"] {
        std::os::unix::fs::symlink(format!("..data/{key}"), folder.join(key)).expect("key link");
    }
}

/// Updates the mount as the kubelet does: a new timestamped folder, a `..data_tmp` symlink to
/// it renamed over `..data` (atomic), then the old folder removed.
fn configmap_update(folder: &Path, mesh: &str, trace: &str) {
    let data = folder.join("..2024_01_01_00_01_00.000000002");
    std::fs::create_dir(&data).expect("new data folder");
    std::fs::write(data.join("mesh.yaml"), mesh).expect("mesh");
    std::fs::write(data.join("trace.yaml"), trace).expect("trace");
    std::os::unix::fs::symlink("..2024_01_01_00_01_00.000000002", folder.join("..data_tmp"))
        .expect("..data_tmp");
    std::fs::rename(folder.join("..data_tmp"), folder.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(folder.join("..2024_01_01_00_00_00.000000001")).expect("old data");
}

#[tokio::test]
async fn a_configmap_data_swap_is_applied_once() {
    let app = Upstream::start().await;
    let a = Collector::start(Answer::Accept).await;
    let b = Collector::start(Answer::Accept).await;
    let backends = [("a", a.url()), ("b", b.url())];
    let backends: Vec<(&str, &str)> = backends.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let files = SidecarFiles::new(app.address, &backends, "a");
    let mesh = harness::mesh_yaml(&backends);
    configmap_mount(&files.policy, &mesh, &traffic_trace_yaml("a"));
    let sidecar = Sidecar::start(&files.dataplane, &files.policy, &[]).await;
    let before = sidecar.config_dump().await;
    assert_eq!(backend_name(&before), "a", "loaded through the symlinks");

    configmap_update(&files.policy, &mesh, &traffic_trace_yaml("b"));
    let (after, _) =
        config_dump_until(&sidecar, Duration::from_secs(2), |d| backend_name(d) == "b").await;
    assert_eq!(
        backend_name(&after),
        "b",
        "swap not applied within 2 s:\n{}",
        sidecar.log()
    );
    // Let every event of the swap play out, then count the applications.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sidecar.config_dump().await["policyVersion"], 2);
    let text = sidecar.metrics().await;
    assert_eq!(
        metric(
            &text,
            "tracecar_policy_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "tracecar_policy_reloads_total",
            &[("result", "failure")]
        )
        .unwrap_or(0.0),
        0.0,
        "no half-swapped folder was read:\n{}",
        sidecar.log()
    );
}
