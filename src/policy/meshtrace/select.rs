//! Which MeshTraces select this proxy (by their top-level `targetRef`), and in which order they
//! merge: Kuma's comparator, least important first.
//!
//! Everything here is a pure function of its inputs: the order never depends on the order in
//! which files were read (the last tiebreak is the full name, unique within a mesh).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::resource::{MeshTrace, TargetRef};
use super::validate::POLICY_ROLE_LABEL;
use crate::policy::load::MESH_LABEL;
use crate::policy::resource::{Dataplane, Form, SERVICE_TAG};
use crate::policy::select::selector_matches;

pub const ZONE_TAG: &str = "kuma.io/zone";
pub const ORIGIN_LABEL: &str = "kuma.io/origin";
pub const DISPLAY_NAME_LABEL: &str = "kuma.io/display-name";
pub const NAMESPACE_LABEL: &str = "k8s.kuma.io/namespace";
pub const PROXY_TYPE_LABEL: &str = "kuma.io/proxy-type";
pub const WORKLOAD_LABEL: &str = "kuma.io/workload";
/// Policies in Kuma's system namespace apply across namespaces.
pub const SYSTEM_NAMESPACE: &str = "kuma-system";

/// The Dataplane's namespace: Kubernetes `metadata.namespace`, else its label.
pub fn dataplane_namespace(dataplane: &Dataplane) -> &str {
    if !dataplane.meta.namespace.is_empty() {
        &dataplane.meta.namespace
    } else {
        dataplane
            .meta
            .labels
            .get(NAMESPACE_LABEL)
            .map_or("", String::as_str)
    }
}

/// The Dataplane's zone: the first `kuma.io/zone` of its inbounds (there is no control plane to
/// ask).
pub fn dataplane_zone(dataplane: &Dataplane) -> &str {
    dataplane
        .spec
        .networking()
        .inbound
        .iter()
        .find_map(|i| i.tags.get(ZONE_TAG))
        .map_or("", String::as_str)
}

/// The Dataplane's name without the `.<namespace>` Kuma appends in Kubernetes.
pub fn dataplane_short_name(dataplane: &Dataplane) -> &str {
    let name = dataplane.meta.name.as_str();
    let ns = &dataplane.meta.namespace;
    if dataplane.meta.form == Form::Kubernetes && !ns.is_empty() {
        name.strip_suffix(ns.as_str())
            .and_then(|n| n.strip_suffix('.'))
            .unwrap_or(name)
    } else {
        name
    }
}

/// The labels `targetRef.labels` is matched against: the Dataplane's own, plus those Kuma
/// computes.
pub fn dataplane_labels(dataplane: &Dataplane) -> BTreeMap<String, String> {
    let mut labels = dataplane.meta.labels.clone();
    let mut computed = |key: &str, value: &str| {
        if !value.is_empty() {
            labels
                .entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
    };
    computed(MESH_LABEL, &dataplane.meta.mesh);
    computed(PROXY_TYPE_LABEL, "sidecar");
    computed(ZONE_TAG, dataplane_zone(dataplane));
    computed(NAMESPACE_LABEL, dataplane_namespace(dataplane));
    labels
}

/// Why a MeshTrace does or does not select the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub selected: bool,
    pub why: String,
}

fn yes(why: impl Into<String>) -> Verdict {
    Verdict {
        selected: true,
        why: why.into(),
    }
}
fn no(why: impl Into<String>) -> Verdict {
    Verdict {
        selected: false,
        why: why.into(),
    }
}

fn show(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_default()
}

/// Whether `policy` selects `dataplane`, and why. The mesh must already match.
pub fn verdict(policy: &MeshTrace, dataplane: &Dataplane) -> Verdict {
    let dp_namespace = dataplane_namespace(dataplane);
    let policy_namespace = policy.meta.namespace.as_str();
    if policy.meta.form == Form::Kubernetes
        && !policy_namespace.is_empty()
        && policy_namespace != SYSTEM_NAMESPACE
        && policy_namespace != dp_namespace
    {
        return no(format!(
            "in namespace \"{policy_namespace}\", it selects only Dataplanes of that namespace (this one's is \"{dp_namespace}\")"
        ));
    }
    let mesh_ref = TargetRef::mesh();
    let target_ref = policy.spec.target_ref.as_ref().unwrap_or(&mesh_ref);
    let inbounds = &dataplane.spec.networking().inbound;
    let has_service = |name: &str| {
        inbounds
            .iter()
            .any(|i| i.tags.get(SERVICE_TAG).is_some_and(|s| s == name))
    };
    match target_ref.kind.as_str() {
        "Mesh" => match &target_ref.proxy_types {
            Some(types) if !types.iter().any(|t| t == "Sidecar") => {
                no("targetRef Mesh with proxyTypes that exclude Sidecar")
            }
            _ => yes("targetRef Mesh selects every proxy of the mesh"),
        },
        "Dataplane" => {
            if let Some(labels) = target_ref.labels.as_ref().filter(|l| !l.is_empty()) {
                let have = dataplane_labels(dataplane);
                match labels.iter().find(|(k, v)| have.get(*k) != Some(*v)) {
                    None => yes(format!(
                        "targetRef Dataplane labels {} are all on this Dataplane",
                        show(labels)
                    )),
                    Some((k, v)) => no(format!(
                        "targetRef Dataplane labels: this Dataplane lacks {k}={v}"
                    )),
                }
            } else if !target_ref.name().is_empty() {
                let namespace = target_ref
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(policy_namespace);
                let name = dataplane_short_name(dataplane);
                if name == target_ref.name() && namespace == dp_namespace {
                    yes(format!(
                        "targetRef Dataplane names this Dataplane (\"{name}\")"
                    ))
                } else {
                    no(format!(
                        "targetRef Dataplane names \"{}\" (namespace \"{namespace}\"), not this Dataplane",
                        target_ref.name()
                    ))
                }
            } else {
                yes("targetRef Dataplane without name or labels selects every Dataplane")
            }
        }
        "MeshSubset" => {
            let tags = target_ref.tags.clone().unwrap_or_default();
            if inbounds.iter().any(|i| selector_matches(&tags, &i.tags)) {
                yes(format!(
                    "targetRef MeshSubset tags {} match an inbound",
                    show(&tags)
                ))
            } else {
                no(format!(
                    "targetRef MeshSubset tags {} match no inbound",
                    show(&tags)
                ))
            }
        }
        "MeshService" => {
            if target_ref.name().is_empty() {
                no(
                    "targetRef MeshService by labels: MeshService resources are not read by tracecar",
                )
            } else if has_service(target_ref.name()) {
                yes(format!(
                    "targetRef MeshService \"{}\" is an inbound's kuma.io/service",
                    target_ref.name()
                ))
            } else {
                no(format!(
                    "targetRef MeshService \"{}\": no inbound has that kuma.io/service",
                    target_ref.name()
                ))
            }
        }
        "MeshServiceSubset" => {
            let mut tags = target_ref.tags.clone().unwrap_or_default();
            tags.insert(SERVICE_TAG.to_string(), target_ref.name().to_string());
            if inbounds.iter().any(|i| selector_matches(&tags, &i.tags)) {
                yes(format!(
                    "targetRef MeshServiceSubset {} matches an inbound",
                    show(&tags)
                ))
            } else {
                no(format!(
                    "targetRef MeshServiceSubset {} matches no inbound",
                    show(&tags)
                ))
            }
        }
        "MeshGateway" => no("targetRef MeshGateway never selects a sidecar"),
        other => no(format!("targetRef kind \"{other}\" is not supported")),
    }
}

fn kind_order(kind: &str) -> u8 {
    match kind {
        "Mesh" => 1,
        "Dataplane" => 2,
        "MeshSubset" => 3,
        "MeshGateway" => 4,
        "MeshService" => 5,
        "MeshServiceSubset" => 8,
        _ => 0,
    }
}

fn origin_order(policy: &MeshTrace) -> u8 {
    match policy
        .meta
        .labels
        .get(ORIGIN_LABEL)
        .map_or("", String::as_str)
    {
        "global" => 1,
        "" => 2,
        "zone" => 3,
        _ => 0,
    }
}

fn role_order(policy: &MeshTrace) -> u8 {
    match policy
        .meta
        .labels
        .get(POLICY_ROLE_LABEL)
        .map_or("", String::as_str)
    {
        "" | "system" => 1,
        "producer" => 2,
        "consumer" => 3,
        "workload-owner" => 4,
        _ => 0,
    }
}

/// Kuma's display name: the `kuma.io/display-name` label, else the name.
pub fn display_name(policy: &MeshTrace) -> &str {
    policy
        .meta
        .labels
        .get(DISPLAY_NAME_LABEL)
        .filter(|n| !n.is_empty())
        .unwrap_or(&policy.meta.name)
}

/// Kuma's `CompareDataplaneKind`: among Dataplane refs, a name beats labels, and a section
/// name beats none.
fn dataplane_ref_order(a: &TargetRef, b: &TargetRef) -> Ordering {
    if a.kind != "Dataplane" || b.kind != "Dataplane" {
        return Ordering::Equal;
    }
    let by_name = |r: &TargetRef| !r.name().is_empty();
    let by_labels = |r: &TargetRef| r.labels.is_some();
    let section = |r: &TargetRef| r.section_name.as_deref().is_some_and(|s| !s.is_empty());
    if by_name(a) && by_labels(b) {
        return Ordering::Greater;
    }
    if by_labels(a) && by_name(b) {
        return Ordering::Less;
    }
    section(a).cmp(&section(b))
}

/// Kuma's order, least important first: `Greater` means `a` is applied after (and so wins
/// over) `b`.
pub fn precedence(a: &MeshTrace, b: &MeshTrace) -> Ordering {
    let mesh_ref = TargetRef::mesh();
    let ra = a.spec.target_ref.as_ref().unwrap_or(&mesh_ref);
    let rb = b.spec.target_ref.as_ref().unwrap_or(&mesh_ref);
    kind_order(&ra.kind)
        .cmp(&kind_order(&rb.kind))
        .then_with(|| dataplane_ref_order(ra, rb))
        .then_with(|| origin_order(a).cmp(&origin_order(b)))
        .then_with(|| role_order(a).cmp(&role_order(b)))
        // Inverted name order: `aaa` is applied last, so it wins over `zzz`.
        .then_with(|| display_name(b).cmp(display_name(a)))
        // Not in Kuma (names are unique there); keeps the order total across namespaces.
        .then_with(|| b.meta.namespace.cmp(&a.meta.namespace))
        .then_with(|| b.meta.name.cmp(&a.meta.name))
}

/// The MeshTraces of the proxy's mesh that select it, in merge order (the last wins), and a
/// verdict for every MeshTrace of the mesh (sorted by name).
pub fn select<'a>(
    dataplane: &Dataplane,
    mesh_traces: &'a [MeshTrace],
) -> (Vec<&'a MeshTrace>, Vec<(&'a MeshTrace, Verdict)>) {
    let mut verdicts: Vec<(&MeshTrace, Verdict)> = mesh_traces
        .iter()
        .filter(|mt| mt.meta.mesh == dataplane.meta.mesh)
        .map(|mt| (mt, verdict(mt, dataplane)))
        .collect();
    verdicts.sort_by(|(a, _), (b, _)| {
        (&a.meta.name, &a.meta.namespace).cmp(&(&b.meta.name, &b.meta.namespace))
    });
    let mut selected: Vec<&MeshTrace> = verdicts
        .iter()
        .filter(|(_, v)| v.selected)
        .map(|(mt, _)| *mt)
        .collect();
    selected.sort_by(|a, b| precedence(a, b));
    (selected, verdicts)
}
