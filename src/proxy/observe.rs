//! The seam between the data path and what watches it (tracing, metrics). The data path calls
//! an [`Observer`] in named phases and knows nothing of what it does with them:
//!
//! 1. **request**: the request head arrived; the observer may rewrite headers (inject trace
//!    context) and returns per-request state, or `None` to watch nothing more of this request.
//! 2. **response**: the response head is known (from the upstream, or a local reply).
//! 3. **end**: the response body ended (trailers included), or either side aborted.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;

use crate::policy::effective::Direction;
use crate::policy::resource::Protocol;

/// What a listener is, for observers: fixed per listener, shared by its requests.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub direction: Direction,
    pub protocol: Protocol,
    /// The listener's own address (`host:port`).
    pub address: Arc<str>,
    /// The proxy's service (local service of every span).
    pub local_service: Arc<str>,
    /// The service on the other side: the inbound's service, or the outbound's destination.
    pub service: Arc<str>,
    /// Envoy's `upstream_cluster`.
    pub upstream_cluster: Arc<str>,
    /// Whether the downstream connection is TLS (for `x-forwarded-proto` and `http.url`).
    pub tls: bool,
}

pub trait Observer: Send + Sync + 'static {
    /// Phase 1. `head` is the request as it will be forwarded; `started` is when the proxy
    /// had it, the instant the proxy's own timings start from too.
    fn on_request(
        &self,
        listener: &Arc<ListenerInfo>,
        peer: SocketAddr,
        head: &mut http::request::Parts,
        started: Instant,
    ) -> Option<Box<dyn Exchange>>;
}

/// Per-request state of an observer.
pub trait Exchange: Send + 'static {
    /// Phase 2. On the HTTP/1.1 fast path (never gRPC) `headers` is empty: nothing there is
    /// read for plain HTTP, and building a map per response is what that path saves.
    fn on_response(&mut self, _status: http::StatusCode, _headers: &HeaderMap) {}
    /// Phase 3, called exactly once.
    fn on_end(self: Box<Self>, end: &End<'_>);
}

/// How an exchange ended.
#[derive(Debug)]
pub struct End<'a> {
    /// The status sent downstream; 0 when no response was sent.
    pub status: u16,
    pub response_flags: ResponseFlags,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub trailers: Option<&'a HeaderMap>,
    /// The body did not end normally: a side went away or the upstream reset mid-body.
    pub aborted: bool,
    /// When the exchange ended. Read once where it ends, for the span's duration and the
    /// request's metrics (and on the HTTP/1.1 fast path, the pooled connection's idle stamp).
    pub ended: Instant,
}

/// Envoy's response flags, the ones a sidecar produces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u8);

impl ResponseFlags {
    pub const NONE: ResponseFlags = ResponseFlags(0);
    /// Upstream connection failure.
    pub const UF: ResponseFlags = ResponseFlags(1);
    /// Upstream request timeout.
    pub const UT: ResponseFlags = ResponseFlags(2);
    /// Upstream connection termination (reset before or during the response).
    pub const UC: ResponseFlags = ResponseFlags(4);
    /// No healthy upstream (no endpoints at all).
    pub const UH: ResponseFlags = ResponseFlags(8);
    /// Downstream connection termination.
    pub const DC: ResponseFlags = ResponseFlags(16);

    const NAMES: [(ResponseFlags, &'static str); 5] = [
        (ResponseFlags::UH, "UH"),
        (ResponseFlags::UF, "UF"),
        (ResponseFlags::UT, "UT"),
        (ResponseFlags::UC, "UC"),
        (ResponseFlags::DC, "DC"),
    ];

    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Envoy's format: `-` when none, else comma-separated codes.
impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in ResponseFlags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Whether a request or response is gRPC (`content-type: application/grpc[+proto…]`): the
/// data path and observers tell gRPC apart the same way.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Observes nothing: the data path alone.
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_request(
        &self,
        _: &Arc<ListenerInfo>,
        _: SocketAddr,
        _: &mut http::request::Parts,
        _: Instant,
    ) -> Option<Box<dyn Exchange>> {
        None
    }
}
