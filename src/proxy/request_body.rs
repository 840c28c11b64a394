//! The caller's body on its way upstream, frame by frame, never buffered whole. It counts
//! bytes when observed, and can be taken back if the upstream connection failed before the
//! first frame was read, so the request can go to the next endpoint.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Errors surfaced by proxied bodies.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

type Slot = Arc<Mutex<Option<Incoming>>>;

pub(crate) struct RequestBody {
    inner: RequestInner,
    counter: Option<Arc<AtomicU64>>,
}

enum RequestInner {
    Empty,
    Direct(Incoming),
    /// Still in the slot until the first poll, so a failed connect can hand it back.
    Reclaimable {
        slot: Slot,
        taken: Option<Incoming>,
    },
}

impl RequestBody {
    pub(crate) fn empty() -> Self {
        RequestBody {
            inner: RequestInner::Empty,
            counter: None,
        }
    }

    pub(crate) fn direct(body: Incoming, counter: Option<Arc<AtomicU64>>) -> Self {
        RequestBody {
            inner: RequestInner::Direct(body),
            counter,
        }
    }

    /// A body that [`reclaim`] can take back while it has not been read.
    pub(crate) fn reclaimable(body: Incoming, counter: Option<Arc<AtomicU64>>) -> (Self, Reclaim) {
        let slot = Arc::new(Mutex::new(Some(body)));
        (
            RequestBody {
                inner: RequestInner::Reclaimable {
                    slot: slot.clone(),
                    taken: None,
                },
                counter,
            },
            Reclaim(slot),
        )
    }
}

/// The other half of a reclaimable body.
pub(crate) struct Reclaim(Slot);

impl Reclaim {
    /// The body, if nobody started reading it.
    pub(crate) fn take(&self) -> Option<Incoming> {
        self.0.lock().ok()?.take()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let body = match &mut this.inner {
            RequestInner::Empty => return Poll::Ready(None),
            RequestInner::Direct(b) => b,
            RequestInner::Reclaimable { slot, taken } => {
                if taken.is_none() {
                    *taken = slot.lock().ok().and_then(|mut s| s.take());
                }
                match taken {
                    Some(b) => b,
                    None => return Poll::Ready(None),
                }
            }
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if let (Some(Ok(frame)), Some(counter)) = (&frame, &this.counter)
            && let Some(data) = frame.data_ref()
        {
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            RequestInner::Empty => true,
            RequestInner::Direct(b) => b.is_end_stream(),
            RequestInner::Reclaimable { slot, taken } => match taken {
                Some(b) => b.is_end_stream(),
                None => slot
                    .lock()
                    .map(|s| s.as_ref().is_none_or(Body::is_end_stream))
                    .unwrap_or(true),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RequestInner::Empty => SizeHint::with_exact(0),
            RequestInner::Direct(b) => b.size_hint(),
            RequestInner::Reclaimable { slot, taken } => match taken {
                Some(b) => b.size_hint(),
                None => slot
                    .lock()
                    .ok()
                    .and_then(|s| s.as_ref().map(Body::size_hint))
                    .unwrap_or_else(|| SizeHint::with_exact(0)),
            },
        }
    }
}
