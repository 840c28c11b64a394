//! gRPC load: a two-method service written against tonic's low-level server API with
//! hand-written prost messages (no protoc), and a closed-loop client on tonic `Channel`s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::Status;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct LoadRequest {
    /// Payload size of each reply.
    #[prost(uint32, tag = "1")]
    pub reply_bytes: u32,
    /// `Stream`: how many replies.
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LoadReply {
    #[prost(bytes = "bytes", tag = "1")]
    pub payload: Bytes,
    #[prost(uint32, tag = "2")]
    pub seq: u32,
}

pub const UNARY: &str = "/tracecar.bench.Load/Unary";
pub const STREAM: &str = "/tracecar.bench.Load/Stream";

/// Every reply carries this many payload bytes, as the HTTP runs' bodies.
pub const REPLY_BYTES: u32 = 1024;
/// Messages per server-streaming call.
pub const STREAM_MESSAGES: u32 = 1000;
/// Client shape: this many HTTP/2 connections (tonic `Channel`s)…
pub const CHANNELS: usize = 4;
/// …each with this many calls in flight.
pub const UNARY_PER_CHANNEL: usize = 16;
pub const STREAMS_PER_CHANNEL: usize = 4;

static PAYLOAD: [u8; 65536] = [b'g'; 65536];

fn payload(len: u32) -> Bytes {
    Bytes::from_static(&PAYLOAD[..(len as usize).min(PAYLOAD.len())])
}

/// Serves the service over h2c on a fresh loopback port.
pub async fn serve() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req| async move {
                    Ok::<_, Infallible>(route(req).await)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

async fn route(req: http::Request<hyper::body::Incoming>) -> http::Response<tonic::body::Body> {
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<LoadReply, LoadRequest>::default());
    match req.uri().path() {
        UNARY => grpc.unary(Unary, req).await,
        STREAM => grpc.server_streaming(Stream, req).await,
        other => Status::unimplemented(format!("no method {other}")).into_http(),
    }
}

struct Unary;

impl UnaryService<LoadRequest> for Unary {
    type Response = LoadReply;
    type Future = std::future::Ready<Result<tonic::Response<LoadReply>, Status>>;

    fn call(&mut self, request: tonic::Request<LoadRequest>) -> Self::Future {
        let reply = LoadReply {
            payload: payload(request.get_ref().reply_bytes),
            seq: 0,
        };
        std::future::ready(Ok(tonic::Response::new(reply)))
    }
}

struct Stream;

/// The replies of one streaming call, made as they are polled.
struct Replies {
    payload: Bytes,
    next: u32,
    count: u32,
}

impl Iterator for Replies {
    type Item = Result<LoadReply, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        Some(Ok(LoadReply {
            payload: self.payload.clone(),
            seq,
        }))
    }
}

impl ServerStreamingService<LoadRequest> for Stream {
    type Response = LoadReply;
    type ResponseStream = futures_util::stream::Iter<Replies>;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<LoadRequest>) -> Self::Future {
        let m = request.into_inner();
        let replies = Replies {
            payload: payload(m.reply_bytes),
            next: 0,
            count: m.count,
        };
        std::future::ready(Ok(tonic::Response::new(futures_util::stream::iter(
            replies,
        ))))
    }
}

/// One closed-loop gRPC run.
#[derive(Clone, Debug, Default)]
pub struct GrpcRun {
    /// Reply messages received.
    pub messages: u64,
    pub errors: u64,
    pub seconds: f64,
}

impl GrpcRun {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.messages as f64 / self.seconds
        } else {
            0.0
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Unary,
    Stream,
}

/// Calls `address` in a closed loop for `duration`: `CHANNELS` connections, each with
/// `*_PER_CHANNEL` calls in flight. Calls in progress at the deadline finish and count.
pub async fn load(address: SocketAddr, kind: Kind, duration: Duration) -> anyhow::Result<GrpcRun> {
    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        channels.push(channel);
    }
    let messages = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let per_channel = match kind {
        Kind::Unary => UNARY_PER_CHANNEL,
        Kind::Stream => STREAMS_PER_CHANNEL,
    };
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for channel in &channels {
        for _ in 0..per_channel {
            let grpc = tonic::client::Grpc::new(channel.clone());
            let (messages, errors) = (messages.clone(), errors.clone());
            tasks.spawn(async move {
                let mut grpc = grpc;
                while Instant::now() < deadline {
                    match call(&mut grpc, kind).await {
                        Ok(n) => {
                            messages.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(GrpcRun {
        messages: messages.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One call; how many reply messages it brought.
async fn call(grpc: &mut tonic::client::Grpc<Channel>, kind: Kind) -> Result<u64, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let codec = ProstCodec::<LoadRequest, LoadReply>::default();
    match kind {
        Kind::Unary => {
            let request = LoadRequest {
                reply_bytes: REPLY_BYTES,
                count: 1,
            };
            grpc.unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(UNARY),
                codec,
            )
            .await?;
            Ok(1)
        }
        Kind::Stream => {
            let request = LoadRequest {
                reply_bytes: REPLY_BYTES,
                count: STREAM_MESSAGES,
            };
            let mut stream = grpc
                .server_streaming(
                    tonic::Request::new(request),
                    PathAndQuery::from_static(STREAM),
                    codec,
                )
                .await?
                .into_inner();
            let mut n = 0;
            while stream.message().await?.is_some() {
                n += 1;
            }
            if n != u64::from(STREAM_MESSAGES) {
                return Err(Status::data_loss(format!(
                    "stream ended after {n} messages"
                )));
            }
            Ok(n)
        }
    }
}
