//! MeshTrace hot reload with the real binary (README, Hot reload and MeshTrace): a switch from TrafficTrace
//! to MeshTrace and back, and a MeshTrace edit, each applied within 2 s.

mod harness;

use std::time::Duration;
use std::time::Instant;

use harness::{Answer, Collector, Sidecar, SidecarFiles, Upstream, replace_file};
use serde_json::Value;

async fn config_dump_until(sidecar: &Sidecar, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let dump = sidecar.config_dump().await;
        if done(&dump) || started.elapsed() >= Duration::from_secs(2) {
            return dump;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mesh_trace(url: &str, overall: u32) -> String {
    format!(
        "type: MeshTrace\nname: all\nmesh: default\nspec:\n  targetRef: {{kind: Mesh}}\n  default:\n    backends: [{{type: Zipkin, zipkin: {{url: '{url}'}}}}]\n    sampling: {{overall: {overall}}}\n    tags: [{{name: team, literal: core}}]\n"
    )
}

/// A sidecar started under TrafficTrace (backend "a"), with a Zipkin collector for MeshTrace.
struct Setup {
    _app: Upstream,
    _a: Collector,
    zipkin: Collector,
    files: SidecarFiles,
    sidecar: Sidecar,
}

impl Setup {
    async fn start() -> Setup {
        let app = Upstream::start().await;
        let a = Collector::start(Answer::Accept).await;
        let zipkin = Collector::start(Answer::Accept).await;
        let files = SidecarFiles::new(app.address, &[("a", &a.url())], "a");
        let sidecar = Sidecar::start(&files.dataplane, &files.policy, &[]).await;
        Setup {
            _app: app,
            _a: a,
            zipkin,
            files,
            sidecar,
        }
    }

    fn mesh_trace_file(&self) -> std::path::PathBuf {
        self.files.policy.join("meshtrace.yaml")
    }
}

#[tokio::test]
async fn adding_a_meshtrace_replaces_the_traffic_trace_within_2s_and_spans_follow() {
    let setup = Setup::start().await;
    assert_eq!(setup.sidecar.config_dump().await["backend"]["name"], "a");
    replace_file(
        &setup.mesh_trace_file(),
        &mesh_trace(&setup.zipkin.url(), 100),
    );
    let dump = config_dump_until(&setup.sidecar, |d| {
        d["backend"]["name"] == "meshtrace:zipkin"
    })
    .await;
    assert_eq!(
        dump["backend"]["name"],
        "meshtrace:zipkin",
        "not applied within 2 s:\n{}",
        setup.sidecar.log()
    );
    assert_eq!(dump["trafficTrace"], Value::Null);
    assert_eq!(dump["meshTrace"]["policies"][0]["name"], "all");
    assert_eq!(dump["policyVersion"], 2);

    let mut client = harness::Client::connect(setup.files.inbound)
        .await
        .expect("connect");
    for _ in 0..5 {
        client.get("/echo").await.expect("request");
    }
    assert!(
        setup.zipkin.wait_for_spans(1, Duration::from_secs(3)).await > 0,
        "no span at the MeshTrace backend:\n{}",
        setup.sidecar.log()
    );
}

#[tokio::test]
async fn a_meshtrace_edit_applies_within_2s() {
    let setup = Setup::start().await;
    replace_file(
        &setup.mesh_trace_file(),
        &mesh_trace(&setup.zipkin.url(), 100),
    );
    config_dump_until(&setup.sidecar, |d| {
        d["backend"]["name"] == "meshtrace:zipkin"
    })
    .await;
    replace_file(
        &setup.mesh_trace_file(),
        &mesh_trace(&setup.zipkin.url(), 25),
    );
    let dump = config_dump_until(&setup.sidecar, |d| {
        d["meshTrace"]["sampling"]["overall"] == 25.0
    })
    .await;
    assert_eq!(
        dump["meshTrace"]["sampling"]["overall"],
        25.0,
        "not applied within 2 s:\n{}",
        setup.sidecar.log()
    );
    assert_eq!(dump["backend"]["sampling"], 25.0);
    assert_eq!(dump["policyVersion"], 3);
}

#[tokio::test]
async fn removing_the_meshtrace_returns_to_the_traffic_trace_within_2s() {
    let setup = Setup::start().await;
    replace_file(
        &setup.mesh_trace_file(),
        &mesh_trace(&setup.zipkin.url(), 100),
    );
    config_dump_until(&setup.sidecar, |d| {
        d["backend"]["name"] == "meshtrace:zipkin"
    })
    .await;
    std::fs::remove_file(setup.mesh_trace_file()).expect("remove");
    let dump = config_dump_until(&setup.sidecar, |d| d["backend"]["name"] == "a").await;
    assert_eq!(
        dump["backend"]["name"],
        "a",
        "not applied within 2 s:\n{}",
        setup.sidecar.log()
    );
    assert_eq!(dump["meshTrace"], Value::Null);
    assert_eq!(dump["trafficTrace"]["name"], "trace-all-traffic");
}

fn mesh_trace_opentelemetry(endpoint: &str) -> String {
    format!(
        "type: MeshTrace\nname: all\nmesh: default\nspec:\n  targetRef: {{kind: Mesh}}\n  default:\n    backends: [{{type: OpenTelemetry, openTelemetry: {{endpoint: '{endpoint}'}}}}]\n"
    )
}

/// Sends a few requests through the sidecar's inbound.
async fn some_requests(setup: &Setup) {
    let mut client = harness::Client::connect(setup.files.inbound)
        .await
        .expect("connect");
    for _ in 0..5 {
        client.get("/echo").await.expect("request");
    }
}

#[tokio::test]
async fn a_meshtrace_backend_switches_between_zipkin_and_opentelemetry_without_restart() {
    let setup = Setup::start().await;
    let otlp = harness::otlp::Receiver::start().await;
    replace_file(
        &setup.mesh_trace_file(),
        &mesh_trace(&setup.zipkin.url(), 100),
    );
    config_dump_until(&setup.sidecar, |d| {
        d["backend"]["name"] == "meshtrace:zipkin"
    })
    .await;

    // Zipkin → OpenTelemetry: new spans go out over OTLP/gRPC.
    replace_file(
        &setup.mesh_trace_file(),
        &mesh_trace_opentelemetry(&otlp.grpc.to_string()),
    );
    let dump = config_dump_until(&setup.sidecar, |d| {
        d["backend"]["name"] == "meshtrace:opentelemetry"
    })
    .await;
    assert_eq!(
        dump["backend"]["name"],
        "meshtrace:opentelemetry",
        "not applied within 2 s:\n{}",
        setup.sidecar.log()
    );
    some_requests(&setup).await;
    let spans = otlp.wait_for_spans(1).await;
    assert!(
        spans.iter().all(|(service, _)| service == "web"),
        "{spans:?}"
    );

    // And back: the next spans reach the Zipkin collector again.
    let at_zipkin = setup.zipkin.spans();
    replace_file(
        &setup.mesh_trace_file(),
        &mesh_trace(&setup.zipkin.url(), 100),
    );
    config_dump_until(&setup.sidecar, |d| {
        d["backend"]["name"] == "meshtrace:zipkin"
    })
    .await;
    some_requests(&setup).await;
    assert!(
        setup
            .zipkin
            .wait_for_spans(at_zipkin + 1, Duration::from_secs(3))
            .await
            > at_zipkin,
        "no span back at Zipkin:\n{}",
        setup.sidecar.log()
    );
}
