//! Typed models of `MeshTrace` and `MeshOpenTelemetryBackend` (Kuma v2.14 API), in both forms.
//!
//! `spec.default` is kept twice: as written (for JSON Merge Patch, which works on what the user
//! wrote, not on defaults) and typed (for validation). Fields that Kuma declares as pointers are
//! `Option`s here, so "absent" and "empty" stay apart (`backends: []` turns tracing off; absent
//! backends leave a less specific policy's in place).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::policy::diagnostic::Diagnostic;
use crate::policy::load::describe;
use crate::policy::null_as_empty;
use crate::policy::resource::{Form, Kind, Meta, Resource};

#[derive(Debug, Clone, PartialEq)]
pub struct MeshTrace {
    pub meta: Meta,
    pub spec: MeshTraceSpec,
    /// `spec.default` as written, nulls removed (a null reads as "not set").
    pub default_patch: Value,
    /// Fields under `spec` that MeshTrace has no place for, e.g. `default.sampling.overal`:
    /// ignored, and warned about.
    pub unknown_fields: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshTraceSpec {
    #[serde(default)]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub default: Option<Conf>,
}

/// Kuma's `common_api.TargetRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

impl TargetRef {
    /// `spec.targetRef` absent means the whole mesh.
    pub fn mesh() -> TargetRef {
        TargetRef {
            kind: "Mesh".to_string(),
            ..TargetRef::default()
        }
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// `spec.default`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conf {
    #[serde(default)]
    pub backends: Option<Vec<Backend>>,
    #[serde(default)]
    pub sampling: Option<Sampling>,
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// `Zipkin`, `Datadog` or `OpenTelemetry`; anything else is a schema error.
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub zipkin: Option<ZipkinBackend>,
    #[serde(default)]
    pub datadog: Option<DatadogBackend>,
    #[serde(default)]
    pub open_telemetry: Option<OpenTelemetryBackend>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinBackend {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, rename = "traceId128bit")]
    pub trace_id_128bit: Option<bool>,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub shared_span_context: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatadogBackend {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub split_service: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenTelemetryBackend {
    /// Deprecated in Kuma 2.14 in favour of `backendRef`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub backend_ref: Option<BackendRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sampling {
    #[serde(default)]
    pub overall: Option<Percent>,
    #[serde(default)]
    pub client: Option<Percent>,
    #[serde(default)]
    pub random: Option<Percent>,
}

/// Kubernetes' `IntOrString`: `80` or `"60.1"`. A plain decimal number (`60.1`) is read too.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Percent {
    Number(f64),
    Text(String),
}

impl Percent {
    /// The value, or `None` when the text is not a number.
    pub fn value(&self) -> Option<f64> {
        match self {
            Percent::Number(n) => Some(*n),
            Percent::Text(t) => {
                let t = t.trim();
                // Decimal notation only, as Kuma's decimal parser: no `inf`, `nan`, `1e3`.
                let decimal = !t.is_empty()
                    && t.trim_start_matches(['-', '+'])
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.');
                if decimal { t.parse().ok() } else { None }
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub literal: Option<String>,
    #[serde(default)]
    pub header: Option<HeaderTag>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderTag {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub default: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// MeshOpenTelemetryBackend

#[derive(Debug, Clone, PartialEq)]
pub struct MeshOpenTelemetryBackend {
    pub meta: Meta,
    pub spec: OtelBackendSpec,
    /// Fields under `spec` it has no place for: ignored, and warned about.
    pub unknown_fields: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtelBackendSpec {
    #[serde(default)]
    pub endpoint: Option<OtelEndpoint>,
    /// `grpc` (default) or `http`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Kuma's environment policy: read by Kuma's data plane, not by tracecar.
    #[serde(default)]
    pub env: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtelEndpoint {
    #[serde(default)]
    pub address: Option<String>,
    /// Wide, so an out-of-range port reaches validation.
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub path: Option<String>,
}

/// The default OTLP/gRPC port.
pub const OTLP_GRPC_PORT: i64 = 4317;

// ---------------------------------------------------------------------------------------------
// Parsing

/// Removes every null field from a JSON value: in Kuma a null field is an unset pointer, and
/// unset fields are left out of the merge patch (a null there would delete the field instead).
/// What remains (a null list item) reads as its type's empty value through `null_as_empty`,
/// as for every other kind.
pub fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Builds a MeshTrace or MeshOpenTelemetryBackend from its document body: the whole object in
/// Universal form, `spec` in Kubernetes form. Type errors are reported at `spec.…` in both
/// forms, as Kuma's validator paths are.
pub fn parse(kind: Kind, body: Value, meta: Meta, id: &str) -> Result<Resource, Diagnostic> {
    let file = meta.source.file.clone();
    let spec = match meta.form {
        Form::Kubernetes => body,
        Form::Universal => match body {
            Value::Object(mut object) => object.remove("spec").unwrap_or(Value::Null),
            other => other,
        },
    };
    let spec = match strip_nulls(spec) {
        Value::Null => Value::Object(Map::new()),
        Value::Object(map) => Value::Object(map),
        other => {
            return Err(Diagnostic::error(
                &file,
                format!("expected a mapping, found {}", describe(&other)),
            )
            .resource(id)
            .at("spec"));
        }
    };
    let typed_error = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        let path = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        Diagnostic::error(&file, e.into_inner().to_string())
            .resource(id)
            .at(path)
    };
    Ok(match kind {
        Kind::MeshOpenTelemetryBackend => {
            let (spec, unknown_fields) =
                null_as_empty::from_value_noting_unknown(spec).map_err(typed_error)?;
            Resource::MeshOpenTelemetryBackend(MeshOpenTelemetryBackend {
                spec,
                meta,
                unknown_fields,
            })
        }
        _ => {
            let default_patch = spec.get("default").cloned().unwrap_or(Value::Null);
            let (spec, unknown_fields) =
                null_as_empty::from_value_noting_unknown(spec).map_err(typed_error)?;
            Resource::MeshTrace(Box::new(MeshTrace {
                spec,
                default_patch,
                meta,
                unknown_fields,
            }))
        }
    })
}
