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
