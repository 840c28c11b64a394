//! The data path for HTTP/1.1, h2c and TCP, with real servers and clients on loopback:
//! everything a client sends arrives as it would directly, and failures are explicit and fast.

mod harness;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use harness::{Observed, Upstream, free_port, inbound_proxy, outbound_proxy, pattern, raw};

async fn h1_connection(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<
    http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
> {
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h1 handshake");
    tokio::spawn(conn);
    sender
}

async fn h2_connection(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<
    http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
> {
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(8 * 1024 * 1024)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

fn full(data: Bytes) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    Full::new(data).map_err(|never| match never {}).boxed()
}

/// A body sent in 64 KiB chunks with no length known up front (chunked on HTTP/1.1).
fn chunked(data: Bytes) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)))
}

async fn echo_through_h1(method: Method, size: usize, chunked_body: bool) {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let mut client = h1_connection(proxy.address(0)).await;
    let data = pattern(size);
    let body = if chunked_body {
        chunked(data.clone())
    } else {
        full(data.clone())
    };
    let mut request = Request::builder()
        .method(method.clone())
        .uri("/echo")
        .header("host", "web.local");
    if chunked_body {
        // Said explicitly, as a client sending a GET with a body must (hyper, like most
        // clients, sends an unframed GET body as none at all).
        request = request.header("transfer-encoding", "chunked");
    }
    let request = request.body(body).expect("request");
    let response = client.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK, "{method} {size} B");
    assert_eq!(response.headers()["x-seen-method"], method.as_str());
    assert_eq!(
        response.headers()["x-seen-host"],
        "web.local",
        "Host is preserved"
    );
    let received = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(received.len(), size, "{method} {size} B: length");
    assert!(received == data, "{method} {size} B: bytes differ");
}

#[tokio::test]
async fn http1_get_without_body_passes_through() {
    echo_through_h1(Method::GET, 0, false).await;
}

#[tokio::test]
async fn http1_post_1kib_content_length_body_passes_through() {
    echo_through_h1(Method::POST, 1024, false).await;
}

#[tokio::test]
async fn http1_post_1kib_chunked_body_passes_through() {
    echo_through_h1(Method::POST, 1024, true).await;
}

#[tokio::test]
async fn http1_put_10mib_content_length_body_streams_both_ways() {
    echo_through_h1(Method::PUT, 10 * 1024 * 1024, false).await;
}

#[tokio::test]
async fn http1_post_10mib_chunked_body_streams_both_ways() {
    echo_through_h1(Method::POST, 10 * 1024 * 1024, true).await;
}

#[tokio::test]
async fn http1_put_empty_body_passes_through() {
    echo_through_h1(Method::PUT, 0, false).await;
}

#[tokio::test]
async fn http1_every_method_size_and_framing_passes_through() {
    // The whole matrix of the contract: GET, POST and PUT; 0 B, 1 KiB and 10 MiB;
    // Content-Length and chunked.
    for method in [Method::GET, Method::POST, Method::PUT] {
        for size in [0, 1024, 10 * 1024 * 1024] {
            for chunked_body in [false, true] {
                echo_through_h1(method.clone(), size, chunked_body).await;
            }
        }
    }
}

#[tokio::test]
async fn http1_keep_alive_requests_reuse_one_upstream_connection() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let mut client = h1_connection(proxy.address(0)).await;
    for i in 0..1000 {
        let request = Request::get("/echo")
            .header("host", "web.local")
            .body(full(Bytes::new()))
            .expect("request");
        let response = client.send_request(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        response.into_body().collect().await.expect("body");
    }
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        1,
        "one pooled upstream connection"
    );
}

#[tokio::test]
async fn http1_every_status_from_200_to_599_passes_through() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let mut client = h1_connection(proxy.address(0)).await;
    for status in 200u16..=599 {
        let request = Request::get(format!("/status/{status}"))
            .header("host", "web.local")
            .body(full(Bytes::new()))
            .expect("request");
        let response = client.send_request(request).await.expect("response");
        assert_eq!(response.status().as_u16(), status);
        response.into_body().collect().await.expect("body");
    }
}

#[tokio::test]
async fn http1_hop_by_hop_headers_are_removed_and_end_to_end_ones_kept() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let mut client = h1_connection(proxy.address(0)).await;
    let request = Request::get("/echo")
        .header("host", "web.local")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-end-to-end", "kept")
        .body(full(Bytes::new()))
        .expect("request");
    let response = client.send_request(request).await.expect("response");
    let seen = response.headers()["x-seen-headers"]
        .to_str()
        .expect("ascii")
        .to_string();
    for gone in ["x-private", "keep-alive", "proxy-connection"] {
        assert!(
            !seen.split(',').any(|h| h == gone),
            "{gone} must not reach the app: {seen}"
        );
    }
    assert!(seen.split(',').any(|h| h == "x-end-to-end"), "{seen}");
    assert!(seen.split(',').any(|h| h == "x-forwarded-proto"), "{seen}");
}

#[tokio::test]
async fn http1_websocket_echo_round_trip_through_the_proxy() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let url = format!("ws://{}/ws", proxy.address(0));
    let (mut socket, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "through", "tracecar"] {
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("send");
        let echoed = socket.next().await.expect("a message").expect("no error");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_accepted_on_an_http_listener() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let mut client = h2_connection(proxy.address(0)).await;
    let request = Request::get(format!("http://web.local:{}/echo", proxy.address(0).port()))
        .version(Version::HTTP_2)
        .body(full(Bytes::new()))
        .expect("request");
    let response = client.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(
        response.headers()["x-seen-host"],
        format!("web.local:{}", proxy.address(0).port()),
        ":authority becomes the app's Host"
    );
}

#[tokio::test]
async fn h2_hundred_concurrent_streams_on_one_connection() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http2").await;
    let client = h2_connection(proxy.address(0)).await;
    let port = proxy.address(0).port();
    let calls = (0..100).map(|i| {
        let mut client = client.clone();
        async move {
            let request = Request::post(format!("http://web.local:{port}/echo?delay_ms=200"))
                .version(Version::HTTP_2)
                .body(full(Bytes::from(format!("stream {i}"))))
                .expect("request");
            let response = client.send_request(request).await.expect("response");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(body, Bytes::from(format!("stream {i}")));
        }
    });
    let started = Instant::now();
    futures_util::future::join_all(calls).await;
    // 100 × 200 ms one after another would take 20 s: the streams ran concurrently.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        app.max_in_flight.load(Ordering::SeqCst),
        100,
        "all 100 in flight at the app at once"
    );
}

#[tokio::test]
async fn h2_10mib_bodies_stream_both_ways() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http2").await;
    let mut client = h2_connection(proxy.address(0)).await;
    let data = pattern(10 * 1024 * 1024);
    let request = Request::post(format!("http://web.local:{}/echo", proxy.address(0).port()))
        .version(Version::HTTP_2)
        .body(chunked(data.clone()))
        .expect("request");
    let response = client.send_request(request).await.expect("response");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert!(body == data, "10 MiB echoed byte for byte");
}

#[tokio::test]
async fn h2_request_and_response_trailers_are_preserved() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http2").await;
    let mut client = h2_connection(proxy.address(0)).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-request-trailer", "sent".parse().expect("value"));
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"payload"))),
        Ok(Frame::trailers(trailers)),
    ];
    let request = Request::post(format!(
        "http://web.local:{}/trailers",
        proxy.address(0).port()
    ))
    .version(Version::HTTP_2)
    .header("te", "trailers")
    .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
        frames,
    ))))
    .expect("request");
    let response = client.send_request(request).await.expect("response");
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected
        .trailers()
        .cloned()
        .expect("response trailers arrive");
    assert_eq!(trailers["x-response-trailer"], "done");
    assert_eq!(
        trailers["x-echoed-request-trailer"], "sent",
        "request trailers reached the app"
    );
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"payload"));
}

#[tokio::test]
async fn http1_client_reaches_an_http2_upstream_through_an_outbound() {
    // The outbound speaks its protocol (http2) upstream whatever the caller spoke.
    let app = Upstream::start().await;
    let proxy = outbound_proxy(&[app.address.to_string()], "http2").await;
    let mut client = h1_connection(proxy.address(0)).await;
    let request = Request::get("/echo")
        .header("host", "backend.mesh")
        .body(full(Bytes::new()))
        .expect("request");
    let response = client.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-seen-version"], "HTTP/2.0");
    assert_eq!(response.headers()["x-seen-host"], "backend.mesh");
}

#[tokio::test]
async fn tcp_passthrough_echoes_100_mib_byte_exact() {
    let echo = harness::tcp_echo().await;
    let proxy = outbound_proxy(&[echo.to_string()], "tcp").await;
    let stream = TcpStream::connect(proxy.address(0)).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    const TOTAL: usize = 100 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let block = pattern(1024 * 1024);
        for _ in 0..100 {
            write.write_all(&block).await.expect("write");
        }
        write.shutdown().await.expect("shutdown");
    });
    let expected = pattern(1024 * 1024);
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = read.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        for (i, byte) in buf[..n].iter().enumerate() {
            let at = (received + i) % expected.len();
            assert_eq!(*byte, expected[at], "byte {}", received + i);
        }
        received += n;
    }
    writer.await.expect("writer");
    assert_eq!(received, TOTAL);
}

#[tokio::test]
async fn upstream_down_answers_503_with_uf_in_under_a_second() {
    let observed = Observed::default();
    let dead = format!("127.0.0.1:{}", harness::refused_port());
    let proxy = harness::proxy_with_observer(
        &harness::outbound_yaml(&[dead], "http"),
        Arc::new(observed.clone()),
    )
    .await;
    let mut client = h1_connection(proxy.address(0)).await;
    let started = Instant::now();
    let request = Request::get("/")
        .header("host", "backend")
        .body(full(Bytes::new()))
        .expect("request");
    let response = client.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    response.into_body().collect().await.expect("body");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let end = observed.wait_one().await;
    assert_eq!(end.flags, "UF");
    assert_eq!(end.status, 503);
}

#[tokio::test]
async fn all_endpoints_down_answers_503() {
    let dead: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", harness::refused_port()))
        .collect();
    let proxy = outbound_proxy(&dead, "http").await;
    let mut client = h1_connection(proxy.address(0)).await;
    for _ in 0..5 {
        let request = Request::get("/")
            .header("host", "backend")
            .body(full(Bytes::new()))
            .expect("request");
        let response = client.send_request(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        response.into_body().collect().await.expect("body");
    }
}

#[tokio::test]
async fn a_refusing_endpoint_is_skipped_and_the_request_goes_to_the_next() {
    let app = Upstream::start().await;
    let dead = format!("127.0.0.1:{}", harness::refused_port());
    let proxy = outbound_proxy(&[dead, app.address.to_string()], "http").await;
    let mut client = h1_connection(proxy.address(0)).await;
    for i in 0..10 {
        let request = Request::post("/echo")
            .header("host", "backend")
            .body(full(Bytes::from_static(b"body survives the retry")))
            .expect("request");
        let response = client.send_request(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body, Bytes::from_static(b"body survives the retry"));
    }
}

#[tokio::test]
async fn an_endpoint_coming_back_is_used_again() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let proxy = outbound_proxy(std::slice::from_ref(&address), "http").await;
    let mut client = h1_connection(proxy.address(0)).await;
    let request = Request::get("/echo")
        .header("host", "backend")
        .body(full(Bytes::new()))
        .expect("request");
    let response = client.send_request(request).await.expect("response");
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "down at first"
    );
    response.into_body().collect().await.expect("body");

    let app = Upstream::start_on(&address).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let request = Request::get("/echo")
            .header("host", "backend")
            .body(full(Bytes::new()))
            .expect("request");
        let response = client.send_request(request).await.expect("response");
        let status = response.status();
        response.into_body().collect().await.expect("body");
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint was never used again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.connections.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn slow_upstream_answers_504_with_ut_after_the_request_timeout() {
    let app = Upstream::start().await;
    let observed = Observed::default();
    let config = tracecar::proxy::ProxyConfig {
        request_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let proxy = harness::proxy_with(
        &harness::outbound_yaml(&[app.address.to_string()], "http"),
        Arc::new(observed.clone()),
        &config,
    )
    .await;
    let mut client = h1_connection(proxy.address(0)).await;
    let request = Request::get("/echo?delay_ms=2000")
        .header("host", "backend")
        .body(full(Bytes::new()))
        .expect("request");
    let response = client.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    response.into_body().collect().await.expect("body");
    assert_eq!(observed.wait_one().await.flags, "UT");
}

#[tokio::test]
async fn malformed_http1_request_gets_400() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let (response, _) = raw::until_close(
        proxy.address(0),
        b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
}

#[tokio::test]
async fn conflicting_content_length_and_transfer_encoding_is_rejected() {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let (response, _) = raw::until_close(
        proxy.address(0),
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        Duration::from_secs(2),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    assert_eq!(
        app.requests.load(Ordering::SeqCst),
        0,
        "nothing reached the app"
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    // RFC 9112 §6.1: Transfer-Encoding overrides Content-Length and the connection closes after
    // the response. The app gets the chunked body re-framed, and the bytes after it (a second,
    // smuggled request) are never read.
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let (response, _) = raw::until_close(
        proxy.address(0),
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(
        response.contains("hello"),
        "the chunked body is the body: {response:?}"
    );
    assert!(response.contains("connection: close"), "{response:?}");
    assert_eq!(
        app.requests.load(Ordering::SeqCst),
        1,
        "the smuggled request never reached the app"
    );
}
