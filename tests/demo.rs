//! `tracecar demo` on a fresh checkout: complete trace trees, every span delivered.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn demo_prints_a_complete_trace_tree_for_every_request() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_tracecar"))
        .arg("demo")
        .output()
        .expect("tracecar demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The contract: under 10 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    let traces: Vec<&str> = stdout.split("\ntrace ").skip(1).collect();
    assert_eq!(traces.len(), 24, "{stdout}");
    for trace in &traces {
        // Each request: the frontend's SERVER span, its CLIENT call, the backend's SERVER span.
        assert!(trace.contains("└─ SERVER frontend"), "{trace}");
        assert!(trace.contains("└─ CLIENT frontend → backend"), "{trace}");
        assert!(trace.contains("└─ SERVER backend (shared)"), "{trace}");
    }
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.contains("24 traces (24 complete)"), "{summary}");
    assert!(
        summary.contains("72 spans (24 CLIENT, 48 SERVER)"),
        "{summary}"
    );
    assert!(
        summary.contains("sampled 72, exported 72, dropped 0"),
        "{summary}"
    );
    assert!(summary.contains("receiver accepted 72"), "{summary}");
}

#[test]
fn demo_marks_failed_calls_as_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_tracecar"))
        .arg("demo")
        .output()
        .expect("tracecar demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let failing: Vec<&str> = stdout
        .split("\ntrace ")
        .filter(|t| t.contains("fail=1"))
        .collect();
    assert!(!failing.is_empty(), "{stdout}");
    for trace in failing {
        assert!(
            trace.contains("503  error"),
            "the backend's 503 is an error span: {trace}"
        );
    }
}
