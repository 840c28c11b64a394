//! gRPC through a chain of two tracecar proxies, as in a mesh: the client calls its sidecar's
//! outbound (`kuma.io/protocol: grpc`), whose endpoint is the server's sidecar inbound, which
//! forwards to the tonic service. Every gRPC shape must cross both hops unchanged.

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tonic::Code;

use harness::free_port;
use harness::grpc::{
    EchoClient, EchoRequest, EchoServer, Event, TRAILER_BIN_KEY, TRAILER_BIN_VALUE, TRAILER_KEY,
    TRAILER_VALUE, method, start_echo_server, start_proxy,
};

/// The service, both sidecars and a client connected to the caller's outbound.
struct Chain {
    app: EchoServer,
    /// Where the application reaches "backend": its sidecar's outbound.
    outbound: SocketAddr,
    client: EchoClient,
    _server_side: harness::Proxy,
    _client_side: harness::Proxy,
}

async fn chain() -> Chain {
    let app = start_echo_server().await;
    let backend_inbound = free_port();
    let server_side = start_proxy(&format!(
        r#"
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 127.0.0.1
  inbound:
    - port: {backend_inbound}
      servicePort: {app_port}
      tags: {{kuma.io/service: backend, kuma.io/protocol: grpc}}
"#,
        app_port = app.address.port(),
    ))
    .await;
    let (web_inbound, web_app, web_outbound) = (free_port(), free_port(), free_port());
    let client_side = start_proxy(&format!(
        r#"
type: Dataplane
mesh: default
name: web-1
networking:
  address: 127.0.0.1
  inbound:
    - port: {web_inbound}
      servicePort: {web_app}
      tags: {{kuma.io/service: web, kuma.io/protocol: http}}
  outbound:
    - port: {web_outbound}
      tags: {{kuma.io/service: backend, kuma.io/protocol: grpc}}
      endpoints: ["127.0.0.1:{backend_inbound}"]
"#
    ))
    .await;
    // Listener order: the inbound, then the outbound.
    let outbound = client_side.addresses()[1];
    let client = EchoClient::connect(outbound).await;
    Chain {
        app,
        outbound,
        client,
        _server_side: server_side,
        _client_side: client_side,
    }
}

fn request(payload: &[u8]) -> EchoRequest {
    EchoRequest {
        payload: payload.to_vec(),
        ..EchoRequest::default()
    }
}

// h2 flow control and frame sizes are the proxy's business: a message far larger than one
// window (and than tonic's 4 MiB default) must cross both hops intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_call_carries_a_4_mib_message_through_both_sidecars() {
    let mut c = chain().await;
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();

    let reply = c
        .client
        .unary(method::UNARY, request(&payload))
        .await
        .expect("unary call");

    let reply = reply.into_inner();
    assert_eq!(reply.bytes, payload.len() as u64);
    assert!(reply.payload == payload, "the echoed payload differs");
}

// A long response stream must arrive whole and in order, ended by the server's OK trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_delivers_1000_messages_in_order() {
    let mut c = chain().await;
    let req = EchoRequest {
        payload: b"0123456789".to_vec(),
        count: 1000,
        ..EchoRequest::default()
    };

    let mut stream = c
        .client
        .server_streaming(method::SERVER_STREAM, req)
        .await
        .expect("stream starts")
        .into_inner();

    let mut seen = 0u32;
    while let Some(reply) = stream.message().await.expect("stream ends with OK") {
        assert_eq!(reply.seq, seen);
        assert_eq!(reply.payload, b"0123456789");
        seen += 1;
    }
    assert_eq!(seen, 1000);
}

// A long request stream must reach the server whole, and its single reply come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_delivers_1000_messages() {
    let mut c = chain().await;
    let messages: Vec<EchoRequest> = (0..1000u32)
        .map(|i| request(format!("m{i:04}").as_bytes()))
        .collect();

    let reply = c
        .client
        .client_streaming(method::CLIENT_STREAM, tokio_stream::iter(messages))
        .await
        .expect("client stream")
        .into_inner();

    assert_eq!(reply.seq, 1000);
    assert_eq!(reply.bytes, 5000);
}

// Both directions stream at once on one h2 stream; every message must be echoed in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_streaming_echoes_1000_messages_in_order() {
    let mut c = chain().await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let sender = tokio::spawn(async move {
        for i in 0..1000u32 {
            if tx.send(request(&i.to_be_bytes())).await.is_err() {
                break;
            }
        }
    });

    let mut stream = c
        .client
        .streaming(
            method::BIDI,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )
        .await
        .expect("bidi starts")
        .into_inner();

    let mut seen = 0u32;
    while let Some(reply) = stream.message().await.expect("bidi ends with OK") {
        assert_eq!(reply.seq, seen);
        assert_eq!(reply.payload, seen.to_be_bytes());
        seen += 1;
    }
    assert_eq!(seen, 1000);
    sender.await.expect("sender task");
}

const NON_ASCII: &str = "café ☕ 見つからない";

// grpc-status, the percent-encoded grpc-message and custom metadata travel in the HTTP/2
// trailers after the messages: the proxies must forward trailers byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_non_ascii_message_and_custom_metadata_arrives_in_trailers_unchanged() {
    let mut c = chain().await;
    let req = EchoRequest {
        code: Code::NotFound as i32,
        message: NON_ASCII.to_string(),
        ..EchoRequest::default()
    };

    let mut stream = c
        .client
        .server_streaming(method::FAIL_AFTER_ONE, req)
        .await
        .expect("stream starts")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("first message")
        .expect("one message before the status");
    assert_eq!(first.payload, b"first");
    let status = stream
        .message()
        .await
        .expect_err("the stream ends with the server's status");

    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), NON_ASCII);
    assert_eq!(
        status
            .metadata()
            .get(TRAILER_KEY)
            .map(|v| v.to_str().expect("ascii")),
        Some(TRAILER_VALUE)
    );
    let blob = status
        .metadata()
        .get_bin(TRAILER_BIN_KEY)
        .expect("binary trailer")
        .to_bytes();
    assert_eq!(blob.expect("valid base64").as_ref(), TRAILER_BIN_VALUE);
}

// A failed unary call is "trailers-only": the status sits in the response head, which the
// proxies must not mistake for a normal header block to rewrite or drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_only_status_with_non_ascii_message_arrives_unchanged() {
    let mut c = chain().await;
    let req = EchoRequest {
        code: Code::NotFound as i32,
        message: NON_ASCII.to_string(),
        ..EchoRequest::default()
    };

    let status = c
        .client
        .unary(method::FAIL, req)
        .await
        .expect_err("the call fails");

    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), NON_ASCII);
    assert_eq!(
        status
            .metadata()
            .get(TRAILER_KEY)
            .map(|v| v.to_str().expect("ascii")),
        Some(TRAILER_VALUE)
    );
}

// The caller's deadline travels as `grpc-timeout` and the server enforces it: the proxies must
// forward the header, and the server's DEADLINE_EXCEEDED back. The client here does not
// enforce deadlines itself (tonic's Channel would, answering CANCELLED before the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_shorter_than_the_server_delay_gives_deadline_exceeded() {
    let c = chain().await;
    let mut client = EchoClient::bare_h2(c.outbound);
    let mut req = tonic::Request::new(EchoRequest {
        delay_ms: 3_000,
        ..EchoRequest::default()
    });
    req.set_timeout(Duration::from_millis(300));

    let started = Instant::now();
    let status = client
        .unary(method::SLOW, req)
        .await
        .expect_err("the deadline passes");

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "the deadline was not enforced upstream: {:?}",
        started.elapsed()
    );
}

// A client that gives up mid-stream resets its h2 stream; each hop must pass the reset on so
// the server stops producing (else streams leak until the server finishes on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cancellation_mid_server_stream_reaches_the_server() {
    let mut c = chain().await;
    let mut stream = c
        .client
        .server_streaming(method::ENDLESS, EchoRequest::default())
        .await
        .expect("stream starts")
        .into_inner();
    for _ in 0..3 {
        stream
            .message()
            .await
            .expect("a tick")
            .expect("the stream is open");
    }
    assert!(
        c.app.events.try_recv().is_err(),
        "the server saw an end before the cancel"
    );

    drop(stream);

    let event = tokio::time::timeout(Duration::from_secs(2), c.app.events.recv()).await;
    assert_eq!(
        event,
        Ok(Some(Event::StreamClosed)),
        "the server did not see the cancel within 2 s"
    );
}
