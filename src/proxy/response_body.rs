//! The upstream's body (or a local reply) on its way back, frame by frame, never buffered
//! whole. It counts bytes, sees the trailers, and ends the exchange exactly once ([`Tracker`]):
//! at end of stream, on error, or when dropped early (the caller went away).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::observe::{End, Exchange, ResponseFlags};
use super::pool::Lease;
use super::request_body::BodyError;

/// What the response body carries.
pub(crate) enum ResponseInner {
    Upstream(Incoming),
    /// A local reply (errors): a short text, or nothing.
    Local(Option<Bytes>),
}

pub(crate) struct ResponseBody {
    inner: ResponseInner,
    /// Present when observed.
    tracker: Option<Box<Tracker>>,
    /// Records the request's metrics when the body is dropped (ended or abandoned).
    _stats: Option<StatsGuard>,
    /// The upstream connection, back to its pool once this body has been read to its end.
    lease: Option<Lease>,
}

/// Counts a finished request in its listener's metrics, once, when dropped.
pub(crate) struct StatsGuard {
    pub(crate) stats: Arc<crate::metrics::ListenerStats>,
    pub(crate) started: std::time::Instant,
    pub(crate) status: u16,
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        self.stats
            .record(self.status, self.started.elapsed().as_secs_f64());
    }
}

/// Ends an exchange exactly once.
pub(crate) struct Tracker {
    exchange: Option<Box<dyn Exchange>>,
    pub(crate) status: u16,
    pub(crate) flags: ResponseFlags,
    pub(crate) request_bytes: Option<Arc<AtomicU64>>,
    /// Request bytes known up front (the fast path reads bodies whole).
    known_request_bytes: u64,
    response_bytes: u64,
    trailers: Option<HeaderMap>,
}

impl Tracker {
    pub(crate) fn new(exchange: Box<dyn Exchange>, request_bytes: Option<Arc<AtomicU64>>) -> Self {
        Tracker {
            exchange: Some(exchange),
            status: 0,
            flags: ResponseFlags::NONE,
            request_bytes,
            known_request_bytes: 0,
            response_bytes: 0,
            trailers: None,
        }
    }

    /// For a request whose body size is known before it is forwarded.
    pub(crate) fn with_request_size(exchange: Box<dyn Exchange>, bytes: u64) -> Self {
        let mut tracker = Tracker::new(exchange, None);
        tracker.known_request_bytes = bytes;
        tracker
    }

    pub(crate) fn count_response_bytes(&mut self, bytes: u64) {
        self.response_bytes += bytes;
    }

    pub(crate) fn exchange_mut(&mut self) -> Option<&mut Box<dyn Exchange>> {
        self.exchange.as_mut()
    }

    /// Ends the exchange; later calls do nothing.
    pub(crate) fn finish(&mut self, aborted: bool) {
        if let Some(exchange) = self.exchange.take() {
            let end = End {
                status: self.status,
                response_flags: self.flags,
                request_bytes: self.known_request_bytes
                    + self
                        .request_bytes
                        .as_ref()
                        .map_or(0, |c| c.load(Ordering::Relaxed)),
                response_bytes: self.response_bytes,
                trailers: self.trailers.as_ref(),
                aborted,
            };
            exchange.on_end(&end);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Dropped before the end of the body: the caller went away.
        if self.exchange.is_some() {
            self.flags.insert(ResponseFlags::DC);
            self.finish(true);
        }
    }
}

impl ResponseBody {
    pub(crate) fn new(
        inner: ResponseInner,
        tracker: Option<Box<Tracker>>,
        stats: Option<StatsGuard>,
    ) -> Self {
        let mut body = ResponseBody {
            inner,
            tracker,
            _stats: stats,
            lease: None,
        };
        // A body that is empty from the start never gets polled to its end by some servers.
        if body.is_end_stream()
            && let Some(t) = &mut body.tracker
        {
            t.finish(false);
        }
        body
    }

    /// Returns `lease` to its pool when the body has been read to its end.
    pub(crate) fn with_lease(mut self, lease: Option<Lease>) -> Self {
        match lease {
            Some(lease) if self.is_end_stream() => lease.release(),
            lease => self.lease = lease,
        }
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let frame = match &mut this.inner {
            ResponseInner::Local(text) => text.take().map(|t| Ok(Frame::data(t))),
            ResponseInner::Upstream(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|r| r.map_err(BodyError::from))
            }
        };
        if let Some(tracker) = &mut this.tracker {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        tracker.response_bytes += data.len() as u64;
                    } else if let Some(trailers) = f.trailers_ref() {
                        tracker.trailers = Some(trailers.clone());
                    }
                }
                Some(Err(_)) => {
                    tracker.flags.insert(ResponseFlags::UC);
                    tracker.finish(true);
                }
                None => tracker.finish(false),
            }
        }
        let failed = matches!(frame, Some(Err(_)));
        let ended = frame.is_none() || this.is_end_stream();
        if ended && let Some(tracker) = &mut this.tracker {
            tracker.finish(false);
        }
        if ended
            && !failed
            && let Some(lease) = this.lease.take()
        {
            lease.release();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ResponseInner::Local(text) => text.is_none(),
            ResponseInner::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ResponseInner::Local(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
            ResponseInner::Upstream(body) => body.size_hint(),
        }
    }
}
