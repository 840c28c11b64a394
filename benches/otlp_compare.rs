//! tracecar's OTLP export against `opentelemetry-otlp` 0.32 (feature `otel-compare`).
//!
//! Both get the same spans as the Zipkin comparison (`otel_compare`): ours as
//! `tracecar::trace::Span`, theirs as `opentelemetry_sdk::trace::SpanData` built by
//! `common::otel::to_otel`, with the service name on the exporter's `Resource`. On one
//! `current_thread` tokio runtime:
//! - OTLP/gRPC: our `Otlp` encoder and `OtlpGrpc` transport, and `opentelemetry_otlp`'s
//!   `SpanExporter` built `with_tonic()`, each to its own in-process tonic `TraceServiceServer`;
//! - OTLP/HTTP protobuf: our `Otlp` encoder and `OtlpHttp` (our hyper client), and the
//!   `with_http()` exporter (reqwest's async client), to the loopback HTTP collector.
//!
//! Prints, as Markdown: (a) spans/s of each, one batch of 512 at a time, encode + send +
//! answer, and protobuf bytes per span; (b) a field-by-field table of the
//! `ExportTraceServiceRequest` each delivered over gRPC for the same spans.
//!
//! `cargo bench --features otel-compare --bench otlp_compare`

mod common;

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::otel::{median, spread, to_otel};
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{SpanFlags, Status};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use prost::Message;
use tracecar::export::client::ExportClient;
use tracecar::export::otlp::{Otlp, OtlpGrpc, OtlpHttp};
use tracecar::export::{Encode, Transport};
use tracecar::trace::Span;

const BATCH: usize = 512;
const BATCHES_PER_ROUND: usize = 32;
const ROUNDS: usize = 7;
const TIMEOUT: Duration = Duration::from_secs(10);
const DECODE_RUNS: u32 = 50;

/// Our exporter's encode + send, without its queue and batching (the batch is given).
struct Ours {
    encoder: Otlp,
    transport: Box<dyn Transport>,
}

impl Ours {
    async fn export(&self, spans: &[Span]) {
        for payload in &self.encoder.encode(spans).payloads {
            if let Err(failure) = self.transport.send(payload, TIMEOUT).await {
                panic!("our OTLP export failed: {}", failure.message);
            }
        }
    }
}

async fn theirs_export(exporter: &opentelemetry_otlp::SpanExporter, batch: Vec<SpanData>) {
    if let Err(e) = exporter.export(batch).await {
        panic!("opentelemetry-otlp export failed: {e}");
    }
}

/// One transport's pair of exporters and the rates they reached.
struct Contest {
    ours: Ours,
    theirs: opentelemetry_otlp::SpanExporter,
    ours_rates: Vec<f64>,
    theirs_rates: Vec<f64>,
}

impl Contest {
    fn new(ours: Ours, mut theirs: opentelemetry_otlp::SpanExporter) -> Contest {
        theirs.set_resource(&common::otel::resource());
        Contest {
            ours,
            theirs,
            ours_rates: Vec::new(),
            theirs_rates: Vec::new(),
        }
    }

    /// One round of each, ours first; their conversion to `SpanData` happens before the timer
    /// (their exporter takes the batch by value: building it is the caller's work).
    async fn round(&mut self, batches: &[Vec<Span>], scope: &InstrumentationScope) {
        let spans = (batches.len() * BATCH) as f64;
        let started = Instant::now();
        for batch in batches {
            self.ours.export(batch).await;
        }
        self.ours_rates
            .push(spans / started.elapsed().as_secs_f64());

        let converted: Vec<Vec<SpanData>> = batches
            .iter()
            .map(|b| b.iter().map(|s| to_otel(s, scope)).collect())
            .collect();
        let started = Instant::now();
        for batch in converted {
            theirs_export(&self.theirs, batch).await;
        }
        self.theirs_rates
            .push(spans / started.elapsed().as_secs_f64());
    }
}

fn main() {
    // reqwest is built with rustls and no provider of its own: use ring, as tracecar does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current_thread runtime");
    runtime.block_on(run());
}

async fn run() {
    let scope = common::otel::scope();
    // One gRPC receiver per side, so that each one's last request is that side's.
    let (ours_grpc_addr, ours_grpc) = common::grpc::start_receiver().await;
    let (theirs_grpc_addr, theirs_grpc) = common::grpc::start_receiver().await;
    let mut grpc = Contest::new(
        Ours {
            encoder: Otlp::new(),
            transport: Box::new(OtlpGrpc::new(
                format!("http://{ours_grpc_addr}").parse().expect("a url"),
            )),
        },
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{theirs_grpc_addr}"))
            .with_timeout(TIMEOUT)
            .build()
            .expect("the opentelemetry-otlp tonic exporter"),
    );
    let (http_addr, http_received) = common::start_receiver(true).await;
    let mut http = Contest::new(
        Ours {
            encoder: Otlp::new(),
            transport: Box::new(OtlpHttp {
                uri: format!("http://{http_addr}/ours/v1/traces")
                    .parse()
                    .expect("a url"),
                client: ExportClient::new(),
            }),
        },
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("http://{http_addr}/theirs/v1/traces"))
            .with_timeout(TIMEOUT)
            .build()
            .expect("the opentelemetry-otlp HTTP exporter"),
    );

    // (a) Throughput: warm up (connections, allocator), then rounds alternating between the
    // two sides of each transport.
    let batches: Vec<Vec<Span>> = (0..BATCHES_PER_ROUND)
        .map(|i| common::spans(BATCH, 1_000 + i as u64))
        .collect();
    for contest in [&mut grpc, &mut http] {
        contest.round(&batches[..4], &scope).await;
        contest.ours_rates.clear();
        contest.theirs_rates.clear();
    }
    for _ in 0..ROUNDS {
        grpc.round(&batches, &scope).await;
        http.round(&batches, &scope).await;
    }
    // Every batch is 512 spans: the last one each side sent gives the bytes per span.
    let last_grpc = |received: &common::grpc::Received| {
        let last = received.last.lock().expect("the last request");
        last.as_ref().expect("a request").encoded_len() as f64 / BATCH as f64
    };
    let last_http = |path: &str| {
        let last = http_received.last.lock().expect("the last bodies");
        last[path].len() as f64 / BATCH as f64
    };
    println!("## (a) Throughput: encode + send to a loopback receiver, one core\n");
    println!(
        "Batches of {BATCH} realistic spans, {BATCHES_PER_ROUND} batches per round, {ROUNDS} rounds \
         alternating, one `current_thread` runtime; median round (min–max).\n"
    );
    println!("| exporter | transport | spans/s | protobuf bytes/span |\n|---|---|---|---|");
    println!(
        "| tracecar `Otlp` + `OtlpGrpc` | gRPC (tonic) | {} | {:.0} |",
        spread(&grpc.ours_rates),
        last_grpc(&ours_grpc)
    );
    println!(
        "| opentelemetry-otlp 0.32 `with_tonic()` | gRPC (tonic) | {} | {:.0} |",
        spread(&grpc.theirs_rates),
        last_grpc(&theirs_grpc)
    );
    println!(
        "| tracecar `Otlp` + `OtlpHttp` (`ExportClient`) | HTTP/1.1 protobuf | {} | {:.0} |",
        spread(&http.ours_rates),
        last_http("/ours/v1/traces")
    );
    println!(
        "| opentelemetry-otlp 0.32 `with_http()` (reqwest) | HTTP/1.1 protobuf | {} | {:.0} |",
        spread(&http.theirs_rates),
        last_http("/theirs/v1/traces")
    );
    println!(
        "\ntracecar / opentelemetry-otlp: {:.2}× over gRPC, {:.2}× over HTTP",
        median(&grpc.ours_rates) / median(&grpc.theirs_rates),
        median(&http.ours_rates) / median(&http.theirs_rates)
    );
    println!(
        "(gRPC receivers: {} requests / {} spans ours, {} / {} theirs; HTTP collector: {} \
         connections for {} requests)\n",
        ours_grpc.requests.load(Ordering::Relaxed),
        ours_grpc.spans.load(Ordering::Relaxed),
        theirs_grpc.requests.load(Ordering::Relaxed),
        theirs_grpc.spans.load(Ordering::Relaxed),
        http_received.connections.load(Ordering::Relaxed),
        http_received.requests.load(Ordering::Relaxed)
    );

    // The gRPC receiver decodes every request on the same core before it answers: that cost
    // is inside both gRPC figures (the HTTP collector only reads the bytes).
    let decode = |received: &common::grpc::Received| {
        let bytes = received
            .last
            .lock()
            .expect("the last request")
            .as_ref()
            .expect("a request")
            .encode_to_vec();
        let started = Instant::now();
        for _ in 0..DECODE_RUNS {
            black_box(ExportTraceServiceRequest::decode(bytes.as_slice()).expect("a request"));
        }
        started.elapsed() / DECODE_RUNS
    };
    let (ours_decode, theirs_decode) = (decode(&ours_grpc), decode(&theirs_grpc));
    println!(
        "The gRPC receiver's own prost decode of one batch of {BATCH}: {:.0} µs for tracecar's, \
         {:.0} µs for opentelemetry-otlp's ({:.0} and {:.0} spans/s on its own).\n",
        ours_decode.as_secs_f64() * 1e6,
        theirs_decode.as_secs_f64() * 1e6,
        BATCH as f64 / ours_decode.as_secs_f64(),
        BATCH as f64 / theirs_decode.as_secs_f64()
    );

    // (b) The same spans, side by side, as each gRPC receiver decoded them.
    let samples = common::otel::samples();
    let spans: Vec<Span> = samples.iter().map(|(span, _)| span.clone()).collect();
    grpc.ours.export(&spans).await;
    theirs_export(
        &grpc.theirs,
        spans.iter().map(|s| to_otel(s, &scope)).collect(),
    )
    .await;
    let take = |received: &common::grpc::Received| {
        received
            .last
            .lock()
            .expect("the last request")
            .take()
            .expect("a request")
    };
    let (ours_request, theirs_request) = (take(&ours_grpc), take(&theirs_grpc));
    println!(
        "## (b) Field by field: the `ExportTraceServiceRequest` each sent for the same spans\n"
    );
    println!(
        "Both requests hold one `ResourceSpans` with one `ScopeSpans`: tracecar {}, \
         opentelemetry-otlp {}.\n",
        shape(&ours_request),
        shape(&theirs_request)
    );
    println!("### Resource and scope (the same for every span)\n");
    println!(
        "{}",
        table(&envelope(&ours_request), &envelope(&theirs_request)).0
    );
    for (at, (_, what)) in samples.iter().enumerate() {
        let (ours_span, theirs_span) = (
            span_fields(&ours_request, at),
            span_fields(&theirs_request, at),
        );
        let (table, same, differ) = table(&ours_span, &theirs_span);
        println!("### {what}\n");
        println!("{same} fields equal, {differ} differ.\n");
        println!("{table}");
    }
    let _ = grpc.theirs.shutdown();
    let _ = http.theirs.shutdown();
}

/// `n ResourceSpans / n ScopeSpans / n spans`, to show how each grouped the batch.
fn shape(request: &ExportTraceServiceRequest) -> String {
    let scopes: usize = request
        .resource_spans
        .iter()
        .map(|r| r.scope_spans.len())
        .sum();
    format!(
        "{} / {} / {} spans",
        request.resource_spans.len(),
        scopes,
        spans_of(request).len()
    )
}

fn spans_of(
    request: &ExportTraceServiceRequest,
) -> Vec<&opentelemetry_proto::tonic::trace::v1::Span> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect()
}

/// Resource attributes and scope of the first `ResourceSpans`/`ScopeSpans`, as `field = value`.
fn envelope(request: &ExportTraceServiceRequest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let resource_spans = &request.resource_spans[0];
    if let Some(resource) = &resource_spans.resource {
        attributes("resource", &resource.attributes, &mut out);
        out.push((
            "resource.dropped_attributes_count".into(),
            resource.dropped_attributes_count.to_string(),
        ));
    }
    out.push((
        "resource_spans.schema_url".into(),
        quoted(&resource_spans.schema_url),
    ));
    let scope_spans = &resource_spans.scope_spans[0];
    if let Some(scope) = &scope_spans.scope {
        out.push(("scope.name".into(), quoted(&scope.name)));
        out.push(("scope.version".into(), quoted(&scope.version)));
        attributes("scope.attributes", &scope.attributes, &mut out);
    }
    out.push((
        "scope_spans.schema_url".into(),
        quoted(&scope_spans.schema_url),
    ));
    out
}

/// Every field of the `at`-th span of the request (both sides keep the batch's order), as
/// `field = value`.
fn span_fields(request: &ExportTraceServiceRequest, at: usize) -> Vec<(String, String)> {
    let span = spans_of(request)[at];
    let mut out = vec![
        ("trace_id".to_string(), hex(&span.trace_id)),
        ("span_id".into(), hex(&span.span_id)),
        ("parent_span_id".into(), hex(&span.parent_span_id)),
        ("name".into(), quoted(&span.name)),
        ("kind".into(), kind(span.kind)),
        (
            "start_time_unix_nano".into(),
            span.start_time_unix_nano.to_string(),
        ),
        (
            "end_time_unix_nano".into(),
            span.end_time_unix_nano.to_string(),
        ),
        ("flags".into(), flags(span.flags)),
        ("trace_state".into(), quoted(&span.trace_state)),
    ];
    // An absent status is UNSET; both are listed as they were sent.
    if let Some(Status { message, code }) = &span.status {
        let code = StatusCode::try_from(*code)
            .map_or_else(|_| code.to_string(), |c| c.as_str_name().to_string());
        out.push(("status.code".into(), code));
        out.push(("status.message".into(), quoted(message)));
    }
    out.push(("events".into(), span.events.len().to_string()));
    out.push(("links".into(), span.links.len().to_string()));
    out.push((
        "dropped_attributes_count".into(),
        span.dropped_attributes_count.to_string(),
    ));
    attributes("attributes", &span.attributes, &mut out);
    out
}

fn attributes(prefix: &str, list: &[KeyValue], out: &mut Vec<(String, String)>) {
    for kv in list {
        out.push((format!("{prefix}.{}", kv.key), any(kv.value.as_ref())));
    }
}

/// A value with its type visible: strings quoted, numbers bare.
fn any(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => quoted(s),
        Some(any_value::Value::IntValue(i)) => format!("{i} (int)"),
        Some(any_value::Value::BoolValue(b)) => format!("{b} (bool)"),
        Some(any_value::Value::DoubleValue(d)) => format!("{d} (double)"),
        Some(other) => format!("{other:?}"),
        None => "(no value)".into(),
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind(kind: i32) -> String {
    SpanKind::try_from(kind).map_or_else(|_| kind.to_string(), |k| k.as_str_name().to_string())
}

/// The flags and what they say: W3C trace flags in the low byte, then OTLP's remote-parent bits.
fn flags(flags: u32) -> String {
    let mut meaning = Vec::new();
    if flags & 0x01 != 0 {
        meaning.push("sampled");
    }
    if flags & SpanFlags::ContextHasIsRemoteMask as u32 != 0 {
        meaning.push("has_is_remote");
    }
    if flags & SpanFlags::ContextIsRemoteMask as u32 != 0 {
        meaning.push("is_remote");
    }
    format!("0x{flags:03x} ({})", meaning.join(", "))
}

/// A Markdown table of every field either side sent, in our order then theirs' extra ones;
/// with the counts of equal and differing fields.
fn table(ours: &[(String, String)], theirs: &[(String, String)]) -> (String, usize, usize) {
    let mut fields: Vec<&str> = ours.iter().map(|(f, _)| f.as_str()).collect();
    for (f, _) in theirs {
        if !fields.contains(&f.as_str()) {
            fields.push(f);
        }
    }
    let get = |side: &[(String, String)], field: &str| {
        side.iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| format!("`{v}`"))
            .unwrap_or_else(|| "(absent)".to_string())
    };
    let mut table =
        String::from("| field | tracecar | opentelemetry-otlp 0.32 | |\n|---|---|---|---|\n");
    let (mut same, mut differ) = (0, 0);
    for field in fields {
        let (x, y) = (get(ours, field), get(theirs, field));
        // Leaving the status out and sending `UNSET` with no message mean the same in proto3.
        let defaulted =
            |a: &str, b: &str| a == "(absent)" && (b == "`STATUS_CODE_UNSET`" || b == "`\"\"`");
        let mark = if x == y {
            same += 1;
            "same"
        } else if defaulted(&x, &y) || defaulted(&y, &x) {
            same += 1;
            "same meaning (default written out)"
        } else {
            differ += 1;
            "**differs**"
        };
        table.push_str(&format!("| `{field}` | {x} | {y} | {mark} |\n"));
    }
    (table, same, differ)
}
