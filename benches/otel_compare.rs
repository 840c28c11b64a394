//! tracecar's Zipkin JSON export against `opentelemetry-zipkin` 0.32 (feature `otel-compare`).
//!
//! Both get the same spans (ours as `tracecar::trace::Span`, theirs as
//! `opentelemetry_sdk::trace::SpanData` with the same ids, kind, name, times and attributes,
//! the service name through the exporter's `Resource`) and POST them to the same kind of
//! loopback collector on one `current_thread` tokio runtime:
//! - ours: the `httpJson` encoder and the exporter's HTTP client (`ExportClient::post`);
//! - theirs: `ZipkinExporter::export` (its async reqwest client, rustls), awaited.
//!
//! Prints, as Markdown: (a) spans/s of each, one batch of 512 at a time, encode + POST +
//! answer; (b) a field-by-field table of the JSON each sent for the same spans.
//!
//! `cargo bench --features otel-compare --bench otel_compare`

// The exporter is deprecated upstream; that is one of the reasons tracecar has its own.
#![allow(deprecated)]

mod common;

use std::time::{Duration, Instant};

use common::otel::{median, spread, to_otel};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_zipkin::ZipkinExporter;
use serde_json::Value;
use tracecar::export::client::ExportClient;
use tracecar::export::zipkin::Zipkin;
use tracecar::export::{Encode, Payload};
use tracecar::policy::effective::ApiVersion;
use tracecar::trace::Span;

const BATCH: usize = 512;
const BATCHES_PER_ROUND: usize = 32;
const ROUNDS: usize = 7;

struct Ours {
    encoder: Zipkin,
    client: ExportClient,
    uri: http::Uri,
}

impl Ours {
    async fn export(&self, spans: &[Span]) {
        let encoded = self.encoder.encode(spans);
        for payload in &encoded.payloads {
            post(&self.client, &self.uri, payload).await;
        }
    }
}

async fn post(client: &ExportClient, uri: &http::Uri, payload: &Payload) {
    if let Err(failure) = client.post(uri, payload, Duration::from_secs(10)).await {
        panic!("our export failed: {}", failure.message);
    }
}

async fn theirs_export(exporter: &ZipkinExporter, batch: Vec<SpanData>) {
    if let Err(e) = exporter.export(batch).await {
        panic!("opentelemetry-zipkin export failed: {e}");
    }
}

/// `path = value` leaves of a JSON object, in document order.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // Tags arrive in hash order from theirs: sort inside nested objects.
            if !prefix.is_empty() {
                keys.sort();
            }
            for key in keys {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, &map[key], out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn find_span<'a>(body: &'a Value, id: &str) -> &'a Value {
    body.as_array()
        .and_then(|spans| spans.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("span {id} not in the captured body"))
}

/// A Markdown table of every field either side sent; `only_differences` leaves out equal ones.
fn diff_table(ours: &Value, theirs: &Value, only_differences: bool) -> (String, usize, usize) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", ours, &mut a);
    flatten("", theirs, &mut b);
    let mut paths: Vec<String> = a.iter().map(|(p, _)| p.clone()).collect();
    for (p, _) in &b {
        if !paths.contains(p) {
            paths.push(p.clone());
        }
    }
    let get = |side: &[(String, String)], path: &str| {
        side.iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| format!("`{v}`"))
            .unwrap_or_else(|| "(absent)".to_string())
    };
    let mut table =
        String::from("| field | tracecar | opentelemetry-zipkin 0.32 | |\n|---|---|---|---|\n");
    let (mut same, mut differ) = (0, 0);
    // Spelling out a default (`false`, `[]`) where the other side leaves the field out.
    let defaulted = |x: &str, y: &str| {
        let default = |v: &str| v == "`false`" || v == "`[]`";
        (x == "(absent)" && default(y)) || (y == "(absent)" && default(x))
    };
    for path in &paths {
        let (x, y) = (get(&a, path), get(&b, path));
        let equal = x == y || defaulted(&x, &y);
        if equal {
            same += 1;
        } else {
            differ += 1;
        }
        if equal && only_differences {
            continue;
        }
        let mark = if x == y {
            "same"
        } else if equal {
            "same meaning (default written out)"
        } else {
            "**differs**"
        };
        table.push_str(&format!("| `{path}` | {x} | {y} | {mark} |\n"));
    }
    (table, same, differ)
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
    let (addr, received) = common::start_receiver(true).await;
    let ours = Ours {
        encoder: Zipkin::new(ApiVersion::HttpJson),
        client: ExportClient::new(),
        uri: format!("http://{addr}/ours").parse().expect("a url"),
    };
    let mut theirs = ZipkinExporter::builder()
        .with_collector_endpoint(format!("http://{addr}/theirs"))
        .build()
        .expect("the opentelemetry-zipkin exporter");
    theirs.set_resource(&common::otel::resource());
    let scope = common::otel::scope();

    // (a) Throughput, rounds alternating between the two.
    let batches: Vec<Vec<Span>> = (0..BATCHES_PER_ROUND)
        .map(|i| common::spans(BATCH, 1_000 + i as u64))
        .collect();
    for batch in batches.iter().take(4) {
        ours.export(batch).await;
        theirs_export(&theirs, batch.iter().map(|s| to_otel(s, &scope)).collect()).await;
    }
    let spans_per_round = (BATCH * BATCHES_PER_ROUND) as f64;
    let (mut ours_rates, mut theirs_rates) = (Vec::new(), Vec::new());
    let (mut ours_bytes, mut theirs_bytes) = (0u64, 0u64);
    for _ in 0..ROUNDS {
        let before = received.bytes.load(std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        for batch in &batches {
            ours.export(batch).await;
        }
        ours_rates.push(spans_per_round / started.elapsed().as_secs_f64());
        let middle = received.bytes.load(std::sync::atomic::Ordering::Relaxed);
        ours_bytes = middle - before;

        // Their exporter takes its batch by value: the conversion is the caller's, untimed.
        let converted: Vec<Vec<SpanData>> = batches
            .iter()
            .map(|b| b.iter().map(|s| to_otel(s, &scope)).collect())
            .collect();
        let started = Instant::now();
        for batch in converted {
            theirs_export(&theirs, batch).await;
        }
        theirs_rates.push(spans_per_round / started.elapsed().as_secs_f64());
        theirs_bytes = received.bytes.load(std::sync::atomic::Ordering::Relaxed) - middle;
    }
    let (o, t) = (median(&ours_rates), median(&theirs_rates));
    let per_span = |bytes: u64| bytes as f64 / spans_per_round;
    println!("## (a) Throughput: encode + POST to a loopback collector, one core\n");
    println!(
        "Batches of {BATCH} realistic spans, {BATCHES_PER_ROUND} batches per round, {ROUNDS} rounds \
         alternating, one `current_thread` runtime; median round (min–max).\n"
    );
    println!("| exporter | spans/s | JSON bytes/span |\n|---|---|---|");
    println!(
        "| tracecar `httpJson` + `ExportClient` | {} | {:.0} |",
        spread(&ours_rates),
        per_span(ours_bytes)
    );
    println!(
        "| opentelemetry-zipkin 0.32 `export` (reqwest, rustls) | {} | {:.0} |",
        spread(&theirs_rates),
        per_span(theirs_bytes)
    );
    println!("\ntracecar / opentelemetry-zipkin: {:.2}×", o / t);
    println!(
        "(the collector accepted {} connections for {} requests)\n",
        received
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        received.requests.load(std::sync::atomic::Ordering::Relaxed)
    );

    // (b) The same spans, side by side.
    let samples = common::otel::samples();
    let spans: Vec<Span> = samples.iter().map(|(span, _)| span.clone()).collect();
    ours.export(&spans).await;
    theirs_export(&theirs, spans.iter().map(|s| to_otel(s, &scope)).collect()).await;
    let bodies = received.last.lock().expect("captured bodies").clone();
    let parse = |path: &str| -> Value {
        serde_json::from_slice(&bodies[path]).expect("a JSON body from the exporter")
    };
    let (ours_body, theirs_body) = (parse("/ours"), parse("/theirs"));
    // The root in full; the others only where the two differ.
    let only_differences = [false, true, true];
    println!("## (b) Field by field: the JSON each sent for the same span\n");
    for ((span, what), only_differences) in samples.iter().zip(only_differences) {
        let id = span.id.to_hex();
        let (table, same, differ) = diff_table(
            find_span(&ours_body, id.as_str()),
            find_span(&theirs_body, id.as_str()),
            only_differences,
        );
        println!("### {what}\n");
        println!(
            "{same} fields equal, {differ} differ{}.\n",
            if only_differences {
                " (only the differing ones listed)"
            } else {
                ""
            }
        );
        println!("{table}");
    }
    let _ = theirs.shutdown();
}
