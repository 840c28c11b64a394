//! Policy hot reload (README, Hot reload) with the real binary: a valid change applies within 2 s
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

// Policy faults at run time (issue 8): whatever happens to the files, the last good policy
// stays — config_dump unchanged, traffic still traced — and the failure is counted and logged.

/// A sidecar tracing everything to one collector, traffic flowing and spans arriving.
struct Traced {
    _app: Upstream,
    collector: Collector,
    files: SidecarFiles,
    sidecar: Sidecar,
    traffic: Traffic,
}

/// How the sidecar reads its policy.
enum Layout {
    /// `--policy` names the folder holding `mesh.yaml` and `trace.yaml`.
    Folder,
    /// `--policy` names one file, `policy.yaml`, holding the Mesh and the TrafficTrace.
    File,
}

impl Traced {
    async fn start(layout: Layout) -> Traced {
        Traced::start_wrapped(layout, &[]).await
    }

    /// Starts the sidecar through `wrapper` (see [`Sidecar::start_wrapped`]).
    async fn start_wrapped(layout: Layout, wrapper: &[&str]) -> Traced {
        let app = Upstream::start().await;
        let collector = Collector::start(Answer::Accept).await;
        let files = SidecarFiles::new(app.address, &[("a", &collector.url())], "a");
        let policy = match layout {
            Layout::Folder => files.policy.clone(),
            Layout::File => {
                let file = files.dir.path().join("policy.yaml");
                let mesh = std::fs::read_to_string(files.policy.join("mesh.yaml")).expect("mesh");
                std::fs::write(&file, format!("{mesh}---\n{}", traffic_trace_yaml("a")))
                    .expect("write policy");
                file
            }
        };
        if !wrapper.is_empty() {
            // The wrapped sidecar may run as another user: let it read its files.
            open_to_everyone(files.dir.path());
        }
        let sidecar = Sidecar::start_wrapped(wrapper, &files.dataplane, &policy, &[]).await;
        let traffic = Traffic::start(files.inbound);
        assert!(
            collector.wait_for_spans(1, Duration::from_secs(3)).await > 0,
            "spans arrive before the fault:\n{}",
            sidecar.log()
        );
        Traced {
            _app: app,
            collector,
            files,
            sidecar,
            traffic,
        }
    }

    async fn reloads(&self, result: &str) -> f64 {
        metric(
            &self.sidecar.metrics().await,
            "tracecar_policy_reloads_total",
            &[("result", result)],
        )
        .unwrap_or(0.0)
    }

    /// Applies `fault` and checks what every policy fault must leave: at least one reload
    /// counted as a failure and none as a success, `/config_dump` exactly as before (version
    /// included), spans still reaching the collector, no request failed, and the refusal
    /// logged with a line containing `expected` (what went wrong, in the user's words).
    async fn fault_keeps_the_last_good_policy(
        self,
        fault: impl FnOnce(&SidecarFiles),
        expected: &str,
    ) {
        let before = self.sidecar.config_dump().await;
        let (failures_before, successes_before) =
            (self.reloads("failure").await, self.reloads("success").await);

        fault(&self.files);
        let started = Instant::now();
        let failures = loop {
            let failures = self.reloads("failure").await;
            if failures > failures_before || started.elapsed() > Duration::from_secs(3) {
                break failures;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            failures > failures_before,
            "the fault is counted as a failed reload within 3 s:\n{}",
            self.sidecar.log()
        );
        assert_eq!(
            self.reloads("success").await,
            successes_before,
            "nothing was applied:\n{}",
            self.sidecar.log()
        );
        assert_eq!(
            self.sidecar.config_dump().await,
            before,
            "the last good policy stays, version included"
        );
        let log = self.sidecar.log();
        let refusal = log
            .lines()
            .find(|l| l.contains("keeping the last good policy") && l.contains(expected));
        assert!(
            refusal.is_some(),
            "a logged refusal mentions \"{expected}\":\n{log}"
        );

        // Still traced: spans of requests sent after the fault arrive.
        let seen = self.collector.spans();
        assert!(
            self.collector
                .wait_for_spans(seen + 1, Duration::from_secs(3))
                .await
                > seen,
            "spans still reach the collector after the fault:\n{}",
            self.sidecar.log()
        );
        let (ok, failed) = self.traffic.finish().await;
        assert!(ok > 0, "traffic flowed");
        assert!(failed.is_empty(), "requests failed: {:?}", failed.first());
    }
}

#[tokio::test]
async fn a_deleted_policy_file_keeps_the_last_good_policy_and_counts_a_failure() {
    // A policy file that is gone is a mount or a deploy gone wrong, not "trace nothing".
    Traced::start(Layout::File)
        .await
        .fault_keeps_the_last_good_policy(
            |files| std::fs::remove_file(files.dir.path().join("policy.yaml")).expect("delete"),
            "no such file or folder",
        )
        .await;
}

#[tokio::test]
async fn an_emptied_policy_folder_keeps_the_last_good_policy_and_counts_a_failure() {
    // Every file deleted: an empty folder, like an empty file, is refused, so tracing does not
    // silently stop.
    Traced::start(Layout::Folder)
        .await
        .fault_keeps_the_last_good_policy(
            |files| {
                for name in ["trace.yaml", "mesh.yaml"] {
                    std::fs::remove_file(files.policy.join(name)).expect("delete");
                }
            },
            "holds no policy file",
        )
        .await;
}

#[tokio::test]
async fn a_policy_file_replaced_by_garbage_keeps_the_last_good_policy_and_counts_a_failure() {
    // Bytes that are not YAML, not even text, swapped in atomically as an editor would.
    Traced::start(Layout::Folder)
        .await
        .fault_keeps_the_last_good_policy(
            |files| {
                let temporary = files.policy.join(".trace.yaml.tmp");
                std::fs::write(&temporary, b"\x89PNG\r\n\x1a\n\x00\xff\xfe{[: garbage")
                    .expect("write garbage");
                std::fs::rename(&temporary, files.policy.join("trace.yaml")).expect("rename");
            },
            "trace.yaml: not UTF-8 text",
        )
        .await;
}

#[tokio::test]
async fn a_policy_file_replaced_by_a_symlink_loop_keeps_the_last_good_policy_and_counts_a_failure()
{
    // trace.yaml -> .loop -> trace.yaml. A name that cannot be followed is an error, not a file
    // to skip (skipping it would drop the TrafficTrace, and tracing with it).
    Traced::start(Layout::Folder)
        .await
        .fault_keeps_the_last_good_policy(
            |files| {
                let folder = &files.policy;
                std::os::unix::fs::symlink(".loop", folder.join(".trace.yaml.tmp"))
                    .expect("link to .loop");
                std::os::unix::fs::symlink("trace.yaml", folder.join(".loop")).expect("link back");
                std::fs::rename(folder.join(".trace.yaml.tmp"), folder.join("trace.yaml"))
                    .expect("swap in the loop");
            },
            "trace.yaml: cannot read: symbolic link loop",
        )
        .await;
}

/// Whether this process runs as root, which reads files whatever their permission bits.
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes `path` and everything under it readable (and folders enterable) by anyone.
fn open_to_everyone(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read folder") {
            open_to_everyone(&entry.expect("entry").path());
        }
    }
}

#[tokio::test]
async fn an_unreadable_policy_file_keeps_the_last_good_policy_and_counts_a_failure() {
    use std::os::unix::fs::PermissionsExt;
    // Root reads a mode-000 file anyway, so as root the sidecar runs as nobody (the way a
    // hardened unit or a container runs it), and its files are made readable to it first.
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let wrapper: &[&str] = if running_as_root() { &nobody } else { &[] };
    Traced::start_wrapped(Layout::Folder, wrapper)
        .await
        .fault_keeps_the_last_good_policy(
            |files| {
                std::fs::set_permissions(
                    files.policy.join("trace.yaml"),
                    std::fs::Permissions::from_mode(0o000),
                )
                .expect("chmod 000");
            },
            "trace.yaml: cannot read: permission denied",
        )
        .await;
}

#[tokio::test]
async fn deleting_only_the_traffic_trace_file_stops_tracing_as_asked() {
    // The other side of the emptied-folder rule: a folder that still holds a valid policy is a policy,
    // and a removed TrafficTrace means no tracing, as in Kuma.
    let setup = Traced::start(Layout::Folder).await;
    std::fs::remove_file(setup.files.policy.join("trace.yaml")).expect("delete");
    let (after, _) = config_dump_until(&setup.sidecar, Duration::from_secs(2), |d| {
        d["trafficTrace"].is_null()
    })
    .await;
    assert!(
        after["trafficTrace"].is_null() && after["backend"].is_null(),
        "applied within 2 s: {after}\n{}",
        setup.sidecar.log()
    );
    assert_eq!(after["policyVersion"], 2);
    assert_eq!(setup.reloads("failure").await, 0.0);
    setup.traffic.finish().await;
}

#[tokio::test]
async fn a_policy_folder_deleted_and_created_again_is_still_watched() {
    // A redeploy that replaces the whole folder: the watch on the old folder died with it, so
    // tracecar must pick up the new folder, and then keep following changes inside it.
    let setup = TwoBackends::start().await;
    let folder = &setup.files.policy;
    let mesh = std::fs::read_to_string(folder.join("mesh.yaml")).expect("read mesh");
    std::fs::remove_dir_all(folder).expect("delete the policy folder");
    // The deletion itself is refused (a vanished folder keeps the last good policy); wait for
    // that, so what follows is read only if the new folder is watched.
    let started = Instant::now();
    while failed_reloads(&setup.sidecar).await == 0.0 && started.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed_reloads(&setup.sidecar).await > 0.0,
        "the deletion is seen and refused:\n{}",
        setup.sidecar.log()
    );

    let (applied, changed) = move_in_a_new_folder_then_change_it(&setup, &mesh).await;
    assert_eq!(applied["policyVersion"], 2);
    assert_eq!(changed["policyVersion"], 3);
    let (_, failures) = setup.traffic.finish().await;
    assert!(
        failures.is_empty(),
        "requests failed: {:?}",
        failures.first()
    );
}

#[tokio::test]
async fn a_policy_folder_replaced_while_its_parent_is_busy_is_still_watched() {
    // Files beside the policy folder keep changing: their events are not about the policy, and
    // must neither hide the folder's replacement nor stop the watch from following it.
    let setup = TwoBackends::start().await;
    let _busy = Busy::writing_in(setup.files.dir.path());
    let folder = &setup.files.policy;
    let mesh = std::fs::read_to_string(folder.join("mesh.yaml")).expect("read mesh");
    std::fs::rename(folder, setup.files.dir.path().join("policy.old"))
        .expect("move the old folder away");
    move_in_a_new_folder_then_change_it(&setup, &mesh).await;
    let (_, failures) = setup.traffic.finish().await;
    assert!(
        failures.is_empty(),
        "requests failed: {:?}",
        failures.first()
    );
}

/// Moves a new policy folder (tracing to B) in where the old one was, then changes a file
/// inside it (back to A): each must apply within 2 s. Returns the two config dumps.
async fn move_in_a_new_folder_then_change_it(setup: &TwoBackends, mesh: &str) -> (Value, Value) {
    let folder = &setup.files.policy;
    // Prepared beside it and moved in whole, so no half-written folder is ever read.
    let prepared = setup.files.dir.path().join("policy.new");
    std::fs::create_dir(&prepared).expect("create the new folder");
    std::fs::write(prepared.join("mesh.yaml"), mesh).expect("write mesh");
    std::fs::write(prepared.join("trace.yaml"), traffic_trace_yaml("b")).expect("write trace");
    std::fs::rename(&prepared, folder).expect("move the new folder in");
    let (applied, _) = config_dump_until(&setup.sidecar, Duration::from_secs(2), |d| {
        backend_name(d) == "b"
    })
    .await;
    assert_eq!(
        backend_name(&applied),
        "b",
        "the new folder applied within 2 s:\n{}",
        setup.sidecar.log()
    );

    replace_file(&folder.join("trace.yaml"), &traffic_trace_yaml("a"));
    let (changed, _) = config_dump_until(&setup.sidecar, Duration::from_secs(2), |d| {
        backend_name(d) == "a"
    })
    .await;
    assert_eq!(
        backend_name(&changed),
        "a",
        "a change inside the new folder applied within 2 s:\n{}",
        setup.sidecar.log()
    );
    (applied, changed)
}

/// A file rewritten every millisecond in a folder, until dropped.
struct Busy {
    stop: Arc<AtomicBool>,
}

impl Busy {
    fn writing_in(folder: &Path) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, file) = (stop.clone(), folder.join("busy.log"));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let _ = std::fs::write(&file, i.to_string());
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Busy { stop }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn failed_reloads(sidecar: &Sidecar) -> f64 {
    metric(
        &sidecar.metrics().await,
        "tracecar_policy_reloads_total",
        &[("result", "failure")],
    )
    .unwrap_or(0.0)
}
