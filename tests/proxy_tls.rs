//! TLS on the data path (README, Dataplane): an inbound with `tls: {certFile, keyFile}`
//! terminates TLS and lets ALPN pick h2 or http/1.1; an outbound with `tls: {caFile,
//! serverName}` originates TLS to its endpoints. Certificates come from a test CA (rcgen), and
//! every rustls config here uses the ring provider.

mod harness;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use harness::free_port;
use harness::grpc::{
    EchoClient, EchoRequest, TestPki, method, start_echo_server, start_proxy, start_tls_echo_server,
};

/// An inbound (`kuma.io/protocol: http`) terminating TLS in front of a plain-text app, which
/// answers plain requests with `<version it saw> <path>`.
async fn tls_inbound(pki: &TestPki) -> (harness::Proxy, harness::grpc::EchoServer) {
    let app = start_echo_server().await;
    let proxy = start_proxy(&format!(
        r#"
type: Dataplane
mesh: default
name: web-1
networking:
  address: 127.0.0.1
  inbound:
    - port: {port}
      servicePort: {app_port}
      tags: {{kuma.io/service: web, kuma.io/protocol: http}}
      tls: {{certFile: "{cert}", keyFile: "{key}"}}
"#,
        port = free_port(),
        app_port = app.address.port(),
        cert = pki.cert_file.display(),
        key = pki.key_file.display(),
    ))
    .await;
    (proxy, app)
}

/// A TLS connection to `address` for the name "localhost", offering one ALPN protocol.
async fn tls_connect(pki: &TestPki, address: SocketAddr, alpn: &[u8]) -> TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(pki.client_config(&[alpn]));
    let tcp = TcpStream::connect(address).await.expect("TCP connect");
    let name = ServerName::try_from("localhost").expect("server name");
    connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the inbound")
}

/// Status, version and body text of a response.
async fn read<B>(response: http::Response<B>) -> (StatusCode, Version, String)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (status, version) = (response.status(), response.version());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    (
        status,
        version,
        String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    )
}

// Browsers and gRPC clients pick h2 by ALPN: the inbound must offer it and then speak h2 on
// the decrypted stream, while the app behind it still gets the inbound's HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_inbound_speaks_h2_when_alpn_chooses_h2() {
    let pki = TestPki::new();
    let (proxy, _app) = tls_inbound(&pki).await;
    let address = proxy.addresses()[0];

    let tls = tls_connect(&pki, address, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let request = Request::get(format!("https://localhost:{}/hello", address.port()))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");

    let (status, version, body) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(body, "HTTP/1.1 /hello");
}

// Clients without h2 (curl --http1.1, older libraries) offer only http/1.1 and must get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_inbound_speaks_http11_when_alpn_chooses_http11() {
    let pki = TestPki::new();
    let (proxy, _app) = tls_inbound(&pki).await;
    let address = proxy.addresses()[0];

    let tls = tls_connect(&pki, address, b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let request = Request::get("/hello")
        .header(http::header::HOST, format!("localhost:{}", address.port()))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .expect("HTTP/1.1 response");

    let (status, version, body) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(body, "HTTP/1.1 /hello");
}

/// A dataplane whose outbound (`protocol`) reaches `upstream` over TLS, verifying the
/// certificate against the test CA under the name "localhost" (the endpoint is an IP).
fn tls_outbound_dataplane(pki: &TestPki, protocol: &str, upstream: SocketAddr) -> String {
    format!(
        r#"
type: Dataplane
mesh: default
name: web-1
networking:
  address: 127.0.0.1
  inbound:
    - port: {inbound}
      servicePort: {app}
      tags: {{kuma.io/service: web, kuma.io/protocol: http}}
  outbound:
    - port: {outbound}
      tags: {{kuma.io/service: backend, kuma.io/protocol: {protocol}}}
      endpoints: ["{upstream}"]
      tls: {{caFile: "{ca}", serverName: localhost}}
"#,
        inbound = free_port(),
        app = free_port(),
        outbound = free_port(),
        ca = pki.ca_file.display(),
    )
}

// An upstream outside the mesh that only speaks TLS: the app talks plain HTTP/1.1 to its
// sidecar, which must originate TLS (ALPN http/1.1 for an `http` outbound) and verify it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_outbound_reaches_a_tls_http_upstream() {
    let pki = TestPki::new();
    let upstream = start_tls_echo_server(pki.server_config()).await;
    let proxy = start_proxy(&tls_outbound_dataplane(&pki, "http", upstream.address)).await;
    let outbound = proxy.addresses()[1];

    let tcp = TcpStream::connect(outbound)
        .await
        .expect("connect to the outbound");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let request = Request::get("/hello")
        .header(http::header::HOST, "backend")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");

    let (status, _, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "HTTP/1.1 /hello");
}

// gRPC needs h2: a `grpc` outbound with TLS must negotiate h2 by ALPN with the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_outbound_carries_grpc_to_a_tls_upstream_over_h2() {
    let pki = TestPki::new();
    let upstream = start_tls_echo_server(pki.server_config()).await;
    let proxy = start_proxy(&tls_outbound_dataplane(&pki, "grpc", upstream.address)).await;
    let mut client = EchoClient::connect(proxy.addresses()[1]).await;

    let request = EchoRequest {
        payload: b"over TLS".to_vec(),
        ..EchoRequest::default()
    };
    let reply = client
        .unary(method::UNARY, request)
        .await
        .expect("unary call over TLS");

    assert_eq!(reply.into_inner().payload, b"over TLS");
}
