//! Shared by the export benches: realistic spans as the data path records them (README, Tracing),
//! and a loopback collector that reads and discards each body, answering 202 like Zipkin
//! (`grpc`: the OTLP/gRPC one).

// Each bench uses its own part of this module.
#![allow(dead_code)]

pub mod grpc;
// Only the `otel-compare` benches have OpenTelemetry's crates.
#[cfg(feature = "otel-compare")]
pub mod otel;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tracecar::policy::effective::Direction;
use tracecar::trace::id::{SpanId, TraceId};
use tracecar::trace::{Span, SpanKind, Tags};

/// A reproducible id stream (splitmix64), never zero.
pub struct Ids(u64);

impl Ids {
    pub fn new(seed: u64) -> Ids {
        Ids(seed)
    }

    pub fn next(&mut self) -> u64 {
        loop {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d4_9bb1_3311_12eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }
}

/// What one request through the sidecar looked like, enough to build its spans.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// The caller sent a B3 context (else the SERVER span is a new root).
    pub incoming: bool,
    /// The caller's span had a parent (else the shared SERVER span has no `parentId`).
    pub caller_parent: bool,
    pub wide: bool,
    pub debug: bool,
    pub grpc: bool,
    /// HTTP status, or the gRPC status code for gRPC.
    pub status: u16,
}

impl Shape {
    /// A mix: mostly continued traces, some roots, half of them 128-bit, a few debug, gRPC
    /// and failing requests.
    pub fn nth(i: usize) -> Shape {
        let grpc = i.is_multiple_of(5);
        Shape {
            incoming: !i.is_multiple_of(8),
            caller_parent: !i.is_multiple_of(3),
            wide: i % 2 == 1,
            debug: i % 64 == 7,
            grpc,
            status: match (grpc, i % 20) {
                (false, 3) => 503,
                (false, 11) => 404,
                (false, _) => 200,
                (true, 10) => 14,
                (true, _) => 0,
            },
        }
    }

    pub fn error(&self) -> bool {
        if self.grpc {
            // Unknown, DeadlineExceeded, Unimplemented, ResourceExhausted, Internal,
            // Unavailable, DataLoss.
            matches!(self.status, 2 | 4 | 8 | 12 | 13 | 14 | 15)
        } else {
            self.status >= 500
        }
    }
}

/// The service names and shared tag values of one sidecar, as its listeners hold them.
pub struct Sidecar {
    pub node_id: Arc<str>,
    pub local: Arc<str>,
    pub remote: Arc<str>,
    pub inbound_cluster: Arc<str>,
}

impl Default for Sidecar {
    fn default() -> Self {
        Sidecar {
            node_id: Arc::from("default.web-7d9f8b6c5-x2k4q"),
            local: Arc::from("web"),
            remote: Arc::from("backend"),
            inbound_cluster: Arc::from("localhost:8080"),
        }
    }
}

/// The SERVER span of request `i` and the CLIENT span of its call to `backend`.
pub fn request_spans(sidecar: &Sidecar, ids: &mut Ids, i: usize, shape: Shape) -> [Span; 2] {
    let trace_id = TraceId {
        high: if shape.wide { ids.next() } else { 0 },
        low: ids.next(),
        wide: shape.wide,
    };
    // Shared span context: the SERVER span reuses the caller's span id and parent.
    let (server_id, server_parent, shared) = if shape.incoming {
        let parent = shape.caller_parent.then(|| SpanId(ids.next()));
        (SpanId(ids.next()), parent, true)
    } else {
        (SpanId(ids.next()), None, false)
    };
    let client_id = SpanId(ids.next());
    let timestamp_us = 1_760_000_000_000_000 + i as u64 * 1_000;
    let request_id = format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        ids.next() as u32,
        ids.next() as u16,
        ids.next() & 0xfff,
        ids.next() & 0xfff,
        ids.next() & 0xffff_ffff_ffff
    );
    let (path, method, protocol, agent) = if shape.grpc {
        (
            "/shop.v1.Catalog/GetItem".to_string(),
            "POST",
            "HTTP/2",
            "grpc-go/1.75.1",
        )
    } else {
        (
            format!("/api/v1/orders/{}?expand=items&page={}", 10_000 + i, i % 7),
            if i.is_multiple_of(4) { "POST" } else { "GET" },
            "HTTP/1.1",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
    };
    let tags = |direction: Direction| -> Tags {
        let (host, peer, cluster) = match direction {
            Direction::Inbound => ("web.mesh:80", "10.42.0.17", &sidecar.inbound_cluster),
            Direction::Outbound => ("backend.mesh:8080", "127.0.0.1", &sidecar.remote),
        };
        let mut tags = Tags::with_capacity(17, 512);
        tags.push("node_id", &sidecar.node_id);
        tags.push("component", "proxy");
        tags.push("guid:x-request-id", &request_id);
        tags.push_parts("http.url", &["http://", host, &path]);
        tags.push("http.method", method);
        tags.push("http.protocol", protocol);
        tags.push("user_agent", agent);
        tags.push("peer.address", peer);
        if shape.grpc {
            tags.push("grpc.path", &path);
        }
        tags.push_u64("request_size", if method == "POST" { 412 } else { 0 });
        tags.push_u64("response_size", 1_843 + i as u64 % 97);
        tags.push("upstream_cluster", cluster);
        let http_status = if shape.grpc { 200 } else { shape.status };
        tags.push_u64("http.status_code", u64::from(http_status));
        tags.push("response_flags", "-");
        if shape.grpc {
            tags.push_u64("grpc.status_code", u64::from(shape.status));
            if shape.status != 0 {
                tags.push("grpc.message", "upstream connect error");
            }
        }
        if shape.error() {
            tags.push("error", "true");
        }
        tags
    };
    let server = Span {
        trace_id,
        id: server_id,
        parent_id: server_parent,
        kind: SpanKind::Server,
        direction: Direction::Inbound,
        name: "web.mesh:80".to_string(),
        timestamp_us,
        duration_us: 2_345,
        local_service: sidecar.local.clone(),
        remote_service: None,
        shared,
        debug: shape.debug,
        error: shape.error(),
        tags: tags(Direction::Inbound),
        trace_state: None,
    };
    let client = Span {
        trace_id,
        id: client_id,
        parent_id: Some(server_id),
        kind: SpanKind::Client,
        direction: Direction::Outbound,
        name: "backend.mesh:8080".to_string(),
        timestamp_us: timestamp_us + 150,
        duration_us: 1_987,
        local_service: sidecar.local.clone(),
        remote_service: Some(sidecar.remote.clone()),
        shared: false,
        debug: shape.debug,
        error: shape.error(),
        tags: tags(Direction::Outbound),
        trace_state: None,
    };
    [server, client]
}

/// `n` spans (SERVER and CLIENT alternating), reproducible for a given `seed`.
pub fn spans(n: usize, seed: u64) -> Vec<Span> {
    let sidecar = Sidecar::default();
    let mut ids = Ids::new(seed);
    let mut out = Vec::with_capacity(n + 1);
    let mut i = 0;
    while out.len() < n {
        out.extend(request_spans(&sidecar, &mut ids, i, Shape::nth(i)));
        i += 1;
    }
    out.truncate(n);
    out
}

/// What the loopback collector saw.
#[derive(Default)]
pub struct Received {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// The last body per path, when capturing.
    pub last: Mutex<HashMap<String, Bytes>>,
}

/// A loopback HTTP/1.1 collector on the current runtime: reads and discards each body (keeping
/// the last one per path when `capture`), answers 202 Accepted.
pub async fn start_receiver(capture: bool) -> (SocketAddr, Arc<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let received = Arc::new(Received::default());
    let seen = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            seen.connections.fetch_add(1, Ordering::Relaxed);
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = request.uri().path().to_string();
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        seen.requests.fetch_add(1, Ordering::Relaxed);
                        seen.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                        if capture && let Ok(mut last) = seen.last.lock() {
                            last.insert(path, body);
                        }
                        Response::builder()
                            .status(StatusCode::ACCEPTED)
                            .body(Empty::<Bytes>::new())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}
