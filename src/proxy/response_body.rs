//! The upstream's body (or a local reply) on its way back, frame by frame, never buffered
//! whole. It counts bytes, sees the trailers, and ends the exchange exactly once ([`Tracker`]):
//! at end of stream, on error, or when dropped early (the caller went away).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

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
    stats: Option<StatsGuard>,
    /// Not polled yet: the server still holds the response head back. A body that fails on
    /// its first poll takes the head with it; the caller got nothing.
    unpolled: bool,
    /// A gRPC call's deadline: there the upstream stream is reset and the caller gets
    /// `grpc-status: 4` in the trailers.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The upstream connection, back to its pool once this body has been read to its end.
    lease: Option<Lease>,
}

/// Counts a finished request in its listener's metrics, once, when dropped.
pub(crate) struct StatsGuard {
    pub(crate) stats: Arc<crate::metrics::ListenerStats>,
    pub(crate) started: Instant,
    pub(crate) status: u16,
    /// When the request ended, if read already where its response ended (for its span too):
    /// the clock is then not read again (about 30 ns a read in a virtual machine).
    pub(crate) ended: Option<Instant>,
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        let ended = self.ended.unwrap_or_else(Instant::now);
        self.stats.record(
            self.status,
            ended.saturating_duration_since(self.started).as_secs_f64(),
        );
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
    /// A gRPC call's deadline, less the grace: a caller that resets from then on hit its
    /// deadline, it did not cancel.
    pub(crate) deadline_from: Option<Instant>,
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
            deadline_from: None,
        }
    }

    /// For a request whose body size is known before it is forwarded.
    pub(crate) fn with_request_size(exchange: Box<dyn Exchange>, bytes: u64) -> Self {
        let mut tracker = Tracker::new(exchange, None);
        tracker.known_request_bytes = bytes;
        tracker
    }

    /// An upstream's DEADLINE_EXCEEDED that arrives at the call's deadline is the deadline,
    /// whichever came first, the upstream's timer or ours (`UT`).
    pub(crate) fn note_deadline_answer(&mut self, headers: &HeaderMap) {
        if self.deadline_from.is_some_and(|d| Instant::now() >= d)
            && headers.get("grpc-status").is_some_and(|v| v == "4")
        {
            self.flags.insert(ResponseFlags::UT);
        }
    }

    pub(crate) fn count_response_bytes(&mut self, bytes: u64) {
        self.response_bytes += bytes;
    }

    pub(crate) fn exchange_mut(&mut self) -> Option<&mut Box<dyn Exchange>> {
        self.exchange.as_mut()
    }

    /// Ends the exchange now; later calls do nothing.
    pub(crate) fn finish(&mut self, aborted: bool) {
        self.finish_at(aborted, Instant::now());
    }

    /// Ends the exchange at `ended`, a reading the caller shares; later calls do nothing.
    pub(crate) fn finish_at(&mut self, aborted: bool, ended: Instant) {
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
                ended,
            };
            exchange.on_end(&end);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Dropped before the end of the body: the caller went away, or its deadline passed.
        if self.exchange.is_some() {
            if self.deadline_from.is_some_and(|d| Instant::now() >= d) {
                self.flags.insert(ResponseFlags::UT);
                self.trailers = Some(deadline_exceeded());
            } else {
                self.flags.insert(ResponseFlags::DC);
            }
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
            stats,
            unpolled: true,
            deadline: None,
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

    /// Ends the body at `deadline`, if it is still streaming then.
    pub(crate) fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        if let Some(deadline) = deadline
            && !self.is_end_stream()
        {
            self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline.into())));
        }
        self
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
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            // The deadline passed mid-stream: dropping the upstream body resets its stream,
            // and the caller's stream ends with DEADLINE_EXCEEDED.
            this.deadline = None;
            this.inner = ResponseInner::Local(None);
            let trailers = deadline_exceeded();
            if let Some(tracker) = &mut this.tracker {
                tracker.flags.insert(ResponseFlags::UT);
                tracker.trailers = Some(trailers.clone());
                tracker.finish(false);
            }
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let first = std::mem::replace(&mut this.unpolled, false);
        let frame = match &mut this.inner {
            ResponseInner::Local(text) => text.take().map(|t| Ok(Frame::data(t))),
            ResponseInner::Upstream(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|r| r.map_err(BodyError::from))
            }
        };
        if first && matches!(frame, Some(Err(_))) {
            // Recorded as what the caller got: no response (status 0).
            if let Some(stats) = &mut this.stats {
                stats.status = 0;
            }
            if let Some(tracker) = &mut this.tracker {
                tracker.status = 0;
            }
        }
        if let Some(tracker) = &mut this.tracker {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        tracker.response_bytes += data.len() as u64;
                    } else if let Some(trailers) = f.trailers_ref() {
                        tracker.note_deadline_answer(trailers);
                        tracker.trailers = Some(trailers.clone());
                    }
                }
                Some(Err(_)) => {
                    tracker.flags.insert(ResponseFlags::UC);
                    tracker.finish(true);
                }
                // The end of the stream: finished below.
                None => {}
            }
        }
        let failed = matches!(frame, Some(Err(_)));
        let ended = frame.is_none() || this.is_end_stream();
        if ended && (this.tracker.is_some() || this.stats.is_some()) {
            // One reading of the clock for the span and the metrics, both ending here.
            let now = Instant::now();
            if let Some(tracker) = &mut this.tracker {
                tracker.finish_at(false, now);
            }
            if let Some(stats) = &mut this.stats {
                stats.ended.get_or_insert(now);
            }
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

/// The trailers of a call whose deadline passed here.
fn deadline_exceeded() -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert("grpc-status", http::HeaderValue::from_static("4"));
    trailers.insert(
        "grpc-message",
        http::HeaderValue::from_static("upstream request timeout"),
    );
    trailers
}
