//! Spans as OTLP: one `ResourceSpans` per service in a batch, spans as Envoy's OpenTelemetry
//! tracer writes them, encoded once as an `ExportTraceServiceRequest` that both transports
//! send as it is.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, SpanFlags, Status, span::SpanKind as OtlpKind,
    status::StatusCode as OtlpStatus,
};

use super::wire::Services;
use crate::export::{Encode, Encoded, Payload, WriteBatch};
use crate::policy::effective::Direction;
use crate::trace::{Span, SpanKind};

/// Collectors refuse larger messages by default (gRPC's 4 MiB); batches over it are split.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// The instrumentation name: `telemetry.sdk.name` and the scope.
pub const SDK_NAME: &str = "tracecar";

/// gRPC status codes Envoy counts as errors (README, Tracing), as the `grpc.status_code` tag holds them.
const GRPC_ERROR_CODES: [&str; 7] = ["2", "4", "8", "12", "13", "14", "15"];

pub struct Otlp {
    max_payload: usize,
}

impl Default for Otlp {
    fn default() -> Self {
        Otlp::new()
    }
}

impl Otlp {
    pub fn new() -> Otlp {
        Otlp {
            max_payload: MAX_PAYLOAD_BYTES,
        }
    }

    /// With a smaller payload limit (tests of the splitting).
    pub fn with_max_payload(max_payload: usize) -> Otlp {
        Otlp { max_payload }
    }
}

impl Encode for Otlp {
    fn batch(&self, spans: usize) -> Box<dyn WriteBatch> {
        Box::new(OtlpBatch {
            max_payload: self.max_payload,
            services: Services::with_capacity(spans),
        })
    }
}

/// Each span written as it comes, under its service; `finish` frames them as requests.
struct OtlpBatch {
    max_payload: usize,
    services: Services,
}

impl WriteBatch for OtlpBatch {
    fn add(&mut self, span: &Span) {
        self.services.add(span);
    }

    fn finish(self: Box<Self>) -> Encoded {
        let mut encoded = Encoded::default();
        if !self.services.is_empty() {
            self.encode_into(0..self.services.len(), &mut encoded);
        }
        encoded
    }
}

impl OtlpBatch {
    /// The request for the spans in `range`, halved until each part fits; a span that alone
    /// does not fit is counted as too large.
    fn encode_into(&self, range: std::ops::Range<usize>, encoded: &mut Encoded) {
        let body = self.services.request(range.clone());
        if body.len() <= self.max_payload {
            encoded.payloads.push(Payload {
                body: Bytes::from(body),
                spans: range.len(),
                headers: vec![(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                )],
            });
        } else if range.len() == 1 {
            encoded.too_large += 1;
        } else {
            let middle = range.start + range.len() / 2;
            self.encode_into(range.start..middle, encoded);
            self.encode_into(middle..range.end, encoded);
        }
    }
}

/// The export request for `spans`: one `ResourceSpans` per service, in first-seen order.
pub fn request(spans: &[Span]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(&Arc<str>, Vec<opentelemetry_proto::tonic::trace::v1::Span>)> = Vec::new();
    for span in spans {
        let otlp = to_otlp(span);
        match groups
            .iter_mut()
            .find(|(service, _)| **service == span.local_service)
        {
            Some((_, list)) => list.push(otlp),
            None => groups.push((&span.local_service, vec![otlp])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(resource(service)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: SDK_NAME.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            string("service.name", service),
            string("telemetry.sdk.name", SDK_NAME),
            string("telemetry.sdk.language", "rust"),
            string("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    }
}

/// The span id and parent an OTLP span gets. A span that shares its caller's span id
/// (Zipkin's `sharedSpanContext`) would collide with the caller's CLIENT span, which OTLP
/// does not allow: it becomes a new child of that span, with an id derived from both ids, so
/// the same record always maps to the same span.
pub fn ids(span: &Span) -> (u64, Option<u64>) {
    if span.shared {
        (derived_id(span.id.0, span.trace_id.low), Some(span.id.0))
    } else {
        (span.id.0, span.parent_id.map(|p| p.0))
    }
}

fn derived_id(span_id: u64, trace_low: u64) -> u64 {
    // splitmix64's finaliser: a bijection, so distinct inputs give distinct ids.
    let mut z = span_id ^ trace_low.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 || z == span_id { z ^ 1 } else { z }
}

/// An attribute value with the type the conventions give it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
}

/// The tags the mapping reads, found while the tags are written (the first of a name wins,
/// as [`Span::tag`] finds it).
#[derive(Default)]
struct Known<'a> {
    method: Option<&'a str>,
    /// `http.status_code`, when it is a positive number.
    status: Option<i64>,
    protocol: Option<&'a str>,
    url: Option<&'a str>,
    user_agent: Option<&'a str>,
    grpc_status: Option<&'a str>,
    grpc_message: Option<&'a str>,
    response_flags: Option<&'a str>,
}

/// An OTLP span name: `ingress`, or `egress <host>`.
#[derive(Clone, Copy)]
pub enum Name<'a> {
    Ingress,
    Egress(&'a str),
}

impl Name<'_> {
    pub const EGRESS: &'static str = "egress ";

    pub fn byte_len(self) -> usize {
        match self {
            Name::Ingress => "ingress".len(),
            Name::Egress(host) => Name::EGRESS.len() + host.len(),
        }
    }
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Ingress => f.write_str("ingress"),
            Name::Egress(host) => write!(f, "{}{host}", Name::EGRESS),
        }
    }
}

/// What a span record becomes in OTLP, attributes and status aside (see [`attributes`]).
pub struct Mapped<'a> {
    pub id: u64,
    pub parent: Option<u64>,
    pub trace_id: [u8; 16],
    pub trace_state: &'a str,
    pub flags: u32,
    pub name: Name<'a>,
    pub kind: OtlpKind,
    pub start: u64,
    pub end: u64,
}

/// The span's fields under the README's OTLP mapping rules.
pub fn map(span: &Span) -> Mapped<'_> {
    let (id, parent) = ids(span);
    let mut flags = 0x01 | SpanFlags::ContextHasIsRemoteMask as u32;
    if parent.is_some() {
        // The parent is always another process's span: the caller's, or the application's.
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    let start = span.timestamp_us.saturating_mul(1000);
    let high = if span.trace_id.wide {
        span.trace_id.high
    } else {
        0
    };
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&high.to_be_bytes());
    trace_id[8..].copy_from_slice(&span.trace_id.low.to_be_bytes());
    Mapped {
        id,
        parent,
        trace_id,
        trace_state: span.trace_state.as_deref().unwrap_or(""),
        flags,
        name: match span.direction {
            Direction::Inbound => Name::Ingress,
            Direction::Outbound => Name::Egress(&span.name),
        },
        kind: match span.kind {
            SpanKind::Server => OtlpKind::Server,
            SpanKind::Client => OtlpKind::Client,
        },
        start,
        end: start.saturating_add(span.duration_us.saturating_mul(1000)),
    }
}

/// Calls `attribute` for each attribute of the span, in order: Envoy's tags as strings, then
/// the stable HTTP semantic-convention attributes with their types. Returns the span's
/// status: `Some(message)` when it is ERROR. One pass over the tags writes them and finds
/// those the rules read.
pub fn attributes<'a>(
    span: &'a Span,
    mut attribute: impl FnMut(&'a str, Value<'a>),
) -> Option<&'a str> {
    let text = |s: &'a str| Value::Str(Cow::Borrowed(s));
    let mut known = Known::default();
    let mut status = None;
    for (key, value) in &span.tags {
        attribute(key, text(value));
        let slot = match key {
            "http.method" => &mut known.method,
            "http.status_code" => &mut status,
            "http.protocol" => &mut known.protocol,
            "http.url" => &mut known.url,
            "user_agent" => &mut known.user_agent,
            "grpc.status_code" => &mut known.grpc_status,
            "grpc.message" => &mut known.grpc_message,
            "response_flags" => &mut known.response_flags,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    known.status = status
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s > 0);
    let client = span.kind == SpanKind::Client;
    // 5xx on both kinds; 4xx on CLIENT spans too.
    let http_error = known
        .status
        .is_some_and(|s| s >= 500 || (client && s >= 400));
    // ... and no response, and Envoy's gRPC error codes: `span.error`.
    let is_error = span.error || http_error;
    let url = known.url.unwrap_or("");
    let (scheme, path_and_query) = split_url(url);
    let (host, port) = split_host_port(&span.name);

    if let Some(method) = known.method {
        attribute("http.request.method", text(method));
    }
    if let Some(status) = known.status {
        attribute("http.response.status_code", Value::Int(status));
    }
    if let Some(version) = known.protocol.and_then(|p| p.strip_prefix("HTTP/")) {
        attribute("network.protocol.version", text(version));
    }
    if !host.is_empty() {
        attribute("server.address", text(host));
    }
    if let Some(agent) = known.user_agent {
        attribute("user_agent.original", text(agent));
    }
    if client {
        if !url.is_empty() {
            attribute("url.full", text(url));
        }
        let port = port.or(match scheme {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        });
        if let Some(port) = port {
            attribute("server.port", Value::Int(i64::from(port)));
        }
    } else {
        if !scheme.is_empty() {
            attribute("url.scheme", text(scheme));
        }
        let (path, query) = match path_and_query.bytes().position(|b| b == b'?') {
            Some(at) => (&path_and_query[..at], Some(&path_and_query[at + 1..])),
            None => (path_and_query, None),
        };
        attribute("url.path", text(if path.is_empty() { "/" } else { path }));
        if let Some(query) = query {
            attribute("url.query", text(query));
        }
    }
    if is_error {
        let grpc_code = known.grpc_status.filter(|c| GRPC_ERROR_CODES.contains(c));
        let kind = if http_error {
            known.status.map(|s| Cow::Owned(s.to_string()))
        } else if let Some(code) = grpc_code {
            Some(Cow::Borrowed(code))
        } else {
            known
                .response_flags
                .filter(|f| *f != "-")
                .map(Cow::Borrowed)
        };
        attribute(
            "error.type",
            Value::Str(kind.unwrap_or(Cow::Borrowed("_OTHER"))),
        );
    }
    is_error.then(|| known.grpc_message.unwrap_or(""))
}

/// The span as an `opentelemetry-proto` message.
pub fn to_otlp(span: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let mapped = map(span);
    let mut list = Vec::with_capacity(span.tags.len() + 10);
    let error = attributes(span, |key, value| {
        list.push(match value {
            Value::Str(s) => string(key, &s),
            Value::Int(i) => int(key, i),
        })
    });
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: mapped.trace_id.to_vec(),
        span_id: mapped.id.to_be_bytes().to_vec(),
        trace_state: mapped.trace_state.to_string(),
        parent_span_id: mapped
            .parent
            .map_or_else(Vec::new, |p| p.to_be_bytes().to_vec()),
        flags: mapped.flags,
        name: mapped.name.to_string(),
        kind: mapped.kind as i32,
        start_time_unix_nano: mapped.start,
        end_time_unix_nano: mapped.end,
        attributes: list,
        status: error.map(|message| Status {
            message: message.to_string(),
            code: OtlpStatus::Error as i32,
        }),
        ..Default::default()
    }
}

/// `scheme://authority/path?query` → (`scheme`, `/path?query`). Byte loops rather than
/// `str` patterns: a substring search costs more to set up than these short URLs take.
fn split_url(url: &str) -> (&str, &str) {
    let bytes = url.as_bytes();
    let Some(colon) = (0..bytes.len()).find(|&i| bytes[i..].starts_with(b"://")) else {
        return ("", url);
    };
    let rest = colon + 3;
    match bytes[rest..].iter().position(|&b| b == b'/') {
        Some(at) => (&url[..colon], &url[rest + at..]),
        None => (&url[..colon], ""),
    }
}

/// `host:port`, `[v6]:port` or a bare host → (host, port).
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (authority, None),
        };
    }
    let bytes = authority.as_bytes();
    // One colon: the first is the last. (Not `contains`: a call to `memchr` costs more than
    // these few bytes.)
    match bytes.iter().rposition(|&b| b == b':') {
        Some(at) if bytes.iter().position(|&b| b == b':') == Some(at) => {
            (&authority[..at], authority[at + 1..].parse().ok())
        }
        _ => (authority, None),
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}
