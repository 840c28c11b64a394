//! The per-request tracing work on the data path: extract the caller's context (every format,
//! native first), decide, inject the context for the next hop in the native format and every
//! format that came in. Header construction is outside the measurement.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use tracecar::proxy::observe::Forwarded;
use tracecar::trace::Format;
use tracecar::trace::context::SpanContext;
use tracecar::trace::id::{SpanId, TraceId};
use tracecar::trace::propagation::{Outgoing, extract, inject};
use tracecar::trace::sampler::{basis_points, decide};

/// Headers a caller sends.
type Headers = &'static [(&'static str, &'static str)];

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A browser-ish request as it reaches a sidecar, plus the given propagation headers.
fn request(incoming: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("host", HeaderValue::from_static("backend.mesh:8080"));
    map.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101"),
    );
    map.insert(
        "accept",
        HeaderValue::from_static(
            "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8",
        ),
    );
    map.insert(
        X_REQUEST_ID,
        HeaderValue::from_static("3f1c7a52-9b1e-4d8a-a6f0-2c8e5b7d9e41"),
    );
    for (name, value) in incoming {
        map.insert(*name, HeaderValue::from_static(value));
    }
    map
}

/// What the layer does per request (inbound, shared span context), minus the span record.
fn trace_path(headers: HeaderMap, bp: u32, native: Format) -> HeaderMap {
    let incoming = extract(&headers, native);
    let sampling = incoming.context.sampling;
    let decision = match &incoming.context.ids {
        Some(c) => decide(sampling, c.trace_id.to_hex().as_bytes(), bp),
        None => decide(
            sampling,
            headers
                .get(&X_REQUEST_ID)
                .map_or(&[][..], HeaderValue::as_bytes),
            bp,
        ),
    };
    let context = incoming.context.ids.unwrap_or_else(|| SpanContext {
        trace_id: TraceId::random(false),
        span_id: SpanId::random(),
        parent_id: None,
    });
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.headers = headers;
    inject(
        &mut Forwarded::new(&mut parts),
        native,
        &incoming,
        Outgoing {
            hop: &context,
            sampled: decision.sampled,
            debug: decision.debug,
            continued: incoming.context.ids.is_some(),
        },
    );
    parts.headers
}

fn bench(c: &mut Criterion) {
    let bp = basis_points(50.0);
    let b3_multi: Headers = &[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
    ];
    let w3c: Headers = &[
        (
            "traceparent",
            "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ];
    let datadog: Headers = &[
        ("x-datadog-trace-id", "7277407061855694839"),
        ("x-datadog-parent-id", "16453819474850114513"),
        ("x-datadog-sampling-priority", "1"),
        ("x-datadog-origin", "rum"),
        ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=80f198ee56343ba8"),
    ];
    // Names keep the B3 cases' old ids (Zipkin backend, native B3) so earlier runs compare.
    let cases: [(&str, Format, Headers); 9] = [
        (
            "unsampled_multi",
            Format::B3,
            &[
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
                ("x-b3-sampled", "0"),
            ],
        ),
        ("sampled_multi", Format::B3, b3_multi),
        ("root_no_context", Format::B3, &[]),
        (
            "single_b3",
            Format::B3,
            &[(
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            )],
        ),
        // One format per backend, native.
        ("w3c_native", Format::W3c, w3c),
        ("datadog_native", Format::Datadog, datadog),
        // A W3C caller (an OpenTelemetry SDK) in front of a Zipkin backend: B3 + W3C out.
        ("w3c_caller_zipkin", Format::B3, w3c),
        // A ddtrace caller (Datadog + W3C) in front of a Zipkin backend: three formats out.
        (
            "ddtrace_caller_zipkin",
            Format::B3,
            &[
                (
                    "traceparent",
                    "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
                ),
                ("tracestate", "dd=s:1;t.dm:-4"),
                ("x-datadog-trace-id", "7277407061855694839"),
                ("x-datadog-parent-id", "16453819474850114513"),
                ("x-datadog-sampling-priority", "1"),
                ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=80f198ee56343ba8"),
            ],
        ),
        ("root_no_context_datadog", Format::Datadog, &[]),
    ];
    let mut group = c.benchmark_group("trace_path");
    for (name, native, incoming) in cases {
        group.bench_function(name, |b| {
            b.iter_batched(
                || request(incoming),
                |headers| trace_path(black_box(headers), black_box(bp), native),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    meshtrace_tags(c);
}

/// MeshTrace's per-request tag work at 100 % sampling: three header tags (two present, one
/// falling back to its default) and two literals, appended to a span's tag list. The list is
/// built once per policy, outside the measurement, as the layer does.
fn meshtrace_tags(c: &mut Criterion) {
    use tracecar::trace::meshtrace::{MeshTraceSettings, TagRule};
    use tracecar::trace::sampler::{Knobs, decide_knobs};

    let knobs = Knobs {
        overall: basis_points(100.0),
        client: basis_points(100.0),
        random: basis_points(100.0),
    };
    let settings = MeshTraceSettings::new(
        knobs,
        [
            ("team", TagRule::Literal("core")),
            (
                "env",
                TagRule::Header {
                    name: "x-env",
                    default: Some("prod"),
                },
            ),
            (
                "version",
                TagRule::Header {
                    name: "x-version",
                    default: None,
                },
            ),
            (
                "tenant",
                TagRule::Header {
                    name: "x-tenant",
                    default: Some("none"),
                },
            ),
            ("kuma.mesh", TagRule::Literal("default")),
        ],
    );
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.headers = request(&[]);
    parts
        .headers
        .insert("x-env", HeaderValue::from_static("staging"));
    parts
        .headers
        .insert("x-version", HeaderValue::from_static("v2.3.1"));
    let head = tracecar::proxy::observe::Forwarded::new(&mut parts);
    let mut group = c.benchmark_group("trace_path");
    group.bench_function("meshtrace_header_tags", |b| {
        b.iter_batched(
            || tracecar::trace::Tags::with_capacity(24, 256),
            |mut tags| {
                let head = black_box(&head);
                let decision = decide_knobs(
                    None,
                    head.get(&X_REQUEST_ID).unwrap_or(&[]),
                    head.parts.headers.contains_key("x-client-trace-id"),
                    &settings.knobs,
                );
                if decision.sampled {
                    settings.push_tags(head, &mut tags);
                }
                tags
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
