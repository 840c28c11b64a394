//! Which TrafficTrace applies to a proxy, and what follows from it (contract A3, A7): Kuma's
//! "Dataplane policy" rule, then the backend and the traced listeners.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tracecar::policy::effective::{BackendConf, BackendKind, Effective};
use tracecar::policy::load::parse_str;
use tracecar::policy::select::select_traffic_trace;
use tracecar::policy::{Dataplane, PolicySet, Resource, TrafficTrace, check};

// ---------------------------------------------------------------------------------------------
// Builders: resources are written as YAML, as users write them.

fn parse(yaml: &str) -> Vec<Resource> {
    let (resources, diagnostics) = parse_str(Path::new("test.yaml"), yaml);
    assert!(
        diagnostics.iter().all(|d| !d.is_error()),
        "{diagnostics:?}\n{yaml}"
    );
    resources
}

/// A Universal Dataplane `dp-1` of mesh `default` with one inbound per tag set (flow mappings
/// such as `{kuma.io/service: web, version: v1}`), on ports 15000, 15001, ….
fn dataplane(inbounds: &[&str]) -> Dataplane {
    dataplane_in("default", inbounds)
}

fn dataplane_in(mesh: &str, inbounds: &[&str]) -> Dataplane {
    let inbound: String = inbounds
        .iter()
        .enumerate()
        .map(|(i, tags)| format!("    - port: {}\n      tags: {tags}\n", 15000 + i))
        .collect();
    let yaml = format!(
        "type: Dataplane\nmesh: {mesh}\nname: dp-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n{inbound}"
    );
    only_dataplane(parse(&yaml))
}

fn only_dataplane(resources: Vec<Resource>) -> Dataplane {
    let mut found: Vec<Dataplane> = resources
        .into_iter()
        .filter_map(|r| match r {
            Resource::Dataplane(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1);
    found.remove(0)
}

/// A Universal TrafficTrace document; `extra` lines go at the top level (`creationTime: …`,
/// `mesh: …`, `conf: …`).
fn trace(name: &str, selectors: &[&str], extra: &str) -> String {
    let selectors: String = selectors
        .iter()
        .map(|s| format!("  - match: {s}\n"))
        .collect();
    format!("type: TrafficTrace\nname: {name}\n{extra}\nselectors:\n{selectors}")
}

fn traffic_traces(docs: &[String]) -> Vec<TrafficTrace> {
    parse(&docs.join("---\n"))
        .into_iter()
        .filter_map(|r| match r {
            Resource::TrafficTrace(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// The name of the TrafficTrace that applies, if any.
fn chosen(dp: &Dataplane, docs: &[String]) -> Option<String> {
    let traces = traffic_traces(docs);
    select_traffic_trace(dp, &traces).map(|m| m.traffic_trace.meta.name.clone())
}

const MESH: &str = "
type: Mesh
name: default
tracing:
  defaultBackend: zipkin
  backends:
    - name: zipkin
      type: zipkin
      conf: {url: 'http://zipkin:9411/api/v2/spans'}
    - name: sampled
      type: zipkin
      sampling: 25
      conf: {url: 'http://zipkin:9411/api/v2/spans', apiVersion: httpJsonV1, traceId128bit: true, sharedSpanContext: false}
    - name: dd
      type: datadog
      conf: {address: 127.0.0.1, port: 8126, splitService: true}
";

/// What applies to `dp` under `MESH` (or `mesh`) and the given TrafficTraces.
fn effective_with(mesh: &str, dp: &Dataplane, docs: &[String]) -> Effective {
    let mut all = vec![mesh.to_string()];
    all.extend_from_slice(docs);
    PolicySet::from_resources(parse(&all.join("---\n"))).effective(dp, 1)
}

fn effective(dp: &Dataplane, docs: &[String]) -> Effective {
    effective_with(MESH, dp, docs)
}

fn catch_all(extra: &str) -> String {
    trace("trace-all", &["{kuma.io/service: '*'}"], extra)
}

// =============================================================================================
// A3.1: matching

#[test]
fn exact_selector_matches_an_equal_tag() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [trace("t", &["{kuma.io/service: web}"], "")];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("t"));
}

#[test]
fn exact_selector_does_not_match_another_value() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [trace("t", &["{kuma.io/service: api}"], "")];
    assert_eq!(chosen(&dp, &docs), None);
}

#[test]
fn wildcard_matches_any_value_of_a_present_key() {
    let dp = dataplane(&["{kuma.io/service: web, version: v7}"]);
    let docs = [trace("t", &["{version: '*'}"], "")];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("t"));
}

#[test]
fn wildcard_still_requires_the_key() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [trace("t", &["{kuma.io/service: '*', version: '*'}"], "")];
    assert_eq!(chosen(&dp, &docs), None);
}

#[test]
fn selector_matches_when_one_inbound_has_every_key() {
    let dp = dataplane(&["{kuma.io/service: web, version: v1, zone: eu}"]);
    let docs = [trace("t", &["{kuma.io/service: web, zone: eu}"], "")];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("t"));
}

#[test]
fn tags_are_not_merged_across_inbounds() {
    // web has version v1, metrics has zone eu: no single inbound has both.
    let dp = dataplane(&[
        "{kuma.io/service: web, version: v1}",
        "{kuma.io/service: metrics, zone: eu}",
    ]);
    let docs = [trace("t", &["{version: v1, zone: eu}"], "")];
    assert_eq!(chosen(&dp, &docs), None);
}

#[test]
fn selector_may_match_any_inbound() {
    let dp = dataplane(&["{kuma.io/service: web}", "{kuma.io/service: admin}"]);
    let docs = [trace("t", &["{kuma.io/service: admin}"], "")];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("t"));
}

#[test]
fn no_traffic_trace_selects_nothing() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    assert!(select_traffic_trace(&dp, &[]).is_none());
}

#[test]
fn traffic_traces_of_other_meshes_are_ignored() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        trace("other-exact", &["{kuma.io/service: web}"], "mesh: other"),
        catch_all("mesh: default"),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("trace-all"));
}

#[test]
fn traffic_trace_without_mesh_belongs_to_default() {
    let dp = dataplane_in("other", &["{kuma.io/service: web}"]);
    let docs = [catch_all("")];
    assert_eq!(chosen(&dp, &docs), None);
}

// =============================================================================================
// A3.2: rank

#[test]
fn more_tags_beat_more_exact_values() {
    let dp = dataplane(&["{kuma.io/service: web, version: v1}"]);
    let docs = [
        trace("one-exact", &["{kuma.io/service: web}"], ""),
        trace(
            "two-wildcards",
            &["{kuma.io/service: '*', version: '*'}"],
            "",
        ),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("two-wildcards"));
}

#[test]
fn more_exact_values_win_at_equal_tag_count() {
    let dp = dataplane(&["{kuma.io/service: web, version: v1}"]);
    let docs = [
        trace("a-one-exact", &["{kuma.io/service: '*', version: v1}"], ""),
        trace("b-two-exact", &["{kuma.io/service: web, version: v1}"], ""),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("b-two-exact"));
}

#[test]
fn exact_value_beats_wildcard_on_one_tag() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        trace("a-wildcard", &["{kuma.io/service: '*'}"], ""),
        trace("b-exact", &["{kuma.io/service: web}"], ""),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("b-exact"));
}

#[test]
fn policy_is_ranked_by_its_best_matching_selector() {
    let dp = dataplane(&["{kuma.io/service: web, version: v1}"]);
    let docs = [
        // Its second selector has two tags: that is its rank.
        trace(
            "z-several",
            &[
                "{kuma.io/service: '*'}",
                "{kuma.io/service: web, version: v1}",
            ],
            "",
        ),
        trace("a-one-tag", &["{kuma.io/service: web}"], ""),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("z-several"));
}

#[test]
fn a_selector_that_does_not_match_gives_no_rank() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        // The three-tag selector does not match; only the wildcard one counts.
        trace(
            "a-mixed",
            &[
                "{kuma.io/service: web, version: v1, zone: eu}",
                "{kuma.io/service: '*'}",
            ],
            "",
        ),
        trace("b-exact", &["{kuma.io/service: web}"], ""),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("b-exact"));
}

#[test]
fn rank_beats_creation_time() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        trace(
            "old-exact",
            &["{kuma.io/service: web}"],
            "creationTime: 2020-01-01T00:00:00Z",
        ),
        catch_all("creationTime: 2025-01-01T00:00:00Z"),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("old-exact"));
}

#[test]
fn chosen_trace_reports_its_selector_inbound_and_rank() {
    let dp = dataplane(&[
        "{kuma.io/service: admin}",
        "{kuma.io/service: web, version: v1}",
    ]);
    let docs = [trace(
        "t",
        &[
            "{kuma.io/service: '*'}",
            "{kuma.io/service: web, version: '*'}",
        ],
        "",
    )];
    let e = effective(&dp, &docs);
    let t = e.traffic_trace.expect("a TrafficTrace applies");
    assert_eq!(t.selector.get("version").map(String::as_str), Some("*"));
    assert_eq!(t.inbound, "127.0.0.1:15001");
    assert_eq!((t.rank.tags, t.rank.exact), (2, 1));
}

// =============================================================================================
// A3.3: ties

#[test]
fn equal_rank_later_creation_time_wins() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        trace(
            "a-older",
            &["{kuma.io/service: web}"],
            "creationTime: 2024-01-01T00:00:00Z",
        ),
        trace(
            "b-newer",
            &["{kuma.io/service: web}"],
            "creationTime: 2024-06-01T00:00:00Z",
        ),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("b-newer"));
}

#[test]
fn equal_rank_later_kubernetes_creation_timestamp_wins() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let k8s = |name: &str, created: &str| {
        format!(
            "apiVersion: kuma.io/v1alpha1\nkind: TrafficTrace\nmesh: default\nmetadata:\n  name: {name}\n  creationTimestamp: '{created}'\nspec:\n  selectors:\n    - match: {{kuma.io/service: web}}\n"
        )
    };
    let docs = [
        k8s("a-older", "2024-01-01T00:00:00Z"),
        k8s("b-newer", "2024-01-01T00:00:01Z"),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("b-newer"));
}

#[test]
fn creation_times_compare_as_instants_across_offsets() {
    // 10:00+02:00 is 08:00Z, earlier than 09:00Z.
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        trace(
            "a-offset",
            &["{kuma.io/service: web}"],
            "creationTime: 2024-01-01T10:00:00+02:00",
        ),
        trace(
            "b-utc",
            &["{kuma.io/service: web}"],
            "creationTime: 2024-01-01T09:00:00Z",
        ),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("b-utc"));
}

#[test]
fn absent_creation_time_counts_as_earliest() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        trace("a-undated", &["{kuma.io/service: web}"], ""),
        trace(
            "b-dated",
            &["{kuma.io/service: web}"],
            "creationTime: 1971-01-01T00:00:00Z",
        ),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("b-dated"));
}

#[test]
fn equal_rank_and_time_the_name_sorting_first_wins() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        trace("trace-b", &["{kuma.io/service: web}"], ""),
        trace("trace-a", &["{kuma.io/service: web}"], ""),
        trace("trace-c", &["{kuma.io/service: web}"], ""),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("trace-a"));
}

#[test]
fn names_sort_byte_wise_not_numerically() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        trace("trace-9", &["{kuma.io/service: web}"], ""),
        trace("trace-10", &["{kuma.io/service: web}"], ""),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("trace-10"));
}

#[test]
fn equal_creation_times_fall_back_to_the_name() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let at = "creationTime: 2024-01-01T00:00:00Z";
    let docs = [
        trace("b", &["{kuma.io/service: web}"], at),
        trace("a", &["{kuma.io/service: web}"], at),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("a"));
}

#[test]
fn creation_time_beats_name() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let docs = [
        trace(
            "a",
            &["{kuma.io/service: web}"],
            "creationTime: 2024-01-01T00:00:00Z",
        ),
        trace(
            "z",
            &["{kuma.io/service: web}"],
            "creationTime: 2024-01-02T00:00:00Z",
        ),
    ];
    assert_eq!(chosen(&dp, &docs).as_deref(), Some("z"));
}

#[test]
fn selection_does_not_depend_on_input_order() {
    let dp = dataplane(&["{kuma.io/service: web, version: v1}"]);
    let mut docs = vec![
        trace("c", &["{kuma.io/service: web}"], ""),
        trace("a", &["{version: v1}"], ""),
        trace("b", &["{kuma.io/service: '*'}"], ""),
    ];
    let first = chosen(&dp, &docs);
    docs.reverse();
    assert_eq!(chosen(&dp, &docs), first);
    assert_eq!(first.as_deref(), Some("a"));
}

// =============================================================================================
// A3.4: the backend

#[test]
fn empty_conf_backend_uses_the_mesh_default_backend() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let e = effective(&dp, &[catch_all("conf: {backend: ''}")]);
    assert_eq!(e.backend.map(|b| b.name).as_deref(), Some("zipkin"));
    assert_eq!(e.reason, None);
}

#[test]
fn null_conf_backend_uses_the_mesh_default_backend() {
    // Kuma reads a YAML null as the field's empty value.
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    for extra in ["conf: {backend: }", "conf: {backend: ~}", "conf: null"] {
        let e = effective(&dp, &[catch_all(extra)]);
        assert_eq!(
            e.backend.map(|b| b.name).as_deref(),
            Some("zipkin"),
            "{extra}"
        );
        assert_eq!(e.reason, None, "{extra}");
    }
}

#[test]
fn absent_conf_uses_the_mesh_default_backend() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let e = effective(&dp, &[catch_all("")]);
    assert_eq!(e.backend.map(|b| b.name).as_deref(), Some("zipkin"));
}

#[test]
fn conf_backend_names_the_backend() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let e = effective(&dp, &[catch_all("conf: {backend: dd}")]);
    let backend = e.backend.expect("backend dd");
    assert_eq!(backend.name, "dd");
    assert_eq!(backend.kind, BackendKind::Datadog);
    match backend.conf {
        BackendConf::Datadog(c) => {
            assert_eq!(
                (c.address.as_str(), c.port, c.split_service),
                ("127.0.0.1", 8126, true)
            );
        }
        other => panic!("expected a datadog conf, got {other:?}"),
    }
}

#[test]
fn missing_backend_means_no_tracing_with_a_reason() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let e = effective(&dp, &[catch_all("conf: {backend: x}")]);
    assert_eq!(e.backend, None);
    assert_eq!(
        e.reason.as_deref(),
        Some(r#"backend "x" not found in mesh "default""#)
    );
    // The TrafficTrace still applies: it is shown, so the user sees which one is wrong.
    assert_eq!(
        e.traffic_trace.map(|t| t.name).as_deref(),
        Some("trace-all")
    );
    assert!(e.listeners.iter().all(|l| !l.traced));
}

#[test]
fn no_match_means_no_trace_no_backend_and_a_reason() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let e = effective(&dp, &[trace("t", &["{kuma.io/service: api}"], "")]);
    assert_eq!(e.traffic_trace, None);
    assert_eq!(e.backend, None);
    assert_eq!(e.reason.as_deref(), Some("no TrafficTrace matches"));
    assert!(e.listeners.iter().all(|l| !l.traced));
}

#[test]
fn absent_mesh_means_no_backend() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let set = PolicySet::from_resources(parse(&catch_all("")));
    let e = set.effective(&dp, 1);
    assert_eq!(e.backend, None);
    assert_eq!(e.reason.as_deref(), Some(r#"mesh "default" not found"#));
}

#[test]
fn absent_sampling_is_100_percent() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let e = effective(&dp, &[catch_all("")]);
    assert_eq!(e.backend.map(|b| b.sampling), Some(100.0));
}

#[test]
fn sampling_is_carried_as_written() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let e = effective(&dp, &[catch_all("conf: {backend: sampled}")]);
    assert_eq!(e.backend.map(|b| b.sampling), Some(25.0));
}

#[test]
fn zipkin_conf_defaults_to_json_64_bit_shared_context() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let e = effective(&dp, &[catch_all("")]);
    let json = serde_json::to_value(e.backend.expect("backend")).unwrap();
    assert_eq!(
        json["conf"],
        serde_json::json!({
            "url": "http://zipkin:9411/api/v2/spans",
            "traceId128bit": false,
            "apiVersion": "httpJson",
            "sharedSpanContext": true,
        })
    );
}

#[test]
fn zipkin_http_json_v1_is_read_as_http_json() {
    let dp = dataplane(&["{kuma.io/service: web, kuma.io/protocol: http}"]);
    let e = effective(&dp, &[catch_all("conf: {backend: sampled}")]);
    let json = serde_json::to_value(e.backend.expect("backend")).unwrap();
    assert_eq!(json["conf"]["apiVersion"], "httpJson");
    assert_eq!(json["conf"]["traceId128bit"], true);
    assert_eq!(json["conf"]["sharedSpanContext"], false);
}

// =============================================================================================
// A3.5: traced listeners; the proxy's service

fn listener_traced(protocol_tag: &str) -> (String, bool) {
    let tags = format!("{{kuma.io/service: web{protocol_tag}}}");
    let dp = dataplane(&[tags.as_str()]);
    let e = effective(&dp, &[catch_all("")]);
    let l = &e.listeners[0];
    (l.protocol.to_string(), l.traced)
}

#[test]
fn http_listeners_are_traced() {
    assert_eq!(
        listener_traced(", kuma.io/protocol: http"),
        ("http".into(), true)
    );
}

#[test]
fn http2_listeners_are_traced() {
    assert_eq!(
        listener_traced(", kuma.io/protocol: http2"),
        ("http2".into(), true)
    );
}

#[test]
fn grpc_listeners_are_traced() {
    assert_eq!(
        listener_traced(", kuma.io/protocol: grpc"),
        ("grpc".into(), true)
    );
}

#[test]
fn protocol_tag_is_read_case_insensitively() {
    assert_eq!(
        listener_traced(", kuma.io/protocol: GRPC"),
        ("grpc".into(), true)
    );
}

#[test]
fn tcp_listeners_are_not_traced() {
    assert_eq!(
        listener_traced(", kuma.io/protocol: tcp"),
        ("tcp".into(), false)
    );
}

#[test]
fn kafka_listeners_are_not_traced() {
    assert_eq!(
        listener_traced(", kuma.io/protocol: kafka"),
        ("kafka".into(), false)
    );
}

#[test]
fn listeners_without_protocol_are_tcp_and_not_traced() {
    assert_eq!(listener_traced(""), ("tcp".into(), false));
}

#[test]
fn outbound_listeners_follow_their_protocol() {
    let yaml = "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - {port: 15000, servicePort: 8080, tags: {kuma.io/service: web, kuma.io/protocol: http}}\n  outbound:\n    - {port: 15001, tags: {kuma.io/service: db, kuma.io/protocol: tcp}, endpoints: ['10.0.0.1:5432']}\n    - {port: 15002, tags: {kuma.io/service: api, kuma.io/protocol: grpc}, endpoints: ['10.0.0.2:15000']}\n";
    let dp = only_dataplane(parse(yaml));
    let e = effective(&dp, &[catch_all("")]);
    let summary: Vec<(String, String, String, bool)> = e
        .listeners
        .iter()
        .map(|l| {
            (
                serde_json::to_value(l.direction)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                l.address.clone(),
                l.upstream.clone(),
                l.traced,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "inbound".into(),
                "127.0.0.1:15000".into(),
                "127.0.0.1:8080".into(),
                true
            ),
            (
                "outbound".into(),
                "127.0.0.1:15001".into(),
                "db".into(),
                false
            ),
            (
                "outbound".into(),
                "127.0.0.1:15002".into(),
                "api".into(),
                true
            ),
        ]
    );
}

#[test]
fn proxy_service_is_the_first_service_tag_sorted() {
    let dp = dataplane(&["{kuma.io/service: web}", "{kuma.io/service: admin}"]);
    assert_eq!(dp.service(), "admin");
    let e = effective(&dp, &[catch_all("")]);
    assert_eq!(e.dataplane.service, "admin");
    assert_eq!(
        (e.dataplane.mesh.as_str(), e.dataplane.name.as_str()),
        ("default", "dp-1")
    );
}

#[test]
fn policy_version_is_the_one_given() {
    let dp = dataplane(&["{kuma.io/service: web}"]);
    let set = PolicySet::from_resources(parse(MESH));
    assert_eq!(set.effective(&dp, 7).policy_version, 7);
}

// =============================================================================================
// The examples in config/

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `explain` as a library call: the effective config for a dataplane file and policy paths.
fn explain(dataplane: &str, policy: &str) -> Effective {
    let checked = check(&[repo(policy)], Some(&repo(dataplane)));
    assert!(!checked.failed(false), "{:?}", checked.diagnostics);
    let dp = checked.dataplane.as_ref().expect("dataplane loaded");
    checked.set.effective(dp, 1)
}

#[test]
fn kubernetes_examples_give_the_same_effective_config_as_universal() {
    let universal = explain("config/dataplane.yaml", "config");
    let kubernetes = explain("config/kubernetes/dataplane.yaml", "config/kubernetes");
    assert!(universal.backend.is_some());
    assert_eq!(kubernetes.backend, universal.backend);
    assert_eq!(
        kubernetes.traffic_trace.as_ref().map(|t| &t.name),
        universal.traffic_trace.as_ref().map(|t| &t.name)
    );
    assert_eq!(kubernetes.listeners, universal.listeners);
    assert_eq!(kubernetes.reason, universal.reason);
    // Only the name differs: Kuma names a Kubernetes Dataplane <name>.<namespace>.
    assert_eq!(universal.dataplane.name, "web-1");
    assert_eq!(kubernetes.dataplane.name, "web-1.kuma-demo");
}

#[test]
fn regions_example_sends_the_eu_proxy_to_jaeger_eu() {
    let e = explain("config/regions/dataplane-eu.yaml", "config/regions");
    assert_eq!(
        e.traffic_trace.map(|t| t.name).as_deref(),
        Some("trace-eu-in-eu")
    );
    assert_eq!(e.backend.map(|b| b.name).as_deref(), Some("jaeger-eu"));
}

#[test]
fn regions_example_sends_the_us_proxy_to_jaeger_us() {
    let e = explain("config/regions/dataplane-us.yaml", "config/regions");
    assert_eq!(
        e.traffic_trace.map(|t| t.name).as_deref(),
        Some("trace-everything")
    );
    let backend = e.backend.expect("jaeger-us");
    assert_eq!(backend.name, "jaeger-us");
    assert_eq!(backend.sampling, 25.0);
}

// =============================================================================================
// Order independence

/// Keys and values small enough that selectors often match, tie and overlap.
const KEYS: [&str; 3] = ["kuma.io/service", "version", "zone"];
const VALUES: [&str; 3] = ["web", "v1", "eu"];
const TIMES: [&str; 2] = ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"];

fn arb_tags(with_wildcard: bool) -> impl Strategy<Value = Vec<(usize, usize)>> {
    // (key index, value index); value index 3 is `*` when allowed.
    let values: usize = if with_wildcard { 4 } else { 3 };
    proptest::collection::btree_map(0..KEYS.len(), 0..values, 1..=3)
        .prop_map(|m| m.into_iter().collect())
}

fn flow_map(tags: &[(usize, usize)]) -> String {
    let items: Vec<String> = tags
        .iter()
        .map(|&(k, v)| format!("{}: '{}'", KEYS[k], VALUES.get(v).copied().unwrap_or("*")))
        .collect();
    format!("{{{}}}", items.join(", "))
}

#[derive(Debug, Clone)]
struct GenTrace {
    name: String,
    time: Option<usize>,
    selectors: Vec<Vec<(usize, usize)>>,
}

fn arb_trace() -> impl Strategy<Value = GenTrace> {
    (
        "[a-c][0-9]?",
        proptest::option::of(0..TIMES.len()),
        proptest::collection::vec(arb_tags(true), 1..=3),
    )
        .prop_map(|(name, time, selectors)| GenTrace {
            name,
            time,
            selectors,
        })
}

fn render(t: &GenTrace) -> String {
    let selectors: Vec<String> = t.selectors.iter().map(|s| flow_map(s)).collect();
    let selectors: Vec<&str> = selectors.iter().map(String::as_str).collect();
    let extra = t
        .time
        .map(|i| format!("creationTime: {}", TIMES[i]))
        .unwrap_or_default();
    trace(&t.name, &selectors, &extra)
}

proptest! {
    #[test]
    fn selection_is_independent_of_traffic_trace_order(
        traces in proptest::collection::vec(arb_trace(), 1..6)
            // Names are unique within a mesh.
            .prop_map(|mut v| {
                let mut seen = std::collections::HashSet::new();
                v.retain(|t| seen.insert(t.name.clone()));
                v
            }),
        inbounds in proptest::collection::vec(arb_tags(false), 1..=3),
        seed in any::<u64>(),
    ) {
        let inbound_maps: Vec<String> = inbounds.iter().map(|t| flow_map(t)).collect();
        let inbound_refs: Vec<&str> = inbound_maps.iter().map(String::as_str).collect();
        let dp = dataplane(&inbound_refs);
        let docs: Vec<String> = traces.iter().map(render).collect();

        let mut shuffled = docs.clone();
        // A deterministic Fisher-Yates shuffle from the generated seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut reversed = docs.clone();
        reversed.reverse();

        let expected = chosen(&dp, &docs);
        prop_assert_eq!(chosen(&dp, &shuffled), expected.clone());
        prop_assert_eq!(chosen(&dp, &reversed), expected);
    }
}
