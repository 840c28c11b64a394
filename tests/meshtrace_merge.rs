//! MeshTrace selection, order and merge: Kuma v2.14.3's fixtures (`rules/single/06`, `07`, and
//! the inspect fixtures `_rules/overriding_meshtrace`, `_policies/merged_policies`) with the
//! same results, Kuma's comparator, targetRef matching, and a property: the merge never depends
//! on the order in which policies were read.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};
use tracecar::policy::load::parse_str;
use tracecar::policy::meshtrace::{merge, select};
use tracecar::policy::{Dataplane, PolicySet, Resource};

fn load(text: &str) -> (PolicySet, Option<Dataplane>) {
    let (resources, diagnostics) = parse_str(Path::new("fixture.yaml"), text);
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
    let dataplane = resources.iter().find_map(|r| match r {
        Resource::Dataplane(d) => Some(d.clone()),
        _ => None,
    });
    (PolicySet::from_resources(resources), dataplane)
}

/// Names of the MeshTraces that select `dp` in merge order, and their merged conf with Kuma's
/// defaults.
fn merged(set: &PolicySet, dp: &Dataplane) -> (Vec<String>, Value) {
    let (selected, _) = select::select(dp, &set.mesh_traces);
    let names = selected.iter().map(|m| m.meta.name.clone()).collect();
    (
        names,
        merge::with_defaults(merge::merge_defaults(selected.iter().copied())),
    )
}

fn dataplane(mesh: &str, service: &str) -> String {
    format!(
        "---\ntype: Dataplane\nname: dp-1\nmesh: {mesh}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 8080\n      tags:\n        kuma.io/service: {service}\n"
    )
}

#[test]
fn kuma_rules_single_06_simple_meshtrace() {
    let input = r#"
type: MeshTrace
mesh: mesh-1
name: mt-1
spec:
  targetRef:
    kind: Mesh
  default:
    tags:
      - name: team
        literal: core
    backends:
      - type: Zipkin
        zipkin:
          url: http://jaeger-collector.mesh-observability:9411/api/v2/spans
"#;
    let (set, dp) = load(&format!("{input}{}", dataplane("mesh-1", "backend")));
    let (names, conf) = merged(&set, &dp.unwrap());
    assert_eq!(names, ["mt-1"]);
    assert_eq!(
        conf,
        json!({
            "backends": [{"type": "Zipkin", "zipkin": {
                "apiVersion": "httpJson", "sharedSpanContext": true, "traceId128bit": false,
                "url": "http://jaeger-collector.mesh-observability:9411/api/v2/spans"}}],
            "tags": [{"literal": "core", "name": "team"}]
        })
    );
}

#[test]
fn kuma_rules_single_07_meshtrace_overriding_a_backend() {
    let input = r#"
type: MeshTrace
mesh: mesh-1
name: mt-1
spec:
  targetRef:
    kind: Mesh
  default:
    tags:
      - name: team
        literal: core
    backends:
      - type: Zipkin
        zipkin:
          url: http://jaeger-collector.mesh-observability:9411/api/v2/spans
---
type: MeshTrace
mesh: mesh-1
name: mt-2
spec:
  targetRef:
    kind: MeshService
    name: backend
  default:
    tags:
      - name: team
        literal: support
    backends:
      - type: Datadog
        datadog:
          url: http://ingest.datadoghq.eu:8126
"#;
    let (set, dp) = load(&format!("{input}{}", dataplane("mesh-1", "backend")));
    let (names, conf) = merged(&set, &dp.unwrap());
    assert_eq!(names, ["mt-1", "mt-2"]);
    assert_eq!(
        conf,
        json!({
            "backends": [{"datadog": {"splitService": false, "url": "http://ingest.datadoghq.eu:8126"},
                          "type": "Datadog"}],
            "tags": [{"literal": "support", "name": "team"}]
        })
    );
}

#[test]
fn kuma_inspect_overriding_meshtrace() {
    let input = r#"
type: Mesh
name: default
---
type: Dataplane
name: dp-1
mesh: default
networking:
  address: 127.0.0.1
  inbound:
    - port: 8080
      tags:
        kuma.io/service: foo
---
type: MeshTrace
name: default
mesh: default
spec:
  targetRef:
    kind: Mesh
  default:
    backends:
      - type: Zipkin
        zipkin:
          url: http://jaeger-collector:9411/api/v2/spans
    tags:
      - name: team
        literal: core
      - name: env
        header:
          name: x-env
          default: prod
      - name: version
        header:
          name: x-version
---
type: MeshTrace
name: override
mesh: default
spec:
  targetRef:
    kind: MeshService
    name: foo
  default:
    backends:
      - type: Zipkin
        zipkin:
          url: http://jaeger-collector:9411/api/v2/spans
"#;
    let (set, dp) = load(input);
    let (names, conf) = merged(&set, &dp.unwrap());
    assert_eq!(names, ["default", "override"]);
    assert_eq!(
        conf,
        json!({
            "backends": [{"type": "Zipkin", "zipkin": {
                "url": "http://jaeger-collector:9411/api/v2/spans", "traceId128bit": false,
                "apiVersion": "httpJson", "sharedSpanContext": true}}],
            "tags": [
                {"name": "team", "literal": "core"},
                {"name": "env", "header": {"name": "x-env", "default": "prod"}},
                {"name": "version", "header": {"name": "x-version"}}
            ]
        })
    );
}

#[test]
fn kuma_inspect_merged_policies() {
    let input = r#"
type: Mesh
name: default
meshServices:
  mode: Exclusive
---
type: Dataplane
name: dp-1
mesh: default
networking:
  address: 127.0.0.1
  inbound:
    - port: 8080
      tags:
        kuma.io/service: foo
---
type: MeshTrace
name: default
mesh: default
spec:
  default:
    backends:
      - type: Zipkin
        zipkin:
          url: http://jaeger-collector:9411/api/v2/spans
          apiVersion: httpJson
---
type: MeshTrace
name: default-1
mesh: default
spec:
  default:
    sampling:
      overall: 80
      random: 60
      client: 40
    backends:
      - type: Zipkin
        zipkin:
          url: http://jaeger-collector:9411/api/v2/spans
          apiVersion: httpJson
"#;
    let (set, dp) = load(input);
    let dp = dp.unwrap();
    let (names, conf) = merged(&set, &dp);
    // Kuma lists the origins default-1, default: inverted name order, the last wins.
    assert_eq!(names, ["default-1", "default"]);
    assert_eq!(
        conf,
        json!({
            "backends": [{"type": "Zipkin", "zipkin": {
                "url": "http://jaeger-collector:9411/api/v2/spans", "traceId128bit": false,
                "apiVersion": "httpJson", "sharedSpanContext": true}}],
            "sampling": {"overall": 80, "client": 40, "random": 60}
        })
    );
    let effective = set.effective(&dp, 1);
    let applied = effective.mesh_trace.expect("MeshTrace applies");
    assert_eq!(
        (
            applied.sampling.overall,
            applied.sampling.client,
            applied.sampling.random
        ),
        (80.0, 40.0, 60.0)
    );
}

fn mesh_trace(name: &str, target_ref: &str, labels: &str, default: &str) -> String {
    format!(
        "---\ntype: MeshTrace\nname: {name}\nmesh: default\nlabels: {labels}\nspec:\n  targetRef: {target_ref}\n  default: {default}\n"
    )
}

#[test]
fn kind_order_puts_the_more_specific_target_ref_last() {
    let text = [
        mesh_trace(
            "a-subset",
            "{kind: MeshSubset, tags: {version: v1}}",
            "{}",
            "{backends: []}",
        ),
        mesh_trace(
            "b-service",
            "{kind: MeshService, name: web}",
            "{}",
            "{backends: []}",
        ),
        mesh_trace(
            "c-dp-name",
            "{kind: Dataplane, name: dp-1}",
            "{}",
            "{backends: []}",
        ),
        mesh_trace(
            "d-dp-labels",
            "{kind: Dataplane, labels: {team: a}}",
            "{}",
            "{backends: []}",
        ),
        mesh_trace("e-mesh", "{kind: Mesh}", "{}", "{backends: []}"),
        mesh_trace(
            "f-subset-svc",
            "{kind: MeshServiceSubset, name: web, tags: {version: v1}}",
            "{}",
            "{backends: []}",
        ),
    ]
    .concat();
    let dp = "---\ntype: Dataplane\nname: dp-1\nmesh: default\nlabels: {team: a}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 8080\n      tags: {kuma.io/service: web, version: v1}\n";
    let (set, dp) = load(&format!("{text}{dp}"));
    let (names, _) = merged(&set, &dp.unwrap());
    assert_eq!(
        names,
        [
            "e-mesh",
            "d-dp-labels",
            "c-dp-name",
            "a-subset",
            "b-service",
            "f-subset-svc"
        ]
    );
}

#[test]
fn origin_then_role_then_inverted_name_break_ties() {
    let text = [
        mesh_trace("zone-b", "{kind: Mesh}", "{kuma.io/origin: zone}", "{}"),
        mesh_trace("zone-a", "{kind: Mesh}", "{kuma.io/origin: zone}", "{}"),
        mesh_trace("global", "{kind: Mesh}", "{kuma.io/origin: global}", "{}"),
        mesh_trace("unknown", "{kind: Mesh}", "{}", "{}"),
        mesh_trace(
            "consumer",
            "{kind: Mesh}",
            "{kuma.io/origin: zone, kuma.io/policy-role: consumer}",
            "{}",
        ),
    ]
    .concat();
    let (set, dp) = load(&format!("{text}{}", dataplane("default", "web")));
    let (names, _) = merged(&set, &dp.unwrap());
    assert_eq!(names, ["global", "unknown", "zone-b", "zone-a", "consumer"]);
}

#[test]
fn target_refs_that_do_not_match_say_why() {
    let text = [
        mesh_trace(
            "svc",
            "{kind: MeshService, name: other}",
            "{}",
            "{backends: []}",
        ),
        mesh_trace(
            "labels",
            "{kind: Dataplane, labels: {team: b}}",
            "{}",
            "{backends: []}",
        ),
        mesh_trace(
            "gw",
            "{kind: MeshGateway, name: edge}",
            "{}",
            "{backends: []}",
        ),
    ]
    .concat();
    let (set, dp) = load(&format!("{text}{}", dataplane("default", "web")));
    let effective = set.effective(&dp.unwrap(), 1);
    assert!(effective.mesh_trace.is_none());
    let why: Vec<(String, bool, String)> = effective
        .mesh_trace_selection
        .iter()
        .map(|s| (s.name.clone(), s.selected, s.why.clone()))
        .collect();
    assert_eq!(
        why,
        [
            (
                "gw".into(),
                false,
                "targetRef MeshGateway never selects a sidecar".into()
            ),
            (
                "labels".into(),
                false,
                "targetRef Dataplane labels: this Dataplane lacks team=b".into()
            ),
            (
                "svc".into(),
                false,
                "targetRef MeshService \"other\": no inbound has that kuma.io/service".into()
            ),
        ]
    );
}

#[test]
fn dataplane_labels_include_those_kuma_computes() {
    let text = mesh_trace(
        "zone",
        "{kind: Dataplane, labels: {kuma.io/zone: east, kuma.io/mesh: default, kuma.io/proxy-type: sidecar}}",
        "{}",
        "{backends: []}",
    );
    let dp = "---\ntype: Dataplane\nname: dp-1\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 8080\n      tags: {kuma.io/service: web, kuma.io/zone: east}\n";
    let (set, dp) = load(&format!("{text}{dp}"));
    let (names, _) = merged(&set, &dp.unwrap());
    assert_eq!(names, ["zone"]);
}

#[test]
fn a_kubernetes_meshtrace_outside_kuma_system_selects_only_its_namespace() {
    let policy = |ns: &str| {
        format!(
            "---\napiVersion: kuma.io/v1alpha1\nkind: MeshTrace\nmetadata:\n  name: mt-{ns}\n  namespace: {ns}\n  labels: {{kuma.io/mesh: default}}\nspec:\n  default: {{backends: []}}\n"
        )
    };
    let dp = "---\napiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmesh: default\nmetadata: {name: web-1, namespace: shop}\nspec:\n  networking:\n    address: 127.0.0.1\n    inbound:\n      - port: 8080\n        tags: {kuma.io/service: web}\n";
    let text = [policy("shop"), policy("other"), policy("kuma-system")].concat();
    let (set, dp) = load(&format!("{text}{dp}"));
    let (mut names, _) = merged(&set, &dp.unwrap());
    names.sort();
    assert_eq!(names, ["mt-kuma-system", "mt-shop"]);
}

#[test]
fn empty_backends_turn_tracing_off_and_traffic_trace_is_ignored() {
    let text = r#"
type: Mesh
name: default
tracing:
  defaultBackend: zipkin
  backends:
    - name: zipkin
      type: zipkin
      conf: {url: "http://127.0.0.1:9411/api/v2/spans"}
---
type: TrafficTrace
name: all
mesh: default
selectors: [{match: {kuma.io/service: "*"}}]
---
type: MeshTrace
name: trace-on
mesh: default
spec:
  default:
    backends: [{type: Zipkin, zipkin: {url: "http://127.0.0.1:9411/api/v2/spans"}}]
---
type: MeshTrace
name: trace-off
mesh: default
spec:
  targetRef: {kind: MeshService, name: web}
  default:
    backends: []
"#;
    let (set, dp) = load(&format!("{text}{}", dataplane("default", "web")));
    let effective = set.effective(&dp.unwrap(), 1);
    assert!(effective.traffic_trace.is_none());
    assert!(effective.backend.is_none());
    assert_eq!(
        effective.reason.as_deref(),
        Some("the merged MeshTrace has backends: [] (tracing off)")
    );
    assert!(effective.listeners.iter().all(|l| !l.traced));
}

#[test]
fn merged_backend_is_named_for_metrics_and_carries_overall_sampling() {
    let text = mesh_trace(
        "dd",
        "{kind: Mesh}",
        "{}",
        "{backends: [{type: Datadog, datadog: {url: 'http://127.0.0.1:8126', splitService: true}}], sampling: {overall: '12.5'}}",
    );
    let (set, dp) = load(&format!("{text}{}", dataplane("default", "web")));
    let effective = set.effective(&dp.unwrap(), 1);
    let json = serde_json::to_value(&effective).unwrap();
    assert_eq!(
        json["backend"],
        json!({"name": "meshtrace:datadog", "type": "datadog", "sampling": 12.5,
               "conf": {"address": "127.0.0.1", "port": 8126, "splitService": true}})
    );
    assert_eq!(
        json["meshTrace"],
        json!({"policies": [{"name": "dd", "mesh": "default", "targetRef": {"kind": "Mesh"}}],
               "sampling": {"overall": 12.5, "client": 100.0, "random": 100.0},
               "tags": [{"name": "kuma.mesh", "literal": "default"}]})
    );
    assert_eq!(json["trafficTrace"], Value::Null);
}

#[test]
fn an_opentelemetry_backend_by_reference_resolves_with_no_reason() {
    let text = [
        mesh_trace(
            "otel",
            "{kind: Mesh}",
            "{}",
            "{backends: [{type: OpenTelemetry, openTelemetry: {backendRef: {kind: MeshOpenTelemetryBackend, labels: {kuma.io/display-name: collector}}}}]}",
        ),
        "---\ntype: MeshOpenTelemetryBackend\nname: collector\nmesh: default\nspec:\n  endpoint: {address: otel.local, port: 4318, path: /otlp}\n  protocol: http\n".to_string(),
    ]
    .concat();
    let (set, dp) = load(&format!("{text}{}", dataplane("default", "web")));
    let effective = set.effective(&dp.unwrap(), 1);
    let json = serde_json::to_value(&effective).unwrap();
    assert_eq!(
        json["backend"],
        json!({"name": "meshtrace:opentelemetry", "type": "openTelemetry", "sampling": 100.0,
               "conf": {"endpoint": "otel.local:4318", "protocol": "http", "path": "/otlp"}})
    );
    assert_eq!(json["reason"], Value::Null);
}

#[test]
fn user_tags_win_over_automatic_ones_of_the_same_name() {
    let text = mesh_trace(
        "tags",
        "{kind: Mesh}",
        "{}",
        "{backends: [], tags: [{name: kuma.mesh, literal: mine}]}",
    );
    let dp = "---\ntype: Dataplane\nname: dp-1\nmesh: default\nlabels: {kuma.io/workload: web, k8s.kuma.io/namespace: shop}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 8080\n      tags: {kuma.io/service: web, kuma.io/zone: east}\n";
    let (set, dp) = load(&format!("{text}{dp}"));
    let effective = set.effective(&dp.unwrap(), 1);
    let tags = serde_json::to_value(&effective.mesh_trace.unwrap().tags).unwrap();
    assert_eq!(
        tags,
        json!([
            {"name": "kuma.mesh", "literal": "mine"},
            {"name": "kuma.zone", "literal": "east"},
            {"name": "kuma.workload", "literal": "kri_wl_default_east_shop_web_"}
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Property: merge order never depends on file order.

fn arb_policy(index: usize) -> impl Strategy<Value = String> {
    let target = prop_oneof![
        Just("{kind: Mesh}".to_string()),
        Just("{kind: MeshService, name: web}".to_string()),
        Just("{kind: MeshSubset, tags: {version: v1}}".to_string()),
        Just("{kind: MeshServiceSubset, name: web, tags: {version: v1}}".to_string()),
        Just("{kind: Dataplane, name: dp-1}".to_string()),
        Just("{kind: Dataplane, labels: {team: a}}".to_string()),
    ];
    let labels = prop_oneof![
        Just("{}"),
        Just("{kuma.io/origin: zone}"),
        Just("{kuma.io/origin: global}"),
        Just("{kuma.io/policy-role: producer}"),
    ];
    let default = prop_oneof![
        Just("{}".to_string()),
        Just("{backends: []}".to_string()),
        (0u8..=100).prop_map(|p| format!("{{sampling: {{overall: {p}}}}}")),
        (0u8..5).prop_map(|t| format!("{{tags: [{{name: t, literal: v{t}}}]}}")),
        (1u16..100).prop_map(|p| format!(
            "{{backends: [{{type: Zipkin, zipkin: {{url: 'http://z:{p}/api/v2/spans'}}}}]}}"
        )),
    ];
    let name = prop_oneof![Just("a"), Just("m"), Just("z")];
    (target, labels, default, name)
        .prop_map(move |(t, l, d, n)| mesh_trace(&format!("{n}{index}"), &t, l, &d))
}

fn arb_policies() -> impl Strategy<Value = Vec<String>> {
    (1usize..8).prop_flat_map(|n| (0..n).map(arb_policy).collect::<Vec<_>>())
}

proptest! {
    #[test]
    fn merge_result_never_depends_on_file_order(
        (policies, shuffled) in arb_policies().prop_flat_map(|p| (Just(p.clone()), Just(p).prop_shuffle()))
    ) {
        let dp = "---\ntype: Dataplane\nname: dp-1\nmesh: default\nlabels: {team: a}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 8080\n      tags: {kuma.io/service: web, version: v1}\n";
        let (a, dpa) = load(&format!("{}{dp}", policies.concat()));
        let (b, dpb) = load(&format!("{}{dp}", shuffled.concat()));
        let ea = a.effective(&dpa.unwrap(), 1);
        let eb = b.effective(&dpb.unwrap(), 1);
        prop_assert_eq!(serde_json::to_value(&ea).unwrap(), serde_json::to_value(&eb).unwrap());
    }
}
