//! The exporter under collector faults (README, Export): whatever the collector does — down, slow,
//! failing — no proxied request fails, memory stays bounded, and every sampled span is
//! accounted for as exported or dropped with a reason.
//!
//! That requests do not slow down is a timing, measured where timings belong: the load
//! benchmark's `tracecar-down-w1` configuration, next to `tracecar-s100-w1` in the same run
//! (benches/README.md).
//!
//! The sidecar runs in-process, wired as `tracecar run` wires it (policy → Exporters → Tracer →
//! proxy with metrics), in front of the harness app, with an in-test Zipkin collector.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use harness::{Answer, Client, Collector, Upstream, down_collector_url, metric};
use tracecar::export::{ExportSettings, Exporters};
use tracecar::metrics::{BackendLabels, Metrics};
use tracecar::proxy::{ProxyConfig, Running};
use tracecar::trace::{TraceConfig, Tracer};

const REQUESTS: usize = 2000;
const CLIENTS: usize = 16;
const BACKEND: &str = "collector";
/// What the collector's slowness is: well past a batch interval, within the request timeout.
const SLOW: Duration = Duration::from_secs(2);
/// Time the exporters get to flush at shutdown, as `tracecar run` gives them.
const FLUSH: Duration = tracecar::app::FLUSH_TIMEOUT;

/// Each load is 2,000 requests from 16 clients: the tests of this file take turns, so that on a
/// small machine they do not starve each other into request timeouts.
static ONE_LOAD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The defaults, with the retry backoff shortened so failing runs finish quickly; the shape
/// (queue, batch size, interval, tries, timeouts) is the one users get.
fn settings() -> ExportSettings {
    ExportSettings {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..ExportSettings::default()
    }
}

/// One sidecar in this process, tracing everything (sampling 100) to the collector at `url`.
struct InProcess {
    running: Running,
    tracer: Arc<Tracer>,
    exporters: Arc<Exporters>,
    metrics: Arc<Metrics>,
    address: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn start(app: &Upstream, url: &str, settings: ExportSettings) -> InProcess {
        let files = harness::SidecarFiles::new(app.address, &[(BACKEND, url)], BACKEND);
        let checked =
            tracecar::policy::check(std::slice::from_ref(&files.policy), Some(&files.dataplane));
        assert!(!checked.failed(false), "{:?}", checked.diagnostics);
        let dataplane = checked.dataplane.clone().expect("a dataplane");
        let effective = checked.set.effective(&dataplane, 1);
        let metrics = Metrics::new();
        let exporters = Arc::new(Exporters::new(settings, metrics.clone()));
        let tracer = Arc::new(Tracer::with_invalid_counter(
            "default.web-1",
            TraceConfig::default(),
            metrics.trace_context_invalid.clone(),
        ));
        tracer.set_config(
            tracecar::app::trace_config(&effective, &exporters).expect("the backend resolves"),
        );
        let config = ProxyConfig {
            metrics: Some(metrics.clone()),
            ..ProxyConfig::default()
        };
        let running = tracecar::proxy::start(&dataplane, &effective, tracer.clone(), &config)
            .await
            .expect("proxy starts");
        InProcess {
            address: running.addresses[0],
            running,
            tracer,
            exporters,
            metrics,
            _dir: files.dir,
        }
    }

    /// The span queue gauge of the backend, read directly.
    fn queue_gauge(&self) -> i64 {
        self.metrics
            .export_queue
            .get_or_create(&BackendLabels {
                backend: BACKEND.to_string(),
            })
            .get()
    }

    /// Shuts down in `tracecar run`'s order: drain, detach the tracer, flush the exporters.
    async fn stop(self) -> Accounts {
        assert!(
            self.running.drain(Duration::from_secs(5)).await,
            "drain timed out"
        );
        self.tracer.set_config(TraceConfig::default());
        self.exporters.shutdown(FLUSH).await;
        Accounts::read(&self.metrics.encode())
    }
}

/// One backend's span accounts, from the Prometheus text.
#[derive(Debug)]
struct Accounts {
    sampled: f64,
    exported: f64,
    dropped: f64,
    queue_full: f64,
    export_failed: f64,
    pending: f64,
    /// POST attempts that failed (`tracecar_export_requests_total{result="failure"}`).
    failed_posts: f64,
}

impl Accounts {
    fn read(text: &str) -> Accounts {
        let b = [("backend", BACKEND)];
        let dropped = |reason| {
            metric(
                text,
                "tracecar_spans_dropped_total",
                &[("backend", BACKEND), ("reason", reason)],
            )
            .unwrap_or(0.0)
        };
        Accounts {
            sampled: metric(text, "tracecar_spans_sampled_total", &b).unwrap_or(0.0),
            exported: metric(text, "tracecar_spans_exported_total", &b).unwrap_or(0.0),
            dropped: metric(text, "tracecar_spans_dropped_total", &b).unwrap_or(0.0),
            queue_full: dropped("queue_full"),
            export_failed: dropped("export_failed"),
            pending: metric(text, "tracecar_export_queue_spans", &b).unwrap_or(f64::NAN),
            failed_posts: metric(
                text,
                "tracecar_export_requests_total",
                &[("backend", BACKEND), ("result", "failure")],
            )
            .unwrap_or(0.0),
        }
    }

    /// Every sampled span is exported or dropped with a reason, none is still pending.
    fn assert_balanced(&self, run: &str) {
        assert_eq!(
            self.sampled,
            self.exported + self.dropped,
            "{run}: sampled = exported + dropped must hold exactly: {self:?}"
        );
        assert_eq!(self.pending, 0.0, "{run}: spans still pending: {self:?}");
    }
}

/// What a load run saw.
struct Load {
    /// Requests answered 200.
    answered: usize,
    failures: Vec<String>,
    /// The highest queue gauge seen while the load ran.
    max_queue: i64,
}

/// `REQUESTS` requests from `CLIENTS` keep-alive clients; the queue gauge is sampled meanwhile.
async fn load(sidecar: &InProcess) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let max_queue = Arc::new(AtomicI64::new(0));
    let sampling = {
        let metrics = sidecar.metrics.clone();
        let max_queue = max_queue.clone();
        tokio::spawn(async move {
            let gauge = metrics
                .export_queue
                .get_or_create(&BackendLabels {
                    backend: BACKEND.to_string(),
                })
                .clone();
            loop {
                max_queue.fetch_max(gauge.get(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (address, next) = (sidecar.address, next.clone());
            tokio::spawn(async move {
                let mut answered = 0;
                let mut failures = Vec::new();
                let mut client = None;
                while next.fetch_add(1, Ordering::SeqCst) < REQUESTS {
                    let outcome = match client.as_mut() {
                        Some(c) => Client::get(c, "/echo").await,
                        None => match Client::connect(address).await {
                            Ok(c) => Client::get(client.insert(c), "/echo").await,
                            Err(e) => Err(e),
                        },
                    };
                    match outcome {
                        Ok((200, _)) => answered += 1,
                        Ok((status, body)) => failures.push(format!("{status}: {body}")),
                        Err(e) => {
                            failures.push(e);
                            client = None;
                        }
                    }
                }
                (answered, failures)
            })
        })
        .collect();
    let mut run = Load {
        answered: 0,
        failures: Vec::new(),
        max_queue: 0,
    };
    for client in clients {
        let (answered, failures) = client.await.expect("client task");
        run.answered += answered;
        run.failures.extend(failures);
    }
    sampling.abort();
    max_queue.fetch_max(sidecar.queue_gauge(), Ordering::SeqCst);
    run.max_queue = max_queue.load(Ordering::SeqCst);
    run
}

/// One full run: a fresh sidecar exporting to `url`, the load, then shutdown.
async fn run(app: &Upstream, url: &str, settings: ExportSettings) -> (Load, Accounts) {
    let sidecar = InProcess::start(app, url, settings).await;
    let load = load(&sidecar).await;
    let accounts = sidecar.stop().await;
    (load, accounts)
}

/// Runs the load against a sidecar exporting to the faulty collector at `url`, and checks what
/// every fault must leave intact: all requests succeed, every span is accounted for and
/// nothing is left pending.
async fn fault_leaves_requests_and_accounts_intact(name: &str, url: &str) -> (Load, Accounts) {
    let _turn = ONE_LOAD_AT_A_TIME.lock().await;
    let app = Upstream::start().await;
    let (faulty, accounts) = run(&app, url, settings()).await;
    assert!(
        faulty.failures.is_empty(),
        "{name}: {} of {REQUESTS} requests failed, e.g. {:?}",
        faulty.failures.len(),
        faulty.failures.first()
    );
    assert_eq!(
        faulty.answered, REQUESTS,
        "{name}: every request answered 200"
    );
    accounts.assert_balanced(name);
    assert_eq!(
        accounts.sampled, REQUESTS as f64,
        "{name}: one span per request at sampling 100"
    );
    (faulty, accounts)
}

// Faults: the data path never waits for the exporter (README, Export).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_fails_no_request_and_accounts_for_every_span() {
    fault_leaves_requests_and_accounts_intact("collector down", &down_collector_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_slow_fails_no_request_and_accounts_for_every_span() {
    let slow = Collector::start(Answer::Slow(SLOW)).await;
    let (load, _) = fault_leaves_requests_and_accounts_intact("collector slow", &slow.url()).await;
    // Memory is bounded: the queue never holds more than its capacity.
    let capacity = settings().queue_capacity as i64;
    assert!(
        load.max_queue <= capacity,
        "queue gauge reached {} > capacity {capacity}",
        load.max_queue
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_failing_500_fails_no_request_and_accounts_for_every_span() {
    let failing = Collector::start(Answer::Status(500)).await;
    fault_leaves_requests_and_accounts_intact("collector failing", &failing.url()).await;
}

// Memory is bounded: a full queue drops, it does not grow.

/// A queue small enough to fill while the collector takes its time.
fn small_queue() -> ExportSettings {
    ExportSettings {
        queue_capacity: 64,
        ..settings()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_spans_as_queue_full_and_accounts_for_them() {
    let _turn = ONE_LOAD_AT_A_TIME.lock().await;
    let app = Upstream::start().await;
    let slow = Collector::start(Answer::Slow(SLOW)).await;
    let (load, accounts) = run(&app, &slow.url(), small_queue()).await;
    assert!(load.failures.is_empty(), "{:?}", load.failures.first());
    assert!(
        accounts.queue_full > 0.0,
        "a 64-span queue behind a slow collector must overflow: {accounts:?}"
    );
    accounts.assert_balanced("small queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_gauge_never_exceeds_the_queue_capacity() {
    let _turn = ONE_LOAD_AT_A_TIME.lock().await;
    let app = Upstream::start().await;
    let slow = Collector::start(Answer::Slow(SLOW)).await;
    let settings = small_queue();
    let (load, _) = run(&app, &slow.url(), settings.clone()).await;
    assert!(
        load.max_queue <= settings.queue_capacity as i64,
        "tracecar_export_queue_spans reached {} with a queue of {} (batch size {})",
        load.max_queue,
        settings.queue_capacity,
        settings.batch_size
    );
}

// Retries: transient failures (429, 5xx) are retried, up to 3 tries; others are not.

/// One request's span, exported to `collector`; returns the accounts after shutdown.
async fn export_one_span(collector: &Collector) -> Accounts {
    let app = Upstream::start().await;
    let sidecar = InProcess::start(&app, &collector.url(), settings()).await;
    let (status, _) = harness::http(sidecar.address, "GET", "/echo", "")
        .await
        .expect("request");
    assert_eq!(status, 200);
    sidecar.stop().await
}

#[tokio::test]
async fn collector_429_is_retried() {
    let collector = Collector::start(Answer::Accept).await;
    collector.script(&[429, 429]);
    let accounts = export_one_span(&collector).await;
    assert_eq!(collector.attempts(), 3, "two 429s, then accepted");
    assert_eq!(accounts.exported, 1.0, "{accounts:?}");
    assert_eq!(collector.spans(), 1);
}

#[tokio::test]
async fn collector_500_is_retried() {
    let collector = Collector::start(Answer::Accept).await;
    collector.script(&[500, 500]);
    let accounts = export_one_span(&collector).await;
    assert_eq!(collector.attempts(), 3, "two 500s, then accepted");
    assert_eq!(accounts.exported, 1.0, "{accounts:?}");
    assert_eq!(collector.spans(), 1);
}

#[tokio::test]
async fn collector_400_is_not_retried() {
    let collector = Collector::start(Answer::Status(400)).await;
    let accounts = export_one_span(&collector).await;
    assert_eq!(collector.attempts(), 1, "a 400 will not get better");
    assert_eq!(accounts.export_failed, 1.0, "{accounts:?}");
    accounts.assert_balanced("400");
}

#[tokio::test]
async fn retries_stop_after_three_tries() {
    let collector = Collector::start(Answer::Status(503)).await;
    let accounts = export_one_span(&collector).await;
    assert_eq!(collector.attempts(), 3, "the README's 3 tries");
    assert_eq!(accounts.export_failed, 1.0, "{accounts:?}");
    accounts.assert_balanced("503");
}

#[tokio::test]
async fn a_429_answered_every_time_is_tried_three_times_then_dropped() {
    let collector = Collector::start(Answer::Status(429)).await;
    let accounts = export_one_span(&collector).await;
    assert_eq!(collector.attempts(), 3);
    assert_eq!(accounts.export_failed, 1.0, "{accounts:?}");
}

// Collectors that break in other ways (issue 8): an answer that is not HTTP, a connection
// closed mid-answer, a name that does not resolve, a TLS handshake that fails. Each is a
// failed export like any other: requests unaffected, every span dropped as `export_failed`,
// and one warning for the whole run, not one per batch.

/// Every WARN line logged in this test binary. Tests run in parallel, so each picks its own
/// lines by its collector's url, which the warning names and no other test uses.
static WARNINGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct CaptureWarnings;

impl std::io::Write for CaptureWarnings {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut captured = WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
        captured.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Routes this binary's `tracing` output at WARN and above into [`WARNINGS`], once.
fn capture_warnings() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| CaptureWarnings)
            .init();
    });
}

/// The captured warning lines that name `url`.
fn warnings_naming(url: &str) -> Vec<String> {
    let captured = WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&captured)
        .lines()
        .filter(|line| line.contains("WARN") && line.contains(url))
        .map(str::to_string)
        .collect()
}

/// The fault run as [`fault_leaves_requests_and_accounts_intact`], and then what a collector
/// that never takes a span must leave: every span dropped as `export_failed` (none exported,
/// none left to the shutdown deadline), POSTs failing again and again, and exactly one
/// warning about it. Returns that warning.
async fn failing_collector_is_dropped_as_export_failed_with_one_warning(
    name: &str,
    url: &str,
) -> String {
    capture_warnings();
    let (_, accounts) = fault_leaves_requests_and_accounts_intact(name, url).await;
    assert_eq!(
        accounts.export_failed, accounts.sampled,
        "{name}: every span is dropped as export_failed: {accounts:?}"
    );
    // 2,000 spans make at least 4 batches of 512, each tried 3 times: the failure repeats,
    // and the warning is rate-limited, not missing.
    assert!(
        accounts.failed_posts >= 4.0,
        "{name}: the failure repeats: {accounts:?}"
    );
    let warnings = warnings_naming(url);
    assert_eq!(
        warnings.len(),
        1,
        "{name}: one rate-limited warning for {} failed POSTs, got {warnings:#?}",
        accounts.failed_posts
    );
    assert!(
        warnings[0].contains("span export failed"),
        "{name}: {}",
        warnings[0]
    );
    eprintln!("{name}: {}", warnings[0]);
    warnings[0].clone()
}

/// Reads one HTTP/1.1 request (head, then `content-length` bytes of body) so that an answer
/// written afterwards is read as the answer, not lost to a reset of unread data.
async fn read_request(stream: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let head_end = seen
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4);
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if seen.len() >= end + length {
                return Ok(());
            }
        }
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("no whole request within 5 s"))??;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&chunk[..read]);
    }
}

/// How a broken collector answers.
#[derive(Clone, Copy)]
enum Broken {
    /// Reads the request, writes these bytes, closes.
    AfterRequest(&'static [u8]),
    /// Reads whatever comes first (a TLS ClientHello), writes these bytes, closes.
    AfterFirstBytes(&'static [u8]),
}

/// A collector on loopback that answers every connection the `Broken` way.
async fn broken_collector(broken: Broken) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let reply = match broken {
                    Broken::AfterRequest(reply) => {
                        if read_request(&mut stream).await.is_err() {
                            return;
                        }
                        reply
                    }
                    Broken::AfterFirstBytes(reply) => {
                        let mut first = [0u8; 4096];
                        if !matches!(stream.read(&mut first).await, Ok(n) if n > 0) {
                            return;
                        }
                        reply
                    }
                };
                let _ = stream.write_all(reply).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

/// A TLS collector whose certificate (for 127.0.0.1, so only trust can fail) is self-signed:
/// no root the exporter trusts issued it.
async fn untrusted_tls_collector() -> std::net::SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("self-signed certificate");
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            // The exporter refuses the certificate, so the handshake never completes.
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_answering_garbage_fails_no_request_and_drops_with_one_warning() {
    // Not HTTP at all: what a wrong port (an SSH server, a database) answers.
    let address = broken_collector(Broken::AfterRequest(
        b"\x00\xff\xfeSSH-2.0-not-http-at-all\r\n\x16\x03\x01garbage\r\n\r\n",
    ))
    .await;
    let url = format!("http://{address}/api/v2/spans");
    failing_collector_is_dropped_as_export_failed_with_one_warning("collector garbage", &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_closing_mid_response_fails_no_request_and_drops_with_one_warning() {
    // A status line and half a header, then the connection closes: a collector that crashed
    // while answering. The spans may have arrived; without an answer they count as failed.
    let address =
        broken_collector(Broken::AfterRequest(b"HTTP/1.1 202 Accepted\r\nContent-Ty")).await;
    let url = format!("http://{address}/api/v2/spans");
    failing_collector_is_dropped_as_export_failed_with_one_warning("collector closes", &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_name_that_does_not_resolve_fails_no_request_and_drops_with_one_warning() {
    // `.invalid` is reserved never to resolve (RFC 6761 §6.4): a misspelt collector name.
    let url = "http://collector.invalid:9411/api/v2/spans";
    let warning =
        failing_collector_is_dropped_as_export_failed_with_one_warning("unresolvable name", url)
            .await;
    assert!(
        warning.to_ascii_lowercase().contains("dns")
            || warning.to_ascii_lowercase().contains("lookup"),
        "the warning says the name did not resolve: {warning}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_collector_answering_plain_text_fails_no_request_and_drops_with_one_warning() {
    // An https url pointing at a plain-text server: the handshake gets an HTTP answer.
    let address = broken_collector(Broken::AfterFirstBytes(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ))
    .await;
    let url = format!("https://{address}/api/v2/spans");
    failing_collector_is_dropped_as_export_failed_with_one_warning("TLS to plain text", &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_collector_with_an_untrusted_certificate_fails_no_request_and_drops_with_one_warning()
{
    let address = untrusted_tls_collector().await;
    let url = format!("https://{address}/api/v2/spans");
    let warning =
        failing_collector_is_dropped_as_export_failed_with_one_warning("untrusted TLS", &url).await;
    assert!(
        warning.contains("certificate"),
        "the warning says the certificate was refused: {warning}"
    );
}
