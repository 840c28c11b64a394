//! A gRPC echo service written with tonic's low-level API (hand-written prost messages, no
//! protoc), its client, and test certificates.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::{
    ClientStreamingService, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, IntoRequest, IntoStreamingRequest, Status, Streaming};
use tonic_prost::ProstCodec;

use tracecar::proxy::ProxyConfig;
use tracecar::proxy::observe::NoObserver;

/// Both ends raise tonic's 4 MiB default so that large messages are the proxy's problem only.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A tracecar proxy (no policy: nothing is traced) from a Dataplane document that must be
/// valid as it stands.
pub async fn start_proxy(dataplane_yaml: &str) -> super::Proxy {
    super::proxy_with(
        dataplane_yaml,
        Arc::new(NoObserver),
        &ProxyConfig::default(),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The echo service's messages, written by hand instead of generated from a .proto file.

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
    /// Server streams: how many replies to send.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// `Slow`: how long to wait before replying.
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
    /// `Fail`, `FailAfterOne`: the status code to answer with.
    #[prost(int32, tag = "4")]
    pub code: i32,
    /// `Fail`, `FailAfterOne`: the status message to answer with.
    #[prost(string, tag = "5")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
    /// Position in a stream, or the number of messages a client stream carried.
    #[prost(uint32, tag = "2")]
    pub seq: u32,
    /// Payload bytes the server received (summed over a client stream).
    #[prost(uint64, tag = "3")]
    pub bytes: u64,
}

/// The methods of the echo service.
pub mod method {
    /// Unary: echoes the payload.
    pub const UNARY: &str = "/tracecar.test.Echo/Unary";
    /// Unary: waits `delay_ms`, then echoes.
    pub const SLOW: &str = "/tracecar.test.Echo/Slow";
    /// Unary: answers `code`/`message` with [`super::TRAILER_KEY`] metadata (trailers-only).
    pub const FAIL: &str = "/tracecar.test.Echo/Fail";
    /// Server streaming: one reply, then `code`/`message` and metadata in real trailers.
    pub const FAIL_AFTER_ONE: &str = "/tracecar.test.Echo/FailAfterOne";
    /// Server streaming: `count` replies numbered from 0.
    pub const SERVER_STREAM: &str = "/tracecar.test.Echo/ServerStream";
    /// Client streaming: counts the messages and their payload bytes.
    pub const CLIENT_STREAM: &str = "/tracecar.test.Echo/ClientStream";
    /// Bidi: echoes every message, numbered from 0.
    pub const BIDI: &str = "/tracecar.test.Echo/Bidi";
    /// Server streaming: a reply every 10 ms until the caller goes away, then reports
    /// [`super::Event::StreamClosed`].
    pub const ENDLESS: &str = "/tracecar.test.Echo/Endless";
}

/// Custom metadata every failing method attaches to its status.
pub const TRAILER_KEY: &str = "x-echo-detail";
pub const TRAILER_VALUE: &str = "custom trailer value";
pub const TRAILER_BIN_KEY: &str = "x-echo-blob-bin";
pub const TRAILER_BIN_VALUE: &[u8] = &[0, 1, 2, 0xfe, 0xff];

/// What the service reports to the test about calls it saw end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An `Endless` stream's receiver was dropped: the call was cancelled downstream.
    StreamClosed,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The echo service as a tower service over any HTTP body. Requests that are not gRPC get a
/// plain-text reply (see [`plain_reply`]), so that one server covers the HTTP tests too.
#[derive(Clone)]
pub struct EchoService {
    events: mpsc::UnboundedSender<Event>,
}

impl EchoService {
    pub fn new() -> (EchoService, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        (EchoService { events }, rx)
    }

    async fn route<B>(self, req: http::Request<B>) -> http::Response<tonic::body::Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        if !is_grpc(req.headers()) {
            return plain_reply(&req);
        }
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        match req.uri().path() {
            method::UNARY => grpc.unary(Unary(unary), req).await,
            method::SLOW => grpc.unary(Unary(slow), req).await,
            method::FAIL => grpc.unary(Unary(fail), req).await,
            method::FAIL_AFTER_ONE => {
                grpc.server_streaming(ServerStreaming(fail_after_one), req)
                    .await
            }
            method::SERVER_STREAM => {
                grpc.server_streaming(ServerStreaming(server_stream), req)
                    .await
            }
            method::CLIENT_STREAM => {
                grpc.client_streaming(ClientStreaming(client_stream), req)
                    .await
            }
            method::BIDI => grpc.streaming(Bidi(bidi), req).await,
            method::ENDLESS => {
                let events = self.events.clone();
                let endless = ServerStreaming(move |r| endless(r, events.clone()));
                grpc.server_streaming(endless, req).await
            }
            other => Status::unimplemented(format!("no method {other}")).into_http(),
        }
    }
}

type Reply<T> = Result<tonic::Response<T>, Status>;

async fn unary(r: tonic::Request<EchoRequest>) -> Reply<EchoReply> {
    Ok(tonic::Response::new(echo(r, 0)))
}

async fn slow(r: tonic::Request<EchoRequest>) -> Reply<EchoReply> {
    tokio::time::sleep(Duration::from_millis(r.get_ref().delay_ms)).await;
    Ok(tonic::Response::new(echo(r, 0)))
}

async fn fail(r: tonic::Request<EchoRequest>) -> Reply<EchoReply> {
    Err(failure(r.get_ref()))
}

async fn fail_after_one(r: tonic::Request<EchoRequest>) -> Reply<ReplyStream> {
    let first = EchoReply {
        payload: b"first".to_vec(),
        seq: 0,
        bytes: 0,
    };
    let status = failure(r.get_ref());
    let stream: ReplyStream = Box::pin(tokio_stream::iter([Ok(first), Err(status)]));
    Ok(tonic::Response::new(stream))
}

async fn server_stream(r: tonic::Request<EchoRequest>) -> Reply<ReplyStream> {
    let m = r.into_inner();
    let replies = (0..m.count).map(move |seq| {
        Ok(EchoReply {
            payload: m.payload.clone(),
            seq,
            bytes: m.payload.len() as u64,
        })
    });
    let stream: ReplyStream = Box::pin(tokio_stream::iter(replies));
    Ok(tonic::Response::new(stream))
}

async fn client_stream(r: tonic::Request<Streaming<EchoRequest>>) -> Reply<EchoReply> {
    let mut stream = r.into_inner();
    let (mut seq, mut bytes) = (0u32, 0u64);
    while let Some(m) = stream.message().await? {
        seq += 1;
        bytes += m.payload.len() as u64;
    }
    Ok(tonic::Response::new(EchoReply {
        payload: Vec::new(),
        seq,
        bytes,
    }))
}

async fn bidi(r: tonic::Request<Streaming<EchoRequest>>) -> Reply<ReplyStream> {
    let mut seq = 0u32;
    let stream = tokio_stream::StreamExt::map(r.into_inner(), move |m| {
        let m = m?;
        let reply = EchoReply {
            bytes: m.payload.len() as u64,
            payload: m.payload,
            seq,
        };
        seq += 1;
        Ok(reply)
    });
    let stream: ReplyStream = Box::pin(stream);
    Ok(tonic::Response::new(stream))
}

/// Ticks from a task of its own, so that the end of the call shows as the channel closing.
async fn endless(
    _: tonic::Request<EchoRequest>,
    events: mpsc::UnboundedSender<Event>,
) -> Reply<ReplyStream> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut seq = 0u32;
        loop {
            let reply = EchoReply {
                payload: b"tick".to_vec(),
                seq,
                bytes: 0,
            };
            if tx.send(Ok(reply)).await.is_err() {
                let _ = events.send(Event::StreamClosed);
                return;
            }
            seq += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let stream: ReplyStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(tonic::Response::new(stream))
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `grpc-timeout`: an integer of at most 8 digits and a unit (gRPC over HTTP/2 spec).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Plain HTTP requests get `<version> <path>` back: what the server saw of the request.
fn plain_reply<B>(req: &http::Request<B>) -> http::Response<tonic::body::Body> {
    let text = format!("{:?} {}", req.version(), req.uri().path());
    let mut response = http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
        Bytes::from(text),
    )));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

fn echo(r: tonic::Request<EchoRequest>, seq: u32) -> EchoReply {
    let m = r.into_inner();
    EchoReply {
        bytes: m.payload.len() as u64,
        payload: m.payload,
        seq,
    }
}

fn failure(m: &EchoRequest) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(TRAILER_KEY, MetadataValue::from_static(TRAILER_VALUE));
    metadata.insert_bin(
        TRAILER_BIN_KEY,
        MetadataValue::from_bytes(TRAILER_BIN_VALUE),
    );
    Status::with_metadata(Code::from(m.code), m.message.clone(), metadata)
}

impl<B> tower_service::Service<http::Request<B>> for EchoService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        // As gRPC servers do (tonic's own server answers CANCELLED instead): the caller's
        // deadline bounds the call, up to the response head.
        let deadline = grpc_timeout(req.headers());
        Box::pin(async move {
            let response = this.route(req);
            Ok(match deadline {
                Some(deadline) => tokio::time::timeout(deadline, response)
                    .await
                    .unwrap_or_else(|_| Status::deadline_exceeded("deadline exceeded").into_http()),
                None => response.await,
            })
        })
    }
}

// Closures as tonic's per-kind method services.
struct Unary<F>(F);
struct ServerStreaming<F>(F);
struct ClientStreaming<F>(F);
struct Bidi<F>(F);

impl<F, Fut> UnaryService<EchoRequest> for Unary<F>
where
    F: FnMut(tonic::Request<EchoRequest>) -> Fut,
    Fut: Future<Output = Reply<EchoReply>> + Send + 'static,
{
    type Response = EchoReply;
    type Future = BoxFuture<Reply<EchoReply>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        Box::pin((self.0)(request))
    }
}

impl<F, Fut> ServerStreamingService<EchoRequest> for ServerStreaming<F>
where
    F: FnMut(tonic::Request<EchoRequest>) -> Fut,
    Fut: Future<Output = Reply<ReplyStream>> + Send + 'static,
{
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Reply<ReplyStream>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        Box::pin((self.0)(request))
    }
}

impl<F, Fut> ClientStreamingService<EchoRequest> for ClientStreaming<F>
where
    F: FnMut(tonic::Request<Streaming<EchoRequest>>) -> Fut,
    Fut: Future<Output = Reply<EchoReply>> + Send + 'static,
{
    type Response = EchoReply;
    type Future = BoxFuture<Reply<EchoReply>>;

    fn call(&mut self, request: tonic::Request<Streaming<EchoRequest>>) -> Self::Future {
        Box::pin((self.0)(request))
    }
}

impl<F, Fut> StreamingService<EchoRequest> for Bidi<F>
where
    F: FnMut(tonic::Request<Streaming<EchoRequest>>) -> Fut,
    Fut: Future<Output = Reply<ReplyStream>> + Send + 'static,
{
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Reply<ReplyStream>>;

    fn call(&mut self, request: tonic::Request<Streaming<EchoRequest>>) -> Self::Future {
        Box::pin((self.0)(request))
    }
}

/// The echo service on a hyper server (HTTP/1.1 and h2c, or TLS with ALPN h2/http/1.1).
pub struct EchoServer {
    pub address: SocketAddr,
    pub events: mpsc::UnboundedReceiver<Event>,
}

/// Serves the echo service on a fresh loopback port, in plain text.
pub async fn start_echo_server() -> EchoServer {
    start_server(None).await
}

/// Serves the echo service on a fresh loopback port behind TLS.
pub async fn start_tls_echo_server(config: Arc<rustls::ServerConfig>) -> EchoServer {
    start_server(Some(tokio_rustls::TlsAcceptor::from(config))).await
}

async fn start_server(tls: Option<tokio_rustls::TlsAcceptor>) -> EchoServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the echo server");
    let address = listener.local_addr().expect("local address");
    let (service, events) = EchoService::new();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            let tls = tls.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let served = match tls {
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Err(e) => Err(e.into()),
                    },
                };
                if let Err(e) = served {
                    eprintln!("echo server connection: {e}");
                }
            });
        }
    });
    EchoServer { address, events }
}

/// A client of the echo service: over a tonic channel, or over a bare hyper h2 client.
pub struct EchoClient<T = Channel> {
    grpc: tonic::client::Grpc<T>,
}

/// tonic's `Channel` enforces `grpc-timeout` itself (and reports its own expiry as CANCELLED);
/// this transport only sends the header, so the deadline is the server's to enforce.
pub type BareH2 = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
>;

fn codec() -> ProstCodec<EchoRequest, EchoReply> {
    ProstCodec::default()
}

impl EchoClient<Channel> {
    /// Connects with h2c prior knowledge to `address`.
    pub async fn connect(address: SocketAddr) -> EchoClient<Channel> {
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .expect("endpoint URI")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {address}: {e}"));
        EchoClient::new(channel)
    }
}

impl EchoClient<BareH2> {
    /// A client that leaves deadlines to the server (see [`BareH2`]).
    pub fn bare_h2(address: SocketAddr) -> EchoClient<BareH2> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        let origin: http::Uri = format!("http://{address}").parse().expect("origin URI");
        EchoClient {
            grpc: tonic::client::Grpc::with_origin(client, origin)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }
}

impl<T> EchoClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(transport: T) -> EchoClient<T> {
        EchoClient {
            grpc: tonic::client::Grpc::new(transport)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("client not ready: {}", e.into())))
    }

    pub async fn unary(
        &mut self,
        path: &'static str,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, Status> {
        self.ready().await?;
        self.grpc
            .unary(
                request.into_request(),
                PathAndQuery::from_static(path),
                codec(),
            )
            .await
    }

    pub async fn server_streaming(
        &mut self,
        path: &'static str,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<tonic::Response<Streaming<EchoReply>>, Status> {
        self.ready().await?;
        self.grpc
            .server_streaming(
                request.into_request(),
                PathAndQuery::from_static(path),
                codec(),
            )
            .await
    }

    pub async fn client_streaming<S>(
        &mut self,
        path: &'static str,
        request: impl IntoStreamingRequest<Stream = S, Message = EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, Status>
    where
        S: Stream<Item = EchoRequest> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .client_streaming(
                request.into_streaming_request(),
                PathAndQuery::from_static(path),
                codec(),
            )
            .await
    }

    pub async fn streaming<S>(
        &mut self,
        path: &'static str,
        request: impl IntoStreamingRequest<Stream = S, Message = EchoRequest>,
    ) -> Result<tonic::Response<Streaming<EchoReply>>, Status>
    where
        S: Stream<Item = EchoRequest> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .streaming(
                request.into_streaming_request(),
                PathAndQuery::from_static(path),
                codec(),
            )
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

/// rustls with the ring provider, as tracecar uses (never aws-lc).
pub fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA and a server certificate it issued for `localhost` and `127.0.0.1`, written as
/// PEM files in a temporary folder.
pub struct TestPki {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tracecar test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca).expect("server certificate");

        let dir = tempfile::tempdir().expect("temporary folder");
        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("server.pem");
        let key_file = dir.path().join("server-key.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        std::fs::write(&cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        TestPki {
            ca_file,
            cert_file,
            key_file,
            _dir: dir,
        }
    }

    /// A server config with this PKI's certificate, offering h2 and http/1.1.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&self.cert_file)
            .expect("read certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse certificate");
        let key = PrivateKeyDer::from_pem_file(&self.key_file).expect("read key");
        let mut config = rustls::ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A client config trusting this PKI's CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_file).expect("read CA") {
            roots.add(cert.expect("parse CA")).expect("add CA");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
