//! OTLP export under collector faults (README, Export): whatever the OTLP collector does —
//! down, slow, refusing — every proxied request is answered, and every sampled span is
//! accounted for as exported or dropped with a reason, none left pending. Functional
//! assertions only: how fast requests are served is the benchmarks' business.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harness::export::{Policy, Sidecar, mesh_with_backend, server_dataplane, zipkin_backend};
use harness::otlp::{Receiver, Reply, backend};
use harness::{Client, Upstream, free_port, metric};
use tracecar::policy::effective::{Backend, Direction, OtlpProtocol};
use tracecar::trace::TraceConfig;

const REQUESTS: usize = 1000;
const CLIENTS: usize = 8;
const BACKEND: &str = "otel";

/// Every span's fate, from the Prometheus text after shutdown.
#[derive(Debug)]
struct Accounts {
    sampled: f64,
    exported: f64,
    dropped: f64,
    pending: f64,
}

/// One sidecar tracing to `backend`, `REQUESTS` requests from `CLIENTS` keep-alive clients,
/// then shutdown in `tracecar run`'s order. Returns the failed requests and the accounts.
async fn run(backend: Backend) -> (Vec<String>, Accounts) {
    let app = Upstream::start().await;
    // The TrafficTrace makes the listener traced; the sidecar is given `backend`.
    let policy = Policy::new(&mesh_with_backend(&zipkin_backend(
        "http://127.0.0.1:9/api/v2/spans",
        "",
    )));
    let sidecar = Sidecar::start_with_backend(
        &policy.path(),
        &server_dataplane("web-1", "web", "eu-west", app.address),
        Some(backend),
    )
    .await;
    let address = sidecar.listener(Direction::Inbound);
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut client: Option<Client> = None;
                while next.fetch_add(1, Ordering::SeqCst) < REQUESTS {
                    let outcome = match client.as_mut() {
                        Some(c) => c.get("/echo").await,
                        None => match Client::connect(address).await {
                            Ok(c) => client.insert(c).get("/echo").await,
                            Err(e) => Err(e),
                        },
                    };
                    match outcome {
                        Ok((200, _)) => {}
                        Ok((status, body)) => failures.push(format!("{status}: {body}")),
                        Err(e) => {
                            failures.push(e);
                            client = None;
                        }
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.expect("client task"));
    }
    assert!(
        sidecar.proxy.running.drain(Duration::from_secs(5)).await,
        "drain timed out"
    );
    sidecar.tracer.set_config(TraceConfig::default());
    sidecar
        .exporters
        .shutdown(tracecar::app::FLUSH_TIMEOUT)
        .await;
    let text = sidecar.metrics.encode();
    let b = [("backend", BACKEND)];
    let accounts = Accounts {
        sampled: metric(&text, "tracecar_spans_sampled_total", &b).unwrap_or(0.0),
        exported: metric(&text, "tracecar_spans_exported_total", &b).unwrap_or(0.0),
        dropped: metric(&text, "tracecar_spans_dropped_total", &b).unwrap_or(0.0),
        pending: metric(&text, "tracecar_export_queue_spans", &b).unwrap_or(f64::NAN),
    };
    (failures, accounts)
}

/// Every request answered 200; sampled = exported + dropped exactly; nothing pending.
async fn requests_and_accounts_intact(name: &str, backend: Backend) -> Accounts {
    let (failures, accounts) = run(backend).await;
    assert!(
        failures.is_empty(),
        "{name}: {} of {REQUESTS} requests failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(
        accounts.sampled, REQUESTS as f64,
        "{name}: one span per request at sampling 100: {accounts:?}"
    );
    assert_eq!(
        accounts.sampled,
        accounts.exported + accounts.dropped,
        "{name}: sampled = exported + dropped must hold exactly: {accounts:?}"
    );
    assert_eq!(
        accounts.pending, 0.0,
        "{name}: spans still pending: {accounts:?}"
    );
    accounts
}

fn down(protocol: OtlpProtocol) -> Backend {
    backend(
        BACKEND,
        std::net::SocketAddr::from(([127, 0, 0, 1], free_port())),
        protocol,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_collector_gets_every_span() {
    let receiver = Receiver::start().await;
    let accounts =
        requests_and_accounts_intact("healthy", receiver.backend(BACKEND, OtlpProtocol::Grpc))
            .await;
    assert_eq!(accounts.exported, REQUESTS as f64);
    assert_eq!(receiver.spans().len(), REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_collector_down_fails_no_request_and_accounts_for_every_span() {
    let accounts = requests_and_accounts_intact("gRPC down", down(OtlpProtocol::Grpc)).await;
    assert_eq!(accounts.dropped, REQUESTS as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_collector_down_fails_no_request_and_accounts_for_every_span() {
    let accounts = requests_and_accounts_intact("HTTP down", down(OtlpProtocol::Http)).await;
    assert_eq!(accounts.dropped, REQUESTS as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_collector_slow_fails_no_request_and_accounts_for_every_span() {
    let slow = Receiver::scripted(Vec::new(), Some(Reply::Slow(Duration::from_secs(2)))).await;
    requests_and_accounts_intact("gRPC slow", slow.backend(BACKEND, OtlpProtocol::Grpc)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_collector_slow_fails_no_request_and_accounts_for_every_span() {
    let slow = Receiver::scripted(Vec::new(), Some(Reply::Slow(Duration::from_secs(2)))).await;
    requests_and_accounts_intact("HTTP slow", slow.backend(BACKEND, OtlpProtocol::Http)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_collector_refusing_fails_no_request_and_accounts_for_every_span() {
    for code in [tonic::Code::Unavailable, tonic::Code::PermissionDenied] {
        let refusing = Receiver::scripted(
            Vec::new(),
            Some(Reply::Grpc {
                code,
                retry_delay: None,
            }),
        )
        .await;
        let accounts = requests_and_accounts_intact(
            &format!("gRPC {code:?}"),
            refusing.backend(BACKEND, OtlpProtocol::Grpc),
        )
        .await;
        assert_eq!(accounts.dropped, REQUESTS as f64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_collector_refusing_fails_no_request_and_accounts_for_every_span() {
    for status in [503, 403] {
        let refusing = Receiver::scripted(
            Vec::new(),
            Some(Reply::Http {
                status,
                retry_after: None,
            }),
        )
        .await;
        let accounts = requests_and_accounts_intact(
            &format!("HTTP {status}"),
            refusing.backend(BACKEND, OtlpProtocol::Http),
        )
        .await;
        assert_eq!(accounts.dropped, REQUESTS as f64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_rejecting_part_of_every_batch_accounts_for_every_span() {
    let partial = Receiver::scripted(Vec::new(), Some(Reply::Accept { rejected: 1 })).await;
    let accounts =
        requests_and_accounts_intact("partial", partial.backend(BACKEND, OtlpProtocol::Grpc)).await;
    assert!(accounts.dropped >= 1.0, "{accounts:?}");
}
