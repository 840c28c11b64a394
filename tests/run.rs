//! `tracecar run` as a user starts it: the example dataplane and policy, real traffic, SIGTERM.

mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Answer, Collector, Sidecar, SidecarFiles, Upstream};

#[tokio::test]
async fn run_with_the_example_config_proxies_until_sigterm() {
    // config/dataplane.yaml: inbound 127.0.0.1:15000 → app on 127.0.0.1:8080.
    let _app = Upstream::start_on("127.0.0.1:8080").await;
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracecar"))
        .current_dir(root)
        .args([
            "run",
            "--dataplane",
            "config/dataplane.yaml",
            "--policy",
            "config/",
        ])
        .args(["--admin", "127.0.0.1:0"])
        .env_remove("TRACECAR_POLICY")
        .env_remove("TRACECAR_DATAPLANE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tracecar starts");

    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let attempt = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-H",
                "host: web.local",
                "http://127.0.0.1:15000/echo",
                "--data",
                "ping",
            ])
            .output()
            .await
            .expect("curl runs");
        if attempt.status.success() && !attempt.stdout.is_empty() {
            break String::from_utf8_lossy(&attempt.stdout).to_string();
        }
        assert!(Instant::now() < deadline, "the listener never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body, "ping", "the request went through to the app and back");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The soft and hard open-files limits and the file table's size of process `pid` (`self`).
fn files_of(pid: &str) -> (u64, u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let numbers: Vec<u64> = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .expect("a line for open files")
        .split_whitespace()
        .take(2)
        .map(|v| v.parse().unwrap_or(u64::MAX))
        .collect();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let table = status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("FDSize");
    (numbers[0], numbers[1], table)
}

/// `tracecar run` through `wrapper` (which ends by executing the rest of its command line).
async fn sidecar_through(wrapper: &[&str]) -> (Sidecar, (Upstream, Collector, SidecarFiles)) {
    let app = Upstream::start().await;
    let collector = Collector::start(Answer::Accept).await;
    let files = SidecarFiles::new(app.address, &[("zipkin", &collector.url())], "zipkin");
    let sidecar = Sidecar::start_wrapped(wrapper, &files.dataplane, &files.policy, &[]).await;
    (sidecar, (app, collector, files))
}

/// Started under a low soft limit (1,024 in some container runtimes and login shells: about a
/// thousand connections), it raises the limit to the hard one.
#[tokio::test]
async fn a_low_soft_open_files_limit_is_raised_to_the_hard_one() {
    let (_, hard, _) = files_of("self");
    let low = (hard / 2).min(1024);
    let lower = format!("ulimit -S -n {low} && exec \"$0\" \"$@\"");
    let (sidecar, _peers) = sidecar_through(&["sh", "-c", &lower]).await;
    let (soft, hard, _) = files_of(&sidecar.id().to_string());
    assert_eq!(soft, hard.min(1 << 20));
}

/// The file table holds 16,384 descriptors (or the limit) before the first connection:
/// growing it later, with threads running, stops every one of them.
#[tokio::test]
async fn the_file_table_is_sized_before_the_first_connection() {
    let (sidecar, _peers) = sidecar_through(&[]).await;
    let (soft, _, table) = files_of(&sidecar.id().to_string());
    assert!(table >= soft.min(16_384), "FDSize {table}, limit {soft}");
}
