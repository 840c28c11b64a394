//! Per-request tracing decisions, no I/O: propagation (B3, W3C Trace Context, Datadog), the sampler, the span record and its
//! tags, and the layer that puts them in the data path.

pub mod b3;
pub mod context;
pub mod datadog;
pub mod id;
pub mod layer;
pub mod meshtrace;
pub mod propagation;
pub mod sampler;
pub mod span;
pub mod w3c;

pub use context::Format;
pub use layer::{TraceConfig, TracedBackend, Tracer};
pub use span::{Span, SpanKind, Tags};

/// Where finished spans go. Implemented by the exporter; must never block or wait: the data
/// path calls it as a request ends. The span is lent, not given: the exporter writes it into
/// its batch there and then, and the caller frees it (no move of the span into the sink).
pub trait SpanSink: Send + Sync + 'static {
    fn try_send(&self, span: &Span);
}
