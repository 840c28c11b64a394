//! The command line as users run it (README, Commands and Operations): exit codes, where problems are
//! printed, and the `explain` document.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built binary, run from the crate root, with no TRACECAR_* variable inherited (they would
/// stand in for missing arguments).
fn tracecar(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tracecar"));
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TRACECAR_") {
            command.env_remove(&name);
        }
    }
    for name in [
        "TRACECAR_DATAPLANE",
        "TRACECAR_POLICY",
        "TRACECAR_ADMIN",
        "TRACECAR_LOG",
        "TRACECAR_LOG_FORMAT",
        "TRACECAR_DRAIN_TIMEOUT",
        "TRACECAR_WORKERS",
    ] {
        command.env_remove(name);
    }
    command.output().expect("the tracecar binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// `validate FILE` on a file that must be refused with one line naming it, and no panic.
fn assert_refused_with_one_line(file: &Path) -> String {
    let out = tracecar(&["validate", arg(file)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(
        lines[0].starts_with(&format!("{}: ", file.display())),
        "stderr: {err}"
    );
    assert_eq!(stdout(&out).lines().count(), 1, "stdout: {}", stdout(&out));
    lines[0].to_string()
}

// =============================================================================================
// validate

#[test]
fn validate_broken_file_exits_1_with_one_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "mesh.yaml",
        "type: Mesh\nname: default\ntracing:\n  defaultBackend: nope\n  backends:\n    - name: z\n      type: zipkin\n      conf: {url: 'http://zipkin/api/v2/spans'}\n",
    );
    let out = tracecar(&["validate", arg(&file)]);
    assert_eq!(out.status.code(), Some(1));
    let shown = file.display();
    assert_eq!(
        stderr(&out).lines().collect::<Vec<_>>(),
        [
            format!(
                "{shown}: Mesh/default: tracing.backends[0].config.url: port has to be explicitly specified"
            ),
            format!(
                "{shown}: Mesh/default: tracing.defaultBackend: has to be set to one of the tracing backend in mesh"
            ),
        ]
    );
    assert_eq!(
        stdout(&out),
        "invalid: 1 file, 1 resource: 2 errors, 0 warnings\n"
    );
}

#[test]
fn validate_valid_file_exits_0_with_a_summary_only() {
    let out = tracecar(&["validate", "config/mesh.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        "valid: 1 file, 1 resource: 0 errors, 0 warnings\n"
    );
}

#[test]
fn validate_garbage_bytes_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = write(dir.path(), "garbage.yaml", bytes);
    assert_refused_with_one_line(&file);
}

#[test]
fn validate_garbage_text_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "garbage.yaml",
        "\t: - ]]] {{{ &a *b !!x \"\n\u{7}",
    );
    assert_refused_with_one_line(&file);
}

#[test]
fn validate_empty_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "empty.yaml", "");
    let line = assert_refused_with_one_line(&file);
    assert!(
        line.ends_with("file is empty: it holds no resource"),
        "{line}"
    );
}

#[test]
fn validate_wrong_type_is_one_line_with_the_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "mesh.yaml",
        "type: Mesh\nname: default\ntracing:\n  backends:\n    - name: z\n      type: zipkin\n      sampling: lots\n",
    );
    let line = assert_refused_with_one_line(&file);
    assert!(
        line.starts_with(&format!(
            "{}: Mesh/default: tracing.backends[0].sampling: ",
            file.display()
        )),
        "{line}"
    );
}

#[test]
fn validate_unknown_kind_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "policy.yaml", "type: TrafficTrace2\nname: t\n");
    let line = assert_refused_with_one_line(&file);
    assert!(line.contains(r#"unknown kind "TrafficTrace2""#), "{line}");
}

#[test]
fn validate_5_mb_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let padding = "# padding padding padding padding\n".repeat(5 * 1024 * 1024 / 34 + 1);
    let file = write(
        dir.path(),
        "big.yaml",
        format!("type: Mesh\nname: default\n{padding}"),
    );
    let line = assert_refused_with_one_line(&file);
    assert!(line.contains("larger than"), "{line}");
}

#[test]
fn validate_deeply_nested_yaml_is_one_line() {
    // A parser that recursed without limit would overflow the stack (an abort, not a panic).
    let dir = tempfile::tempdir().unwrap();
    let depth = 100_000;
    let file = write(
        dir.path(),
        "deep.yaml",
        format!(
            "type: Mesh\nname: x\ntracing: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
    );
    assert_refused_with_one_line(&file);
}

#[test]
fn validate_alias_bomb_is_one_line() {
    // "Billion laughs": nine levels of nine aliases each would expand to 9^10 nodes.
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        yaml.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    yaml.push_str("type: Mesh\nname: x\n");
    let file = write(dir.path(), "bomb.yaml", yaml);
    assert_refused_with_one_line(&file);
}

#[test]
fn validate_missing_file_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nope.yaml");
    let line = assert_refused_with_one_line(&file);
    assert!(line.ends_with("no such file or folder"), "{line}");
}

#[test]
fn validate_prints_warnings_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "policy.yaml",
        "type: TrafficPermission\nname: allow-all\nmesh: default\n",
    );
    let out = tracecar(&["validate", arg(&file)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "warning: {}: TrafficPermission/allow-all: not used by tracecar, skipped\n",
            file.display()
        )
    );
    assert!(stdout(&out).starts_with("valid: "), "{}", stdout(&out));
}

#[test]
fn validate_strict_fails_on_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "policy.yaml",
        "type: Mesh\nname: default\ntracing:\n  backends: [{name: z, type: zipkin, conf: {url: 'http://z:9411/'}}]\n---\ntype: TrafficTrace\nname: t\nselectors: [{match: {kuma.io/service: '*'}}]\nconf: {backend: jaeger}\n",
    );
    let out = tracecar(&["validate", "--strict", arg(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "warning: {}: TrafficTrace/t: conf.backend: backend \"jaeger\" not found in mesh \"default\": proxies it selects are not traced\n",
            file.display()
        )
    );
    assert_eq!(
        stdout(&out),
        "invalid: 1 file, 2 resources: 0 errors, 1 warning\n"
    );
}

#[test]
fn validate_with_dataplane_checks_the_dataplane_too() {
    let dir = tempfile::tempdir().unwrap();
    let dp = write(
        dir.path(),
        "dp.yaml",
        "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n  address: 0.0.0.0\n  inbound: [{port: 15000, tags: {kuma.io/service: web}}]\n",
    );
    let out = tracecar(&["validate", "--dataplane", arg(&dp), "config/mesh.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "{}: Dataplane/dp-1: networking.address: must not be 0.0.0.0 or ::\n",
            dp.display()
        )
    );
}

/// Every folder under config/ that holds YAML files.
fn example_folders() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut folders = Vec::new();
    let mut pending = vec![root];
    while let Some(dir) = pending.pop() {
        let mut has_yaml = false;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                has_yaml = true;
            }
        }
        if has_yaml {
            folders.push(dir);
        }
    }
    folders.sort();
    folders
}

#[test]
fn every_example_folder_validates() {
    let folders = example_folders();
    assert!(folders.len() >= 7, "{folders:?}");
    for folder in folders {
        let out = tracecar(&["validate", arg(&folder)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}{}",
            folder.display(),
            stderr(&out),
            stdout(&out)
        );
    }
}

// =============================================================================================
// explain

#[test]
fn explain_prints_the_effective_config_as_json() {
    let out = tracecar(&[
        "explain",
        "--dataplane",
        "config/dataplane.yaml",
        "--policy",
        "config/",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("explain prints one JSON document");

    assert_eq!(
        json["dataplane"],
        serde_json::json!({"mesh": "default", "name": "web-1", "service": "web"})
    );
    assert_eq!(json["trafficTrace"]["name"], "trace-all-traffic");
    assert_eq!(json["trafficTrace"]["mesh"], "default");

    let backend = &json["backend"];
    assert_eq!(backend["name"], "jaeger-collector");
    assert_eq!(backend["type"], "zipkin");
    assert_eq!(backend["sampling"], serde_json::json!(100.0));
    assert_eq!(
        backend["conf"],
        serde_json::json!({
            "url": "http://127.0.0.1:9411/api/v2/spans",
            "traceId128bit": false,
            "apiVersion": "httpJson",
            "sharedSpanContext": true,
        })
    );
    assert!(json["reason"].is_null());

    let listeners = json["listeners"].as_array().expect("listeners is a list");
    assert_eq!(listeners.len(), 2);
    let shape = |l: &serde_json::Value| {
        (
            l["direction"].as_str().unwrap().to_string(),
            l["address"].as_str().unwrap().to_string(),
            l["protocol"].as_str().unwrap().to_string(),
            l["service"].as_str().unwrap().to_string(),
            l["upstream"].as_str().unwrap().to_string(),
            l["traced"].as_bool().unwrap(),
        )
    };
    assert_eq!(
        shape(&listeners[0]),
        (
            "inbound".into(),
            "127.0.0.1:15000".into(),
            "http".into(),
            "web".into(),
            "127.0.0.1:8080".into(),
            true
        )
    );
    assert_eq!(
        shape(&listeners[1]),
        (
            "outbound".into(),
            "127.0.0.1:15001".into(),
            "grpc".into(),
            "backend".into(),
            "backend".into(),
            true
        )
    );

    assert!(json["policyVersion"].is_u64(), "{}", json["policyVersion"]);
    assert_eq!(json["policyVersion"], 1);
}

#[test]
fn explain_with_no_matching_trace_shows_nulls_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(
        dir.path(),
        "trace.yaml",
        "type: TrafficTrace\nname: only-api\nselectors: [{match: {kuma.io/service: api}}]\n",
    );
    let out = tracecar(&[
        "explain",
        "--dataplane",
        "config/dataplane.yaml",
        "--policy",
        "config/mesh.yaml",
        "--policy",
        arg(&trace),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(json["trafficTrace"].is_null());
    assert!(json["backend"].is_null());
    assert_eq!(json["reason"], "no TrafficTrace matches");
    let listeners = json["listeners"].as_array().unwrap();
    assert!(
        listeners.iter().all(|l| l["traced"] == false),
        "{listeners:?}"
    );
}

#[test]
fn explain_refuses_invalid_input_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "empty.yaml", "");
    let out = tracecar(&[
        "explain",
        "--dataplane",
        "config/dataplane.yaml",
        "--policy",
        arg(&file),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains("panicked"));
}

// =============================================================================================
// run

#[test]
fn run_without_dataplane_is_a_usage_error() {
    let out = tracecar(&["run", "--policy", "config/"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--dataplane"), "{}", stderr(&out));
}

#[test]
fn run_with_a_missing_dataplane_file_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("dp.yaml");
    let out = tracecar(&["run", "--dataplane", arg(&missing), "--policy", "config/"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no such file or folder"),
        "{}",
        stderr(&out)
    );
}
