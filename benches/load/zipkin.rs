//! A loopback Zipkin receiver: accepts span batches on any path, answers 202 and counts the
//! spans, so that the 100% sampling runs pay for a real export over HTTP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

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
    start_on(TcpListener::bind("127.0.0.1:0").await?)
}

/// A receiver on a socket bound elsewhere (inside a network namespace).
pub fn start_on(listener: TcpListener) -> std::io::Result<Receiver> {
    let address = listener.local_addr()?;
    let spans = Arc::new(AtomicU64::new(0));
    let counter = spans.clone();
    tokio::spawn(async move {
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
    });
    Ok(Receiver { address, spans })
}

async fn receive(
    req: http::Request<Incoming>,
    counter: &AtomicU64,
) -> http::Response<Empty<Bytes>> {
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    // JSON v2: one "traceId" key per span. A vectorised search: the receiver shares the
    // machine with the load generator, and must cost it next to nothing.
    let count = memchr::memmem::find_iter(&body, b"\"traceId\"").count();
    counter.fetch_add(count as u64, Ordering::Relaxed);
    let mut response = http::Response::new(Empty::new());
    *response.status_mut() = http::StatusCode::ACCEPTED;
    response
}
