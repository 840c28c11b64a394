//! Zipkin JSON v2 (`ListOfSpans`), written with serde.

use bytes::Bytes;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};

use crate::trace::{Span, SpanKind};

struct JsonSpan<'a>(&'a Span);

struct Endpoint<'a>(&'a str);

struct Tags<'a>(&'a Span);

impl Serialize for Endpoint<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Endpoint", 1)?;
        s.serialize_field("serviceName", self.0)?;
        s.end()
    }
}

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tags = &self.0.tags;
        let mut map = serializer.serialize_map(Some(tags.len()))?;
        for (key, value) in tags {
            map.serialize_entry(key, value.as_str())?;
        }
        map.end()
    }
}

impl Serialize for JsonSpan<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let mut s = serializer.serialize_struct("Span", 13)?;
        s.serialize_field("traceId", span.trace_id.to_hex().as_str())?;
        if let Some(parent) = span.parent_id {
            s.serialize_field("parentId", parent.to_hex().as_str())?;
        }
        s.serialize_field("id", span.id.to_hex().as_str())?;
        s.serialize_field(
            "kind",
            match span.kind {
                SpanKind::Server => "SERVER",
                SpanKind::Client => "CLIENT",
            },
        )?;
        s.serialize_field("name", &span.name)?;
        s.serialize_field("timestamp", &span.timestamp_us)?;
        s.serialize_field("duration", &span.duration_us)?;
        s.serialize_field("localEndpoint", &Endpoint(&span.local_service))?;
        if let Some(remote) = &span.remote_service {
            s.serialize_field("remoteEndpoint", &Endpoint(remote))?;
        }
        if !span.tags.is_empty() {
            s.serialize_field("tags", &Tags(span))?;
        }
        if span.debug {
            s.serialize_field("debug", &true)?;
        }
        if span.shared {
            s.serialize_field("shared", &true)?;
        }
        s.end()
    }
}

/// A JSON array of spans.
pub fn encode(spans: &[Span]) -> Bytes {
    let mut out = Vec::with_capacity(spans.len() * 700);
    let list: Vec<JsonSpan<'_>> = spans.iter().map(JsonSpan).collect();
    // Serializing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &list);
    out.into()
}
