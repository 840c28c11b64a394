//! The deployment examples carry valid tracecar files: what `deploy/` tells users to run loads.

use std::path::Path;
use std::process::Command;

fn validate(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tracecar"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("validate")
        .args(args)
        .output()
        .expect("tracecar runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn compose_dataplanes_validate_against_the_policy_they_mount() {
    for dataplane in [
        "deploy/compose/frontend-dataplane.yaml",
        "deploy/compose/backend-dataplane.yaml",
    ] {
        let (ok, stderr) = validate(&["--strict", "--dataplane", dataplane, "config/jaeger"]);
        assert!(ok, "{dataplane}: {stderr}");
    }
}

#[test]
fn kubernetes_configmaps_hold_a_valid_policy_and_dataplane() {
    assert_manifests_validate("deploy/kubernetes/web.yaml");
}

#[test]
fn the_transparent_kubernetes_example_holds_a_valid_policy_and_dataplane() {
    assert_manifests_validate("deploy/kubernetes/web-transparent.yaml");
}

#[test]
fn the_transparent_kubernetes_example_gives_only_the_init_container_a_capability() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/web-transparent.yaml"),
    )
    .expect("manifest");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("YAML");
    let pod = &docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment")["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(init["args"][0], "redirect");
    assert_eq!(init["args"][1], "install");
    assert_eq!(
        init["securityContext"]["capabilities"]["add"][0],
        "NET_ADMIN"
    );
    let uid_arg = init["args"]
        .as_array()
        .expect("args")
        .iter()
        .skip_while(|a| *a != "--uid")
        .nth(1)
        .and_then(|a| a.as_str())
        .expect("--uid VALUE");
    let sidecar = pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "tracecar")
        .expect("the tracecar container");
    // The rules exclude exactly the uid the sidecar runs as, or its upstream calls would loop.
    assert_eq!(sidecar["securityContext"]["runAsUser"].to_string(), uid_arg);
    assert_eq!(sidecar["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(sidecar["securityContext"]["capabilities"]["add"].is_null());
}

/// The files live inside ConfigMaps: write each `data` entry out, as the kubelet would, and
/// validate them.
fn assert_manifests_validate(dataplane_manifest: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy");
    std::fs::create_dir(&policy).expect("policy dir");
    let mut dataplane = None;
    for manifest in [
        "deploy/kubernetes/policy-configmap.yaml",
        dataplane_manifest,
    ] {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest))
            .expect("manifest");
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("YAML");
        for doc in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
            let data = doc["data"].as_object().expect("data");
            for (name, content) in data {
                let content = content.as_str().expect("text");
                if name == "dataplane.yaml" {
                    let file = dir.path().join("dataplane.yaml");
                    std::fs::write(&file, content).expect("write");
                    dataplane = Some(file);
                } else {
                    std::fs::write(policy.join(name), content).expect("write");
                }
            }
        }
    }
    let dataplane = dataplane.expect("a dataplane ConfigMap");
    let (ok, stderr) = validate(&[
        "--strict",
        "--dataplane",
        dataplane.to_str().expect("utf-8"),
        policy.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{stderr}");
}

#[test]
fn the_compose_demo_validates_against_the_compose_spec() {
    // check-jsonschema (PyPI) carries the compose spec; scripts/test installs it.
    let output = Command::new("check-jsonschema")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "--builtin-schema",
            "vendor.compose-spec",
            "deploy/compose/docker-compose.yml",
        ])
        .output()
        .expect("check-jsonschema runs (pip install check-jsonschema)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every `tracecar_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tracecar_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn get(address: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: web.local\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn every_metric_the_grafana_dashboard_queries_exists_in_a_running_sidecars_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/compose/grafana/dashboards/tracecar.json"))
            .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut queried: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(metric_names))
        .flatten()
        .collect();
    queried.sort();
    queried.dedup();
    assert!(queried.len() >= 7, "{queried:?}");

    // A real `tracecar run`: one traced inbound in front of an app that is not there (a 503
    // still makes a request and a span), a Zipkin backend that is down, and one policy reload.
    let dir = tempfile::tempdir().expect("tempdir");
    let (inbound, admin) = (free_port(), free_port());
    let dataplane = dir.path().join("dataplane.yaml");
    std::fs::write(
        &dataplane,
        format!(
            "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {inbound}\n      servicePort: {}\n      tags: {{kuma.io/service: web, kuma.io/protocol: http}}\n",
            free_port()
        ),
    )
    .expect("write dataplane");
    let policy = dir.path().join("policy");
    std::fs::create_dir(&policy).expect("policy dir");
    let mesh = format!(
        "type: Mesh\nname: default\ntracing:\n  defaultBackend: collector\n  backends:\n    - name: collector\n      type: zipkin\n      conf:\n        url: http://127.0.0.1:{}/api/v2/spans\n---\ntype: TrafficTrace\nname: all\nmesh: default\nselectors:\n  - match:\n      kuma.io/service: '*'\n",
        free_port()
    );
    std::fs::write(policy.join("policy.yaml"), &mesh).expect("write policy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracecar"))
        .args(["run", "--dataplane"])
        .arg(&dataplane)
        .arg("--policy")
        .arg(&policy)
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .env_remove("TRACECAR_POLICY")
        .env_remove("TRACECAR_DATAPLANE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tracecar starts");
    let admin = format!("127.0.0.1:{admin}");
    let inbound = format!("127.0.0.1:{inbound}");
    let mut text = String::new();
    let mut reloaded = false;
    for _ in 0..200 {
        if get(&inbound, "/").is_some() && !reloaded {
            // A policy change: the reload counter gets its first sample.
            std::fs::write(policy.join("policy.yaml"), format!("{mesh}# changed\n"))
                .expect("rewrite policy");
            reloaded = true;
        }
        text = get(&admin, "/metrics").unwrap_or_default();
        if reloaded && queried.iter().all(|name| text.contains(name.as_str())) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| {
            !text
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        })
        .collect();
    assert!(missing.is_empty(), "not in /metrics: {missing:?}\n{text}");
}
