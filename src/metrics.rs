//! The one metrics registry (Prometheus text at `/metrics`). Handles are resolved once per
//! listener or backend, so the request path only bumps atomics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: &'static str,
    pub service: String,
    pub protocol: &'static str,
    pub status_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub direction: &'static str,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    pub backend: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExportLabels {
    pub backend: String,
    pub result: &'static str,
}

/// `format`: `b3`, `w3c` or `datadog`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabels {
    pub format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Why a span did not reach its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    QueueFull,
    ExportFailed,
    Shutdown,
    TooLarge,
    /// The collector accepted the request but refused these spans (OTLP partial success).
    Rejected,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportFailed => "export_failed",
            DropReason::Shutdown => "shutdown",
            DropReason::TooLarge => "too_large",
            DropReason::Rejected => "rejected",
        }
    }
}

fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<DurationLabels, Histogram>,
    pub spans_sampled: Family<BackendLabels, Counter>,
    pub spans_exported: Family<BackendLabels, Counter>,
    pub spans_dropped: Family<DroppedLabels, Counter>,
    pub export_requests: Family<ExportLabels, Counter>,
    pub export_queue: Family<BackendLabels, Gauge>,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub trace_context_invalid: Family<FormatLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("tracecar");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Proxied requests", requests.clone());
        let request_duration = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(duration_buckets())
        });
        registry.register(
            "request_duration_seconds",
            "Time from request head to end of response body",
            request_duration.clone(),
        );
        let spans_sampled = Family::<BackendLabels, Counter>::default();
        registry.register(
            "spans_sampled",
            "Spans recorded for a backend",
            spans_sampled.clone(),
        );
        let spans_exported = Family::<BackendLabels, Counter>::default();
        registry.register(
            "spans_exported",
            "Spans the backend accepted",
            spans_exported.clone(),
        );
        let spans_dropped = Family::<DroppedLabels, Counter>::default();
        registry.register(
            "spans_dropped",
            "Spans lost, by reason",
            spans_dropped.clone(),
        );
        let export_requests = Family::<ExportLabels, Counter>::default();
        registry.register(
            "export_requests",
            "Export requests, by result",
            export_requests.clone(),
        );
        let export_queue = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "export_queue_spans",
            "Spans waiting in the export queue",
            export_queue.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads, by result",
            policy_reloads.clone(),
        );
        // Shown from the start, at 0: "no reload failed" is worth seeing before one does.
        for result in ["success", "failure"] {
            let _ = policy_reloads.get_or_create(&ResultLabels { result });
        }
        let trace_context_invalid = Family::<FormatLabels, Counter>::default();
        registry.register(
            "trace_context_invalid",
            "Requests whose trace context was malformed and ignored, by format",
            trace_context_invalid.clone(),
        );
        // Shown from the start, at 0, one series per format.
        for format in crate::trace::Format::ALL {
            let _ = trace_context_invalid.get_or_create(&FormatLabels {
                format: format.label(),
            });
        }
        Arc::new(Metrics {
            registry,
            requests,
            request_duration,
            spans_sampled,
            spans_exported,
            spans_dropped,
            export_requests,
            export_queue,
            policy_reloads,
            trace_context_invalid,
        })
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Request metrics of one listener, resolved once: the request path only bumps atomics.
pub struct ListenerStats {
    family: Family<RequestLabels, Counter>,
    direction: &'static str,
    service: String,
    protocol: &'static str,
    /// One counter per status code (0 = no response), created on first use.
    by_status: Box<[std::sync::OnceLock<Counter>]>,
    pub duration: Histogram,
}

impl ListenerStats {
    pub fn new(
        metrics: &Metrics,
        direction: &'static str,
        service: &str,
        protocol: &'static str,
    ) -> ListenerStats {
        ListenerStats {
            family: metrics.requests.clone(),
            direction,
            service: service.to_string(),
            protocol,
            by_status: (0..600).map(|_| std::sync::OnceLock::new()).collect(),
            duration: metrics
                .request_duration
                .get_or_create(&DurationLabels {
                    direction,
                    service: service.to_string(),
                })
                .clone(),
        }
    }

    /// Records one finished request.
    pub fn record(&self, status: u16, seconds: f64) {
        let index = usize::from(status).min(self.by_status.len() - 1);
        let counter = self.by_status[index].get_or_init(|| {
            self.family
                .get_or_create(&RequestLabels {
                    direction: self.direction,
                    service: self.service.clone(),
                    protocol: self.protocol,
                    status_code: status,
                })
                .clone()
        });
        counter.inc();
        self.duration.observe(seconds);
    }
}
