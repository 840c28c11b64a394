//! Reading Kuma resources from files and folders, in Universal or Kubernetes form.
//!
//! Parsing never stops at the first problem: every document of every file is read, and each
//! problem becomes one [`Diagnostic`]. Documents that parse are kept even when a sibling fails,
//! so `validate` can report everything in one run.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::diagnostic::Diagnostic;
use super::meshtrace;
use super::null_as_empty;
use super::resource::{
    Dataplane, DataplaneSpec, Form, Kind, Mesh, MeshSpec, Meta, Resource, Source, TrafficTrace,
    TrafficTraceSpec,
};

/// Policy files larger than this are refused before parsing. A Kubernetes ConfigMap (the usual
/// way policy reaches a sidecar) cannot exceed 1 MiB, so no real policy file comes near it.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The mesh of a resource that does not name one, as in Kuma.
pub const DEFAULT_MESH: &str = "default";

/// Kubernetes `apiVersion` of Kuma's resources.
pub const KUMA_API_VERSION: &str = "kuma.io/v1alpha1";

/// Kuma kinds that tracecar does not use: skipped with a warning, so a folder holding a whole
/// mesh's policy loads as it is.
const OTHER_KUMA_KINDS: &[&str] = &[
    "CircuitBreaker",
    "ContainerPatch",
    "ExternalService",
    "FaultInjection",
    "GlobalSecret",
    "HealthCheck",
    "HostnameGenerator",
    "MeshAccessLog",
    "MeshCircuitBreaker",
    "MeshExternalService",
    "MeshFaultInjection",
    "MeshGateway",
    "MeshGatewayInstance",
    "MeshGatewayRoute",
    "MeshHTTPRoute",
    "MeshHealthCheck",
    "MeshIdentity",
    "MeshLoadBalancingStrategy",
    "MeshMetric",
    "MeshMultiZoneService",
    "MeshPassthrough",
    "MeshProxyPatch",
    "MeshRateLimit",
    "MeshRetry",
    "MeshService",
    "MeshTCPRoute",
    "MeshTLS",
    "MeshTimeout",
    "MeshTrafficPermission",
    "MeshTrust",
    "ProxyTemplate",
    "RateLimit",
    "Retry",
    "Secret",
    "Timeout",
    "TrafficLog",
    "TrafficPermission",
    "TrafficRoute",
    "VirtualOutbound",
    "Workload",
    "Zone",
    "ZoneEgress",
    "ZoneIngress",
];

/// Everything read from a set of paths.
#[derive(Debug, Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
    /// Files read (after expanding folders).
    pub files: Vec<PathBuf>,
}

/// Expands `--policy` arguments: a file stands for itself; a folder for every `*.yaml`/`*.yml`
/// directly inside it, sorted, skipping names that begin with `.` (a ConfigMap mount's
/// `..data` and `..2024_…` entries), following symlinks.
///
/// A policy name that cannot be followed (a dangling symlink, a symlink loop) is an error, not
/// skipped, and so is a folder with no policy file at all: like an empty file, an emptied
/// folder is far more often a mount or a deploy gone wrong than a wish to trace nothing, and
/// while running it must not silently replace the last good policy.
pub fn expand_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut named: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| is_policy_file_name(p))
                        .collect();
                    named.sort();
                    let mut found = 0;
                    for candidate in named {
                        match std::fs::metadata(&candidate) {
                            Ok(meta) if meta.is_file() => {
                                files.push(candidate);
                                found += 1;
                            }
                            // A folder named `x.yaml`: folders are read one level deep.
                            Ok(_) => {}
                            Err(e) => {
                                found += 1;
                                problems.push(Diagnostic::error(
                                    &candidate,
                                    format!("cannot read: {}", io_reason(&e)),
                                ));
                            }
                        }
                    }
                    if found == 0 {
                        problems.push(Diagnostic::error(
                            path,
                            "folder holds no policy file (*.yaml or *.yml)",
                        ));
                    }
                }
                Err(e) => problems.push(Diagnostic::error(
                    path,
                    format!("cannot read folder: {}", io_reason(&e)),
                )),
            },
            Ok(_) => files.push(path.clone()),
            Err(e) => problems.push(Diagnostic::error(
                path,
                format!("cannot read: {}", io_reason(&e)),
            )),
        }
    }
    (files, problems)
}

fn is_policy_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

fn io_reason(e: &std::io::Error) -> String {
    /// Linux's ELOOP; std has no stable `ErrorKind` for it.
    const TOO_MANY_SYMLINKS: i32 = 40;
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or folder".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ if cfg!(target_os = "linux") && e.raw_os_error() == Some(TOO_MANY_SYMLINKS) => {
            "symbolic link loop (too many levels of symbolic links)".to_string()
        }
        _ => e.to_string(),
    }
}

/// Loads every resource from the given files and folders.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let (files, mut diagnostics) = expand_paths(paths);
    let mut resources = Vec::new();
    for file in &files {
        let (mut r, mut d) = load_file(file);
        resources.append(&mut r);
        diagnostics.append(&mut d);
    }
    Loaded {
        resources,
        diagnostics,
        files,
    }
}

/// Loads one file.
pub fn load_file(file: &Path) -> (Vec<Resource>, Vec<Diagnostic>) {
    match read_text(file) {
        Ok(text) => parse_str(file, &text),
        Err(d) => (Vec::new(), vec![d]),
    }
}

fn read_text(file: &Path) -> Result<String, Diagnostic> {
    let too_large = |len: u64| {
        Diagnostic::error(
            file,
            format!(
                "file is {len} bytes, larger than the {MAX_FILE_BYTES}-byte limit for policy files"
            ),
        )
    };
    let meta = std::fs::metadata(file)
        .map_err(|e| Diagnostic::error(file, format!("cannot read: {}", io_reason(&e))))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    let bytes = std::fs::read(file)
        .map_err(|e| Diagnostic::error(file, format!("cannot read: {}", io_reason(&e))))?;
    // The file may have grown since `metadata`.
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        Diagnostic::error(
            file,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Parses the YAML text of one file (one or many documents).
pub fn parse_str(file: &Path, text: &str) -> (Vec<Resource>, Vec<Diagnostic>) {
    let documents: Vec<Value> = match serde_saphyr::from_multiple(text) {
        Ok(docs) => docs,
        Err(e) => {
            let message = e.without_snippet().to_string();
            // The parser's hint is addressed to programmers, not to the person editing YAML.
            let message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
            return (
                Vec::new(),
                vec![Diagnostic::error(file, format!("invalid YAML: {message}"))],
            );
        }
    };
    let documents: Vec<Value> = documents.into_iter().filter(|d| !d.is_null()).collect();
    if documents.is_empty() {
        return (
            Vec::new(),
            vec![Diagnostic::error(
                file,
                "file is empty: it holds no resource",
            )],
        );
    }
    let mut resources = Vec::new();
    let mut diagnostics = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let source = Source {
            file: file.to_path_buf(),
            document: index + 1,
        };
        match parse_document(document, source) {
            Ok(Parsed::Resource(r)) => resources.push(*r),
            Ok(Parsed::Skipped(warning)) => diagnostics.push(warning),
            Err(error) => diagnostics.push(error),
        }
    }
    (resources, diagnostics)
}

enum Parsed {
    Resource(Box<Resource>),
    Skipped(Diagnostic),
}

fn parse_document(document: Value, source: Source) -> Result<Parsed, Diagnostic> {
    let file = source.file.clone();
    let at_document = |message: String| {
        Diagnostic::error(&file, format!("document {}: {message}", source.document))
    };
    let Value::Object(mut object) = document else {
        return Err(at_document(format!(
            "expected a Kuma resource (a mapping with `type:` or `kind:`), found {}",
            describe(&document)
        )));
    };
    let kubernetes = object.contains_key("kind") || object.contains_key("apiVersion");
    let kind_key = if kubernetes { "kind" } else { "type" };
    let kind_name = match object.get(kind_key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) if !other.is_null() => {
            return Err(at_document(format!(
                "{kind_key}: expected a string, found {}",
                describe(other)
            )));
        }
        _ => {
            return Err(at_document(if kubernetes {
                "kind: cannot be empty".to_string()
            } else {
                "missing `type:` (Universal form) or `kind:` (Kubernetes form)".to_string()
            }));
        }
    };
    if kubernetes {
        match object.get("apiVersion") {
            Some(Value::String(v)) if v == KUMA_API_VERSION => {}
            Some(Value::String(v)) => {
                return Err(at_document(format!(
                    "{kind_name}: apiVersion: \"{v}\" is not Kuma's; expected \"{KUMA_API_VERSION}\""
                )));
            }
            _ => {
                return Err(at_document(format!(
                    "{kind_name}: apiVersion: cannot be empty (expected \"{KUMA_API_VERSION}\")"
                )));
            }
        }
    }
    let kind = match kind_name.as_str() {
        "Mesh" => Kind::Mesh,
        "TrafficTrace" => Kind::TrafficTrace,
        "Dataplane" => Kind::Dataplane,
        "MeshTrace" => Kind::MeshTrace,
        "MeshOpenTelemetryBackend" => Kind::MeshOpenTelemetryBackend,
        other if OTHER_KUMA_KINDS.contains(&other) => {
            let name = read_meta(&object, kubernetes, Kind::Mesh, &source)
                .map(|m| m.name)
                .unwrap_or_default();
            return Ok(Parsed::Skipped(
                Diagnostic::warning(&file, "not used by tracecar, skipped")
                    .resource(format!("{other}/{name}")),
            ));
        }
        other => {
            return Err(at_document(format!(
                "unknown kind \"{other}\"; tracecar reads Mesh, TrafficTrace, MeshTrace, MeshOpenTelemetryBackend and Dataplane"
            )));
        }
    };
    let meta = read_meta(&object, kubernetes, kind, &source)?;
    let id = format!("{kind}/{}", meta.name);
    let body = if kubernetes {
        match object.remove("spec") {
            Some(Value::Object(spec)) => Value::Object(spec),
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(other) => {
                return Err(Diagnostic::error(
                    &file,
                    format!("spec: expected a mapping, found {}", describe(&other)),
                )
                .resource(id));
            }
        }
    } else {
        Value::Object(object)
    };
    let typed = |body: Value| -> Result<Resource, Diagnostic> {
        Ok(match kind {
            Kind::Mesh => Resource::Mesh(Mesh {
                spec: from_value::<MeshSpec>(body, &file, &id)?,
                meta,
            }),
            Kind::TrafficTrace => Resource::TrafficTrace(TrafficTrace {
                spec: from_value::<TrafficTraceSpec>(body, &file, &id)?,
                meta,
            }),
            Kind::Dataplane => Resource::Dataplane(Dataplane {
                spec: from_value::<DataplaneSpec>(body, &file, &id)?,
                meta,
            }),
            Kind::MeshTrace | Kind::MeshOpenTelemetryBackend => {
                meshtrace::resource::parse(kind, body, meta, &id)?
            }
        })
    };
    typed(body).map(|r| Parsed::Resource(Box::new(r)))
}

/// Deserializes a spec, nulls read as empty values (see [`null_as_empty`]), reporting a type
/// error with its field path (`tracing.backends[0].sampling`).
fn from_value<T: DeserializeOwned>(body: Value, file: &Path, id: &str) -> Result<T, Diagnostic> {
    null_as_empty::from_value_with_path(body).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Diagnostic::error(file, e.into_inner().to_string())
            .resource(id)
            .at(path)
    })
}

fn read_meta(
    object: &Map<String, Value>,
    kubernetes: bool,
    kind: Kind,
    source: &Source,
) -> Result<Meta, Diagnostic> {
    let file = &source.file;
    let string_field =
        |container: &Map<String, Value>, key: &str, path: &str| -> Result<String, Diagnostic> {
            match container.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(Diagnostic::error(
                    file,
                    format!(
                        "document {}: {kind}: {path}: expected a string, found {}",
                        source.document,
                        describe(other)
                    ),
                )),
            }
        };
    let empty = Map::new();
    let (name, namespace, created, mesh, labels) = if kubernetes {
        let metadata = match object.get("metadata") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => &empty,
            Some(other) => {
                return Err(Diagnostic::error(
                    file,
                    format!(
                        "document {}: {kind}: metadata: expected a mapping, found {}",
                        source.document,
                        describe(other)
                    ),
                ));
            }
        };
        (
            string_field(metadata, "name", "metadata.name")?,
            string_field(metadata, "namespace", "metadata.namespace")?,
            string_field(metadata, "creationTimestamp", "metadata.creationTimestamp")?,
            string_field(object, "mesh", "mesh")?,
            read_labels(metadata, "metadata.labels", kind, source)?,
        )
    } else {
        (
            string_field(object, "name", "name")?,
            String::new(),
            string_field(object, "creationTime", "creationTime")?,
            string_field(object, "mesh", "mesh")?,
            read_labels(object, "labels", kind, source)?,
        )
    };
    if name.is_empty() {
        let path = if kubernetes { "metadata.name" } else { "name" };
        return Err(Diagnostic::error(
            file,
            format!(
                "document {}: {kind}: {path}: cannot be empty",
                source.document
            ),
        ));
    }
    // Kuma names a namespaced Kubernetes Dataplane `<name>.<namespace>`.
    let name = if kubernetes && kind == Kind::Dataplane && !namespace.is_empty() {
        format!("{name}.{namespace}")
    } else {
        name
    };
    let creation_time = if created.is_empty() {
        None
    } else {
        let path = if kubernetes {
            "metadata.creationTimestamp"
        } else {
            "creationTime"
        };
        Some(created.parse::<jiff::Timestamp>().map_err(|e| {
            Diagnostic::error(file, format!("not an RFC 3339 timestamp: {e}"))
                .resource(format!("{kind}/{name}"))
                .at(path)
        })?)
    };
    let mesh = match kind {
        Kind::Mesh => name.clone(),
        // Kuma's newer kinds name their mesh with a label in Kubernetes form.
        _ if mesh.is_empty() && labels.contains_key(MESH_LABEL) => labels[MESH_LABEL].clone(),
        _ if mesh.is_empty() => DEFAULT_MESH.to_string(),
        _ => mesh,
    };
    Ok(Meta {
        name,
        mesh,
        creation_time,
        namespace,
        labels,
        form: if kubernetes {
            Form::Kubernetes
        } else {
            Form::Universal
        },
        source: source.clone(),
    })
}

/// The label naming a resource's mesh (Kubernetes form).
pub const MESH_LABEL: &str = "kuma.io/mesh";

/// `labels` / `metadata.labels`: a map of strings (absent or null: none).
fn read_labels(
    container: &Map<String, Value>,
    path: &str,
    kind: Kind,
    source: &Source,
) -> Result<std::collections::BTreeMap<String, String>, Diagnostic> {
    let problem = |what: String| {
        Diagnostic::error(
            &source.file,
            format!("document {}: {kind}: {what}", source.document),
        )
    };
    match container.get(path.rsplit('.').next().unwrap_or(path)) {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                // A null reads as the empty value (see `null_as_empty`).
                Value::Null => Ok((k.clone(), String::new())),
                other => Err(problem(format!(
                    "{path}[{}]: expected a string, found {}",
                    Value::String(k.clone()),
                    describe(other)
                ))),
            })
            .collect(),
        Some(other) => Err(problem(format!(
            "{path}: expected a mapping, found {}",
            describe(other)
        ))),
    }
}

/// A short description of a YAML value, for type errors.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_string(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) => format!("number `{n}`"),
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            let more = if s.chars().count() > 40 { "…" } else { "" };
            format!("string \"{shown}{more}\"")
        }
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

/// Reads the dataplane file: exactly one `Dataplane` resource.
pub fn load_dataplane(file: &Path) -> Result<(Dataplane, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (resources, mut diagnostics) = load_file(file);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    let mut dataplanes: Vec<Dataplane> = resources
        .into_iter()
        .filter_map(|r| match r {
            Resource::Dataplane(d) => Some(d),
            other => {
                diagnostics.push(
                    Diagnostic::warning(file, "not a Dataplane, ignored in the dataplane file")
                        .resource(format!("{}/{}", other.kind(), other.meta().name)),
                );
                None
            }
        })
        .collect();
    match dataplanes.len() {
        1 => Ok((dataplanes.remove(0), diagnostics)),
        0 => {
            diagnostics.push(Diagnostic::error(file, "holds no Dataplane resource"));
            Err(diagnostics)
        }
        n => {
            diagnostics.push(Diagnostic::error(
                file,
                format!("holds {n} Dataplane resources; a sidecar proxies exactly one"),
            ));
            Err(diagnostics)
        }
    }
}
