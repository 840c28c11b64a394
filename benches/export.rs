//! The exporter's cost per span.
//!
//! - `encode/*`: one batch of 512 realistic spans (SERVER and CLIENT, 64- and 128-bit trace ids,
//!   Envoy's full tag set, some gRPC, some errors) through each of our encoders.
//! - `export_e2e/*`: on ONE core (a `current_thread` runtime), an `Exporter` started by
//!   `Exporters::use_backend` for a Zipkin or OpenTelemetry backend sends to a loopback
//!   collector in the same runtime that reads each request whole and only counts it (for
//!   OTLP/gRPC, an h2 server answering `grpc-status: 0`). Each iteration feeds N spans through the handle's `try_send`, yielding while
//!   `tracecar_export_queue_spans` is at the queue's capacity (so nothing is dropped), and ends
//!   when `tracecar_spans_exported_total` has grown by N. Timed with `iter_custom`: building
//!   the spans is outside the measurement, everything from the first `try_send` to the last
//!   exported span is inside.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::runtime::Runtime;
use tracecar::export::datadog::Datadog;
use tracecar::export::otlp::Otlp;
use tracecar::export::zipkin::Zipkin;
use tracecar::export::{Encode, ExportSettings, Exporters, Handle};
use tracecar::metrics::{BackendLabels, DroppedLabels, Metrics};
use tracecar::policy::effective::{
    ApiVersion, Backend, BackendConf, BackendKind, OpenTelemetryBackend, OtlpProtocol,
    ZipkinBackend,
};
use tracecar::trace::{Span, SpanSink};

const BATCH: usize = 512;
/// Spans per end-to-end iteration: 32 full batches.
const E2E_SPANS: usize = 32 * BATCH;

fn encode(c: &mut Criterion) {
    let spans = common::spans(BATCH, 1);
    let encoders: [(&str, Box<dyn Encode>); 4] = [
        ("zipkin_json", Box::new(Zipkin::new(ApiVersion::HttpJson))),
        ("zipkin_proto", Box::new(Zipkin::new(ApiVersion::HttpProto))),
        ("datadog_msgpack", Box::new(Datadog::new(false))),
        ("otlp_proto", Box::new(Otlp::new())),
    ];
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, encoder) in &encoders {
        let bytes: usize = encoder
            .encode(&spans)
            .payloads
            .iter()
            .map(|p| p.body.len())
            .sum();
        eprintln!("encode/{name}: {BATCH} spans -> {bytes} bytes");
        group.bench_function(*name, |b| b.iter(|| encoder.encode(black_box(&spans))));
    }
    group.finish();
}

#[derive(Clone, Copy)]
enum Kind {
    Zipkin(ApiVersion),
    Otlp(OtlpProtocol),
}

/// One exporter on a single-threaded runtime, with its collector.
struct Pipeline {
    runtime: Runtime,
    exporters: Exporters,
    handle: Arc<Handle>,
    metrics: Arc<Metrics>,
    backend: String,
    exported: Counter,
    queued: Gauge,
    capacity: i64,
}

impl Pipeline {
    fn new(kind: Kind) -> Pipeline {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current_thread runtime");
        let settings = ExportSettings::default();
        let capacity = settings.queue_capacity as i64;
        let metrics = Metrics::new();
        let backend_name = "bench".to_string();
        let conf = match kind {
            Kind::Zipkin(api) => {
                let (addr, _received) = runtime.block_on(common::start_receiver(false));
                BackendConf::Zipkin(ZipkinBackend {
                    url: format!("http://{addr}/api/v2/spans"),
                    trace_id_128bit: false,
                    api_version: api,
                    shared_span_context: true,
                })
            }
            Kind::Otlp(protocol) => {
                let addr = match protocol {
                    // The Zipkin receiver answers 202 with no body: full success for OTLP/HTTP.
                    OtlpProtocol::Http => runtime.block_on(common::start_receiver(false)).0,
                    OtlpProtocol::Grpc => {
                        runtime.block_on(common::grpc::start_counting_receiver()).0
                    }
                };
                BackendConf::OpenTelemetry(OpenTelemetryBackend {
                    endpoint: addr.to_string(),
                    protocol,
                    path: None,
                })
            }
        };
        let backend = Backend {
            name: backend_name.clone(),
            kind: match kind {
                Kind::Zipkin(_) => BackendKind::Zipkin,
                Kind::Otlp(_) => BackendKind::OpenTelemetry,
            },
            sampling: 100.0,
            conf,
        };
        let exporters = Exporters::new(settings, metrics.clone());
        // The worker is spawned on this runtime.
        let handle = {
            let _entered = runtime.enter();
            exporters
                .use_backend(Some(&backend))
                .expect("an exporter for the backend")
                .expect("a handle")
        };
        let labels = BackendLabels {
            backend: backend_name.clone(),
        };
        let exported = metrics.spans_exported.get_or_create(&labels).clone();
        let queued = metrics.export_queue.get_or_create(&labels).clone();
        Pipeline {
            exported,
            queued,
            runtime,
            exporters,
            handle,
            metrics,
            backend: backend_name,
            capacity,
        }
    }

    /// Feeds `spans` and waits until all of them are exported; returns the time it took.
    fn run(&self, spans: Vec<Span>) -> Duration {
        let n = spans.len() as u64;
        self.runtime.block_on(async {
            let target = self.exported.get() + n;
            let started = Instant::now();
            for span in spans {
                // The data path never waits; the bench does, so that it measures export
                // rather than drops.
                while self.queued.get() >= self.capacity {
                    tokio::task::yield_now().await;
                }
                self.handle.try_send(&span);
            }
            while self.exported.get() < target {
                tokio::task::yield_now().await;
            }
            started.elapsed()
        })
    }

    fn dropped(&self) -> u64 {
        [
            "queue_full",
            "export_failed",
            "shutdown",
            "too_large",
            "rejected",
        ]
        .into_iter()
        .map(|reason| {
            self.metrics
                .spans_dropped
                .get_or_create(&DroppedLabels {
                    backend: self.backend.clone(),
                    reason,
                })
                .get()
        })
        .sum()
    }

    fn finish(self, name: &str) {
        let dropped = self.dropped();
        eprintln!(
            "export_e2e/{name}: {} spans exported, {dropped} dropped",
            self.exported.get()
        );
        assert_eq!(dropped, 0, "the bench must not drop spans");
        self.runtime
            .block_on(self.exporters.shutdown(Duration::from_secs(5)));
    }
}

fn export_e2e(c: &mut Criterion) {
    let mut group = c.benchmark_group("export_e2e");
    group.throughput(Throughput::Elements(E2E_SPANS as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for (name, kind) in [
        ("zipkin_json_loopback", Kind::Zipkin(ApiVersion::HttpJson)),
        ("zipkin_proto_loopback", Kind::Zipkin(ApiVersion::HttpProto)),
        ("otlp_grpc_loopback", Kind::Otlp(OtlpProtocol::Grpc)),
        ("otlp_http_loopback", Kind::Otlp(OtlpProtocol::Http)),
    ] {
        let pipeline = Pipeline::new(kind);
        let mut seed = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    seed += 1;
                    let spans = common::spans(E2E_SPANS, seed);
                    total += pipeline.run(spans);
                }
                total
            })
        });
        pipeline.finish(name);
    }
    group.finish();
}

criterion_group!(benches, encode, export_e2e);
criterion_main!(benches);
