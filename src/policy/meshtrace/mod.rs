//! MeshTrace, Kuma 2.x's tracing policy (README, MeshTrace): read, validated, selected by top-level
//! `targetRef`, ordered by Kuma's comparator, merged as JSON Merge Patch, and resolved to the
//! backend, sampling knobs and tags that the data path applies.

pub mod merge;
pub mod resource;
pub mod select;
pub mod validate;

use std::collections::BTreeMap;

use serde::Serialize;

pub use resource::{MeshOpenTelemetryBackend, MeshTrace};

use super::effective::{
    ApiVersion, Backend, BackendConf, BackendKind, DatadogBackend, OpenTelemetryBackend,
    OtlpProtocol, ZipkinBackend,
};
use super::resource::Dataplane;
use resource::OTLP_GRPC_PORT;

/// What `/config_dump` and `explain` show under `meshTrace`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Applied {
    /// The MeshTraces that select the proxy, in merge order (the last wins).
    pub policies: Vec<PolicyRef>,
    pub sampling: Knobs,
    /// As merged, then the automatic ones (`kuma.mesh`, `kuma.zone`, `kuma.workload`).
    pub tags: Vec<TagSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyRef {
    pub name: String,
    pub mesh: String,
    #[serde(rename = "targetRef")]
    pub target_ref: resource::TargetRef,
}

/// Percentages, 0–100 (Kuma's default for each: 100).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Knobs {
    pub overall: f64,
    pub client: f64,
    pub random: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// For `explain`: whether one MeshTrace of the proxy's mesh selects it, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    pub name: String,
    pub selected: bool,
    pub why: String,
}

/// The MeshTrace part of what applies to a proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `None` when no MeshTrace selects the proxy (TrafficTrace then decides).
    pub applied: Option<Applied>,
    pub backend: Option<Backend>,
    /// Why nothing is traced although MeshTraces apply.
    pub reason: Option<String>,
    pub selection: Vec<Selection>,
}

/// Computes which MeshTraces apply to `dataplane`, their merged conf, and the backend.
pub fn resolve(
    dataplane: &Dataplane,
    mesh_traces: &[MeshTrace],
    otel_backends: &[MeshOpenTelemetryBackend],
) -> Outcome {
    let (selected, verdicts) = select::select(dataplane, mesh_traces);
    let selection = verdicts
        .iter()
        .map(|(mt, v)| Selection {
            name: mt.meta.name.clone(),
            selected: v.selected,
            why: v.why.clone(),
        })
        .collect();
    if selected.is_empty() {
        return Outcome {
            applied: None,
            backend: None,
            reason: None,
            selection,
        };
    }
    let merged = merge::with_defaults(merge::merge_defaults(selected.iter().copied()));
    let conf = match merge::typed(&merged) {
        Ok(conf) => conf,
        Err(e) => {
            return Outcome {
                applied: None,
                backend: None,
                reason: Some(format!("merged MeshTrace conf does not read: {e}")),
                selection,
            };
        }
    };
    let percent = |p: &Option<resource::Percent>| {
        p.as_ref()
            .and_then(resource::Percent::value)
            .unwrap_or(100.0)
    };
    let sampling = conf.sampling.clone().unwrap_or_default();
    let knobs = Knobs {
        overall: percent(&sampling.overall),
        client: percent(&sampling.client),
        random: percent(&sampling.random),
    };
    let mut tags: Vec<TagSpec> = conf
        .tags
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|t| TagSpec {
            name: t.name.clone(),
            literal: t.literal.clone(),
            header: t.header.as_ref().map(|h| HeaderSpec {
                name: h.name.clone(),
                default: h.default.clone(),
            }),
        })
        .collect();
    for (name, value) in automatic_tags(dataplane) {
        if !value.is_empty() && !tags.iter().any(|t| t.name == name) {
            tags.push(TagSpec {
                name: name.to_string(),
                literal: Some(value),
                header: None,
            });
        }
    }
    let (backend, reason) = match conf.backends.as_deref() {
        None => (
            None,
            Some("no MeshTrace that selects this proxy sets backends".to_string()),
        ),
        Some([]) => (
            None,
            Some("the merged MeshTrace has backends: [] (tracing off)".to_string()),
        ),
        Some([b, ..]) => match to_backend(b, knobs.overall, dataplane, otel_backends) {
            Ok(backend) => (Some(backend), None),
            Err(reason) => (None, Some(reason)),
        },
    };
    Outcome {
        applied: Some(Applied {
            policies: selected
                .iter()
                .map(|mt| PolicyRef {
                    name: mt.meta.name.clone(),
                    mesh: mt.meta.mesh.clone(),
                    target_ref: mt
                        .spec
                        .target_ref
                        .clone()
                        .unwrap_or_else(resource::TargetRef::mesh),
                })
                .collect(),
            sampling: knobs,
            tags,
        }),
        backend,
        reason,
        selection,
    }
}

/// `kuma.mesh`, `kuma.zone`, `kuma.workload`, in this order; empty values are left out.
fn automatic_tags(dataplane: &Dataplane) -> [(&'static str, String); 3] {
    let mesh = dataplane.meta.mesh.clone();
    let zone = select::dataplane_zone(dataplane).to_string();
    let workload = match dataplane.meta.labels.get(select::WORKLOAD_LABEL) {
        Some(w) if !w.is_empty() => format!(
            "kri_wl_{mesh}_{zone}_{}_{w}_",
            select::dataplane_namespace(dataplane)
        ),
        _ => String::new(),
    };
    [
        ("kuma.mesh", mesh),
        ("kuma.zone", zone),
        ("kuma.workload", workload),
    ]
}

fn to_backend(
    b: &resource::Backend,
    overall: f64,
    dataplane: &Dataplane,
    otel_backends: &[MeshOpenTelemetryBackend],
) -> Result<Backend, String> {
    let (kind, conf) = match b.kind.as_str() {
        "Zipkin" => {
            let z = b.zipkin.clone().unwrap_or_default();
            (
                BackendKind::Zipkin,
                BackendConf::Zipkin(ZipkinBackend {
                    url: z.url.unwrap_or_default(),
                    trace_id_128bit: z.trace_id_128bit.unwrap_or(false),
                    api_version: if z.api_version.as_deref() == Some("httpProto") {
                        ApiVersion::HttpProto
                    } else {
                        ApiVersion::HttpJson
                    },
                    shared_span_context: z.shared_span_context.unwrap_or(true),
                }),
            )
        }
        "Datadog" => {
            let d = b.datadog.clone().unwrap_or_default();
            let url = d.url.unwrap_or_default();
            let parts = validate::split_url(&url)
                .ok_or_else(|| format!("Datadog url \"{url}\" is not http://host:port"))?;
            (
                BackendKind::Datadog,
                BackendConf::Datadog(DatadogBackend {
                    address: parts.host.to_string(),
                    port: parts
                        .port
                        .parse()
                        .map_err(|_| format!("Datadog url \"{url}\" has no valid port"))?,
                    split_service: d.split_service.unwrap_or(false),
                }),
            )
        }
        "OpenTelemetry" => {
            let o = b.open_telemetry.clone().unwrap_or_default();
            let conf = match (&o.backend_ref, o.endpoint.as_deref()) {
                (Some(r), _) => otel_from_ref(
                    r.labels.as_ref().cloned().unwrap_or_default(),
                    dataplane,
                    otel_backends,
                )?,
                (None, Some(endpoint)) => OpenTelemetryBackend {
                    endpoint: with_default_port(endpoint),
                    protocol: OtlpProtocol::Grpc,
                    path: None,
                },
                (None, None) => return Err("OpenTelemetry backend has no endpoint".to_string()),
            };
            (BackendKind::OpenTelemetry, BackendConf::OpenTelemetry(conf))
        }
        other => return Err(format!("unknown backend type \"{other}\"")),
    };
    Ok(Backend {
        name: format!("meshtrace:{}", kind_name(kind)),
        kind,
        sampling: overall,
        conf,
    })
}

/// The lower-case backend type, as in the metric names.
pub fn kind_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Zipkin => "zipkin",
        BackendKind::Datadog => "datadog",
        BackendKind::OpenTelemetry => "opentelemetry",
    }
}

fn with_default_port(endpoint: &str) -> String {
    let has_port = match endpoint.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':')
        }
        None => false,
    };
    if has_port && !(endpoint.starts_with('[') && endpoint.ends_with(']')) {
        endpoint.to_string()
    } else {
        format!("{endpoint}:{OTLP_GRPC_PORT}")
    }
}

/// The labels a `backendRef` is matched against: the resource's own, plus the ones Kuma
/// computes (`kuma.io/display-name`, `kuma.io/mesh`).
fn otel_from_ref(
    labels: BTreeMap<String, String>,
    dataplane: &Dataplane,
    otel_backends: &[MeshOpenTelemetryBackend],
) -> Result<OpenTelemetryBackend, String> {
    let mut candidates: Vec<&MeshOpenTelemetryBackend> = otel_backends
        .iter()
        .filter(|b| b.meta.mesh == dataplane.meta.mesh)
        .filter(|b| {
            let mut have = b.meta.labels.clone();
            have.entry(select::DISPLAY_NAME_LABEL.to_string())
                .or_insert_with(|| b.meta.name.clone());
            have.entry(crate::policy::load::MESH_LABEL.to_string())
                .or_insert_with(|| b.meta.mesh.clone());
            labels.iter().all(|(k, v)| have.get(k) == Some(v))
        })
        .collect();
    candidates.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
    let Some(found) = candidates.first() else {
        return Err(format!(
            "no MeshOpenTelemetryBackend in mesh \"{}\" has the labels {}",
            dataplane.meta.mesh,
            serde_json::to_string(&labels).unwrap_or_default()
        ));
    };
    let endpoint = found.spec.endpoint.clone().unwrap_or_default();
    let Some(address) = endpoint.address.filter(|a| !a.is_empty()) else {
        return Err(format!(
            "MeshOpenTelemetryBackend \"{}\" has no endpoint.address (tracecar does not read OTEL_* environment defaults)",
            found.meta.name
        ));
    };
    let protocol = match found.spec.protocol.as_deref() {
        Some("http") => OtlpProtocol::Http,
        _ => OtlpProtocol::Grpc,
    };
    Ok(OpenTelemetryBackend {
        endpoint: crate::policy::effective::join_host_port(
            &address,
            endpoint.port.unwrap_or(OTLP_GRPC_PORT),
        ),
        protocol,
        path: endpoint.path.filter(|p| !p.is_empty()),
    })
}
