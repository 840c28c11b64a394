//! Getting spans out, never in a request's way.
//!
//! One exporter per backend: a bounded queue fed by a non-blocking `try_send` from the data
//! path ([`queue`]: each span is written into its batch, in the backend's format, there and
//! then), and a worker that sends a batch when it is full or on an interval, retries transient
//! failures (connect errors, timeouts, 429, 5xx) with capped exponential backoff, and counts
//! every span it could not deliver by reason. For every backend, at rest:
//! `sampled = exported + dropped` (all reasons).
//!
//! What differs between backends is the wire format ([`Encode`]) and how a payload travels
//! ([`Transport`]: an HTTP POST, or OTLP over HTTP or gRPC with its own retry rules).

pub mod client;
pub mod datadog;
pub mod otlp;
mod out;
mod queue;
pub mod zipkin;

use std::future::Future;
use std::pin::Pin;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::task::JoinHandle;

use self::client::Failure;
use self::queue::{Queue, Refused};
use crate::drain;
use crate::metrics::{BackendLabels, DropReason, DroppedLabels, ExportLabels, Metrics};
use crate::policy::effective::{Backend, BackendConf, redact_userinfo};
use crate::trace::{Span, SpanSink};

/// Export tuning. Defaults per the contract: 8,192 queued spans, batches of 512, at least
/// every second, 3 tries within 10 s.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub interval: Duration,
    pub max_tries: u32,
    /// No retry starts after this long since the first try.
    pub retry_budget: Duration,
    /// One POST may take this long.
    pub request_timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Repeated failures are logged at most once per this interval, with a count.
    pub warn_interval: Duration,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            queue_capacity: 8192,
            batch_size: 512,
            interval: Duration::from_secs(1),
            max_tries: 3,
            retry_budget: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            warn_interval: Duration::from_secs(30),
        }
    }
}

/// A request body ready to POST, and how many spans it carries.
pub struct Payload {
    pub body: Bytes,
    pub spans: usize,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Encoded batches: payloads to send, and spans that could not be encoded within the size
/// limit (dropped as `too_large`).
#[derive(Default)]
pub struct Encoded {
    pub payloads: Vec<Payload>,
    pub too_large: usize,
}

/// A wire format.
pub trait Encode: Send + Sync + 'static {
    /// An empty batch of up to `spans` spans, to be written a span at a time.
    fn batch(&self, spans: usize) -> Box<dyn WriteBatch>;

    /// `spans` as payloads: a batch written at once.
    fn encode(&self, spans: &[Span]) -> Encoded {
        let mut batch = self.batch(spans.len());
        for span in spans {
            batch.add(span);
        }
        batch.finish()
    }
}

/// A batch being written: each span is written as it is queued, on the thread that ended its
/// request, so that the worker has only the payload's frame left to write ([`queue`]). What a
/// format groups across a batch (Datadog's traces, OTLP's services) it groups in `finish`,
/// from the spans' written bytes.
pub trait WriteBatch: Send {
    fn add(&mut self, span: &Span);
    /// The payloads to send, and the spans that could not be written within the size limit.
    fn finish(self: Box<Self>) -> Encoded;
}

/// What the collector made of a payload it accepted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Spans the collector said it refused (OTLP partial success); counted as `rejected`.
    pub rejected: usize,
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Delivered, Failure>> + Send + 'a>>;

/// How a payload reaches the collector, and which failures are worth another try.
pub trait Transport: Send + Sync + 'static {
    /// One try, bounded by `timeout`.
    fn send<'a>(&'a self, payload: &'a Payload, timeout: Duration) -> SendFuture<'a>;
    /// Where payloads go, for the log (credentials left out).
    fn destination(&self) -> String;
}

/// POST to a url: Zipkin and Datadog. 2xx is success; connect errors, timeouts, 429 and 5xx
/// are retried.
pub struct HttpPost {
    pub uri: http::Uri,
    pub client: client::ExportClient,
}

impl Transport for HttpPost {
    fn send<'a>(&'a self, payload: &'a Payload, timeout: Duration) -> SendFuture<'a> {
        Box::pin(async move {
            self.client.post(&self.uri, payload, timeout).await?;
            Ok(Delivered::default())
        })
    }

    fn destination(&self) -> String {
        redact_userinfo(&self.uri.to_string())
    }
}

/// Metric handles of one backend, resolved once.
struct BackendMetrics {
    sampled: Counter,
    exported: Counter,
    /// Spans in the queue (the exported gauge): at most the queue's capacity.
    queued: Gauge,
    dropped_queue_full: Counter,
    dropped_export_failed: Counter,
    dropped_shutdown: Counter,
    dropped_too_large: Counter,
    dropped_rejected: Counter,
    requests_ok: Counter,
    requests_failed: Counter,
}

impl BackendMetrics {
    fn new(metrics: &Metrics, backend: &str) -> Self {
        let b = || BackendLabels {
            backend: backend.to_string(),
        };
        let dropped = |reason: DropReason| {
            metrics
                .spans_dropped
                .get_or_create(&DroppedLabels {
                    backend: backend.to_string(),
                    reason: reason.as_str(),
                })
                .clone()
        };
        let requests = |result: &'static str| {
            metrics
                .export_requests
                .get_or_create(&ExportLabels {
                    backend: backend.to_string(),
                    result,
                })
                .clone()
        };
        BackendMetrics {
            sampled: metrics.spans_sampled.get_or_create(&b()).clone(),
            exported: metrics.spans_exported.get_or_create(&b()).clone(),
            queued: metrics.export_queue.get_or_create(&b()).clone(),
            dropped_queue_full: dropped(DropReason::QueueFull),
            dropped_export_failed: dropped(DropReason::ExportFailed),
            dropped_shutdown: dropped(DropReason::Shutdown),
            dropped_too_large: dropped(DropReason::TooLarge),
            dropped_rejected: dropped(DropReason::Rejected),
            requests_ok: requests("success"),
            requests_failed: requests("failure"),
        }
    }
}

/// The data path's side of an exporter. When the last one goes, the queue closes: the worker
/// delivers what it holds and stops.
pub struct Handle {
    queue: Arc<Queue>,
    metrics: Arc<BackendMetrics>,
}

impl SpanSink for Handle {
    fn try_send(&self, span: &Span) {
        self.metrics.sampled.inc();
        if let Err(refused) = self.queue.push(span) {
            match refused {
                Refused::Full => self.metrics.dropped_queue_full.inc(),
                Refused::Closed => self.metrics.dropped_shutdown.inc(),
            };
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// One backend's queue and worker.
struct Exporter {
    /// `None` once retired: the data path holds the last handles.
    handle: Option<Arc<Handle>>,
    /// What shutdown counts as lost if the worker outlives its deadline.
    queue: Arc<Queue>,
    worker: JoinHandle<()>,
    metrics: Arc<BackendMetrics>,
}

/// Where and how to send.
pub struct Target {
    pub name: String,
    pub encoder: Box<dyn Encode>,
    pub transport: Box<dyn Transport>,
}

impl Target {
    /// POSTs `encoder`'s payloads to `uri` with `client`.
    pub fn post(
        name: &str,
        uri: http::Uri,
        encoder: Box<dyn Encode>,
        client: client::ExportClient,
    ) -> Target {
        Target {
            name: name.to_string(),
            encoder,
            transport: Box::new(HttpPost { uri, client }),
        }
    }

    pub fn for_backend(backend: &Backend, client: &client::ExportClient) -> anyhow::Result<Target> {
        let (uri, encoder): (String, Box<dyn Encode>) = match &backend.conf {
            BackendConf::Zipkin(z) => (z.url.clone(), Box::new(zipkin::Zipkin::new(z.api_version))),
            BackendConf::Datadog(d) => (
                format!("http://{}/v0.4/traces", join_host_port(&d.address, d.port)),
                Box::new(datadog::Datadog::new(d.split_service)),
            ),
            BackendConf::OpenTelemetry(o) => {
                return otlp::target(&backend.name, o, client);
            }
        };
        let uri: http::Uri = uri.parse().map_err(|e| {
            let shown = redact_userinfo(&uri);
            anyhow::anyhow!("backend \"{}\": invalid url {shown}: {e}", backend.name)
        })?;
        Ok(Target::post(&backend.name, uri, encoder, client.clone()))
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Exporter {
    /// Starts the worker; it flushes and stops when `drain` begins.
    fn start(
        target: Target,
        settings: &ExportSettings,
        metrics: &Metrics,
        drain: drain::Watcher,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Exporter {
        let backend_metrics = Arc::new(BackendMetrics::new(metrics, &target.name));
        let Target {
            name,
            encoder,
            transport,
        } = target;
        let queue = Arc::new(Queue::new(
            encoder,
            settings.queue_capacity,
            settings.batch_size,
            backend_metrics.queued.clone(),
        ));
        let worker = Worker {
            name,
            transport,
            settings: settings.clone(),
            metrics: backend_metrics.clone(),
            queue: queue.clone(),
            drain,
            failures_since_warn: 0,
            last_warn: None,
        };
        Exporter {
            handle: Some(Arc::new(Handle {
                queue: queue.clone(),
                metrics: backend_metrics.clone(),
            })),
            queue,
            worker: match runtime {
                Some(runtime) => runtime.spawn(worker.run()),
                None => tokio::spawn(worker.run()),
            },
            metrics: backend_metrics,
        }
    }

    fn handle(&self) -> Option<Arc<Handle>> {
        self.handle.clone()
    }

    /// Lets go of this exporter's own handle: its worker delivers what it holds and stops once
    /// the data path drops the last handle.
    fn retire(mut self) -> Exporter {
        self.handle = None;
        self
    }

    /// Stops a worker that outlived the drain's deadline; what it still held is counted as
    /// `shutdown`.
    async fn abandon(self) {
        if self.worker.is_finished() {
            return;
        }
        self.worker.abort();
        let _ = self.worker.await;
        let left = self.queue.abandon();
        self.metrics.dropped_shutdown.inc_by(left as u64);
    }
}

struct Worker {
    name: String,
    transport: Box<dyn Transport>,
    settings: ExportSettings,
    metrics: Arc<BackendMetrics>,
    queue: Arc<Queue>,
    /// Dropped with the worker: the drain waits for that.
    drain: drain::Watcher,
    failures_since_warn: u64,
    last_warn: Option<Instant>,
}

impl Worker {
    async fn run(mut self) {
        // The first tick an interval from now, not at once: a batch is sealed when it is full
        // or has waited an interval, never by the worker's start.
        let interval = self.settings.interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining = false;
        loop {
            tokio::select! {
                biased;
                () = self.drain.draining(), if !draining => {
                    // Take nothing new; deliver what is queued.
                    draining = true;
                    self.queue.close();
                }
                () = self.queue.woken() => {}
                _ = ticker.tick() => self.queue.seal(),
            }
            while let Some(batch) = self.queue.take() {
                let encoded = batch.finish();
                self.deliver(encoded).await;
            }
            if self.queue.finished() {
                return;
            }
        }
    }

    async fn deliver(&mut self, encoded: Encoded) {
        if encoded.too_large > 0 {
            self.metrics
                .dropped_too_large
                .inc_by(encoded.too_large as u64);
            self.queue.settle(encoded.too_large);
        }
        for payload in encoded.payloads {
            let spans = payload.spans;
            match self.send(&payload).await {
                Some(delivered) => {
                    // A collector cannot refuse more than it was sent.
                    let rejected = delivered.rejected.min(spans);
                    if rejected > 0 {
                        self.metrics.dropped_rejected.inc_by(rejected as u64);
                        self.warn(
                            &format!("the collector refused {rejected} of {spans} spans"),
                            rejected,
                        );
                    }
                    self.metrics.exported.inc_by((spans - rejected) as u64);
                }
                None => {
                    self.metrics.dropped_export_failed.inc_by(spans as u64);
                }
            }
            self.queue.settle(spans);
        }
    }

    /// Sends one payload, retrying what the transport calls transient. Returns what the
    /// collector made of it, or `None` when it was not delivered.
    async fn send(&mut self, payload: &Payload) -> Option<Delivered> {
        let started = Instant::now();
        let mut backoff = self.settings.initial_backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = self
                .transport
                .send(payload, self.settings.request_timeout)
                .await;
            match outcome {
                Ok(delivered) => {
                    self.metrics.requests_ok.inc();
                    return Some(delivered);
                }
                Err(failure) => {
                    self.metrics.requests_failed.inc();
                    // The collector's own wait wins over our backoff; jitter keeps many
                    // sidecars from retrying in lockstep.
                    let wait = failure.retry_after.unwrap_or_else(|| {
                        backoff
                            + Duration::from_millis(fastrand::u64(
                                0..=backoff.as_millis() as u64 / 2,
                            ))
                    });
                    let retry = failure.retryable
                        && tries < self.settings.max_tries
                        && started.elapsed() + wait < self.settings.retry_budget;
                    if !retry {
                        self.warn(&failure.message, payload.spans);
                        return None;
                    }
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                }
            }
        }
    }

    /// One warning per interval, with how many failures it stands for (no log storms).
    fn warn(&mut self, message: &str, spans: usize) {
        self.failures_since_warn += 1;
        let due = self
            .last_warn
            .is_none_or(|at| at.elapsed() >= self.settings.warn_interval);
        if due {
            tracing::warn!(
                backend = %self.name,
                // Credentials in the url stay out of the log.
                url = %self.transport.destination(),
                failures = self.failures_since_warn,
                spans,
                "span export failed: {message}"
            );
            self.failures_since_warn = 0;
            self.last_warn = Some(Instant::now());
        }
    }
}

/// The exporters of the backends in use, keyed by their full configuration: a policy change
/// that moves to another backend starts a new exporter, and spans already queued still go
/// to the backend they were recorded for.
pub struct Exporters {
    settings: ExportSettings,
    metrics: Arc<Metrics>,
    client: client::ExportClient,
    active: Mutex<HashMap<String, Exporter>>,
    retired: Mutex<Vec<Exporter>>,
    /// Tells every worker, active or retired, to flush and stop; `None` once shut down.
    drain: Mutex<Option<drain::Trigger>>,
    /// Where the workers run ([`Exporters::on_own_thread`]); `None`: on the caller's runtime.
    thread: Option<ExportThread>,
}

/// The export thread: its runtime, and what ends it.
struct ExportThread {
    runtime: tokio::runtime::Handle,
    /// Dropped with the exporters: the thread then ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Exporters {
    pub fn new(settings: ExportSettings, metrics: Arc<Metrics>) -> Exporters {
        Exporters {
            settings,
            metrics,
            client: client::ExportClient::new(),
            active: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            // Workers take their watchers from the trigger as they start.
            drain: Mutex::new(Some(drain::channel().0)),
            thread: None,
        }
    }

    /// Exporters whose workers run on a thread of their own, so that sending a batch (a
    /// write of a few hundred KB, the collector's answer, retries, TLS) never holds a thread
    /// that serves requests. Spans are still written into their batch where the request
    /// ended; the request threads only wake this one when a batch is full.
    pub fn on_own_thread(
        settings: ExportSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Exporters> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tracecar-export".into())
            .spawn(move || {
                // Until the exporters are dropped; the runtime, and any worker left in it,
                // is dropped here, outside every async context.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Exporters {
            thread: Some(ExportThread {
                runtime: handle,
                _stop: stop,
            }),
            ..Exporters::new(settings, metrics)
        })
    }

    /// A watcher for a new worker. After shutdown there is no trigger: the watcher of a
    /// drain whose trigger is gone reports the drain at once, so a late worker flushes and
    /// stops.
    fn watcher(&self) -> drain::Watcher {
        match self.drain.lock().as_deref() {
            Ok(Some(trigger)) => trigger.watcher(),
            _ => drain::channel().1,
        }
    }

    fn start(&self, target: Target) -> Exporter {
        Exporter::start(
            target,
            &self.settings,
            &self.metrics,
            self.watcher(),
            self.thread.as_ref().map(|t| &t.runtime),
        )
    }

    /// Starts an exporter for a target of the caller's own (a test's collector, a bench's
    /// encoder), beside the policy's; it drains with the rest.
    pub fn start_target(&self, target: Target) -> Option<Arc<Handle>> {
        let exporter = self.start(target);
        let handle = exporter.handle();
        if let Ok(mut retired) = self.retired.lock() {
            // Kept with the retired ones: a policy change must not retire it again.
            retired.push(exporter);
        }
        handle
    }

    /// The sink for `backend`, starting its exporter if it is new. The exporters of other
    /// backends are retired: they deliver what they hold, then stop.
    pub fn use_backend(&self, backend: Option<&Backend>) -> anyhow::Result<Option<Arc<Handle>>> {
        let key = backend.map(backend_key);
        let Ok(mut active) = self.active.lock() else {
            anyhow::bail!("exporter registry poisoned");
        };
        let stale: Vec<String> = active
            .keys()
            .filter(|k| Some(*k) != key.as_ref())
            .cloned()
            .collect();
        for k in stale {
            if let (Some(exporter), Ok(mut retired)) = (active.remove(&k), self.retired.lock()) {
                retired.push(exporter.retire());
            }
        }
        let (Some(backend), Some(key)) = (backend, key) else {
            return Ok(None);
        };
        if let Some(existing) = active.get(&key) {
            return Ok(existing.handle());
        }
        let exporter = self.start(Target::for_backend(backend, &self.client)?);
        let handle = exporter.handle();
        active.insert(key, exporter);
        Ok(handle)
    }

    /// Drains every exporter: each takes nothing new, flushes what it holds and stops, all
    /// within one `deadline`; what is left then is counted as `shutdown`.
    pub async fn shutdown(&self, deadline: Duration) {
        let mut all: Vec<Exporter> = Vec::new();
        if let Ok(mut active) = self.active.lock() {
            all.extend(active.drain().map(|(_, e)| e.retire()));
        }
        if let Ok(mut retired) = self.retired.lock() {
            all.extend(retired.drain(..).map(Exporter::retire));
        }
        let trigger = self.drain.lock().ok().and_then(|mut d| d.take());
        let finished = match trigger {
            Some(trigger) => trigger.drain(deadline).await,
            None => true,
        };
        if !finished {
            for exporter in all {
                exporter.abandon().await;
            }
        }
    }
}

fn backend_key(backend: &Backend) -> String {
    serde_json::to_string(backend).unwrap_or_else(|_| backend.name.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::{
        Delivered, ExportSettings, Exporter, Exporters, Payload, SendFuture, Target, Transport,
    };
    use crate::metrics::Metrics;
    use crate::policy::effective::{ApiVersion, Direction};
    use crate::trace::id::{SpanId, TraceId};
    use crate::trace::{Span, SpanKind, SpanSink};

    /// Tells the test how many spans each payload carried.
    struct Sent(mpsc::UnboundedSender<usize>);

    impl Transport for Sent {
        fn send<'a>(&'a self, payload: &'a Payload, _: Duration) -> SendFuture<'a> {
            let _ = self.0.send(payload.spans);
            Box::pin(async { Ok(Delivered::default()) })
        }

        fn destination(&self) -> String {
            "test".into()
        }
    }

    fn span(n: u64) -> Span {
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
            tags: [("http.url", "http://web/")].into_iter().collect(),
            trace_state: None,
        }
    }

    /// An exporter of batches of four with an interval that never comes, and what it sends.
    fn exporter() -> (
        Exporter,
        mpsc::UnboundedReceiver<usize>,
        crate::drain::Trigger,
    ) {
        let (sent, payloads) = mpsc::unbounded_channel();
        let settings = ExportSettings {
            batch_size: 4,
            interval: Duration::from_secs(3600),
            ..ExportSettings::default()
        };
        let target = Target {
            name: "test".into(),
            encoder: Box::new(super::zipkin::Zipkin::new(ApiVersion::HttpJson)),
            transport: Box::new(Sent(sent)),
        };
        // The trigger stays with the test: a watcher whose trigger is gone drains at once.
        let (trigger, watcher) = crate::drain::channel();
        let exporter = Exporter::start(target, &settings, &Metrics::new(), watcher, None);
        (exporter, payloads, trigger)
    }

    #[tokio::test]
    async fn a_full_batch_is_sent_when_its_last_span_is_queued_not_at_the_interval() {
        let (exporter, mut payloads, _trigger) = exporter();
        let handle = exporter.handle().expect("a handle");
        for n in 0..3 {
            handle.try_send(&span(n));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            payloads.try_recv().is_err(),
            "three of four: nothing sent yet"
        );
        handle.try_send(&span(3));
        let sent = tokio::time::timeout(Duration::from_secs(10), payloads.recv()).await;
        assert_eq!(sent.ok().flatten(), Some(4));
    }

    #[tokio::test]
    async fn when_the_last_handle_goes_the_worker_sends_the_open_batch_and_stops() {
        let (mut exporter, mut payloads, _trigger) = exporter();
        let handle = exporter.handle().expect("a handle");
        handle.try_send(&span(0));
        exporter.handle = None;
        drop(handle);
        let sent = tokio::time::timeout(Duration::from_secs(10), payloads.recv()).await;
        assert_eq!(sent.ok().flatten(), Some(1));
        let stopped = tokio::time::timeout(Duration::from_secs(10), exporter.worker).await;
        assert!(matches!(stopped, Ok(Ok(()))), "the worker stopped");
    }

    /// Tells the test how many spans each payload carried and on which thread it was sent.
    struct SentFrom(mpsc::UnboundedSender<(usize, Option<String>)>);

    impl Transport for SentFrom {
        fn send<'a>(&'a self, payload: &'a Payload, _: Duration) -> SendFuture<'a> {
            let thread = std::thread::current().name().map(String::from);
            let _ = self.0.send((payload.spans, thread));
            Box::pin(async { Ok(Delivered::default()) })
        }

        fn destination(&self) -> String {
            "test".into()
        }
    }

    #[tokio::test]
    async fn exporters_on_their_own_thread_send_from_it_and_deliver_everything_at_shutdown() {
        let (sent, mut payloads) = mpsc::unbounded_channel();
        let settings = ExportSettings {
            batch_size: 4,
            interval: Duration::from_secs(3600),
            ..ExportSettings::default()
        };
        let exporters =
            Exporters::on_own_thread(settings, Metrics::new()).expect("the export thread");
        let handle = exporters
            .start_target(Target {
                name: "test".into(),
                encoder: Box::new(super::zipkin::Zipkin::new(ApiVersion::HttpJson)),
                transport: Box::new(SentFrom(sent)),
            })
            .expect("a handle");
        for n in 0..5 {
            handle.try_send(&span(n));
        }
        drop(handle);
        exporters.shutdown(Duration::from_secs(10)).await;
        let mut got = Vec::new();
        while let Ok(payload) = payloads.try_recv() {
            got.push(payload);
        }
        let thread = Some("tracecar-export".to_string());
        // The full batch when its fourth span came, the open one at shutdown; both from the
        // export thread, none from the test's (the caller's) runtime.
        assert_eq!(got, vec![(4, thread.clone()), (1, thread)]);
    }
}
