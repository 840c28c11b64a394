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
}

impl TagValue {
    pub fn as_str(&self) -> &str {
        match self {
            TagValue::Static(s) => s,
            TagValue::Shared(s) => s,
            TagValue::Owned(s) => s,
        }
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
}

impl Span {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}
