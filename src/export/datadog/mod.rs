//! Datadog agent, `/v0.4/traces`: msgpack, an array of traces, each an array of spans.
//!
//! Service `<svc>` (with `splitService`: `<svc>_INBOUND` / `<src>_OUTBOUND_<dst>`), name
//! `envoy.proxy`, resource `ingress` / `egress <host>`, type `web`, Envoy's tags as `meta`,
//! sampling priority 1 (2 for debug), 64-bit ids with the high half of a 128-bit trace id in
//! `_dd.p.tid`. Payloads stay under the agent's size limit.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::{Encode, Encoded, Payload, WriteBatch};
use crate::policy::effective::Direction;
use crate::trace::{Span, SpanKind};

/// Payloads are kept under this size (the agent refuses larger bodies).
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

const TRACE_COUNT: HeaderName = HeaderName::from_static("x-datadog-trace-count");
const META_LANG: HeaderName = HeaderName::from_static("datadog-meta-lang");
const META_TRACER_VERSION: HeaderName = HeaderName::from_static("datadog-meta-tracer-version");

pub struct Datadog {
    split_service: bool,
    max_payload: usize,
}

impl Datadog {
    pub fn new(split_service: bool) -> Datadog {
        Datadog {
            split_service,
            max_payload: MAX_PAYLOAD_BYTES,
        }
    }

    /// With a smaller payload limit (tests of the splitting).
    pub fn with_max_payload(split_service: bool, max_payload: usize) -> Datadog {
        Datadog {
            split_service,
            max_payload,
        }
    }
}

/// The span's service as Datadog shows it: the proxy's, or split by direction.
fn service(split_service: bool, span: &Span) -> Cow<'_, str> {
    if !split_service {
        return Cow::Borrowed(&span.local_service);
    }
    match span.direction {
        Direction::Inbound => Cow::Owned(format!("{}_INBOUND", span.local_service)),
        Direction::Outbound => Cow::Owned(format!(
            "{}_OUTBOUND_{}",
            span.local_service,
            span.remote_service.as_deref().unwrap_or("")
        )),
    }
}

struct DdSpan<'a> {
    span: &'a Span,
    service: Cow<'a, str>,
}

struct Meta<'a>(&'a Span);

struct Metrics(f64);

impl Serialize for Meta<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let wide = span.trace_id.wide;
        let mut map = serializer.serialize_map(Some(span.tags.len() + 1 + usize::from(wide)))?;
        for (key, value) in &span.tags {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry(
            "span.kind",
            match span.kind {
                SpanKind::Server => "server",
                SpanKind::Client => "client",
            },
        )?;
        if wide {
            // Datadog carries the high 64 bits of a 128-bit trace id as a propagated tag.
            let mut high = [0u8; 16];
            let text = format_hex(span.trace_id.high, &mut high);
            map.serialize_entry("_dd.p.tid", text)?;
        }
        map.end()
    }
}

fn format_hex(value: u64, out: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = DIGITS[((value >> ((15 - i) * 4)) & 0xf) as usize];
    }
    std::str::from_utf8(out).unwrap_or("")
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("_sampling_priority_v1", &self.0)?;
        map.end()
    }
}

impl Serialize for DdSpan<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let span = self.span;
        let mut map = serializer.serialize_map(Some(12))?;
        map.serialize_entry("trace_id", &span.trace_id.low)?;
        map.serialize_entry("span_id", &span.id.0)?;
        map.serialize_entry("parent_id", &span.parent_id.map_or(0, |p| p.0))?;
        map.serialize_entry("name", "envoy.proxy")?;
        match span.direction {
            Direction::Inbound => map.serialize_entry("resource", "ingress")?,
            Direction::Outbound => {
                map.serialize_entry("resource", &format!("egress {}", span.name))?
            }
        }
        map.serialize_entry("service", &self.service)?;
        map.serialize_entry("type", "web")?;
        map.serialize_entry("start", &(span.timestamp_us.saturating_mul(1000) as i64))?;
        map.serialize_entry("duration", &(span.duration_us.saturating_mul(1000) as i64))?;
        map.serialize_entry("error", &i32::from(span.error))?;
        map.serialize_entry("meta", &Meta(span))?;
        map.serialize_entry("metrics", &Metrics(if span.debug { 2.0 } else { 1.0 }))?;
        map.end()
    }
}

impl Encode for Datadog {
    fn batch(&self, spans: usize) -> Box<dyn WriteBatch> {
        Box::new(DatadogBatch {
            split_service: self.split_service,
            max_payload: self.max_payload,
            written: Vec::with_capacity(spans * SPAN_BYTES),
            spans: Vec::with_capacity(spans),
            unwritten: 0,
        })
    }
}

/// Bytes a span's msgpack map takes, for the batch's first size.
const SPAN_BYTES: usize = 768;

/// Each span's msgpack map as it comes; `finish` groups them by trace.
struct DatadogBatch {
    split_service: bool,
    max_payload: usize,
    written: Vec<u8>,
    /// Per span: its 64-bit trace id (as the agent sees it) and where its map lies.
    spans: Vec<(u64, usize, usize)>,
    /// Spans msgpack could not take (not seen: a map of strings and numbers always writes).
    unwritten: usize,
}

impl WriteBatch for DatadogBatch {
    fn add(&mut self, span: &Span) {
        let start = self.written.len();
        let service = service(self.split_service, span);
        match rmp_serde::encode::write(&mut self.written, &DdSpan { span, service }) {
            Ok(()) => self
                .spans
                .push((span.trace_id.low, start, self.written.len())),
            Err(_) => {
                self.written.truncate(start);
                self.unwritten += 1;
            }
        }
    }

    fn finish(self: Box<Self>) -> Encoded {
        // Group by trace, keeping first-seen order.
        let mut traces: Vec<(u64, Vec<usize>)> = Vec::new();
        for (i, &(trace, _, _)) in self.spans.iter().enumerate() {
            match traces.iter_mut().find(|(id, _)| *id == trace) {
                Some((_, members)) => members.push(i),
                None => traces.push((trace, vec![i])),
            }
        }
        let mut encoded = Encoded {
            payloads: Vec::new(),
            too_large: self.unwritten,
        };
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut chunk_spans = 0usize;
        let mut chunk_bytes = 0usize;
        for (_, members) in &traces {
            // A trace: an array of its spans' maps.
            let mut bytes = Vec::new();
            // Writing to a Vec cannot fail.
            let _ = rmp::encode::write_array_len(&mut bytes, members.len() as u32);
            for &i in members {
                let (_, start, end) = self.spans[i];
                bytes.extend_from_slice(&self.written[start..end]);
            }
            // 5 bytes: the largest msgpack array header.
            if bytes.len() + 5 > self.max_payload {
                encoded.too_large += members.len();
                continue;
            }
            if chunk_bytes + bytes.len() + 5 > self.max_payload && !chunks.is_empty() {
                encoded
                    .payloads
                    .push(payload(std::mem::take(&mut chunks), chunk_spans));
                chunk_spans = 0;
                chunk_bytes = 0;
            }
            chunk_bytes += bytes.len();
            chunk_spans += members.len();
            chunks.push(bytes);
        }
        if !chunks.is_empty() {
            encoded.payloads.push(payload(chunks, chunk_spans));
        }
        encoded
    }
}

fn payload(traces: Vec<Vec<u8>>, spans: usize) -> Payload {
    let mut body = Vec::with_capacity(traces.iter().map(Vec::len).sum::<usize>() + 5);
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut body, traces.len() as u32);
    for trace in &traces {
        body.extend_from_slice(trace);
    }
    Payload {
        body: Bytes::from(body),
        spans,
        headers: vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/msgpack"),
            ),
            (TRACE_COUNT, HeaderValue::from(traces.len())),
            (META_LANG, HeaderValue::from_static("rust")),
            (
                META_TRACER_VERSION,
                HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Datadog, DdSpan, service};
    use crate::export::Encode;
    use crate::policy::effective::Direction;
    use crate::trace::id::{SpanId, TraceId};
    use crate::trace::{Span, SpanKind};

    fn span(trace: u64, id: u64) -> Span {
        Span {
            trace_id: TraceId {
                high: 7,
                low: trace,
                wide: true,
            },
            id: SpanId(id),
            parent_id: None,
            kind: SpanKind::Client,
            direction: Direction::Outbound,
            name: "backend".into(),
            timestamp_us: 1,
            duration_us: 2,
            local_service: Arc::from("web"),
            remote_service: Some(Arc::from("backend")),
            shared: false,
            debug: false,
            error: false,
            tags: [("http.url", "http://backend/"), ("component", "proxy")]
                .into_iter()
                .collect(),
            trace_state: None,
        }
    }

    #[test]
    fn spans_written_one_by_one_make_the_payload_serde_writes_for_their_traces() {
        // Each span's map is written as it is queued and the traces are framed around them
        // at the end: byte for byte what serializing the grouped spans at once gives.
        let spans = [span(1, 1), span(2, 2), span(1, 3), span(3, 4), span(2, 5)];
        for split in [false, true] {
            let encoded = Datadog::new(split).encode(&spans);
            fn dd(split: bool, span: &Span) -> DdSpan<'_> {
                DdSpan {
                    span,
                    service: service(split, span),
                }
            }
            let traces = vec![
                vec![dd(split, &spans[0]), dd(split, &spans[2])],
                vec![dd(split, &spans[1]), dd(split, &spans[4])],
                vec![dd(split, &spans[3])],
            ];
            let want = rmp_serde::to_vec(&traces).unwrap_or_default();
            assert_eq!(encoded.payloads.len(), 1);
            assert_eq!(
                &encoded.payloads[0].body[..],
                &want[..],
                "splitService {split}"
            );
            assert_eq!(encoded.payloads[0].spans, 5);
        }
    }
}
