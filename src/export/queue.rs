//! The queue between the data path and a backend's worker: spans in batches of up to
//! `batch_size`, the newest batch open, all of them together bounded by the queue's capacity.
//!
//! Each span is written into its batch ([`WriteBatch::add`]) as it is queued: on the thread
//! that finished the request, after its response went out, while the span is still in that
//! thread's cache; and the span is freed where it was made (the allocator's per-thread cache
//! takes it back, where a batch of spans freed by the worker went the long way). The worker
//! only finishes the batch and sends it, so no flush holds a data-path thread for a batch's
//! encoding.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use super::{Encode, Encoded, WriteBatch};
use crate::trace::Span;

pub(super) struct Batch {
    pub(super) spans: usize,
    writer: Box<dyn WriteBatch>,
}

/// Why a span was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The queue holds its capacity of spans.
    Full,
    /// Draining, or every handle is gone.
    Closed,
}

#[derive(Default)]
struct State {
    sealed: VecDeque<Batch>,
    open: Option<Batch>,
    /// Spans in `sealed` and `open`: what the capacity bounds.
    spans: usize,
    /// Spans the worker took and has not yet settled (exported or dropped).
    taken: usize,
    closed: bool,
}

pub(super) struct Queue {
    state: Mutex<State>,
    /// A batch was sealed, or the queue closed.
    wake: Notify,
    encoder: Box<dyn Encode>,
    capacity: usize,
    batch_size: usize,
    /// The spans queued, as the exported gauge shows them; set under the lock, so the last
    /// write is the queue's last state.
    gauge: Gauge,
}

impl Queue {
    pub(super) fn new(
        encoder: Box<dyn Encode>,
        capacity: usize,
        batch_size: usize,
        gauge: Gauge,
    ) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            encoder,
            capacity: capacity.max(1),
            batch_size: batch_size.max(1),
            gauge,
        }
    }

    /// Nothing on either side panics while holding the lock; were it ever poisoned, the
    /// queue's state is still whole (every change to it is a single step).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `span` into the open batch. Never waits beyond the lock, which is held for one
    /// span's writing at the most.
    pub(super) fn push(&self, span: &Span) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.spans >= self.capacity {
            return Err(Refused::Full);
        }
        let batch = state.open.get_or_insert_with(|| Batch {
            spans: 0,
            writer: self.encoder.batch(self.batch_size),
        });
        batch.writer.add(span);
        batch.spans += 1;
        let full = batch.spans >= self.batch_size;
        if full {
            let batch = state.open.take();
            state.sealed.extend(batch);
        }
        state.spans += 1;
        self.gauge.set(state.spans as i64);
        drop(state);
        if full {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Until a batch is sealed or the queue closes (at once if that happened since the last
    /// wait).
    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The oldest sealed batch.
    pub(super) fn take(&self) -> Option<Batch> {
        let mut state = self.lock();
        let batch = state.sealed.pop_front()?;
        state.spans -= batch.spans;
        state.taken += batch.spans;
        self.gauge.set(state.spans as i64);
        Some(batch)
    }

    /// `spans` of those taken are exported or dropped.
    pub(super) fn settle(&self, spans: usize) {
        let mut state = self.lock();
        state.taken = state.taken.saturating_sub(spans);
    }

    /// Gives up on every span accepted and not yet settled (the worker is gone): closes the
    /// queue, empties it, and says how many spans that was.
    pub(super) fn abandon(&self) -> usize {
        let mut state = self.lock();
        let left = state.spans + state.taken;
        *state = State {
            closed: true,
            ..State::default()
        };
        self.gauge.set(0);
        left
    }

    /// Seals the open batch, if it holds any span: the interval is up.
    pub(super) fn seal(&self) {
        let mut state = self.lock();
        let batch = state.open.take();
        state.sealed.extend(batch);
    }

    /// Takes no span from now on; what is queued is sealed for the worker to deliver.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let batch = state.open.take();
        state.sealed.extend(batch);
        drop(state);
        self.wake.notify_one();
    }

    /// Closed, and every batch taken.
    pub(super) fn finished(&self) -> bool {
        let state = self.lock();
        state.closed && state.sealed.is_empty() && state.open.is_none()
    }
}

impl Batch {
    /// The payloads to send, and the spans that could not be written.
    pub(super) fn finish(self) -> Encoded {
        self.writer.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::metrics::gauge::Gauge;

    use super::{Queue, Refused};
    use crate::export::zipkin::{self, Zipkin};
    use crate::policy::effective::{ApiVersion, Direction};
    use crate::trace::id::{SpanId, TraceId};
    use crate::trace::{Span, SpanKind};

    pub(crate) fn span(n: u64) -> Span {
        Span {
            trace_id: TraceId {
                high: 0,
                low: n + 1,
                wide: false,
            },
            id: SpanId(n + 1),
            parent_id: None,
            kind: SpanKind::Server,
            direction: Direction::Inbound,
            name: "web".into(),
            timestamp_us: 1,
            duration_us: 1,
            local_service: Arc::from("web"),
            remote_service: None,
            shared: false,
            debug: false,
            error: false,
            tags: [("http.url", "http://web/"), ("note", "quo\"te")]
                .into_iter()
                .collect(),
            trace_state: None,
        }
    }

    fn zipkin_queue(api: ApiVersion, capacity: usize, batch_size: usize) -> Queue {
        Queue::new(
            Box::new(Zipkin::new(api)),
            capacity,
            batch_size,
            Gauge::default(),
        )
    }

    #[test]
    fn a_zipkin_batch_written_as_spans_are_queued_is_the_list_of_those_spans() {
        for api in [ApiVersion::HttpJson, ApiVersion::HttpProto] {
            let queue = zipkin_queue(api, 100, 5);
            let spans: Vec<Span> = (0..5).map(span).collect();
            for s in &spans {
                assert_eq!(queue.push(s), Ok(()));
            }
            let encoded = queue.take().expect("a full batch is sealed").finish();
            assert_eq!(encoded.payloads.len(), 1);
            assert_eq!(encoded.payloads[0].spans, 5);
            match api {
                ApiVersion::HttpJson => {
                    assert_eq!(encoded.payloads[0].body, zipkin::json::encode(&spans));
                }
                // Tag maps decode in a hash map's order: compare what they decode to.
                ApiVersion::HttpProto => {
                    use prost::Message;
                    let read = |body: &[u8]| zipkin::proto::ListOfSpans::decode(body).ok();
                    let written = read(&encoded.payloads[0].body);
                    assert!(written.is_some());
                    assert_eq!(written, read(&zipkin::proto::encode(&spans)));
                }
            }
        }
    }

    #[test]
    fn a_batch_is_sealed_for_the_worker_when_it_is_full_and_not_before() {
        let queue = zipkin_queue(ApiVersion::HttpJson, 100, 3);
        for n in 0..2 {
            queue.push(&span(n)).expect("room");
        }
        assert!(queue.take().is_none(), "two of three: still open");
        queue.push(&span(2)).expect("room");
        assert_eq!(queue.take().map(|b| b.spans), Some(3));
    }

    #[test]
    fn the_interval_seals_a_batch_that_is_not_full() {
        let queue = zipkin_queue(ApiVersion::HttpJson, 100, 512);
        queue.push(&span(0)).expect("room");
        queue.seal();
        let batch = queue.take().expect("sealed");
        assert_eq!(batch.spans, 1);
        assert_eq!(
            batch.finish().payloads[0].body,
            zipkin::json::encode(&[span(0)])
        );
    }

    #[test]
    fn the_capacity_counts_every_span_not_yet_taken_by_the_worker() {
        let gauge = Gauge::default();
        let queue = Queue::new(
            Box::new(Zipkin::new(ApiVersion::HttpJson)),
            4,
            3,
            gauge.clone(),
        );
        for n in 0..4 {
            queue.push(&span(n)).expect("room");
        }
        assert_eq!(gauge.get(), 4);
        assert_eq!(queue.push(&span(4)), Err(Refused::Full));
        // The worker takes the sealed batch of three: room for three more.
        assert_eq!(queue.take().map(|b| b.spans), Some(3));
        assert_eq!(gauge.get(), 1);
        for n in 5..8 {
            assert_eq!(queue.push(&span(n)), Ok(()));
        }
        assert_eq!(queue.push(&span(8)), Err(Refused::Full));
    }

    #[test]
    fn a_closed_queue_refuses_spans_and_seals_what_it_holds_for_the_worker() {
        let queue = zipkin_queue(ApiVersion::HttpJson, 100, 512);
        queue.push(&span(0)).expect("room");
        queue.close();
        assert_eq!(queue.push(&span(1)), Err(Refused::Closed));
        assert!(!queue.finished(), "a batch is still to deliver");
        assert_eq!(queue.take().map(|b| b.spans), Some(1));
        assert!(queue.finished());
    }

    #[test]
    fn abandoning_counts_what_is_queued_and_what_the_worker_took_without_settling() {
        let queue = zipkin_queue(ApiVersion::HttpJson, 100, 2);
        for n in 0..5 {
            queue.push(&span(n)).expect("room");
        }
        // Two batches of two taken, one of them settled; one span still open.
        let _ = queue.take();
        let _ = queue.take();
        queue.settle(2);
        assert_eq!(queue.abandon(), 3);
        assert_eq!(queue.push(&span(5)), Err(Refused::Closed));
        assert_eq!(queue.abandon(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_worker_is_woken_by_a_sealed_batch_even_when_it_was_not_yet_waiting() {
        let queue = zipkin_queue(ApiVersion::HttpJson, 100, 1);
        queue.push(&span(0)).expect("room");
        // Sealed before the wait began: the wake is kept, not lost.
        tokio::time::timeout(std::time::Duration::from_secs(5), queue.woken())
            .await
            .expect("woken");
    }
}
