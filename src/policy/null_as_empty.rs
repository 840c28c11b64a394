//! A YAML null is the field's empty value, as Kuma reads it.
//!
//! Kuma reads YAML through JSON into protobuf, so `key:`, `key: ~` and `key: null` give the
//! field's zero value: `""`, `0`, `false`, an empty list or map, an unset message. Its fixtures
//! rely on that, and so do users: `conf: {backend: }` means "the Mesh's default backend", and a
//! selector `match: {kuma.io/service: }` is a tag with an empty value, which validation then
//! reports with Kuma's own message (`tag value must be non-empty`).
//!
//! The rule lives here once, as a [`serde::Deserializer`] over the document's
//! `serde_json::Value` that answers each type's request for a null with that type's empty value.
//! It is driven by the target type, so it needs no list of fields: map values become `""` where
//! the map holds strings, a missing struct becomes its `Default`, an `Option` becomes `None`.
//!
//! Using it for a new kind: deserialize the kind's spec with [`from_value`] (or
//! [`from_value_with_path`] for a field path in the error), as `load` does for every kind, and
//! give the model's fields `#[serde(default)]` as the existing kinds do. Untyped parts kept as
//! `serde_json::Value` (a backend's `conf`) keep their nulls until they are read with
//! [`from_value`] in turn. One limit: serde buffers the input of `#[serde(flatten)]`, untagged
//! and internally tagged enums before this deserializer can see the target type, so a null
//! inside those comes out as a type error; model Kuma's `type` + per-type field as a struct of
//! optional fields (as Kuma's protobuf does) rather than as such an enum.

use serde::de::value::StringDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde_json::{Error, Map, Value};

/// Deserializes `value` as `T`, reading every null as the target field's empty value.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    T::deserialize(NullAsEmpty(value))
}

/// [`from_value`], with the path of the field that failed (`tracing.backends[0].sampling`).
pub fn from_value_with_path<T: DeserializeOwned>(
    value: Value,
) -> Result<T, serde_path_to_error::Error<Error>> {
    serde_path_to_error::deserialize(NullAsEmpty(value))
}

/// [`from_value_with_path`], and the paths of the fields the model has no place for, in Kuma's
/// form (`default.backends[0].openTelemetry.protocol`), for a warning: serde drops an unknown
/// field silently, and a misspelt one would fall back to its default unnoticed.
pub fn from_value_noting_unknown<T: DeserializeOwned>(
    value: Value,
) -> Result<(T, Vec<String>), serde_path_to_error::Error<Error>> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(kuma_path(&path));
    let deserializer = serde_ignored::Deserializer::new(NullAsEmpty(value), &mut note);
    let value = serde_path_to_error::deserialize(deserializer)?;
    Ok((value, unknown))
}

/// `a.b[0].c`: keys after dots, list indices in brackets.
fn kuma_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", kuma_path(parent)),
        Path::Map { parent, key } => match kuma_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => kuma_path(parent),
    }
}

/// A JSON value whose nulls read as the requested type's empty value.
pub struct NullAsEmpty(pub Value);

impl NullAsEmpty {
    fn any<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Array(items) => visit_array(items, visitor),
            Value::Object(entries) => visit_object(entries, visitor),
            scalar => de::Deserializer::deserialize_any(scalar, visitor),
        }
    }
}

fn visit_array<'de, V: Visitor<'de>>(items: Vec<Value>, visitor: V) -> Result<V::Value, Error> {
    let len = items.len();
    let mut seq = Seq(items.into_iter());
    let out = visitor.visit_seq(&mut seq)?;
    if seq.0.len() == 0 {
        Ok(out)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements in array"))
    }
}

fn visit_object<'de, V: Visitor<'de>>(
    entries: Map<String, Value>,
    visitor: V,
) -> Result<V::Value, Error> {
    let len = entries.len();
    let mut map = Entries {
        iter: entries.into_iter(),
        value: None,
    };
    let out = visitor.visit_map(&mut map)?;
    if map.iter.len() == 0 {
        Ok(out)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements in map"))
    }
}

/// For requests whose empty value is one `visit_*` call; anything else goes by the value.
macro_rules! null_is {
    ($($method:ident => |$v:ident| $empty:expr;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $v: V) -> Result<V::Value, Error> {
                match self.0 {
                    Value::Null => $empty,
                    other => NullAsEmpty(other).any($v),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for NullAsEmpty {
    type Error = Error;

    null_is! {
        deserialize_any => |v| v.visit_unit();
        deserialize_bool => |v| v.visit_bool(false);
        deserialize_i8 => |v| v.visit_i8(0);
        deserialize_i16 => |v| v.visit_i16(0);
        deserialize_i32 => |v| v.visit_i32(0);
        deserialize_i64 => |v| v.visit_i64(0);
        deserialize_i128 => |v| v.visit_i128(0);
        deserialize_u8 => |v| v.visit_u8(0);
        deserialize_u16 => |v| v.visit_u16(0);
        deserialize_u32 => |v| v.visit_u32(0);
        deserialize_u64 => |v| v.visit_u64(0);
        deserialize_u128 => |v| v.visit_u128(0);
        deserialize_f32 => |v| v.visit_f32(0.0);
        deserialize_f64 => |v| v.visit_f64(0.0);
        deserialize_str => |v| v.visit_str("");
        deserialize_string => |v| v.visit_string(String::new());
        deserialize_bytes => |v| v.visit_bytes(&[]);
        deserialize_byte_buf => |v| v.visit_byte_buf(Vec::new());
        deserialize_unit => |v| v.visit_unit();
        deserialize_seq => |v| visit_array(Vec::new(), v);
        deserialize_map => |v| visit_object(Map::new(), v);
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // No empty char exists: a null stays a type error.
        de::Deserializer::deserialize_char(self.0, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(NullAsEmpty(other)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // An absent message: every field takes its default (or is reported missing).
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // An enum has no empty value that serde can name; read it as JSON does.
        de::Deserializer::deserialize_enum(self.0, name, variants, visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_identifier(self.0, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|item| seed.deserialize(NullAsEmpty(item)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> de::MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        let key: StringDeserializer<Error> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        // serde calls this once after each key; a value taken twice reads as null.
        let value = self.value.take().unwrap_or(Value::Null);
        seed.deserialize(NullAsEmpty(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default)]
    struct Inner {
        text: String,
        flag: bool,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default)]
    struct Outer {
        text: String,
        number: i64,
        unsigned: u32,
        ratio: f64,
        flag: bool,
        list: Vec<String>,
        tags: BTreeMap<String, String>,
        inner: Inner,
        maybe: Option<Inner>,
        maybe_number: Option<f64>,
        untyped: Option<Value>,
    }

    #[test]
    fn every_null_field_reads_as_its_empty_value() {
        let nulls = json!({
            "text": null, "number": null, "unsigned": null, "ratio": null, "flag": null,
            "list": null, "tags": null, "inner": null, "maybe": null, "maybe_number": null,
            "untyped": null,
        });
        assert_eq!(from_value::<Outer>(nulls).unwrap(), Outer::default());
    }

    #[test]
    fn null_map_values_and_list_items_are_empty_strings() {
        let value = json!({"tags": {"a": null, "b": "x"}, "list": [null, "y"]});
        let read: Outer = from_value(value).unwrap();
        assert_eq!(read.tags["a"], "");
        assert_eq!(read.tags["b"], "x");
        assert_eq!(read.list, ["", "y"]);
    }

    #[test]
    fn nulls_deep_inside_are_empty_too() {
        let value = json!({"maybe": {"text": null, "flag": true}});
        let read: Outer = from_value(value).unwrap();
        assert_eq!(
            read.maybe,
            Some(Inner {
                text: String::new(),
                flag: true
            })
        );
    }

    #[test]
    fn values_that_are_not_null_read_as_plain_json() {
        let value = json!({"text": "t", "number": -3, "ratio": 1.5, "untyped": {"k": null}});
        let read: Outer = from_value(value).unwrap();
        assert_eq!(
            (read.text.as_str(), read.number, read.ratio),
            ("t", -3, 1.5)
        );
        // An untyped part keeps its nulls until it is read into a type of its own.
        assert_eq!(read.untyped, Some(json!({"k": null})));
    }

    #[test]
    fn a_wrong_type_is_still_an_error_with_its_path() {
        let err = from_value_with_path::<Outer>(json!({"inner": {"flag": "yes"}})).unwrap_err();
        assert_eq!(err.path().to_string(), "inner.flag");
        assert_eq!(
            err.into_inner().to_string(),
            "invalid type: string \"yes\", expected a boolean"
        );
    }
}
