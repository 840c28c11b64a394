//! Graceful shutdown (README, Export and Operations) with the real binary: on SIGTERM or `POST /quitquitquit`
//! tracecar stops accepting, lets in-flight requests finish, reports 503 on `/ready`, flushes
//! the queued spans to the collector, and exits 0.

mod harness;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use harness::{Answer, Client, Collector, Sidecar, SidecarFiles, Upstream};

/// Requests the app holds for 1 s, so they are in flight when the drain starts.
const IN_FLIGHT: usize = 4;
/// Requests that completed just before the drain: their spans are still queued (batches go
/// every second).
const COMPLETED: usize = 20;

#[derive(Clone, Copy)]
enum Stop {
    Sigterm,
    QuitQuitQuit,
}

/// What a drain looked like from outside.
struct Drain {
    in_flight: Vec<Result<(u16, String), String>>,
    /// A new connection was refused while the in-flight requests were still running.
    refused_while_in_flight: bool,
    /// `/ready`'s status while the in-flight requests were still running.
    ready_while_in_flight: Option<u16>,
    spans_delivered: usize,
    exit: std::process::ExitStatus,
    log: String,
}

async fn drain(stop: Stop) -> Drain {
    let app = Upstream::start().await;
    let collector = Collector::start(Answer::Accept).await;
    let files = SidecarFiles::new(app.address, &[("zipkin", &collector.url())], "zipkin");
    let mut sidecar = Sidecar::start(&files.dataplane, &files.policy, &[]).await;

    let mut client = Client::connect(files.inbound).await.expect("connect");
    for _ in 0..COMPLETED {
        assert_eq!(client.get("/echo").await.expect("request").0, 200);
    }
    drop(client);
    let in_flight: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let inbound = files.inbound;
            tokio::spawn(
                async move { harness::http(inbound, "GET", "/echo?delay_ms=1000", "").await },
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.requests.load(Ordering::SeqCst) < COMPLETED + IN_FLIGHT {
        assert!(
            Instant::now() < deadline,
            "in-flight requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    match stop {
        Stop::Sigterm => sidecar.terminate(),
        Stop::QuitQuitQuit => {
            let answer = sidecar.admin_post("/quitquitquit", "").await;
            assert_eq!(answer.map(|a| a.0), Ok(200), "/quitquitquit");
        }
    }
    let (mut refused, mut ready) = (false, None);
    let watching = Instant::now();
    while watching.elapsed() < Duration::from_millis(700) && !(refused && ready == Some(503)) {
        let still_in_flight = in_flight.iter().all(|t| !t.is_finished());
        if let Err(e) = tokio::net::TcpStream::connect(files.inbound).await {
            refused |= still_in_flight && e.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        // Only an answer given before any in-flight request finished counts.
        if let Ok((status, _)) = sidecar.admin_get("/ready").await
            && still_in_flight
            && in_flight.iter().all(|t| !t.is_finished())
        {
            ready = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut answers = Vec::new();
    for task in in_flight {
        answers.push(task.await.expect("request task"));
    }
    let exit = sidecar.wait(Duration::from_secs(15)).await;
    Drain {
        in_flight: answers,
        refused_while_in_flight: refused,
        ready_while_in_flight: ready,
        spans_delivered: collector.spans(),
        exit,
        log: sidecar.log(),
    }
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_with_200() {
    let drain = drain(Stop::Sigterm).await;
    for answer in &drain.in_flight {
        assert!(
            matches!(answer, Ok((200, _))),
            "in-flight request: {answer:?}\n{}",
            drain.log
        );
    }
}

#[tokio::test]
async fn sigterm_refuses_new_connections_once_the_drain_starts() {
    let drain = drain(Stop::Sigterm).await;
    assert!(
        drain.refused_while_in_flight,
        "a new connection was not refused during the drain\n{}",
        drain.log
    );
}

#[tokio::test]
async fn ready_answers_503_while_draining() {
    let drain = drain(Stop::Sigterm).await;
    assert_eq!(drain.ready_while_in_flight, Some(503), "{}", drain.log);
}

#[tokio::test]
async fn sigterm_delivers_the_queued_spans() {
    let drain = drain(Stop::Sigterm).await;
    // One SERVER span per request: those completed before, and those finished in the drain.
    assert_eq!(
        drain.spans_delivered,
        COMPLETED + IN_FLIGHT,
        "spans lost at shutdown\n{}",
        drain.log
    );
}

#[tokio::test]
async fn sigterm_exits_0() {
    let drain = drain(Stop::Sigterm).await;
    assert!(drain.exit.success(), "{:?}\n{}", drain.exit, drain.log);
    assert!(!drain.log.contains("panicked"), "{}", drain.log);
}

#[tokio::test]
async fn quitquitquit_drains_as_sigterm_does() {
    let drain = drain(Stop::QuitQuitQuit).await;
    for answer in &drain.in_flight {
        assert!(matches!(answer, Ok((200, _))), "in-flight: {answer:?}");
    }
    assert!(drain.refused_while_in_flight, "new connections refused");
    assert_eq!(
        drain.ready_while_in_flight,
        Some(503),
        "/ready while draining"
    );
    assert_eq!(
        drain.spans_delivered,
        COMPLETED + IN_FLIGHT,
        "spans flushed"
    );
    assert!(drain.exit.success(), "{:?}\n{}", drain.exit, drain.log);
}
