//! The effective configuration: what `run` applies to this proxy, and what `explain` and
//! `/config_dump` print. Built whole from a validated policy set and swapped whole on reload.

use serde::Serialize;

use super::null_as_empty;
use super::resource::{
    DatadogConf, Dataplane, Mesh, Protocol, SERVICE_TAG, TracingBackend, TrafficTrace, ZipkinConf,
};
use super::select::{self, Rank};

/// Where outbound listeners bind when the Dataplane does not say (Kuma's default).
pub const OUTBOUND_ADDRESS: &str = "127.0.0.1";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    pub dataplane: DataplaneSummary,
    #[serde(rename = "trafficTrace")]
    pub traffic_trace: Option<ChosenTrafficTrace>,
    pub backend: Option<Backend>,
    /// Why nothing is traced, when nothing is.
    pub reason: Option<String>,
    pub listeners: Vec<Listener>,
    /// The redirect ports, when the kernel redirects traffic to tracecar.
    #[serde(
        rename = "transparentProxying",
        skip_serializing_if = "Option::is_none"
    )]
    pub transparent_proxying: Option<RedirectPorts>,
    #[serde(rename = "policyVersion")]
    pub policy_version: u64,
    /// The MeshTraces that apply (README, MeshTrace); `trafficTrace` is null when this is not.
    #[serde(rename = "meshTrace")]
    pub mesh_trace: Option<super::meshtrace::Applied>,
    /// Why each MeshTrace of the mesh does or does not select the proxy.
    #[serde(rename = "meshTraceSelection", skip_serializing_if = "Vec::is_empty")]
    pub mesh_trace_selection: Vec<super::meshtrace::Selection>,
}

/// Where redirected connections arrive (README, Transparent proxying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectPorts {
    pub inbound: u16,
    pub outbound: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataplaneSummary {
    pub mesh: String,
    pub name: String,
    pub service: String,
}

/// The TrafficTrace that applies, and why: its best matching selector and the inbound it matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChosenTrafficTrace {
    pub name: String,
    pub mesh: String,
    pub selector: std::collections::BTreeMap<String, String>,
    pub inbound: String,
    pub rank: Rank,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backend {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: BackendKind,
    /// Percent, 0–100.
    pub sampling: f64,
    pub conf: BackendConf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Zipkin,
    Datadog,
    #[serde(rename = "openTelemetry")]
    OpenTelemetry,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum BackendConf {
    Zipkin(ZipkinBackend),
    Datadog(DatadogBackend),
    OpenTelemetry(OpenTelemetryBackend),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinBackend {
    /// Shown in `/config_dump` and `explain` without its userinfo: dumps get pasted into tickets.
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
    #[serde(rename = "traceId128bit")]
    pub trace_id_128bit: bool,
    pub api_version: ApiVersion,
    pub shared_span_context: bool,
}

fn serialize_redacted<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_userinfo(url))
}

/// `url` with its userinfo, if any, replaced by `***`: credentials in a collector url
/// (`https://user:password@host/…`) never reach a log line, `/config_dump` or `explain`.
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ApiVersion {
    /// JSON v2 (`httpJsonV1` in a policy is read as this, as Kuma's Envoy config does).
    #[serde(rename = "httpJson")]
    HttpJson,
    #[serde(rename = "httpProto")]
    HttpProto,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatadogBackend {
    pub address: String,
    pub port: u16,
    pub split_service: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenTelemetryBackend {
    /// `host:port` (gRPC default port 4317).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// OTLP/HTTP path prefix (`/v1/traces` is appended); `None` when not set.
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    Grpc,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    pub direction: Direction,
    /// `host:port` the listener binds.
    pub address: String,
    pub protocol: Protocol,
    pub service: String,
    /// Inbound: the application's `host:port`. Outbound: the service name (the Envoy cluster).
    pub upstream: String,
    /// Outbound only: where the service lives, used round robin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    pub tls: bool,
    /// Reached only through the redirect ports, matched by original destination, never bound
    /// (Kuma's `bind_to_port: false`).
    #[serde(rename = "virtual", skip_serializing_if = "std::ops::Not::not")]
    pub is_virtual: bool,
    /// Whether requests on this listener are traced: an http/http2/grpc listener of a proxy
    /// that a TrafficTrace with a resolvable backend selects.
    pub traced: bool,
}

/// `host:port`, bracketing IPv6 hosts.
pub fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves a mesh backend to its typed, defaulted form. Call on validated meshes only: a conf
/// that does not parse gives `None`.
pub fn resolve_backend(backend: &TracingBackend) -> Option<Backend> {
    let conf = backend.conf.clone().unwrap_or(serde_json::Value::Null);
    let conf = match backend.kind.as_str() {
        "zipkin" => {
            let c: ZipkinConf = if conf.is_null() {
                ZipkinConf::default()
            } else {
                null_as_empty::from_value(conf).ok()?
            };
            BackendConf::Zipkin(ZipkinBackend {
                url: c.url,
                trace_id_128bit: c.trace_id128bit,
                api_version: if c.api_version == "httpProto" {
                    ApiVersion::HttpProto
                } else {
                    ApiVersion::HttpJson
                },
                shared_span_context: c.shared_span_context.unwrap_or(true),
            })
        }
        "datadog" => {
            let c: DatadogConf = if conf.is_null() {
                DatadogConf::default()
            } else {
                null_as_empty::from_value(conf).ok()?
            };
            BackendConf::Datadog(DatadogBackend {
                address: c.address,
                port: u16::try_from(c.port).ok()?,
                split_service: c.split_service,
            })
        }
        _ => return None,
    };
    Some(Backend {
        name: backend.name.clone(),
        kind: match conf {
            BackendConf::Zipkin(_) => BackendKind::Zipkin,
            BackendConf::Datadog(_) => BackendKind::Datadog,
            BackendConf::OpenTelemetry(_) => BackendKind::OpenTelemetry,
        },
        sampling: backend.sampling.unwrap_or(100.0),
        conf,
    })
}

/// Computes what applies to `dataplane` under the given (validated) policy.
pub fn compute(
    dataplane: &Dataplane,
    meshes: &[Mesh],
    traffic_traces: &[TrafficTrace],
    policy_version: u64,
) -> Effective {
    let chosen = select::select_traffic_trace(dataplane, traffic_traces);
    let mesh_name = &dataplane.meta.mesh;
    let (backend, reason) = match (chosen, select::find_mesh(dataplane, meshes)) {
        (None, _) => (None, Some("no TrafficTrace matches".to_string())),
        (Some(_), None) => (None, Some(format!("mesh \"{mesh_name}\" not found"))),
        (Some(m), Some(mesh)) => {
            let tracing = mesh.spec.tracing.as_ref();
            let wanted = match m.traffic_trace.spec.backend() {
                "" => tracing.map_or("", |t| t.default_backend.as_str()),
                named => named,
            };
            let found = tracing
                .and_then(|t| t.backends.iter().find(|b| b.name == wanted))
                .and_then(resolve_backend);
            match found {
                Some(b) => (Some(b), None),
                None if wanted.is_empty() => (
                    None,
                    Some(format!(
                        "TrafficTrace \"{}\" names no backend and mesh \"{mesh_name}\" has no defaultBackend",
                        m.traffic_trace.meta.name
                    )),
                ),
                None => (
                    None,
                    Some(format!(
                        "backend \"{wanted}\" not found in mesh \"{mesh_name}\""
                    )),
                ),
            }
        }
    };
    let networking = dataplane.spec.networking();
    let traced_proxy = backend.is_some();
    let transparent = networking.transparent_proxying.as_ref();
    let transparent_proxying = transparent.and_then(|tp| {
        Some(RedirectPorts {
            inbound: u16::try_from(tp.inbound_port()).ok()?,
            outbound: u16::try_from(tp.outbound_port()).ok()?,
        })
    });
    let inbounds = networking.inbound.iter().map(|inbound| {
        let address = if inbound.address.is_empty() {
            &networking.address
        } else {
            &inbound.address
        };
        let service_address = if inbound.service_address.is_empty() {
            address
        } else {
            &inbound.service_address
        };
        let service_port = if inbound.service_port == 0 {
            inbound.port
        } else {
            inbound.service_port
        };
        let protocol = Protocol::of(&inbound.tags).unwrap_or(Protocol::Tcp);
        Listener {
            direction: Direction::Inbound,
            address: join_host_port(address, inbound.port),
            protocol,
            service: inbound.tags.get(SERVICE_TAG).cloned().unwrap_or_default(),
            upstream: join_host_port(service_address, service_port),
            endpoints: None,
            tls: inbound.tls.is_some(),
            // The application listens on the inbound's port itself: redirected connections
            // reach tracecar, which must not take the port from it.
            is_virtual: transparent.is_some(),
            traced: traced_proxy && protocol.is_traced(),
        }
    });
    let outbounds = networking.outbound.iter().map(|outbound| {
        let address = if outbound.address.is_empty() {
            OUTBOUND_ADDRESS
        } else {
            &outbound.address
        };
        let protocol = Protocol::of(&outbound.tags).unwrap_or(Protocol::Tcp);
        Listener {
            direction: Direction::Outbound,
            address: join_host_port(address, outbound.port),
            protocol,
            service: outbound.service_name().to_string(),
            upstream: outbound.service_name().to_string(),
            endpoints: Some(outbound.endpoints.clone()),
            tls: outbound.tls.is_some(),
            // A service VIP is not an address of this host: only loopback ones can be bound.
            is_virtual: transparent.is_some()
                && !address
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()),
            traced: traced_proxy && protocol.is_traced(),
        }
    });
    let listeners = inbounds.chain(outbounds).collect();
    Effective {
        dataplane: DataplaneSummary {
            mesh: mesh_name.clone(),
            name: dataplane.meta.name.clone(),
            service: dataplane.service().to_string(),
        },
        traffic_trace: chosen.map(|m| ChosenTrafficTrace {
            name: m.traffic_trace.meta.name.clone(),
            mesh: m.traffic_trace.meta.mesh.clone(),
            selector: m.selector.tags.clone(),
            inbound: join_host_port(
                if m.inbound.address.is_empty() {
                    &networking.address
                } else {
                    &m.inbound.address
                },
                m.inbound.port,
            ),
            rank: m.rank,
        }),
        backend,
        reason,
        listeners,
        transparent_proxying,
        policy_version,
        mesh_trace: None,
        mesh_trace_selection: Vec::new(),
    }
}

/// Applies the MeshTrace outcome: when any MeshTrace selects the proxy it decides, and the
/// TrafficTrace is ignored (Kuma would leave a TrafficTrace's tracer on under `backends: []`).
pub fn apply_mesh_trace(effective: &mut Effective, outcome: super::meshtrace::Outcome) {
    effective.mesh_trace_selection = outcome.selection;
    let Some(applied) = outcome.applied else {
        return;
    };
    effective.traffic_trace = None;
    // A backend that did not resolve shows its reason and traces nothing.
    let traced = outcome.backend.is_some() && outcome.reason.is_none();
    effective.backend = outcome.backend;
    effective.reason = outcome.reason;
    effective.mesh_trace = Some(applied);
    for listener in &mut effective.listeners {
        listener.traced = traced && listener.protocol.is_traced();
    }
}
