//! MeshTrace validation with Kuma's messages and paths (v2.14 `validator.go`), every violation
//! listed; Kuma's deprecations as warnings. Beyond Kuma, each marked where it is made: the
//! checks Kuma's CRD schema makes (unknown backend `type`, missing Datadog `url`), a Zipkin url
//! must carry an explicit port and an http(s) scheme (Kuma silently uses port 0), and
//! MeshOpenTelemetryBackend's endpoint.

use std::collections::BTreeMap;

use super::resource::{
    Backend, Conf, MeshOpenTelemetryBackend, MeshTrace, OtelBackendSpec, Percent, TargetRef,
};
use crate::policy::validate::Violation;

pub const POLICY_ROLE_LABEL: &str = "kuma.io/policy-role";

#[derive(Default)]
struct Out(Vec<Violation>);

impl Out {
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

pub fn validate_mesh_trace(mt: &MeshTrace) -> Vec<Violation> {
    let mut out = Out::default();
    let system_role = mt
        .meta
        .labels
        .get(POLICY_ROLE_LABEL)
        .is_none_or(|r| r.is_empty() || r == "system");
    if let Some(target_ref) = &mt.spec.target_ref {
        validate_target_ref(&mut out, "spec.targetRef", target_ref, system_role);
    }
    validate_default(&mut out, mt.spec.default.as_ref());
    deprecations(&mut out, mt);
    unknown_fields(&mut out, &mt.unknown_fields);
    out.0
}

/// Beyond Kuma, as for the legacy backends' `conf`: a field the policy has no place for is
/// ignored, which a misspelt one must not be silently.
fn unknown_fields(out: &mut Out, paths: &[String]) {
    for path in paths {
        out.warning(format!("spec.{path}"), "unknown field, ignored");
    }
}

fn deprecations(out: &mut Out, mt: &MeshTrace) {
    let backends = mt
        .spec
        .default
        .as_ref()
        .and_then(|d| d.backends.as_deref())
        .unwrap_or_default();
    if let Some(i) = backends.iter().position(|b| {
        b.open_telemetry.as_ref().is_some_and(|o| {
            o.endpoint.as_deref().is_some_and(|e| !e.is_empty()) && o.backend_ref.is_none()
        })
    }) {
        out.warning(
            format!("spec.default.backends[{i}].openTelemetry.endpoint"),
            "openTelemetry.endpoint is deprecated, use openTelemetry.backendRef with a MeshOpenTelemetryBackend resource instead",
        );
    }
    if let Some(target_ref) = &mt.spec.target_ref
        && ["MeshService", "MeshServiceSubset", "MeshSubset"].contains(&target_ref.kind.as_str())
    {
        out.warning(
            "spec.targetRef.kind",
            format!(
                "{} value for 'targetRef.kind' is deprecated, use Dataplane with labels instead",
                target_ref.kind
            ),
        );
    }
}

fn is_set<T: IsEmpty + ?Sized>(value: Option<&T>) -> bool {
    value.is_some_and(|v| !v.empty())
}

trait IsEmpty {
    fn empty(&self) -> bool;
}
impl IsEmpty for String {
    fn empty(&self) -> bool {
        self.is_empty()
    }
}
impl IsEmpty for BTreeMap<String, String> {
    fn empty(&self) -> bool {
        self.is_empty()
    }
}
impl IsEmpty for Vec<String> {
    fn empty(&self) -> bool {
        self.is_empty()
    }
}

/// Kuma's `ValidateTargetRef` for the kinds MeshTrace supports.
fn validate_target_ref(out: &mut Out, path: &str, r: &TargetRef, system_role: bool) {
    let at = |field: &str| format!("{path}.{field}");
    if r.kind.is_empty() {
        out.error(at("kind"), "must be defined");
        return;
    }
    let mut supported = vec![
        "Mesh",
        "MeshSubset",
        "MeshService",
        "MeshServiceSubset",
        "Dataplane",
    ];
    if system_role {
        supported.push("MeshGateway");
    }
    if !supported.contains(&r.kind.as_str()) {
        out.error(at("kind"), format!("value '{}' is not supported", r.kind));
        return;
    }
    let kind = r.kind.as_str();
    let disallow = |out: &mut Out, field: &str, set: bool| {
        if set {
            out.error(at(field), format!("must not be set with kind {kind}"));
        }
    };
    let name_set = is_set(r.name.as_ref());
    let labels_set = is_set(r.labels.as_ref());
    let namespace_set = is_set(r.namespace.as_ref());
    match kind {
        "Mesh" => {
            if name_set {
                out.error(
                    at("name"),
                    format!("using name with kind {kind} is not yet supported"),
                );
            }
            disallow(out, "mesh", is_set(r.mesh.as_ref()));
            disallow(out, "tags", is_set(r.tags.as_ref()));
            disallow(out, "labels", labels_set);
            disallow(out, "namespace", namespace_set);
            disallow(out, "sectionName", is_set(r.section_name.as_ref()));
            validate_proxy_types(out, &at("proxyTypes"), r.proxy_types.as_ref());
        }
        "Dataplane" => {
            disallow(out, "tags", is_set(r.tags.as_ref()));
            disallow(out, "mesh", is_set(r.mesh.as_ref()));
            disallow(out, "proxyTypes", is_set(r.proxy_types.as_ref()));
            if labels_set && (name_set || namespace_set) {
                out.error(
                    at("labels"),
                    "either labels or name and namespace must be specified",
                );
            }
            if is_set(r.section_name.as_ref()) {
                out.error(at("sectionName"), "can only be used with inbound policies");
            }
        }
        "MeshSubset" => {
            disallow(out, "name", name_set);
            disallow(out, "mesh", is_set(r.mesh.as_ref()));
            validate_tags(out, &at("tags"), r.tags.as_ref(), false);
            disallow(out, "labels", labels_set);
            disallow(out, "namespace", namespace_set);
            disallow(out, "sectionName", is_set(r.section_name.as_ref()));
            validate_proxy_types(out, &at("proxyTypes"), r.proxy_types.as_ref());
        }
        "MeshService" => {
            validate_name(out, &at("name"), r.name());
            disallow(out, "mesh", is_set(r.mesh.as_ref()));
            disallow(out, "tags", is_set(r.tags.as_ref()));
            disallow(out, "proxyTypes", is_set(r.proxy_types.as_ref()));
            if !labels_set && !name_set {
                out.error(
                    path,
                    format!("name or labels must be set when kind is {kind}"),
                );
            }
            if labels_set && (name_set || namespace_set) {
                out.error(
                    at("labels"),
                    "either labels or name and namespace must be specified",
                );
            }
        }
        // MeshServiceSubset, MeshGateway
        _ => {
            if !name_set {
                out.error(at("name"), format!("must be set when kind is {kind}"));
            }
            validate_name(out, &at("name"), r.name());
            disallow(out, "mesh", is_set(r.mesh.as_ref()));
            disallow(out, "proxyTypes", is_set(r.proxy_types.as_ref()));
            validate_tags(out, &at("tags"), r.tags.as_ref(), true);
            if kind == "MeshGateway" {
                // MeshTrace does not allow gateway listener tags.
                disallow(out, "tags", is_set(r.tags.as_ref()));
            }
            disallow(out, "labels", labels_set);
            disallow(out, "namespace", namespace_set);
            disallow(out, "sectionName", is_set(r.section_name.as_ref()));
        }
    }
}

fn validate_proxy_types(out: &mut Out, path: &str, proxy_types: Option<&Vec<String>>) {
    if proxy_types.is_some_and(Vec::is_empty) {
        out.error(path, "must be undefined or have at least one element");
    }
}

fn validate_name(out: &mut Out, path: &str, name: &str) {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        out.error(
            path,
            "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'.",
        );
    }
}

/// Kuma's `ValidateTags` (`selector: false`) and `ValidateSelector` (`selector: true`).
fn validate_tags(
    out: &mut Out,
    path: &str,
    tags: Option<&BTreeMap<String, String>>,
    selector: bool,
) {
    let Some(tags) = tags else { return };
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b".-_:/".contains(&b);
    let value_char = |b: u8| b.is_ascii_alphanumeric() || b".-_:".contains(&b);
    for (name, value) in tags {
        if name.is_empty() {
            out.error(path, "tag name must be non-empty");
        }
        if !name.bytes().all(name_char) {
            out.error(
                key(path, name),
                "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores",
            );
        }
        if value.is_empty() {
            out.error(key(path, name), "tag value must be non-empty");
        }
        if selector {
            if value != "*" && !value.bytes().all(name_char) {
                out.error(
                    key(path, name),
                    "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"",
                );
            }
        } else if !value.bytes().all(value_char) {
            out.error(
                key(path, name),
                "tag value must consist of alphanumeric characters, dots, dashes and underscores",
            );
        }
    }
}

fn validate_default(out: &mut Out, conf: Option<&Conf>) {
    let empty = Conf::default();
    let conf = conf.unwrap_or(&empty);
    let backends_path = "spec.default.backends";
    match conf.backends.as_deref() {
        None => out.error(backends_path, "must be defined"),
        Some([]) => {}
        Some([backend]) => validate_backend(out, &format!("{backends_path}[0]"), backend),
        Some(_) => out.error(backends_path, "must have zero or one backend defined"),
    }
    for (i, tag) in conf.tags.as_deref().unwrap_or_default().iter().enumerate() {
        let path = format!("spec.default.tags[{i}]");
        if tag.name.is_empty() {
            out.error(format!("{path}.name"), "must not be empty");
        }
        if tag.header.is_some() == tag.literal.is_some() {
            out.error(path, "tag must have only one type defined: header, literal");
        }
    }
    if let Some(sampling) = &conf.sampling {
        for (field, value) in [
            ("client", &sampling.client),
            ("random", &sampling.random),
            ("overall", &sampling.overall),
        ] {
            if let Some(value) = value {
                validate_sampling(out, &format!("spec.default.sampling.{field}"), value);
            }
        }
    }
}

fn validate_sampling(out: &mut Out, path: &str, value: &Percent) {
    match value.value() {
        None => out.error(path, "string is not a number"),
        Some(v) if !(0.0..=100.0).contains(&v) => out.error(path, "must be between 0 and 100"),
        Some(_) => {}
    }
}

fn validate_backend(out: &mut Out, path: &str, backend: &Backend) {
    match backend.kind.as_str() {
        "Datadog" => {
            let path = format!("{path}.datadog");
            let Some(datadog) = &backend.datadog else {
                out.error(path, "must be defined");
                return;
            };
            let url_path = format!("{path}.url");
            match datadog.url.as_deref() {
                // Beyond Kuma's validator: its CRD schema requires the field.
                None => out.error(url_path, "must be defined"),
                Some(url) => validate_datadog_url(out, &url_path, url),
            }
        }
        "Zipkin" => {
            let path = format!("{path}.zipkin");
            let Some(zipkin) = &backend.zipkin else {
                out.error(path, "must be defined");
                return;
            };
            let url_path = format!("{path}.url");
            let url = zipkin.url.as_deref().unwrap_or("");
            if url.is_empty() {
                out.error(url_path, "must not be empty");
            } else {
                match split_url(url) {
                    None => out.error(url_path, "must be a valid url"),
                    // Beyond Kuma: it would send to port 0; say so instead.
                    Some(u) if u.port.is_empty() => out.error(url_path, "port must be defined"),
                    Some(u)
                        if u.port.parse::<u16>().is_ok_and(|p| p == 0)
                            || u.port.parse::<u16>().is_err() =>
                    {
                        out.error(url_path, "port must be a valid (1-65535)")
                    }
                    // Beyond Kuma: tracecar posts spans over http or https only.
                    Some(u)
                        if !u.scheme.eq_ignore_ascii_case("http")
                            && !u.scheme.eq_ignore_ascii_case("https") =>
                    {
                        out.error(url_path, "scheme must be http or https")
                    }
                    Some(_) => {}
                }
            }
            if let Some(v) = zipkin.api_version.as_deref()
                && !["httpJson", "httpProto"].contains(&v)
            {
                // Beyond Kuma's validator: its CRD schema's enum.
                out.error(
                    format!("{path}.apiVersion"),
                    "must be one of: httpJson, httpProto",
                );
            }
        }
        "OpenTelemetry" => {
            let path = format!("{path}.openTelemetry");
            let Some(otel) = &backend.open_telemetry else {
                out.error(path, "must be defined");
                return;
            };
            let endpoint = otel.endpoint.as_deref().unwrap_or("");
            match (&otel.backend_ref, endpoint.is_empty()) {
                (Some(_), false) => out.error(
                    path,
                    "openTelemetry must have only one type defined: endpoint, backendRef",
                ),
                (None, true) => out.error(
                    path,
                    "openTelemetry must have exactly one defined: endpoint, backendRef",
                ),
                (Some(r), true) => {
                    let path = format!("{path}.backendRef");
                    if r.kind != "MeshOpenTelemetryBackend" {
                        out.error(
                            format!("{path}.kind"),
                            "kind must be one of: MeshOpenTelemetryBackend",
                        );
                    }
                    if r.labels.as_ref().is_none_or(BTreeMap::is_empty) {
                        out.error(path, "backendRef must have exactly one defined: labels");
                    }
                }
                (None, false) if endpoint.contains(['/', '?', '#']) => out.error(
                    format!("{path}.endpoint"),
                    "must be in host:port format, not a URL",
                ),
                (None, false) => {}
            }
        }
        // Beyond Kuma's validator (which would panic): its CRD schema's enum.
        "" => out.error(format!("{path}.type"), "must be defined"),
        other => out.error(
            format!("{path}.type"),
            format!("value '{other}' is not supported; use one of Zipkin, Datadog, OpenTelemetry"),
        ),
    }
}

/// The parts of `scheme://[user@]host[:port][/path][?query][#fragment]` that validation needs.
pub struct UrlParts<'a> {
    pub scheme: &'a str,
    pub user: bool,
    pub host: &'a str,
    pub port: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub fragment: &'a str,
}

/// Splits an absolute url with an authority; `None` when it is not one.
pub fn split_url(url: &str) -> Option<UrlParts<'_>> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let mut chars = scheme.chars();
    if !(chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
    {
        return None;
    }
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((_, h)) => (true, h),
        None => (false, authority),
    };
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        match tail {
            "" => (host, ""),
            t => (host, t.strip_prefix(':')?),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (host_port, ""),
        }
    };
    if host.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(UrlParts {
        scheme,
        user,
        host,
        port,
        path,
        query,
        fragment,
    })
}

/// Kuma checks a Datadog url as Go's `url.ParseRequestURI` reads it: scheme http, a port in
/// 1–65535, and nothing else (user, path, query, fragment).
fn validate_datadog_url(out: &mut Out, path: &str, url: &str) {
    let Some(u) = split_url(url) else {
        out.error(path, "must be a valid url");
        return;
    };
    if u.scheme != "http" {
        out.error(path, "scheme must be http");
    }
    if u.port.is_empty() {
        out.error(path, "port must be defined");
    } else if u.port.parse::<u32>().map_or(true, |p| p == 0 || p > 65535) {
        out.error(path, "port must be a valid (1-65535)");
    }
    for (name, set) in [
        ("user", u.user),
        ("path", !u.path.is_empty()),
        ("query", !u.query.is_empty()),
        ("fragment", !u.fragment.is_empty()),
    ] {
        if set {
            out.error(path, format!("{name} must not be defined"));
        }
    }
}

/// Kuma's MeshOpenTelemetryBackend validator.
pub fn validate_otel_backend(backend: &MeshOpenTelemetryBackend) -> Vec<Violation> {
    let mut out = Out::default();
    let OtelBackendSpec {
        endpoint, protocol, ..
    } = &backend.spec;
    let protocol = protocol.as_deref().unwrap_or("grpc");
    if let Some(endpoint) = endpoint {
        if let Some(address) = endpoint.address.as_deref() {
            if address.is_empty() {
                out.error("spec.endpoint.address", "must not be empty");
            } else if !crate::policy::validate::is_host_port(&format!("{address}:1"))
                && address.parse::<std::net::IpAddr>().is_err()
            {
                out.error(
                    "spec.endpoint.address",
                    "address has to be a valid IP or hostname",
                );
            }
        }
        if let Some(port) = endpoint.port
            && !(1..=65535).contains(&port)
        {
            out.error("spec.endpoint.port", "port must be in the range [1, 65535]");
        }
        if let Some(path) = endpoint.path.as_deref().filter(|p| !p.is_empty()) {
            if protocol == "grpc" || protocol.is_empty() {
                out.error(
                    "spec.endpoint.path",
                    "must not be set when protocol is grpc",
                );
            } else {
                if !path.starts_with('/') {
                    out.error("spec.endpoint.path", "must start with /");
                }
                if path.contains(['?', '#']) {
                    out.error("spec.endpoint.path", "must not contain query or fragment");
                }
            }
        }
    }
    if !protocol.is_empty() && protocol != "grpc" && protocol != "http" {
        out.error("spec.protocol", "protocol must be one of: grpc, http");
    }
    unknown_fields(&mut out, &backend.unknown_fields);
    out.0
}

/// Checks across resources: a mesh holding both TrafficTrace and MeshTrace (Kuma: "do not
/// combine"; here a MeshTrace that selects a proxy decides for it).
pub fn validate_set(resources: &[crate::policy::Resource]) -> Vec<crate::policy::Diagnostic> {
    use crate::policy::Resource;
    let mut out = Vec::new();
    let mut warned = std::collections::BTreeSet::new();
    for r in resources {
        let Resource::MeshTrace(mt) = r else { continue };
        if warned.contains(&mt.meta.mesh) {
            continue;
        }
        if let Some(tt) = resources.iter().find_map(|r| match r {
            Resource::TrafficTrace(tt) if tt.meta.mesh == mt.meta.mesh => Some(tt),
            _ => None,
        }) {
            warned.insert(mt.meta.mesh.clone());
            out.push(
                crate::policy::Diagnostic::warning(
                    &mt.meta.source.file,
                    format!(
                        "mesh \"{}\" holds both MeshTrace and TrafficTrace (TrafficTrace/{} in {}); do not combine them: where a MeshTrace selects a proxy, TrafficTrace is ignored",
                        mt.meta.mesh,
                        tt.meta.name,
                        tt.meta.source.file.display()
                    ),
                )
                .resource(format!("MeshTrace/{}", mt.meta.name)),
            );
        }
    }
    out
}
