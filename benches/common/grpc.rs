//! A loopback OTLP/gRPC receiver: `opentelemetry-proto`'s tonic `TraceServiceServer` on h2c,
//! accepting everything and keeping the last request (so a bench can read what was sent).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// What the receiver saw.
#[derive(Default)]
pub struct Received {
    pub requests: AtomicU64,
    pub spans: AtomicU64,
    /// The last request, as tonic decoded it. Keeping it costs a move: it would be dropped
    /// here otherwise.
    pub last: Mutex<Option<ExportTraceServiceRequest>>,
}

struct Accepting(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Accepting {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        if let Ok(mut last) = self.0.last.lock() {
            *last = Some(request);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the receiver on the current runtime.
pub async fn start_receiver() -> (SocketAddr, Arc<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let received = Arc::new(Received::default());
    let service = TraceServiceServer::new(Accepting(received.clone()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (addr, received)
}

/// A loopback OTLP/gRPC receiver that reads each request whole and answers it (an empty
/// `ExportTraceServiceResponse`, `grpc-status: 0`) without decoding it, as the HTTP receiver
/// only counts bytes: a collector runs elsewhere, so what a one-core export bench measures
/// is the exporter, not prost decoding thousands of attributes. Returns the bytes received.
pub async fn start_counting_receiver() -> (SocketAddr, Arc<AtomicU64>) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::{Frame, Incoming};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let bytes = Arc::new(AtomicU64::new(0));
    let seen = bytes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let seen = seen.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let body = request
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    seen.fetch_add(body.len() as u64, Ordering::Relaxed);
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                    // One gRPC message: not compressed, zero bytes long.
                    let frames: [Result<Frame<Bytes>, std::convert::Infallible>; 2] = [
                        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    hyper::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(StreamBody::new(futures_util::stream::iter(frames)))
                }
            });
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (addr, bytes)
}
