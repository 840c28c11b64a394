//! The export request written straight to bytes: exactly what prost writes for the
//! `opentelemetry-proto` message that [`super::encoding::request`] builds (the tests compare
//! the two byte for byte), without building the message first. Building it costs a few
//! dozen allocations per span, most of the encoder's time.
//!
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and its imports,
//! written in field-number order and with default values left out, as prost does.

use std::sync::Arc;

use prost::encoding::encoded_len_varint;

use super::encoding::{SDK_NAME, Value, attributes, map};
use crate::trace::Span;

// Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
const fn key(field: u64, wire_type: u64) -> u64 {
    (field << 3) | wire_type
}

/// The encoded `ExportTraceServiceRequest` for `spans`: one `ResourceSpans` per service, in
/// first-seen order.
///
/// Each service's spans are written once into one reused buffer, and that buffer once into
/// the output behind headers whose lengths are computed, not copied through nested buffers:
/// for a batch of hundreds of spans the nested copies (and the fresh pages they touched) were
/// most of the encoder's time.
pub fn encode_request(spans: &[Span]) -> Vec<u8> {
    // Span indices per service, in first-seen order; a batch rarely has more than a few.
    let mut groups: Vec<(&Arc<str>, Vec<usize>)> = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|(service, _)| **service == span.local_service)
        {
            Some((_, members)) => members.push(i),
            None => groups.push((&span.local_service, vec![i])),
        }
    }
    let mut out = Vec::with_capacity(spans.len() * 1024);
    let mut body = Vec::new();
    let mut scratch = Vec::with_capacity(2048);
    let mut resource = Vec::with_capacity(256);
    // ScopeSpans.scope = 1: InstrumentationScope { name = 1, version = 2 }
    let mut scope = Vec::with_capacity(32);
    string_field(1, SDK_NAME, &mut scope);
    string_field(2, env!("CARGO_PKG_VERSION"), &mut scope);
    for (service, members) in &groups {
        body.clear();
        for &i in members {
            scratch.clear();
            write_span(&spans[i], &mut scratch);
            // ScopeSpans.spans = 2
            length_delimited(2, &scratch, &mut body);
        }
        resource.clear();
        for (k, v) in [
            ("service.name", &***service),
            ("telemetry.sdk.name", SDK_NAME),
            ("telemetry.sdk.language", "rust"),
            ("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ] {
            // Resource.attributes = 1
            key_value(1, k, &Value::Str(v.into()), &mut resource);
        }
        let scope_spans_len = delimited_len(scope.len()) + body.len();
        // ResourceSpans.resource = 1, .scope_spans = 2
        let resource_spans_len = delimited_len(resource.len()) + delimited_len(scope_spans_len);
        // ExportTraceServiceRequest.resource_spans = 1
        delimited_header(1, resource_spans_len, &mut out);
        length_delimited(1, &resource, &mut out);
        delimited_header(2, scope_spans_len, &mut out);
        length_delimited(1, &scope, &mut out);
        out.extend_from_slice(&body);
    }
    out
}

/// The size of a length-delimited field of `len` bytes whose number is below 16 (one key
/// byte).
fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn write_span(span: &Span, out: &mut Vec<u8>) {
    let mapped = map(span);
    length_delimited(1, &mapped.trace_id, out);
    length_delimited(2, &mapped.id.to_be_bytes(), out);
    string_field(3, mapped.trace_state, out);
    if let Some(parent) = mapped.parent {
        length_delimited(4, &parent.to_be_bytes(), out);
    }
    string_field(5, &mapped.name, out);
    let kind = mapped.kind as i32;
    if kind != 0 {
        encode_varint(key(6, 0), out);
        encode_varint(kind as u64, out);
    }
    if mapped.start != 0 {
        encode_varint(key(7, 1), out);
        out.extend_from_slice(&mapped.start.to_le_bytes());
    }
    if mapped.end != 0 {
        encode_varint(key(8, 1), out);
        out.extend_from_slice(&mapped.end.to_le_bytes());
    }
    attributes(span, |k, v| key_value(9, k, &v, out));
    if let Some(message) = mapped.error {
        // Status { message = 2, code = 3 (ERROR = 2) }
        let mut status = Vec::with_capacity(message.len() + 8);
        string_field(2, message, &mut status);
        encode_varint(key(3, 0), &mut status);
        encode_varint(2, &mut status);
        length_delimited(15, &status, out);
    }
    if mapped.flags != 0 {
        encode_varint(key(16, 5), out);
        out.extend_from_slice(&mapped.flags.to_le_bytes());
    }
}

/// A `KeyValue { key = 1, value = 2: AnyValue { string_value = 1 | int_value = 3 } }` as
/// field `field`, lengths computed up front so nothing is copied twice.
fn key_value(field: u64, k: &str, value: &Value<'_>, out: &mut Vec<u8>) {
    let any_len = match value {
        Value::Str(s) => 1 + encoded_len_varint(s.len() as u64) + s.len(),
        Value::Int(i) => 1 + encoded_len_varint(*i as u64),
    };
    let kv_len = if k.is_empty() {
        0
    } else {
        1 + encoded_len_varint(k.len() as u64) + k.len()
    } + 1
        + encoded_len_varint(any_len as u64)
        + any_len;
    delimited_header(field, kv_len, out);
    string_field(1, k, out);
    delimited_header(2, any_len, out);
    match value {
        // A oneof member is written even when empty.
        Value::Str(s) => {
            length_delimited(1, s.as_bytes(), out);
        }
        Value::Int(i) => {
            encode_varint(key(3, 0), out);
            encode_varint(*i as u64, out);
        }
    }
}

/// A string field; empty strings are left out.
fn string_field(field: u64, value: &str, out: &mut Vec<u8>) {
    if !value.is_empty() {
        length_delimited(field, value.as_bytes(), out);
    }
}

/// A varint, as prost writes it; most are one byte (keys, short lengths).
#[inline]
fn encode_varint(value: u64, out: &mut Vec<u8>) {
    if value < 0x80 {
        out.push(value as u8);
    } else {
        prost::encoding::encode_varint(value, out);
    }
}

/// The key and length of a length-delimited field whose `len` bytes follow.
fn delimited_header(field: u64, len: usize, out: &mut Vec<u8>) {
    encode_varint(key(field, 2), out);
    encode_varint(len as u64, out);
}

fn length_delimited(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    delimited_header(field, bytes.len(), out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::encode_request;
    use crate::export::otlp::encoding::request;
    use crate::policy::effective::Direction;
    use crate::trace::id::{SpanId, TraceId};
    use crate::trace::{Span, SpanKind, TagValue};

    fn span(n: u64) -> Span {
        let inbound = n.is_multiple_of(2);
        let mut tags = vec![
            ("node_id", TagValue::Static("default.web-1")),
            ("component", TagValue::Static("proxy")),
            (
                "http.url",
                TagValue::Owned(format!("http://backend.mesh/p/{n}?q={n}")),
            ),
            ("http.method", TagValue::Static("POST")),
            ("http.protocol", TagValue::Static("HTTP/2")),
            ("user_agent", TagValue::Static("")),
            (
                "http.status_code",
                TagValue::text(
                    &(if n.is_multiple_of(5) {
                        503
                    } else {
                        200 + n % 300
                    })
                    .to_string(),
                ),
            ),
            ("response_flags", TagValue::Static("-")),
        ];
        if n.is_multiple_of(3) {
            tags.push(("grpc.status_code", TagValue::Static("14")));
            tags.push(("grpc.message", TagValue::Static("upstream gone")));
        }
        Span {
            trace_id: TraceId {
                high: n * 7,
                low: n * 11 + 1,
                wide: n.is_multiple_of(4),
            },
            id: SpanId(n * 13 + 5),
            parent_id: (!n.is_multiple_of(7)).then_some(SpanId(n + 99)),
            kind: if inbound {
                SpanKind::Server
            } else {
                SpanKind::Client
            },
            direction: if inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            name: if n.is_multiple_of(2) {
                "backend.mesh".into()
            } else {
                "[::1]:8080".into()
            },
            timestamp_us: 1_700_000_000_000_000 + n,
            duration_us: n * 3,
            local_service: Arc::from(if n.is_multiple_of(3) {
                "web"
            } else {
                "backend"
            }),
            remote_service: None,
            shared: n.is_multiple_of(6),
            debug: false,
            error: n.is_multiple_of(3) || n.is_multiple_of(5),
            tags,
            trace_state: (!n.is_multiple_of(2)).then(|| "rojo=00f067aa0ba902b7".into()),
        }
    }

    #[test]
    fn the_written_bytes_are_prosts_encoding_of_the_message() {
        let spans: Vec<Span> = (0..60).map(span).collect();
        // Not assert_eq!: a mismatch would print two 40 kB byte lists.
        let ours = encode_request(&spans);
        let prost = request(&spans).encode_to_vec();
        let first_difference = ours.iter().zip(&prost).position(|(a, b)| a != b);
        assert!(
            ours == prost,
            "lengths {} vs {}, first difference at {first_difference:?}",
            ours.len(),
            prost.len()
        );
    }

    #[test]
    fn an_empty_batch_is_an_empty_request() {
        assert!(encode_request(&[]).is_empty());
    }
}
