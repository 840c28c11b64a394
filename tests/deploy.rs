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
    // The files live inside ConfigMaps: write each `data` entry out, as the kubelet would.
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy");
    std::fs::create_dir(&policy).expect("policy dir");
    let mut dataplane = None;
    for manifest in [
        "deploy/kubernetes/policy-configmap.yaml",
        "deploy/kubernetes/web.yaml",
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
