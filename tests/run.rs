//! `tracecar run` as a user starts it: the example dataplane and policy, real traffic, SIGTERM.

mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::Upstream;

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
