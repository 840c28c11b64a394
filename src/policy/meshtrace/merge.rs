//! Merging the `default` confs of the MeshTraces that select a proxy: JSON Merge Patch
//! (RFC 7386) in merge order, as Kuma does — objects merged field by field, arrays (`backends`,
//! `tags`) replaced whole — then Kuma's defaults filled in.

use serde_json::{Map, Value};

use super::resource::{Conf, MeshTrace};

/// RFC 7386: `patch` onto `target`. A null in the patch removes the field; the patches built
/// here carry none (nulls read as "not set" and are stripped when the policy is read).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The merged conf as written (no defaults), in merge order.
pub fn merge_defaults<'a>(ordered: impl IntoIterator<Item = &'a MeshTrace>) -> Value {
    let mut merged = Value::Object(Map::new());
    for mt in ordered {
        if mt.default_patch.is_object() {
            merge_patch(&mut merged, &mt.default_patch);
        }
    }
    merged
}

/// Kuma's defaults for a backend (`apiVersion`, `traceId128bit`, `sharedSpanContext`,
/// `splitService`), as its API fills them.
pub fn with_defaults(mut conf: Value) -> Value {
    let Some(backends) = conf.get_mut("backends").and_then(Value::as_array_mut) else {
        return conf;
    };
    for backend in backends {
        let fill = |object: Option<&mut Value>, defaults: &[(&str, Value)]| {
            if let Some(Value::Object(o)) = object {
                for (k, v) in defaults {
                    o.entry(k.to_string()).or_insert_with(|| v.clone());
                }
            }
        };
        fill(
            backend.get_mut("zipkin"),
            &[
                ("traceId128bit", Value::Bool(false)),
                ("apiVersion", Value::String("httpJson".into())),
                ("sharedSpanContext", Value::Bool(true)),
            ],
        );
        fill(
            backend.get_mut("datadog"),
            &[("splitService", Value::Bool(false))],
        );
    }
    conf
}

/// The merged, typed conf. The inputs were validated one by one, and a merge of valid confs
/// stays valid (each field comes whole from one of them); a conf that still does not read is
/// reported by the caller.
pub fn typed(merged: &Value) -> Result<Conf, String> {
    crate::policy::null_as_empty::from_value(merged.clone()).map_err(|e| e.to_string())
}
