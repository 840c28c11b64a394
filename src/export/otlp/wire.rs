//! The export request written straight to bytes: exactly what prost writes for the
//! `opentelemetry-proto` message that [`super::encoding::request`] builds (the tests compare
//! the two byte for byte), without building the message first. Building it costs a few
//! dozen allocations per span, most of the encoder's time.
//!
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and its imports,
//! written in field-number order and with default values left out, as prost does.

use std::sync::Arc;

use prost::encoding::encoded_len_varint;

use super::encoding::{Name, SDK_NAME, Value, attributes, map};
use crate::export::out::{Out, copy_short, write_onto, written};
use crate::trace::Span;

// Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
const fn key(field: u64, wire_type: u64) -> u64 {
    (field << 3) | wire_type
}

/// Bytes a span takes, for the output's first size; a batch of larger spans is written again
/// into as many bytes as the first try counted.
const SPAN_BYTES: usize = 1024;

/// The encoded `ExportTraceServiceRequest` for `spans`: one `ResourceSpans` per service, in
/// first-seen order.
pub fn encode_request(spans: &[Span]) -> Vec<u8> {
    let mut services = Services::default();
    for span in spans {
        services.add(span);
    }
    services.request(0..spans.len())
}

/// A batch's spans by service, each written as it comes, as the `ScopeSpans.spans` field it
/// will be; a request is then the services' frames around those bytes, copied in once.
///
/// A nested message's length is written in front of it when it is done, in bytes reserved
/// for it (see [`Out::nested`]). Building the message in nested buffers and copying them
/// outwards at every level, and the fresh pages those buffers touched, was most of an
/// encoder's time for a batch of hundreds of spans.
#[derive(Default)]
pub struct Services {
    /// Each service, in first-seen order, with its spans' fields one after another.
    services: Vec<(Arc<str>, Vec<u8>)>,
    /// Per span, in the order added: its service and where its field lies.
    spans: Vec<(usize, usize, usize)>,
}

impl Services {
    pub fn with_capacity(spans: usize) -> Services {
        Services {
            services: Vec::new(),
            spans: Vec::with_capacity(spans),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn add(&mut self, span: &Span) {
        let service = match self
            .services
            .iter()
            .position(|(service, _)| **service == *span.local_service)
        {
            Some(at) => at,
            None => {
                let room = SPAN_BYTES * self.spans.capacity().max(1);
                self.services
                    .push((span.local_service.clone(), Vec::with_capacity(room)));
                self.services.len() - 1
            }
        };
        let written = &mut self.services[service].1;
        let start = written.len();
        // ScopeSpans.spans = 2; a span takes from 128 bytes to 16 kB: a two-byte length.
        write_onto(written, SPAN_BYTES, |out| {
            out.nested(2, 2, |out| write_span(span, out))
        });
        self.spans.push((service, start, written.len()));
    }

    /// The request for the spans added `range` (in the order added).
    pub fn request(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        let Some(chosen) = self.spans.get(range.clone()) else {
            return Vec::new();
        };
        // Each service's share of the range, in first-seen order: all of its spans at once
        // when the range is the whole batch.
        let whole = range.len() == self.spans.len();
        let mut parts: Vec<(usize, Vec<&[u8]>)> = Vec::new();
        for &(service, start, end) in chosen {
            let field = &self.services[service].1[start..end];
            match parts.iter_mut().find(|(s, _)| *s == service) {
                Some((_, fields)) if !whole => fields.push(field),
                Some(_) => {}
                None if whole => parts.push((service, vec![&self.services[service].1[..]])),
                None => parts.push((service, vec![field])),
            }
        }
        let size: usize = parts
            .iter()
            .flat_map(|(_, fields)| fields.iter().map(|f| f.len()))
            .sum();
        written(size + 256 * parts.len(), |out| {
            for (service, fields) in &parts {
                write_resource_spans(&self.services[*service].0, fields, out);
            }
        })
    }
}

fn write_resource_spans(service: &str, fields: &[&[u8]], out: &mut Out<'_>) {
    // ExportTraceServiceRequest.resource_spans = 1; a service's spans take a few hundred
    // kB: a three-byte length.
    out.nested(1, 3, |out| {
        // ResourceSpans.resource = 1
        out.nested(1, 1, |out| {
            for (k, v) in [
                ("service.name", service),
                ("telemetry.sdk.name", SDK_NAME),
                ("telemetry.sdk.language", "rust"),
                ("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
            ] {
                // Resource.attributes = 1
                key_value(1, k, &Value::Str(v.into()), out);
            }
        });
        // ResourceSpans.scope_spans = 2
        out.nested(2, 3, |out| {
            // ScopeSpans.scope = 1: InstrumentationScope { name = 1, version = 2 }
            out.nested(1, 1, |out| {
                string_field(1, SDK_NAME, out);
                string_field(2, env!("CARGO_PKG_VERSION"), out);
            });
            for field in fields {
                out.bytes(field);
            }
        });
    });
}

/// The protobuf pieces of the shared output.
impl Out<'_> {
    /// Field `field` (below 16: a one-byte key) holding what `write` writes, behind its
    /// length. The length gets `guess` bytes before `write` runs; when it needs another
    /// number of bytes, the content moves once.
    fn nested(&mut self, field: u64, guess: usize, write: impl FnOnce(&mut Out)) {
        self.byte(key(field, 2) as u8);
        let at = self.at;
        self.bytes(&[0; 3][..guess]);
        write(self);
        let len = self.at - at - guess;
        let needed = encoded_len_varint(len as u64);
        let end = at + needed + len;
        self.reach = self.reach.max(self.at);
        if self.short || end > self.buf.len() {
            self.at = end;
            self.short = true;
            return;
        }
        if needed != guess {
            self.buf
                .copy_within(at + guess..at + guess + len, at + needed);
            self.at = end;
        }
        prost::encoding::encode_varint(len as u64, &mut &mut self.buf[at..at + needed]);
    }

    /// A varint, as prost writes it; most are one byte (keys, short lengths).
    #[inline(always)]
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte((value as u8) | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    /// The key and length of a length-delimited field whose `len` bytes follow.
    #[inline(always)]
    fn delimited_header(&mut self, field: u64, len: usize) {
        self.varint(key(field, 2));
        self.varint(len as u64);
    }

    #[inline(always)]
    fn delimited(&mut self, field: u64, bytes: &[u8]) {
        self.delimited_header(field, bytes.len());
        self.bytes(bytes);
    }
}

fn write_span(span: &Span, shared: &mut Out<'_>) {
    let mapped = &map(span);
    let mut local = shared.local();
    let out = &mut local;
    out.delimited(1, &mapped.trace_id);
    out.delimited(2, &mapped.id.to_be_bytes());
    string_field(3, mapped.trace_state, out);
    if let Some(parent) = mapped.parent {
        out.delimited(4, &parent.to_be_bytes());
    }
    out.delimited_header(5, mapped.name.byte_len());
    match mapped.name {
        Name::Ingress => out.bytes(b"ingress"),
        Name::Egress(host) => {
            out.bytes(Name::EGRESS.as_bytes());
            out.bytes(host.as_bytes());
        }
    }
    let kind = mapped.kind as i32;
    if kind != 0 {
        out.byte(key(6, 0) as u8);
        out.varint(kind as u64);
    }
    if mapped.start != 0 {
        out.byte(key(7, 1) as u8);
        out.bytes(&mapped.start.to_le_bytes());
    }
    if mapped.end != 0 {
        out.byte(key(8, 1) as u8);
        out.bytes(&mapped.end.to_le_bytes());
    }
    let error = attributes(span, |k, v| key_value(9, k, &v, out));
    if let Some(message) = error {
        // Status { message = 2, code = 3 (ERROR = 2) }
        out.delimited_header(15, string_field_len(message) + 2);
        string_field(2, message, out);
        out.byte(key(3, 0) as u8);
        out.byte(2);
    }
    if mapped.flags != 0 {
        out.varint(key(16, 5));
        out.bytes(&mapped.flags.to_le_bytes());
    }
    let (at, short) = (local.at, local.short);
    shared.take(at, short);
}

/// A `KeyValue { key = 1, value = 2: AnyValue { string_value = 1 | int_value = 3 } }` as
/// field `field`, lengths computed up front so nothing is copied twice.
#[inline(always)]
fn key_value(field: u64, k: &str, value: &Value<'_>, out: &mut Out<'_>) {
    let written = match value {
        Value::Str(s) => short_string_pair(field, k.as_bytes(), s.as_bytes(), out),
        Value::Int(i) => short_int_pair(field, k.as_bytes(), *i, out),
    };
    if !written {
        any_key_value(field, k, value, out);
    }
}

/// [`key_value`] for any pair, with lengths of any size.
#[inline(never)]
fn any_key_value(field: u64, k: &str, value: &Value<'_>, shared: &mut Out<'_>) {
    let mut local = shared.local();
    let out = &mut local;
    let any_len = match value {
        Value::Str(s) => 1 + encoded_len_varint(s.len() as u64) + s.len(),
        Value::Int(i) => 1 + encoded_len_varint(*i as u64),
    };
    let kv_len = string_field_len(k) + 1 + encoded_len_varint(any_len as u64) + any_len;
    out.delimited_header(field, kv_len);
    string_field(1, k, out);
    out.delimited_header(2, any_len);
    match value {
        // A oneof member is written even when empty.
        Value::Str(s) => out.delimited(1, s.as_bytes()),
        Value::Int(i) => {
            out.byte(key(3, 0) as u8);
            out.varint(*i as u64);
        }
    }
    let (at, short) = (local.at, local.short);
    shared.take(at, short);
}

/// Most attributes: a string key and value whose whole `KeyValue` is under 128 bytes, so
/// every length is one byte and the bytes are at fixed places after the key. Written with
/// one bounds check; false, with nothing written, for any other pair or when the output is
/// out of room (the general path then counts it).
#[inline(always)]
fn short_string_pair(field: u64, k: &[u8], v: &[u8], out: &mut Out<'_>) -> bool {
    // KeyValue { key = 1 (2 + k), value = 2 (2 + AnyValue { string_value = 1 (2 + v) }) }
    let kv_len = 2 + k.len() + 2 + 2 + v.len();
    if k.is_empty() || kv_len >= 0x80 {
        return false;
    }
    let Some(dst) = out.buf.get_mut(out.at..out.at + 2 + kv_len) else {
        return false;
    };
    let (head, rest) = dst.split_at_mut(4);
    head.copy_from_slice(&[
        key(field, 2) as u8,
        kv_len as u8,
        key(1, 2) as u8,
        k.len() as u8,
    ]);
    let (key_bytes, rest) = rest.split_at_mut(k.len());
    copy_short(key_bytes, k);
    let (middle, value_bytes) = rest.split_at_mut(4);
    middle.copy_from_slice(&[
        key(2, 2) as u8,
        (2 + v.len()) as u8,
        key(1, 2) as u8,
        v.len() as u8,
    ]);
    copy_short(value_bytes, v);
    out.at += 2 + kv_len;
    true
}

/// [`short_string_pair`] for an integer value that is not negative (status codes, ports).
/// Its own copy of the head rather than a helper both share: with one, LLVM merged the two
/// callers' key copies back into calls to `memcpy` (see [`copy_short`]).
#[inline(always)]
fn short_int_pair(field: u64, k: &[u8], value: i64, out: &mut Out<'_>) -> bool {
    // KeyValue { key = 1 (2 + k), value = 2 (2 + AnyValue { int_value = 3 (1 + varint) }) }
    let Ok(value) = u64::try_from(value) else {
        return false;
    };
    let varint = encoded_len_varint(value);
    let kv_len = 2 + k.len() + 2 + 1 + varint;
    if k.is_empty() || kv_len >= 0x80 {
        return false;
    }
    let Some(dst) = out.buf.get_mut(out.at..out.at + 2 + kv_len) else {
        return false;
    };
    let (head, rest) = dst.split_at_mut(4);
    head.copy_from_slice(&[
        key(field, 2) as u8,
        kv_len as u8,
        key(1, 2) as u8,
        k.len() as u8,
    ]);
    let (key_bytes, rest) = rest.split_at_mut(k.len());
    copy_short(key_bytes, k);
    let (middle, mut number) = rest.split_at_mut(3);
    middle.copy_from_slice(&[key(2, 2) as u8, (1 + varint) as u8, key(3, 0) as u8]);
    prost::encoding::encode_varint(value, &mut number);
    out.at += 2 + kv_len;
    true
}

/// The size of a string field (below 16) as [`string_field`] writes it.
fn string_field_len(value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        1 + encoded_len_varint(value.len() as u64) + value.len()
    }
}

/// A string field; empty strings are left out.
fn string_field(field: u64, value: &str, out: &mut Out<'_>) {
    if !value.is_empty() {
        out.delimited(field, value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::{Services, encode_request, written};
    use crate::export::otlp::encoding::request;
    use crate::policy::effective::Direction;
    use crate::trace::id::{SpanId, TraceId};
    use crate::trace::{Span, SpanKind, Tags};

    fn span(n: u64) -> Span {
        let inbound = n.is_multiple_of(2);
        let mut tags: Tags = [
            ("node_id", "default.web-1"),
            ("component", "proxy"),
            ("http.url", &format!("http://backend.mesh/p/{n}?q={n}")),
            ("http.method", "POST"),
            ("http.protocol", "HTTP/2"),
            ("user_agent", ""),
        ]
        .into_iter()
        .collect();
        let status = if n.is_multiple_of(5) {
            503
        } else {
            200 + n % 300
        };
        tags.push_u64("http.status_code", status);
        tags.push("response_flags", "-");
        if n.is_multiple_of(3) {
            tags.push("grpc.status_code", "14");
            tags.push("grpc.message", "upstream gone");
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

    /// Lengths are written in bytes reserved before the content: a span too small for the
    /// guess (under 128 bytes) and one too large for it (over 16 kB) must still come out
    /// exactly as prost writes them.
    #[test]
    fn spans_whose_lengths_miss_the_guess_are_still_prosts_encoding() {
        let mut tiny = span(1);
        tiny.tags.clear();
        tiny.trace_state = None;
        tiny.name = "a".into();
        let mut huge = span(2);
        huge.tags.push("http.url", &"x".repeat(20_000));
        let spans = [tiny, huge, span(3)];
        let lengths: Vec<usize> = request(&spans).resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(Message::encoded_len)
            .collect();
        assert!(lengths[0] < 128 && lengths[1] > 16_384, "{lengths:?}");
        assert_eq!(encode_request(&spans), request(&spans).encode_to_vec());
    }

    /// The first try ran out of room, and a length then took back the bytes guessed for
    /// it: the second try must have room for where the content reached, not where it ended.
    #[test]
    fn a_message_that_outgrew_the_first_size_is_written_whole_the_second_time() {
        let bytes = written(5, |out| out.nested(1, 3, |out| out.bytes(b"abc")));
        assert_eq!(bytes, [0x0a, 3, b'a', b'b', b'c']);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Keys and values of every length around the short-pair limit (128 bytes) and the
        /// inline copies' sizes, in batches that outgrow the first size.
        #[test]
        fn any_tag_lengths_give_prosts_encoding(
            lengths in proptest::collection::vec((0usize..140, 0usize..300), 0..40),
            services in 1u64..4,
        ) {
            let spans: Vec<Span> = lengths
                .iter()
                .enumerate()
                .map(|(i, (key_len, value_len))| {
                    let mut span = span(i as u64 % services + 1);
                    let key: &'static str = "k".repeat(*key_len).leak();
                    span.tags.push(key, &"v".repeat(*value_len));
                    span
                })
                .collect();
            proptest::prop_assert_eq!(encode_request(&spans), request(&spans).encode_to_vec());
        }
    }

    #[test]
    fn an_empty_batch_is_an_empty_request() {
        assert!(encode_request(&[]).is_empty());
    }

    #[test]
    fn a_request_for_part_of_a_batch_is_the_request_for_those_spans_alone() {
        // A batch over the size limit is sent in halves, each framed from the spans' bytes
        // written as they were queued.
        let spans: Vec<Span> = (0..9).map(span).collect();
        let mut services = Services::default();
        for span in &spans {
            services.add(span);
        }
        for (start, end) in [(0, 9), (0, 4), (4, 9), (3, 4), (2, 7)] {
            assert_eq!(
                services.request(start..end),
                request(&spans[start..end]).encode_to_vec(),
                "{start}..{end}"
            );
        }
    }
}
