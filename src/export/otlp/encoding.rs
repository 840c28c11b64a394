//! Spans as OTLP: one `ResourceSpans` per service in a batch, spans as Envoy's OpenTelemetry
//! tracer writes them, encoded once as an `ExportTraceServiceRequest` that both transports
//! send as it is.

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
use prost::Message;

use crate::export::{Encode, Encoded, Payload};
use crate::policy::effective::Direction;
use crate::trace::{Span, SpanKind};

/// Collectors refuse larger messages by default (gRPC's 4 MiB); batches over it are split.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// The instrumentation name: `telemetry.sdk.name` and the scope.
pub const SDK_NAME: &str = "tracecar";

/// gRPC status codes Envoy counts as errors (A5), as the `grpc.status_code` tag holds them.
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

    /// Encodes `spans`, halving the batch until each part fits; a span that alone does not
    /// fit is counted as too large.
    fn encode_into(&self, spans: &[Span], encoded: &mut Encoded) {
        let request = request(spans);
        if request.encoded_len() <= self.max_payload {
            encoded.payloads.push(Payload {
                body: Bytes::from(request.encode_to_vec()),
                spans: spans.len(),
                headers: vec![(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                )],
            });
        } else if spans.len() == 1 {
            encoded.too_large += 1;
        } else {
            let (first, second) = spans.split_at(spans.len() / 2);
            self.encode_into(first, encoded);
            self.encode_into(second, encoded);
        }
    }
}

impl Encode for Otlp {
    fn encode(&self, spans: &[Span]) -> Encoded {
        let mut encoded = Encoded::default();
        if !spans.is_empty() {
            self.encode_into(spans, &mut encoded);
        }
        encoded
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

/// 16 bytes, big-endian; a 64-bit id has a zero high half.
pub fn trace_id_bytes(span: &Span) -> Vec<u8> {
    let high = if span.trace_id.wide {
        span.trace_id.high
    } else {
        0
    };
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&high.to_be_bytes());
    bytes.extend_from_slice(&span.trace_id.low.to_be_bytes());
    bytes
}

pub fn to_otlp(span: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let (id, parent) = ids(span);
    let client = span.kind == SpanKind::Client;
    let status_code = span
        .tag("http.status_code")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s > 0);
    let grpc_code = span.tag("grpc.status_code");
    let url = span.tag("http.url").unwrap_or("");
    let (scheme, path_and_query) = split_url(url);
    let (host, port) = split_host_port(&span.name);

    let mut attributes = Vec::with_capacity(span.tags.len() + 10);
    for (key, value) in &span.tags {
        attributes.push(string(key, value.as_str()));
    }
    if let Some(method) = span.tag("http.method") {
        attributes.push(string("http.request.method", method));
    }
    if let Some(status) = status_code {
        attributes.push(int("http.response.status_code", status));
    }
    if let Some(version) = span
        .tag("http.protocol")
        .and_then(|p| p.strip_prefix("HTTP/"))
    {
        attributes.push(string("network.protocol.version", version));
    }
    if !host.is_empty() {
        attributes.push(string("server.address", host));
    }
    if let Some(agent) = span.tag("user_agent") {
        attributes.push(string("user_agent.original", agent));
    }
    if client {
        if !url.is_empty() {
            attributes.push(string("url.full", url));
        }
        let port = port.or(match scheme {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        });
        if let Some(port) = port {
            attributes.push(int("server.port", i64::from(port)));
        }
    } else {
        if !scheme.is_empty() {
            attributes.push(string("url.scheme", scheme));
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        attributes.push(string("url.path", if path.is_empty() { "/" } else { path }));
        if let Some(query) = query {
            attributes.push(string("url.query", query));
        }
    }

    // 5xx on both kinds (and no response, and Envoy's gRPC error codes: `span.error`); 4xx
    // on CLIENT spans too.
    let http_error = status_code.is_some_and(|s| s >= 500 || (client && s >= 400));
    let grpc_error = grpc_code.is_some_and(|c| GRPC_ERROR_CODES.contains(&c));
    let error = span.error || http_error;
    if error {
        let kind = if http_error {
            status_code.map(|s| s.to_string())
        } else if grpc_error {
            grpc_code.map(str::to_string)
        } else {
            span.tag("response_flags")
                .filter(|f| *f != "-")
                .map(str::to_string)
        };
        attributes.push(string("error.type", kind.as_deref().unwrap_or("_OTHER")));
    }

    let mut flags = 0x01 | SpanFlags::ContextHasIsRemoteMask as u32;
    if parent.is_some() {
        // The parent is always another process's span: the caller's, or the application's.
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    let start = span.timestamp_us.saturating_mul(1000);
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: trace_id_bytes(span),
        span_id: id.to_be_bytes().to_vec(),
        trace_state: span.trace_state.as_deref().unwrap_or("").to_string(),
        parent_span_id: parent.map_or_else(Vec::new, |p| p.to_be_bytes().to_vec()),
        flags,
        name: match span.direction {
            Direction::Inbound => "ingress".to_string(),
            Direction::Outbound => format!("egress {}", span.name),
        },
        kind: match span.kind {
            SpanKind::Server => OtlpKind::Server as i32,
            SpanKind::Client => OtlpKind::Client as i32,
        },
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(span.duration_us.saturating_mul(1000)),
        attributes,
        status: error.then(|| Status {
            message: span.tag("grpc.message").unwrap_or("").to_string(),
            code: OtlpStatus::Error as i32,
        }),
        ..Default::default()
    }
}

/// `scheme://authority/path?query` → (`scheme`, `/path?query`).
fn split_url(url: &str) -> (&str, &str) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return ("", url);
    };
    match rest.find('/') {
        Some(at) => (scheme, &rest[at..]),
        None => (scheme, ""),
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
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
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
