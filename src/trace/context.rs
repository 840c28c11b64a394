//! The one trace context every propagation format reads into and writes from (README, Propagation):
//! ids (a trace id that keeps its width), the sampling state, and what some formats carry
//! beside them (W3C flags and `tracestate`, Datadog origin, tags and priority).

use http::HeaderValue;

use super::id::{SpanId, TraceId};

/// A caller's sampling decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingState {
    Accept,
    Deny,
    /// Debug: sample, and tell the backend to keep it.
    Debug,
}

/// The ids of a span as they travel between hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
}

/// A propagation format. A backend's native one is always written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// B3, single and multi header (openzipkin/b3-propagation).
    B3,
    /// W3C Trace Context Level 2: `traceparent`, `tracestate`.
    W3c,
    /// Datadog: `x-datadog-*`.
    Datadog,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::B3, Format::W3c, Format::Datadog];

    /// The `format` label of `tracecar_trace_context_invalid_total`.
    pub fn label(self) -> &'static str {
        match self {
            Format::B3 => "b3",
            Format::W3c => "w3c",
            Format::Datadog => "datadog",
        }
    }
}

/// The W3C `trace-flags` bit for "sampled".
pub const FLAG_SAMPLED: u8 = 0x01;
/// The W3C Level 2 `trace-flags` bit for "the trace id's right-most 7 bytes are random".
pub const FLAG_RANDOM: u8 = 0x02;

/// A trace context as read from (or to be written to) one request's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `None`: no ids (a B3 sampling state may still have come alone).
    pub ids: Option<SpanContext>,
    /// `None`: no decision came in (defer to the sampler).
    pub sampling: Option<SamplingState>,
    /// The W3C Level 2 random flag: the trace id was made random by whoever created it.
    pub random: bool,
    /// W3C `tracestate`, valid and non-empty, several headers already combined in order.
    pub trace_state: Option<HeaderValue>,
    /// `x-datadog-origin`, passed through unchanged.
    pub dd_origin: Option<HeaderValue>,
    /// The propagated `_dd.p.*` tags of `x-datadog-tags` other than `_dd.p.tid`, as received
    /// (`k=v,k=v`); `_dd.p.tid` is written from the trace id.
    pub dd_tags: Option<HeaderValue>,
    /// `x-datadog-sampling-priority` as received, so a user decision (`-1`, `2`) travels on
    /// unchanged when it is the decision this hop took.
    pub dd_priority: Option<i8>,
}

/// One format's reading of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<T> {
    /// None of the format's headers came in.
    Absent,
    /// Some came in and could not be read: ignored as a whole, counted, written fresh.
    Invalid,
    Valid(T),
}

impl<T> Read<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Read::Absent)
    }

    pub fn is_invalid(&self) -> bool {
        matches!(self, Read::Invalid)
    }

    pub fn valid(&self) -> Option<&T> {
        match self {
            Read::Valid(t) => Some(t),
            _ => None,
        }
    }
}

/// OWS (space, tab) removed at both ends.
pub(crate) fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}
