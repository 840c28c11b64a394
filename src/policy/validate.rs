//! Validation exactly as Kuma does it: every violation is reported, with Kuma's field paths
//! (`config` for a backend's `conf` key, `match["tag"]` for tag keys, sorted) and messages.
//!
//! A few checks go beyond Kuma where tracecar needs more than a control plane would (its
//! `endpoints` and `tls` extensions, listeners that collide, a TrafficTrace naming a backend the
//! Mesh lacks); each says so where it is made.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::de::DeserializeOwned;

use super::diagnostic::Diagnostic;
use super::null_as_empty;
use super::resource::{
    DatadogConf, Dataplane, Inbound, Kind, Mesh, Meta, Outbound, PROTOCOL_TAG, Protocol, Resource,
    SERVICE_TAG, TracingBackend, TrafficTrace, ZipkinConf,
};

/// One problem inside a resource: Kuma's field path and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
    pub warning: bool,
}

#[derive(Default)]
struct Violations(Vec<Violation>);

impl Violations {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Violation {
            path: path.into(),
            message: message.into(),
            warning: false,
        });
    }

    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Violation {
            path: path.into(),
            message: message.into(),
            warning: true,
        });
    }
}

/// Kuma renders map keys with Go's `%q`.
fn key(path: &str, key: &str) -> String {
    format!("{path}[{}]", serde_json::Value::String(key.to_string()))
}

pub const MSG_EMPTY: &str = "cannot be empty";
pub const MSG_PORT_RANGE: &str = "port must be in the range [1, 65535]";
pub const MSG_SAMPLING_RANGE: &str = "has to be in [0.0 - 100.0] range";
pub const MSG_UNKNOWN_BACKEND_TYPE: &str =
    "unknown backend type. Available backends: \"zipkin\", \"datadog\"";
pub const MSG_DEFAULT_BACKEND: &str = "has to be set to one of the tracing backend in mesh";
pub const MSG_URL_PORT: &str = "port has to be explicitly specified";
pub const MSG_URL_INVALID: &str = "invalid URL";
pub const MSG_API_VERSION: &str =
    "has invalid value. Allowed values: httpJsonV1, httpJson, httpProto";
pub const MSG_AT_LEAST_ONE_ELEMENT: &str = "must have at least one element";
pub const MSG_AT_LEAST_ONE_TAG: &str = "must have at least one tag";
pub const MSG_TAG_NAME_EMPTY: &str = "tag name must be non-empty";
pub const MSG_TAG_NAME_CHARS: &str =
    "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores";
pub const MSG_TAG_VALUE_EMPTY: &str = "tag value must be non-empty";
pub const MSG_SELECTOR_VALUE_CHARS: &str = "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"";
pub const MSG_DATAPLANE_TAG_VALUE_CHARS: &str =
    "tag value must consist of alphanumeric characters, dots, dashes and underscores";
pub const MSG_NAME_CHARS: &str = "invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
pub const MSG_MESH_CHARS: &str = "invalid characters. Valid characters are numbers, lowercase latin letters and '-', '_', '.' symbols.";

fn duplicate_backend(name: &str) -> String {
    format!("{} name is already used for another backend", quoted(name))
}

fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

// ---------------------------------------------------------------------------------------------
// Names

fn is_rfc1123_subdomain(name: &str) -> bool {
    name.split('.').all(|label| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    })
}

fn validate_name(v: &mut Violations, name: &str) {
    if name.is_empty() {
        v.error("name", MSG_EMPTY);
    } else if name.len() > 253 {
        v.error("name", "value length must less or equal 253");
    } else if !is_rfc1123_subdomain(name) {
        v.error("name", MSG_NAME_CHARS);
    }
}

fn validate_mesh_ref(v: &mut Violations, mesh: &str) {
    if mesh.len() > 253 {
        v.error("mesh", "value length must less or equal 253");
    } else if !mesh
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        v.error("mesh", MSG_MESH_CHARS);
    }
}

// ---------------------------------------------------------------------------------------------
// Mesh

pub fn validate_mesh(mesh: &Mesh) -> Vec<Violation> {
    let mut v = Violations::default();
    validate_name(&mut v, &mesh.meta.name);
    if mesh.meta.name.len() > 63 && mesh.meta.name.len() <= 253 {
        v.error("name", "cannot be longer than 63 characters");
    }
    let Some(tracing) = &mesh.spec.tracing else {
        return v.0;
    };
    let mut used: Vec<&str> = Vec::new();
    for (i, backend) in tracing.backends.iter().enumerate() {
        let path = format!("tracing.backends[{i}]");
        validate_backend(&mut v, &path, backend);
        if used.contains(&backend.name.as_str()) {
            v.error(format!("{path}.name"), duplicate_backend(&backend.name));
        }
        used.push(&backend.name);
    }
    if !tracing.default_backend.is_empty() && !used.contains(&tracing.default_backend.as_str()) {
        v.error("tracing.defaultBackend", MSG_DEFAULT_BACKEND);
    }
    v.0
}

fn validate_backend(v: &mut Violations, path: &str, backend: &TracingBackend) {
    if backend.name.is_empty() {
        v.error(format!("{path}.name"), MSG_EMPTY);
    }
    if let Some(sampling) = backend.sampling
        && !(0.0..=100.0).contains(&sampling)
        && !sampling.is_nan()
    {
        v.error(format!("{path}.sampling"), MSG_SAMPLING_RANGE);
    }
    let config = format!("{path}.config");
    match backend.kind.as_str() {
        "zipkin" => {
            if let Some(conf) =
                parse_conf::<ZipkinConf>(v, &config, backend.conf.as_ref(), ZIPKIN_KEYS)
            {
                validate_zipkin(v, &config, &conf);
            }
        }
        "datadog" => {
            if let Some(conf) =
                parse_conf::<DatadogConf>(v, &config, backend.conf.as_ref(), DATADOG_KEYS)
            {
                validate_datadog(v, &config, &conf);
            }
        }
        _ => v.error(format!("{path}.type"), MSG_UNKNOWN_BACKEND_TYPE),
    }
}

const ZIPKIN_KEYS: &[&str] = &["url", "traceId128bit", "apiVersion", "sharedSpanContext"];
const DATADOG_KEYS: &[&str] = &["address", "port", "splitService"];

/// Kuma converts the untyped `conf` to the typed config, ignoring unknown keys; a type mismatch
/// is one violation at `config`. Unknown keys are ignored as in Kuma, but tracecar warns about
/// them, since a misspelt key silently falls back to its default.
fn parse_conf<T: DeserializeOwned + Default>(
    v: &mut Violations,
    path: &str,
    conf: Option<&serde_json::Value>,
    known: &[&str],
) -> Option<T> {
    let Some(conf) = conf.filter(|c| !c.is_null()) else {
        return Some(T::default());
    };
    if let serde_json::Value::Object(map) = conf {
        for k in map.keys().filter(|k| !known.contains(&k.as_str())) {
            v.warning(format!("{path}.{k}"), "unknown field, ignored");
        }
    }
    match null_as_empty::from_value::<T>(conf.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            v.error(path, format!("could not parse config: {e}"));
            None
        }
    }
}

fn validate_zipkin(v: &mut Violations, path: &str, conf: &ZipkinConf) {
    if !conf.api_version.is_empty()
        && !["httpJsonV1", "httpJson", "httpProto"].contains(&conf.api_version.as_str())
    {
        v.error(format!("{path}.apiVersion"), MSG_API_VERSION);
    }
    let url_path = format!("{path}.url");
    if conf.url.is_empty() {
        v.error(url_path, MSG_EMPTY);
        return;
    }
    match check_url(&conf.url) {
        UrlCheck::Invalid => v.error(url_path, MSG_URL_INVALID),
        UrlCheck::NoPort => v.error(url_path, MSG_URL_PORT),
        UrlCheck::UnsupportedScheme => v.warning(
            url_path,
            "tracecar exports only over http and https; spans for this backend will be dropped",
        ),
        UrlCheck::Ok => {}
    }
}

enum UrlCheck {
    Ok,
    Invalid,
    NoPort,
    UnsupportedScheme,
}

/// Mirrors Go's `url.ParseRequestURI` as Kuma uses it: an absolute path, an opaque URI
/// (`scheme:rest`, no host, so no port), or `scheme://authority/...` whose port, when
/// written, must be digits.
fn check_url(url: &str) -> UrlCheck {
    if url.starts_with('/') {
        return UrlCheck::NoPort;
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return UrlCheck::Invalid;
    }
    let Some((scheme, rest)) = url.split_once(':') else {
        return UrlCheck::Invalid;
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return UrlCheck::Invalid;
    }
    let Some(after) = rest.strip_prefix("//") else {
        return UrlCheck::NoPort;
    };
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((_, tail)) => tail.strip_prefix(':'),
            None => return UrlCheck::Invalid,
        }
    } else {
        host_port.rsplit_once(':').map(|(_, p)| p)
    };
    match port {
        None | Some("") => UrlCheck::NoPort,
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => UrlCheck::Invalid,
        Some(_)
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") =>
        {
            UrlCheck::UnsupportedScheme
        }
        Some(_) => UrlCheck::Ok,
    }
}

fn validate_datadog(v: &mut Violations, path: &str, conf: &DatadogConf) {
    if conf.address.is_empty() {
        v.error(format!("{path}.address"), MSG_EMPTY);
    }
    if !(1..=65535).contains(&conf.port) {
        v.error(format!("{path}.port"), MSG_PORT_RANGE);
    }
}

// ---------------------------------------------------------------------------------------------
// TrafficTrace

pub fn validate_traffic_trace(tt: &TrafficTrace) -> Vec<Violation> {
    let mut v = Violations::default();
    validate_name(&mut v, &tt.meta.name);
    validate_mesh_ref(&mut v, &tt.meta.mesh);
    if tt.spec.selectors.is_empty() {
        v.error("selectors", MSG_AT_LEAST_ONE_ELEMENT);
    }
    for (i, selector) in tt.spec.selectors.iter().enumerate() {
        let path = format!("selectors[{i}].match");
        if selector.tags.is_empty() {
            v.error(&path, MSG_AT_LEAST_ONE_TAG);
        }
        validate_tag_keys_values(&mut v, &path, &selector.tags, TagValues::Selector);
    }
    v.0
}

#[derive(Clone, Copy, PartialEq)]
enum TagValues {
    /// Selector values may contain `/` or be exactly `*`.
    Selector,
    /// Dataplane tag values: no `/`, no `*`.
    Dataplane,
}

fn tag_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".-_:/".contains(&b)
}

/// The per-key checks, in sorted key order (BTreeMap order is Go's sorted byte order).
fn validate_tag_keys_values(
    v: &mut Violations,
    path: &str,
    tags: &BTreeMap<String, String>,
    values: TagValues,
) {
    for (k, value) in tags {
        if k.is_empty() {
            v.error(path, MSG_TAG_NAME_EMPTY);
        } else if !k.bytes().all(tag_char) {
            v.error(key(path, k), MSG_TAG_NAME_CHARS);
        }
        if value.is_empty() {
            v.error(key(path, k), MSG_TAG_VALUE_EMPTY);
            continue;
        }
        match values {
            TagValues::Selector => {
                if value != "*" && !value.bytes().all(tag_char) {
                    v.error(key(path, k), MSG_SELECTOR_VALUE_CHARS);
                }
            }
            TagValues::Dataplane => {
                if !value.bytes().all(|b| b != b'/' && tag_char(b)) {
                    v.error(key(path, k), MSG_DATAPLANE_TAG_VALUE_CHARS);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dataplane

pub fn validate_dataplane(dp: &Dataplane) -> Vec<Violation> {
    let mut v = Violations::default();
    validate_name(&mut v, &dp.meta.name);
    validate_mesh_ref(&mut v, &dp.meta.mesh);
    let Some(networking) = &dp.spec.networking else {
        v.error("networking", "must be defined");
        return v.0;
    };
    if networking.gateway.is_some() {
        // Beyond Kuma: tracecar proxies sidecars only.
        v.error(
            "networking.gateway",
            "gateway dataplanes are not supported by tracecar; describe the inbounds instead",
        );
    } else if networking.inbound.is_empty() {
        v.error(
            "networking",
            "has to contain at least one inbound interface or gateway",
        );
    }
    let address = &networking.address;
    if address.is_empty() {
        v.error("networking.address", "address can't be empty");
    } else if address == "0.0.0.0" || address == "::" {
        v.error("networking.address", "must not be 0.0.0.0 or ::");
    } else if address.parse::<IpAddr>().is_err() && !is_dns_name(address) {
        v.error(
            "networking.address",
            "address has to be valid IP address or domain name",
        );
    }
    for (i, inbound) in networking.inbound.iter().enumerate() {
        let path = format!("networking.inbound[{i}]");
        validate_inbound(&mut v, &path, inbound, address);
        if !inbound.tags.contains_key(SERVICE_TAG) {
            v.error(
                key(&format!("{path}.tags"), SERVICE_TAG),
                "tag has to exist",
            );
        }
    }
    for (i, outbound) in networking.outbound.iter().enumerate() {
        validate_outbound(&mut v, &format!("networking.outbound[{i}]"), outbound);
    }
    validate_listener_ports(&mut v, dp);
    if let Some(tp) = &networking.transparent_proxying {
        validate_transparent_proxying(&mut v, networking, tp);
    }
    v.0
}

/// The redirect ports take every redirected connection, so they must be valid, distinct, and
/// no inbound or outbound may use them.
fn validate_transparent_proxying(
    v: &mut Violations,
    networking: &crate::policy::resource::Networking,
    tp: &crate::policy::resource::TransparentProxying,
) {
    const PATH: &str = "networking.transparentProxying";
    let ports = [
        (
            "redirectPortInbound",
            tp.redirect_port_inbound,
            tp.inbound_port(),
        ),
        (
            "redirectPortOutbound",
            tp.redirect_port_outbound,
            tp.outbound_port(),
        ),
    ];
    for (field, written, _) in ports {
        if written != 0 {
            validate_port(v, format!("{PATH}.{field}"), written);
        }
    }
    if tp.inbound_port() == tp.outbound_port() {
        v.error(
            format!("{PATH}.redirectPortOutbound"),
            "redirectPortInbound and redirectPortOutbound have to differ",
        );
    }
    let inbounds = networking
        .inbound
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("networking.inbound[{i}].port"), b.port));
    let outbounds = networking
        .outbound
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("networking.outbound[{i}].port"), b.port));
    for (path, port) in inbounds.chain(outbounds) {
        for (field, _, redirect) in ports {
            if port == redirect {
                v.error(
                    path.clone(),
                    format!("port {port} is already used by {PATH}.{field}"),
                );
            }
        }
    }
}

fn validate_port(v: &mut Violations, path: String, port: i64) {
    if !(1..=65535).contains(&port) {
        v.error(path, MSG_PORT_RANGE);
    }
}

fn validate_inbound(v: &mut Violations, path: &str, inbound: &Inbound, dp_address: &str) {
    validate_port(v, format!("{path}.port"), inbound.port);
    if inbound.service_port != 0 {
        validate_port(v, format!("{path}.servicePort"), inbound.service_port);
    }
    let same_port = inbound.service_port == 0 || inbound.service_port == inbound.port;
    let differ = "serviceAddress and servicePort has to differ from address and port";
    if !inbound.service_address.is_empty() {
        if inbound.service_address.parse::<IpAddr>().is_err() {
            v.error(
                format!("{path}.serviceAddress"),
                "serviceAddress has to be valid IP address",
            );
        }
        if inbound.service_address == dp_address && same_port {
            v.error(format!("{path}.serviceAddress"), differ);
        }
    }
    if !inbound.address.is_empty() {
        if inbound.address.parse::<IpAddr>().is_err() {
            v.error(
                format!("{path}.address"),
                "address has to be valid IP address",
            );
        }
        if inbound.address == inbound.service_address && same_port {
            v.error(format!("{path}.serviceAddress"), differ);
        }
    }
    let tags = format!("{path}.tags");
    if let Some(protocol) = inbound.tags.get(PROTOCOL_TAG)
        && Protocol::parse(protocol).is_none()
    {
        v.error(key(&tags, PROTOCOL_TAG), invalid_protocol(protocol));
    }
    validate_tag_keys_values(v, &tags, &inbound.tags, TagValues::Dataplane);
    if let Some(tls) = &inbound.tls {
        // tracecar extension.
        if tls.cert_file.is_empty() {
            v.error(format!("{path}.tls.certFile"), MSG_EMPTY);
        }
        if tls.key_file.is_empty() {
            v.error(format!("{path}.tls.keyFile"), MSG_EMPTY);
        }
    }
}

pub fn invalid_protocol(value: &str) -> String {
    let allowed: Vec<&str> = Protocol::ALL.iter().map(|p| p.as_str()).collect();
    format!(
        "tag \"{PROTOCOL_TAG}\" has an invalid value {}. Allowed values: {}",
        quoted(value),
        allowed.join(", ")
    )
}

fn validate_outbound(v: &mut Violations, path: &str, outbound: &Outbound) {
    validate_port(v, format!("{path}.port"), outbound.port);
    if !outbound.address.is_empty() && outbound.address.parse::<IpAddr>().is_err() {
        v.error(
            format!("{path}.address"),
            "address has to be valid IP address",
        );
    }
    let tags = format!("{path}.tags");
    let missing_service = format!("mandatory tag \"{SERVICE_TAG}\" is missing");
    if outbound.tags.is_empty() {
        if outbound.service.is_empty() {
            v.error(&tags, missing_service);
        }
    } else {
        validate_tag_keys_values(v, &tags, &outbound.tags, TagValues::Dataplane);
        if !outbound.tags.contains_key(SERVICE_TAG) {
            v.error(&tags, missing_service);
        }
    }
    if let Some(protocol) = outbound.tags.get(PROTOCOL_TAG) {
        // Beyond Kuma (it checks outbound protocols elsewhere): the listener needs one.
        if Protocol::parse(protocol).is_none() {
            v.error(key(&tags, PROTOCOL_TAG), invalid_protocol(protocol));
        }
    }
    // tracecar extensions.
    if outbound.endpoints.is_empty() {
        v.warning(
            format!("{path}.endpoints"),
            "no endpoints: requests to this outbound will get 503 (no control plane tells tracecar where the service lives)",
        );
    }
    for (i, endpoint) in outbound.endpoints.iter().enumerate() {
        if !is_host_port(endpoint) {
            v.error(
                format!("{path}.endpoints[{i}]"),
                "has to be host:port with a port in the range [1, 65535]",
            );
        }
    }
    if let Some(tls) = &outbound.tls
        && tls.ca_file.is_empty()
    {
        v.error(format!("{path}.tls.caFile"), MSG_EMPTY);
    }
}

/// `host:port` or `[v6]:port`.
pub fn is_host_port(endpoint: &str) -> bool {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host)
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// govalidator's `IsDNSName`, which Kuma uses for `networking.address`.
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.replace('.', "").len() > 255 {
        return false;
    }
    let trimmed = name
        .strip_suffix('.')
        .or_else(|| name.strip_suffix('_'))
        .unwrap_or(name);
    trimmed.split('.').all(|label| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 63
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    })
}

/// Beyond Kuma: two listeners on one address and port could never both bind.
fn validate_listener_ports(v: &mut Violations, dp: &Dataplane) {
    let networking = dp.spec.networking();
    let mut seen: HashMap<(String, i64), String> = HashMap::new();
    let inbounds = networking.inbound.iter().enumerate().map(|(i, inbound)| {
        let address = if inbound.address.is_empty() {
            &networking.address
        } else {
            &inbound.address
        };
        (
            format!("networking.inbound[{i}]"),
            address.clone(),
            inbound.port,
        )
    });
    let outbounds = networking.outbound.iter().enumerate().map(|(i, outbound)| {
        let address = if outbound.address.is_empty() {
            super::effective::OUTBOUND_ADDRESS.to_string()
        } else {
            outbound.address.clone()
        };
        (format!("networking.outbound[{i}]"), address, outbound.port)
    });
    for (path, address, port) in inbounds.chain(outbounds) {
        if !(1..=65535).contains(&port) {
            continue;
        }
        match seen.get(&(address.clone(), port)) {
            Some(first) => v.error(
                format!("{path}.port"),
                format!("{address}:{port} is already used by {first}"),
            ),
            None => {
                seen.insert((address, port), path);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Whole sets

pub fn validate_resource(resource: &Resource) -> Vec<Violation> {
    match resource {
        Resource::Mesh(m) => validate_mesh(m),
        Resource::TrafficTrace(t) => validate_traffic_trace(t),
        Resource::Dataplane(d) => validate_dataplane(d),
        Resource::MeshTrace(m) => super::meshtrace::validate::validate_mesh_trace(m),
        Resource::MeshOpenTelemetryBackend(b) => {
            super::meshtrace::validate::validate_otel_backend(b)
        }
    }
}

/// Turns a resource's violations into printable diagnostics.
pub fn diagnostics_for(kind: Kind, meta: &Meta, violations: Vec<Violation>) -> Vec<Diagnostic> {
    let id = format!("{kind}/{}", meta.name);
    violations
        .into_iter()
        .map(|violation| {
            let d = if violation.warning {
                Diagnostic::warning(&meta.source.file, violation.message)
            } else {
                Diagnostic::error(&meta.source.file, violation.message)
            };
            d.resource(id.clone()).at(violation.path)
        })
        .collect()
}

/// Checks that span resources: duplicates, TrafficTraces whose backend their Mesh lacks.
pub fn validate_set(resources: &[Resource]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut seen: HashMap<(Kind, &str, &str), &Resource> = HashMap::new();
    for r in resources {
        let meta = r.meta();
        let id = (r.kind(), meta.mesh.as_str(), meta.name.as_str());
        if let Some(first) = seen.get(&id) {
            out.push(
                Diagnostic::error(
                    &meta.source.file,
                    format!(
                        "defined twice (first in {}, document {})",
                        first.meta().source.file.display(),
                        first.meta().source.document
                    ),
                )
                .resource(format!("{}/{}", r.kind(), meta.name)),
            );
        } else {
            seen.insert(id, r);
        }
    }
    let meshes: Vec<&Mesh> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Mesh(m) => Some(m),
            _ => None,
        })
        .collect();
    for r in resources {
        let Resource::TrafficTrace(tt) = r else {
            continue;
        };
        let Some(mesh) = meshes.iter().find(|m| m.meta.name == tt.meta.mesh) else {
            continue;
        };
        let backends = mesh.spec.tracing.as_ref();
        let wanted = match tt.spec.backend() {
            "" => backends.map_or("", |t| t.default_backend.as_str()),
            named => named,
        };
        // Beyond Kuma, which silently traces nothing: say which backend is missing.
        let path = if tt.spec.backend().is_empty() {
            "conf"
        } else {
            "conf.backend"
        };
        let message = if wanted.is_empty() {
            format!(
                "names no backend and mesh \"{}\" has no defaultBackend: proxies it selects are not traced",
                mesh.meta.name
            )
        } else if backends.is_some_and(|t| t.backends.iter().any(|b| b.name == wanted)) {
            continue;
        } else {
            format!(
                "backend \"{wanted}\" not found in mesh \"{}\": proxies it selects are not traced",
                mesh.meta.name
            )
        };
        out.push(
            Diagnostic::warning(&tt.meta.source.file, message)
                .resource(format!("TrafficTrace/{}", tt.meta.name))
                .at(path),
        );
    }
    out
}
