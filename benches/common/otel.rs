//! The OpenTelemetry side shared by the `otel-compare` benches (`otel_compare`, `otlp_compare`):
//! the same spans as `SpanData`, the service name as an OpenTelemetry `Resource`, the few spans
//! both benches print field by field, and the round statistics they report.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tracecar::trace::{Span, SpanKind};

/// The scope an OpenTelemetry-instrumented tracecar would record its spans under.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("tracecar")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The service name the OpenTelemetry way: `service.name` on the exporter's resource (with the
/// SDK's default detectors, as an application would build it).
pub fn resource() -> Resource {
    Resource::builder().with_service_name("web").build()
}

/// The same span in OpenTelemetry's terms, as an OTel-instrumented proxy would record it.
pub fn to_otel(span: &Span, scope: &InstrumentationScope) -> SpanData {
    let trace = (u128::from(span.trace_id.high) << 64) | u128::from(span.trace_id.low);
    let start = UNIX_EPOCH + Duration::from_micros(span.timestamp_us);
    let mut attributes: Vec<KeyValue> = span
        .tags
        .iter()
        .map(|(k, v)| KeyValue::new(k, v.to_string()))
        .collect();
    if let Some(remote) = &span.remote_service {
        // OpenTelemetry's way to name the remote service.
        attributes.push(KeyValue::new("peer.service", remote.to_string()));
    }
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace.to_be_bytes()),
            SpanId::from_bytes(span.id.0.to_be_bytes()),
            // OpenTelemetry has no debug flag: sampled is all it can say.
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: span
            .parent_id
            .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.0.to_be_bytes())),
        parent_span_is_remote: span.kind == SpanKind::Server && span.parent_id.is_some(),
        span_kind: match span.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
        },
        name: Cow::Owned(span.name.clone()),
        start_time: start,
        end_time: start + Duration::from_micros(span.duration_us),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if span.error {
            Status::error(format!(
                "HTTP {}",
                span.tag("http.status_code").unwrap_or("")
            ))
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}

/// The spans printed field by field, with what each one is: the cases where the two sides
/// are most likely to disagree (root, shared context, debug, 64- and 128-bit trace ids,
/// remote service, error and success).
pub fn samples() -> [(Span, &'static str); 3] {
    let sidecar = super::Sidecar::default();
    let mut ids = super::Ids::new(42);
    let [root, client] = super::request_spans(
        &sidecar,
        &mut ids,
        0,
        super::Shape {
            incoming: true,
            caller_parent: false,
            wide: false,
            debug: true,
            grpc: false,
            status: 503,
        },
    );
    let [child, _] = super::request_spans(
        &sidecar,
        &mut ids,
        1,
        super::Shape {
            incoming: true,
            caller_parent: true,
            wide: true,
            debug: false,
            grpc: true,
            status: 0,
        },
    );
    [
        (
            root,
            "SERVER span, root of its trace (caller sent `b3: <64-bit trace>-<span>-d`), shared, \
             debug, 64-bit trace id, answered 503",
        ),
        (
            client,
            "CLIENT span of the same request (remote service `backend`), 503",
        ),
        (
            child,
            "SERVER span, shared, with a parent, 128-bit trace id, gRPC OK",
        ),
    ]
}

pub fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `median (min–max)` of per-round rates.
pub fn spread(rates: &[f64]) -> String {
    format!(
        "{:.0} ({:.0}–{:.0})",
        median(rates),
        rates.iter().copied().fold(f64::MAX, f64::min),
        rates.iter().copied().fold(0.0, f64::max)
    )
}
