//! A finished span, as every exporter needs it. Built only for sampled requests.

use std::sync::Arc;

use super::id::{SpanId, TraceId};
use crate::policy::effective::Direction;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

/// A tag value: shared per listener, fixed, or made for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagValue {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
    /// Short text kept in place (numbers, addresses, request ids): no allocation.
    Inline(Inline),
}

impl TagValue {
    pub fn as_str(&self) -> &str {
        match self {
            TagValue::Static(s) => s,
            TagValue::Shared(s) => s,
            TagValue::Owned(s) => s,
            TagValue::Inline(s) => s.as_str(),
        }
    }

    /// `text` inline when it fits, else owned.
    pub fn text(text: &str) -> TagValue {
        match Inline::new(text) {
            Some(inline) => TagValue::Inline(inline),
            None => TagValue::Owned(text.to_owned()),
        }
    }
}

/// Up to [`Inline::CAPACITY`] bytes of UTF-8 text, in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inline(arrayvec::ArrayString<{ Inline::CAPACITY }>);

impl Inline {
    /// Room for a UUID (a request id), an IPv4 address, any u64.
    pub const CAPACITY: usize = 38;

    pub fn new(text: &str) -> Option<Inline> {
        arrayvec::ArrayString::from(text).ok().map(Inline)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub id: SpanId,
    pub parent_id: Option<SpanId>,
    pub kind: SpanKind,
    pub direction: Direction,
    /// The Host / `:authority` the request was for.
    pub name: String,
    /// Start, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub duration_us: u64,
    /// The proxy's own service.
    pub local_service: Arc<str>,
    /// Client spans: the outbound's service.
    pub remote_service: Option<Arc<str>>,
    /// The SERVER span reuses the caller's span id (Zipkin `shared`).
    pub shared: bool,
    pub debug: bool,
    pub error: bool,
    /// Envoy's tags, in a stable order, empty values left out.
    pub tags: Vec<(&'static str, TagValue)>,
    /// W3C `tracestate` as propagated (OTLP `trace_state`); `None` when there was none.
    pub trace_state: Option<Box<str>>,
}

impl Span {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}
