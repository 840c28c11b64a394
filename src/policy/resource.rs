//! Typed models of the Kuma resources tracecar reads: `Mesh` (its `tracing` section),
//! `TrafficTrace` and `Dataplane` (`MeshTrace` lives in `policy::meshtrace`).
//!
//! Numbers that Kuma range-checks (ports, sampling) are read as wide types so that an out-of-range
//! value reaches validation and gets Kuma's message instead of a serde type error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where a resource came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    /// 1-based index of the YAML document inside the file.
    pub document: usize,
}

/// How the resource was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Universal,
    Kubernetes,
}

/// Identity and bookkeeping shared by every resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub name: String,
    /// The mesh a mesh-scoped resource belongs to (for a Mesh, its own name).
    pub mesh: String,
    pub creation_time: Option<jiff::Timestamp>,
    /// Kubernetes `metadata.namespace`; empty in Universal form.
    pub namespace: String,
    /// Universal top-level `labels`, Kubernetes `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    pub form: Form,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Mesh,
    TrafficTrace,
    Dataplane,
    MeshTrace,
    MeshOpenTelemetryBackend,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mesh => "Mesh",
            Kind::TrafficTrace => "TrafficTrace",
            Kind::Dataplane => "Dataplane",
            Kind::MeshTrace => "MeshTrace",
            Kind::MeshOpenTelemetryBackend => "MeshOpenTelemetryBackend",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Mesh

#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    pub meta: Meta,
    pub spec: MeshSpec,
}

/// The Mesh spec. Only `tracing` is read; `mtls`, `logging`, `metrics`, … are accepted and
/// ignored, as a Mesh carrying them is perfectly valid.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshSpec {
    #[serde(default)]
    pub tracing: Option<Tracing>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracing {
    #[serde(default)]
    pub default_backend: String,
    #[serde(default)]
    pub backends: Vec<TracingBackend>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracingBackend {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Percent, 0–100. Absent means 100.
    #[serde(default)]
    pub sampling: Option<f64>,
    /// Kept untyped until validation: its shape depends on `type`, exactly as Kuma stores it
    /// (a protobuf `Struct` converted to the typed config while validating).
    #[serde(default)]
    pub conf: Option<serde_json::Value>,
}

/// `conf` of a `zipkin` backend.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinConf {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub trace_id128bit: bool,
    #[serde(default)]
    pub api_version: String,
    /// Absent means true (Kuma's default).
    #[serde(default)]
    pub shared_span_context: Option<bool>,
}

/// `conf` of a `datadog` backend.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatadogConf {
    #[serde(default)]
    pub address: String,
    /// Unsigned as in Kuma's proto: a negative port does not parse.
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub split_service: bool,
}

// ---------------------------------------------------------------------------------------------
// TrafficTrace

#[derive(Debug, Clone, PartialEq)]
pub struct TrafficTrace {
    pub meta: Meta,
    pub spec: TrafficTraceSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTraceSpec {
    #[serde(default)]
    pub selectors: Vec<Selector>,
    #[serde(default)]
    pub conf: Option<TrafficTraceConf>,
}

impl TrafficTraceSpec {
    /// The backend named by `conf.backend`, empty when unset.
    pub fn backend(&self) -> &str {
        self.conf.as_ref().map_or("", |c| c.backend.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default, rename = "match")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTraceConf {
    #[serde(default)]
    pub backend: String,
}

// ---------------------------------------------------------------------------------------------
// Dataplane

pub const SERVICE_TAG: &str = "kuma.io/service";
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";

#[derive(Debug, Clone, PartialEq)]
pub struct Dataplane {
    pub meta: Meta,
    pub spec: DataplaneSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneSpec {
    /// Absent is a validation error (`networking: must be defined`), so it is kept optional.
    #[serde(default)]
    pub networking: Option<Networking>,
}

static NO_NETWORKING: Networking = Networking {
    address: String::new(),
    advertised_address: String::new(),
    inbound: Vec::new(),
    outbound: Vec::new(),
    gateway: None,
    transparent_proxying: None,
};

impl DataplaneSpec {
    pub fn networking(&self) -> &Networking {
        self.networking.as_ref().unwrap_or(&NO_NETWORKING)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Networking {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub advertised_address: String,
    #[serde(default)]
    pub inbound: Vec<Inbound>,
    #[serde(default)]
    pub outbound: Vec<Outbound>,
    /// Gateway dataplanes are not proxied by tracecar; kept only to report it.
    #[serde(default)]
    pub gateway: Option<serde_json::Value>,
    /// Set when the kernel redirects the pod's traffic to tracecar (`tracecar redirect`).
    #[serde(default)]
    pub transparent_proxying: Option<TransparentProxying>,
}

/// Kuma's `networking.transparentProxying`: the ports the redirect rules send traffic to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransparentProxying {
    /// Absent or 0 means 15006, as in Kuma.
    #[serde(default)]
    pub redirect_port_inbound: i64,
    /// Absent or 0 means 15001, as in Kuma.
    #[serde(default)]
    pub redirect_port_outbound: i64,
}

impl TransparentProxying {
    pub const DEFAULT_INBOUND: i64 = 15006;
    pub const DEFAULT_OUTBOUND: i64 = 15001;

    pub fn inbound_port(&self) -> i64 {
        match self.redirect_port_inbound {
            0 => Self::DEFAULT_INBOUND,
            p => p,
        }
    }

    pub fn outbound_port(&self) -> i64 {
        match self.redirect_port_outbound {
            0 => Self::DEFAULT_OUTBOUND,
            p => p,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbound {
    #[serde(default)]
    pub port: i64,
    #[serde(default)]
    pub service_port: i64,
    #[serde(default)]
    pub service_address: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// tracecar extension: terminate TLS on this inbound.
    #[serde(default)]
    pub tls: Option<InboundTls>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundTls {
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    #[serde(default)]
    pub port: i64,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Deprecated Kuma form of `tags: {kuma.io/service: …}`.
    #[serde(default)]
    pub service: String,
    /// tracecar extension: where the service lives (`host:port`), used round robin.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// tracecar extension: originate TLS to the endpoints.
    #[serde(default)]
    pub tls: Option<OutboundTls>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTls {
    #[serde(default)]
    pub ca_file: String,
    #[serde(default)]
    pub server_name: String,
}

impl Outbound {
    /// The outbound's service: the `kuma.io/service` tag, or the deprecated `service` field.
    pub fn service_name(&self) -> &str {
        match self.tags.get(SERVICE_TAG) {
            Some(s) => s,
            None => &self.service,
        }
    }
}

impl Dataplane {
    /// The proxy's own service: the first `kuma.io/service` of its inbounds, in sorted order.
    pub fn service(&self) -> &str {
        self.spec
            .networking()
            .inbound
            .iter()
            .filter_map(|i| i.tags.get(SERVICE_TAG))
            .min()
            .map_or("", String::as_str)
    }
}

/// What a listener speaks, from `kuma.io/protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
    Kafka,
}

impl Protocol {
    /// Every value Kuma accepts, sorted as Kuma lists them in its message.
    pub const ALL: [Protocol; 5] = [
        Protocol::Grpc,
        Protocol::Http,
        Protocol::Http2,
        Protocol::Kafka,
        Protocol::Tcp,
    ];

    /// Kuma parses the tag case-insensitively and also accepts `tls` (opaque to the proxy, so
    /// passed through like tcp), though its error message does not list it.
    pub fn parse(value: &str) -> Option<Protocol> {
        let value = value.to_ascii_lowercase();
        if value == "tls" {
            return Some(Protocol::Tcp);
        }
        Protocol::ALL.into_iter().find(|p| p.as_str() == value)
    }

    /// The protocol of a tag set; absent means tcp.
    pub fn of(tags: &BTreeMap<String, String>) -> Option<Protocol> {
        match tags.get(PROTOCOL_TAG) {
            None => Some(Protocol::Tcp),
            Some(v) => Protocol::parse(v),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
            Protocol::Kafka => "kafka",
        }
    }

    /// Tracing happens only on http, http2 and grpc listeners (README, "Which TrafficTrace applies", rule 5).
    pub fn is_traced(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Any resource tracecar reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Mesh(Mesh),
    TrafficTrace(TrafficTrace),
    Dataplane(Dataplane),
    MeshTrace(Box<super::meshtrace::MeshTrace>),
    MeshOpenTelemetryBackend(super::meshtrace::MeshOpenTelemetryBackend),
}

impl Resource {
    pub fn meta(&self) -> &Meta {
        match self {
            Resource::Mesh(r) => &r.meta,
            Resource::TrafficTrace(r) => &r.meta,
            Resource::Dataplane(r) => &r.meta,
            Resource::MeshTrace(r) => &r.meta,
            Resource::MeshOpenTelemetryBackend(r) => &r.meta,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Resource::Mesh(_) => Kind::Mesh,
            Resource::TrafficTrace(_) => Kind::TrafficTrace,
            Resource::Dataplane(_) => Kind::Dataplane,
            Resource::MeshTrace(_) => Kind::MeshTrace,
            Resource::MeshOpenTelemetryBackend(_) => Kind::MeshOpenTelemetryBackend,
        }
    }
}
