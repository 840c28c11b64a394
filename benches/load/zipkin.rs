//! A loopback Zipkin receiver: accepts span batches on any path, answers 202 and counts the
//! spans, so that the 100% sampling runs pay for a real export over HTTP.
//!
//! It shares the machine with the load generator and the upstream, and must cost them next to
//! nothing: it runs on a thread of its own with a single-threaded runtime (the bench's
//! two-worker runtime woke both workers for the segments of each batch), and counts the spans
//! of each body frame as it arrives instead of gathering the body first.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What marks one span in a JSON v2 batch.
const SPAN_KEY: &[u8] = b"\"traceId\"";

pub struct Receiver {
    pub address: SocketAddr,
    spans: Arc<AtomicU64>,
}

impl Receiver {
    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

pub async fn start() -> std::io::Result<Receiver> {
    start_on(StdListener::bind("127.0.0.1:0")?)
}

/// A receiver on a socket bound elsewhere (inside a network namespace).
pub fn start_on(listener: StdListener) -> std::io::Result<Receiver> {
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let spans = Arc::new(AtomicU64::new(0));
    let counter = spans.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The thread moves itself (`--collector-with-proxy`) and says whether it could, so that
    // no report names a layout the run did not have.
    let (pinned_tx, pinned) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("zipkin-receiver".into())
        .spawn(move || {
            let moved = crate::target::collector_cpu().map_or(Ok(()), pin_this_thread);
            let stays = moved.is_ok();
            let _ = pinned_tx.send(moved);
            if !stays {
                return;
            }
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                serve(listener, counter).await;
            });
        })?;
    pinned
        .recv()
        .map_err(|_| std::io::Error::other("the collector's thread ended at its start"))??;
    Ok(Receiver { address, spans })
}

/// Moves the calling thread (the collector's) to `cpu`; the rest of the bench stays put.
fn pin_this_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed `cpu_set_t` is an empty set, and the call only reads the set given.
    let done = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if done == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::other(format!(
            "the collector cannot move to CPU {cpu}: {e}"
        )))
    }
}

async fn serve(listener: TcpListener, counter: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let counter = counter.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let counter = counter.clone();
                async move { Ok::<_, Infallible>(receive(req, &counter).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn receive(
    req: http::Request<Incoming>,
    counter: &AtomicU64,
) -> http::Response<Empty<Bytes>> {
    let mut body = req.into_body();
    let mut count = Count::default();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            count.add(&data);
        }
    }
    counter.fetch_add(count.spans, Ordering::Relaxed);
    let mut response = http::Response::new(Empty::new());
    *response.status_mut() = http::StatusCode::ACCEPTED;
    response
}

/// Counts [`SPAN_KEY`] across a body that arrives in pieces, one found across two pieces
/// included.
#[derive(Default)]
struct Count {
    spans: u64,
    /// The last bytes seen, fewer than the key: where a key cut by a frame boundary starts.
    tail: Vec<u8>,
}

impl Count {
    fn add(&mut self, data: &[u8]) {
        // A vectorised search within the piece.
        self.spans += memchr::memmem::find_iter(data, SPAN_KEY).count() as u64;
        // The keys that start in the tail and end in this piece: every key in the seam is one,
        // since neither the tail nor the piece's first `keep` bytes can hold a whole key.
        let keep = SPAN_KEY.len() - 1;
        let mut seam = std::mem::take(&mut self.tail);
        seam.extend_from_slice(&data[..data.len().min(keep)]);
        self.spans += memchr::memmem::find_iter(&seam, SPAN_KEY).count() as u64;
        // The next tail: the last `keep` bytes of everything so far.
        if data.len() >= keep {
            seam.clear();
            seam.extend_from_slice(&data[data.len() - keep..]);
        } else {
            let excess = seam.len().saturating_sub(keep);
            seam.drain(..excess);
        }
        self.tail = seam;
    }
}
