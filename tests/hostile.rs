//! Hostile input on the downstream side: request smuggling, oversized heads, slowloris, HTTP/2
//! rapid reset and CONTINUATION floods, bad authorities. Each is rejected or bounded, nothing of
//! it reaches the app, and a normal client on another connection keeps its latency. Everything
//! runs on loopback and every wait is bounded.

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use harness::{Upstream, inbound_proxy, latencies, p50};
use tracecar::proxy::ProxyConfig;
use tracecar::proxy::limits::Limits;

/// The tests of this file run one at a time: some measure latency or memory, and on a small
/// machine tests running side by side would measure each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The header read timeout of the slowloris tests (the default, 10 s, would make them slow).
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------------------------

/// Writes `request` on a fresh connection and reads until the proxy closes it (at most 3 s).
async fn raw_h1(address: SocketAddr, request: &[u8]) -> (String, bool) {
    harness::raw::until_close(address, request, Duration::from_secs(3)).await
}

/// The request following an ambiguously framed body, if a parser took the short reading.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

/// One 400, the connection closed, and nothing at all reached the app.
fn assert_rejected(app: &Upstream, response: &str, closed: bool) {
    let paths = app.paths.lock().expect("paths").clone();
    assert!(
        !paths.iter().any(|p| p == "/smuggled"),
        "a smuggled request reached the app: {paths:?}"
    );
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response:?}");
    assert!(
        closed,
        "the connection stays open after a 400: {response:?}"
    );
    assert!(paths.is_empty(), "forwarded to the app: {paths:?}");
}

#[tokio::test]
async fn content_length_list_with_differing_values_is_rejected() {
    // `Content-Length: 0, 36` read as 0 leaves the next 36 bytes to be parsed as a second
    // request. (Differing values on two lines are covered in proxy_http.rs.)
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0, {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let (response, closed) = raw_h1(proxy.address(0), request.as_bytes()).await;
    assert_rejected(&app, &response, closed);
}

#[tokio::test]
async fn transfer_encoding_chunked_then_identity_is_rejected() {
    // RFC 9112 §6.3: a request whose final transfer coding is not chunked has no reliable
    // length; a server must answer 400 and close, or a peer reading it differently desyncs.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let (response, closed) = raw_h1(proxy.address(0), request.as_bytes()).await;
    assert_rejected(&app, &response, closed);
}

#[tokio::test]
async fn transfer_encoding_xchunked_is_rejected() {
    // An unknown coding that a lenient parser might read as chunked, and a strict one not.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let (response, closed) = raw_h1(proxy.address(0), request.as_bytes()).await;
    assert_rejected(&app, &response, closed);
}

#[tokio::test]
async fn obs_fold_hiding_transfer_encoding_is_rejected() {
    // A folded line (starting with a space) is a Transfer-Encoding header to a parser that does
    // not unfold, and part of X-Folded to one that does: two framings of one request.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nX-Folded: x\r\n Transfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let (response, closed) = raw_h1(proxy.address(0), request.as_bytes()).await;
    assert_rejected(&app, &response, closed);
}

#[tokio::test]
async fn whitespace_before_the_colon_of_transfer_encoding_is_rejected() {
    // `Transfer-Encoding : chunked` is a known desync: some parsers trim the name, others drop
    // the line. RFC 9112 §5.1 requires a 400.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding : chunked\r\n\r\n{body}",
        body.len()
    );
    let (response, closed) = raw_h1(proxy.address(0), request.as_bytes()).await;
    assert_rejected(&app, &response, closed);
}

/// A head the proxy must refuse: 431 or 400, or a closed connection; nothing forwarded; and a
/// normal request right after still gets through.
async fn assert_oversized_head_refused(request: &[u8]) {
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let (response, closed) = raw_h1(proxy.address(0), request).await;
    assert!(
        response.starts_with("HTTP/1.1 431")
            || response.starts_with("HTTP/1.1 400")
            || (response.is_empty() && closed),
        "{:?}",
        &response[..response.len().min(200)]
    );
    assert!(closed, "the connection stays open");
    assert_eq!(app.requests.load(Ordering::SeqCst), 0, "nothing forwarded");
    let after = harness::http(proxy.address(0), "GET", "/echo", "").await;
    assert_eq!(after.map(|r| r.0), Ok(200), "the proxy still serves");
}

#[tokio::test]
async fn a_64_kib_header_is_refused_and_the_proxy_stays_up() {
    // Above the 60 KiB head limit: buffering it (or more) per connection is how memory goes.
    let _serial = SERIAL.lock().await;
    let mut request = b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 64 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    assert_oversized_head_refused(&request).await;
}

#[tokio::test]
async fn ten_thousand_headers_are_refused_and_the_proxy_stays_up() {
    // 10,000 one-byte headers fit in 60 KiB: the count limit (100), not the size, refuses them.
    let _serial = SERIAL.lock().await;
    let mut request = b"GET /echo HTTP/1.1\r\nHost: a\r\n".to_vec();
    for _ in 0..10_000 {
        request.extend_from_slice(b"a:b\r\n");
    }
    request.extend_from_slice(b"\r\n");
    assert!(request.len() < 60 * 1024);
    assert_oversized_head_refused(&request).await;
}

// ---------------------------------------------------------------------------------------------
// Slowloris
// ---------------------------------------------------------------------------------------------

/// A proxy in front of `app` whose header read timeout is [`HEADER_TIMEOUT`].
async fn short_timeout_proxy(app: &Upstream) -> harness::Proxy {
    let config = ProxyConfig {
        limits: Limits {
            header_read_timeout: HEADER_TIMEOUT,
            ..Limits::default()
        },
        ..ProxyConfig::default()
    };
    harness::proxy_with(
        &harness::inbound_yaml(app.address, "http"),
        Arc::new(tracecar::proxy::observe::NoObserver),
        &config,
    )
    .await
}

/// Sends `bytes` (repeated) one at a time, `every` apart, until the proxy closes the connection
/// or answers, or `limit` passes. Returns when it was cut off; `None`: never.
async fn trickle(
    address: SocketAddr,
    bytes: &'static [u8],
    every: Duration,
    limit: Duration,
) -> Option<Duration> {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    for byte in bytes.iter().cycle() {
        if started.elapsed() >= limit {
            return None;
        }
        if stream.write_all(&[*byte]).await.is_err() {
            return Some(started.elapsed());
        }
        let wait = every.min(limit.saturating_sub(started.elapsed()));
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Err(_) => continue,
            // Closed, reset, or answered (a 408): in each case the client is done.
            Ok(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// The normal client's p50 before, then while `attack` runs round after round (at most
/// `max_rounds`) on other connections; and what every round returned.
async fn p50_under_attack<T, F, Fut>(
    address: SocketAddr,
    max_rounds: usize,
    attack: F,
) -> (Duration, Duration, Vec<T>)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    latencies(address, "/echo", 50).await;
    let before = p50(&latencies(address, "/echo", 300).await);
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::SeqCst) && outcomes.len() < max_rounds {
                outcomes.push(attack().await);
            }
            outcomes
        })
    };
    // Let the attack get under way.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let during = p50(&latencies(address, "/echo", 300).await);
    stop.store(true, Ordering::SeqCst);
    let outcomes = tokio::time::timeout(Duration::from_secs(20), attacker)
        .await
        .expect("the attack ends within 20 s")
        .expect("attacker task");
    (before, during, outcomes)
}

/// Within 2× of the quiet p50, or within 5 ms of it (loopback p50s are a fraction of a ms).
fn assert_latency_kept(before: Duration, during: Duration) {
    eprintln!("normal client p50: {before:?} before the attack, {during:?} during");
    assert!(
        during <= before * 2 || during <= before + Duration::from_millis(5),
        "p50 {before:?} before the attack, {during:?} during"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_one_byte_a_second_is_cut_off_and_others_keep_their_latency() {
    // 20 connections each sending a request head a byte a second would hold their slots for
    // good; the header read timeout closes them, and other clients do not notice.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = short_timeout_proxy(&app).await;
    let address = proxy.address(0);
    let (before, during, rounds) = p50_under_attack(address, 1, move || async move {
        let slow = (0..20).map(|_| {
            trickle(
                address,
                b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Slow: ",
                Duration::from_secs(1),
                HEADER_TIMEOUT * 4,
            )
        });
        futures_util::future::join_all(slow).await
    })
    .await;
    eprintln!("slowloris connections cut off after {rounds:?}");
    for cut in rounds.concat() {
        let cut = cut.expect("a slowloris connection was never cut off");
        assert!(
            cut < HEADER_TIMEOUT * 2 + Duration::from_millis(500),
            "{cut:?}"
        );
    }
    assert_latency_kept(before, during);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_cut_off_by_the_header_read_timeout() {
    // The degenerate slowloris: connect and send no byte at all. It holds a connection (and a
    // file descriptor) as surely as a slow head does.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = short_timeout_proxy(&app).await;
    let mut stream = TcpStream::connect(proxy.address(0)).await.expect("connect");
    let mut buf = [0u8; 64];
    let waited = tokio::time::timeout(HEADER_TIMEOUT * 3, stream.read(&mut buf)).await;
    assert!(
        matches!(waited, Ok(Ok(0)) | Ok(Err(_))),
        "still open {:?} after connecting without sending a byte (header read timeout {:?})",
        HEADER_TIMEOUT * 3,
        HEADER_TIMEOUT
    );
}

#[tokio::test]
async fn slowloris_sending_the_h2_preface_a_byte_a_second_is_cut_off() {
    // The same trickle, but of the bytes that open an h2c connection: until the proxy knows
    // which protocol it speaks, the HTTP/1.1 header read timeout must not be the only guard.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = short_timeout_proxy(&app).await;
    let cut = trickle(
        proxy.address(0),
        H2_PREFACE,
        Duration::from_secs(1),
        HEADER_TIMEOUT * 3 + Duration::from_millis(500),
    )
    .await;
    assert!(
        cut.is_some(),
        "still open after {:?} of a byte a second (header read timeout {HEADER_TIMEOUT:?})",
        HEADER_TIMEOUT * 3
    );
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/2 frames (RFC 9113 §4.1), HPACK literals without Huffman coding (RFC 7541 §6.2.2)
// ---------------------------------------------------------------------------------------------

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PROTOCOL_ERROR: u32 = 0x1;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK string literal, no Huffman coding: a 7-bit-prefix length, then the bytes.
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut len = s.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            out.push((len % 0x80) as u8 | 0x80);
            len /= 0x80;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s);
}

/// `GET path` on `authority`, as a header block: indexed `:method GET` and `:scheme http`,
/// literal `:path` (static index 4) and `:authority` (static index 1) without indexing.
fn request_block(authority: &[u8], path: &[u8]) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04];
    hpack_string(&mut block, path);
    block.push(0x01);
    hpack_string(&mut block, authority);
    block
}

/// A connection that has sent the client preface and an empty SETTINGS frame.
async fn h2_open(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.expect("preface");
    stream
}

/// One frame: kind, flags, stream, payload. `Err(true)`: the connection closed (or was reset);
/// `Err(false)`: nothing by `deadline`.
async fn next_frame(
    read: &mut (impl AsyncRead + Unpin),
    deadline: tokio::time::Instant,
) -> Result<(u8, u8, u32, Vec<u8>), bool> {
    let mut head = [0u8; 9];
    match tokio::time::timeout_at(deadline, read.read_exact(&mut head)).await {
        Err(_) => return Err(false),
        Ok(Err(_)) => return Err(true),
        Ok(Ok(_)) => {}
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    match tokio::time::timeout_at(deadline, read.read_exact(&mut payload)).await {
        Err(_) => Err(false),
        Ok(Err(_)) => Err(true),
        Ok(Ok(_)) => Ok((head[3], head[4], stream, payload)),
    }
}

/// How the proxy ended an attacking connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// GOAWAY with this error code.
    GoAway(u32),
    /// Closed without a GOAWAY.
    Closed,
    /// Still open after the wait.
    Open,
}

/// Reads (and skips) frames until a GOAWAY or the close, at most `within`.
async fn h2_ending(read: &mut (impl AsyncRead + Unpin), within: Duration) -> Ending {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match next_frame(read, deadline).await {
            Ok((GOAWAY, _, _, payload)) if payload.len() >= 8 => {
                return Ending::GoAway(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
            Ok(_) => continue,
            Err(true) => return Ending::Closed,
            Err(false) => return Ending::Open,
        }
    }
}

/// The first answer to stream 1.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Response headers with this status (0: not a statically indexed one; HPACK static
    /// table entries 8–14 are 200, 204, 206, 304, 400, 404, 500).
    Status(u16),
    Reset(u32),
    GoAway(u32),
    Closed,
    Nothing,
}

async fn h2_answer(read: &mut (impl AsyncRead + Unpin), within: Duration) -> Answer {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match next_frame(read, deadline).await {
            Ok((HEADERS, flags, 1, payload)) => {
                let mut at = 0;
                if flags & PADDED != 0 {
                    at += 1;
                }
                if flags & PRIORITY != 0 {
                    at += 5;
                }
                let status = match payload.get(at) {
                    Some(b) if b & 0x80 != 0 => match b & 0x7f {
                        8 => 200,
                        9 => 204,
                        10 => 206,
                        11 => 304,
                        12 => 400,
                        13 => 404,
                        14 => 500,
                        _ => 0,
                    },
                    _ => 0,
                };
                return Answer::Status(status);
            }
            Ok((RST_STREAM, _, 1, payload)) if payload.len() == 4 => {
                return Answer::Reset(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
            Ok((GOAWAY, _, _, payload)) if payload.len() >= 8 => {
                return Answer::GoAway(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
            Ok(_) => continue,
            Err(true) => return Answer::Closed,
            Err(false) => return Answer::Nothing,
        }
    }
}

/// Requests sent by the normal client of [`p50_under_attack`] (warm-up, before, during).
const NORMAL_REQUESTS: usize = 50 + 300 + 300;

/// Opens 1,000 streams on one connection and resets each at once, in one burst.
async fn rapid_reset(address: SocketAddr) -> Ending {
    let mut stream = h2_open(address).await;
    let block = request_block(b"web.local", b"/echo");
    let mut burst = Vec::new();
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let _ = stream.write_all(&burst).await;
    h2_ending(&mut stream, Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_gets_goaway_and_others_keep_their_latency() {
    // CVE-2023-44487: streams reset as soon as they are opened cost the server work but never
    // count against the concurrency limit. After 20 such resets the connection must go.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let address = proxy.address(0);
    let (before, during, endings) =
        p50_under_attack(address, 200, move || rapid_reset(address)).await;
    assert!(!endings.is_empty());
    for ending in &endings {
        assert!(
            matches!(ending, Ending::GoAway(ENHANCE_YOUR_CALM) | Ending::Closed),
            "{ending:?} after 1,000 HEADERS+RST_STREAM pairs (all: {endings:?})"
        );
    }
    // Streams that reached the app before their reset did: far fewer than were opened.
    let forwarded = app.requests.load(Ordering::SeqCst) - NORMAL_REQUESTS;
    let opened = endings.len() * 1000;
    eprintln!(
        "{} attacking connections, {} ended by GOAWAY; {forwarded} of {opened} streams forwarded",
        endings.len(),
        endings
            .iter()
            .filter(|e| matches!(e, Ending::GoAway(_)))
            .count()
    );
    assert!(
        forwarded * 10 < opened,
        "{forwarded} of {opened} reset streams were forwarded"
    );
    assert_latency_kept(before, during);
}

/// Resident memory of this process, bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The most a CONTINUATION flood tries to send: 4,096 frames of 16 KiB.
const FLOOD_FRAMES: usize = 4096;

/// HEADERS without END_HEADERS, then CONTINUATION frames full of 110-byte headers until the
/// proxy stops it. Returns how the connection ended and how many bytes went out.
async fn continuation_flood(address: SocketAddr) -> (Ending, usize) {
    let (mut read, mut write) = h2_open(address).await.into_split();
    let writer = tokio::spawn(async move {
        let first = frame(
            HEADERS,
            END_STREAM,
            1,
            &request_block(b"web.local", b"/echo"),
        );
        if write.write_all(&first).await.is_err() {
            return 0;
        }
        // Whole header fields only, so every frame decodes on its own: 148 × 110 bytes.
        let mut block = Vec::new();
        for _ in 0..148 {
            block.push(0x00);
            hpack_string(&mut block, b"x-flood");
            hpack_string(&mut block, &[b'a'; 100]);
        }
        let continuation = frame(CONTINUATION, 0, 1, &block);
        let mut sent = first.len();
        for _ in 0..FLOOD_FRAMES {
            if write.write_all(&continuation).await.is_err() {
                break;
            }
            sent += continuation.len();
        }
        sent
    });
    let ending = h2_ending(&mut read, Duration::from_secs(5)).await;
    drop(read);
    let sent = match tokio::time::timeout(Duration::from_secs(5), writer).await {
        Ok(Ok(sent)) => sent,
        _ => usize::MAX,
    };
    (ending, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_closes_the_connection_with_memory_bounded() {
    // A header block that never ends (CVE-2024-27316 and kin): a server that buffers it until
    // END_HEADERS grows without bound. It must be cut off near the header list limit.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let address = proxy.address(0);
    let rss_before = rss();
    let (before, during, floods) =
        p50_under_attack(address, 50, move || continuation_flood(address)).await;
    let grown = rss().saturating_sub(rss_before);
    eprintln!(
        "{} floods, at most {} bytes sent on one; RSS grew {} KiB",
        floods.len(),
        floods.iter().map(|f| f.1).max().unwrap_or(0),
        grown / 1024
    );
    assert!(!floods.is_empty());
    let whole = FLOOD_FRAMES * (9 + 148 * 110);
    for (ending, sent) in &floods {
        assert!(
            matches!(ending, Ending::GoAway(_) | Ending::Closed),
            "{ending:?} after {sent} bytes of CONTINUATION (all: {floods:?})"
        );
        assert!(
            *sent < whole,
            "the proxy read all {whole} bytes of one header block"
        );
    }
    assert!(
        grown < 32 * 1024 * 1024,
        "resident memory grew by {} MiB over {} floods",
        grown / (1024 * 1024),
        floods.len()
    );
    assert_eq!(
        app.requests.load(Ordering::SeqCst),
        NORMAL_REQUESTS,
        "no flood request reached the app"
    );
    assert_latency_kept(before, during);
}

// ---------------------------------------------------------------------------------------------
// Authorities
// ---------------------------------------------------------------------------------------------

/// Sends one GET with this `:authority` on a raw h2 connection; returns the answer.
async fn h2_get_with_authority(address: SocketAddr, authority: &[u8]) -> Answer {
    let mut stream = h2_open(address).await;
    let request = frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block(authority, b"/echo"),
    );
    stream.write_all(&request).await.expect("request");
    h2_answer(&mut stream, Duration::from_secs(3)).await
}

#[tokio::test]
async fn h2_authority_with_a_space_is_rejected_and_not_forwarded() {
    // Not a valid authority (RFC 3986 §3.2): forwarding it lets the app or the next hop make
    // of it what it likes. A 400, or the stream reset as malformed (RFC 9113 §8.1.1).
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let answer = h2_get_with_authority(proxy.address(0), b"web.local evil.example").await;
    assert!(
        matches!(answer, Answer::Status(400) | Answer::Reset(PROTOCOL_ERROR)),
        "{answer:?}"
    );
    assert_eq!(
        app.requests.load(Ordering::SeqCst),
        0,
        "forwarded to the app"
    );
}

#[tokio::test]
async fn h2_authority_with_userinfo_is_rejected_and_not_forwarded() {
    // `user@host`: RFC 9110 §4.2.4 forbids userinfo in http(s) targets and asks recipients to
    // treat it as an error; it is a classic way to make one hop see another host than the next.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let answer = h2_get_with_authority(proxy.address(0), b"evil.example@web.local").await;
    assert!(
        matches!(answer, Answer::Status(400) | Answer::Reset(PROTOCOL_ERROR)),
        "{answer:?}"
    );
    assert_eq!(
        app.requests.load(Ordering::SeqCst),
        0,
        "forwarded to the app"
    );
}

#[tokio::test]
async fn http1_host_with_a_space_is_rejected_and_not_forwarded() {
    // The HTTP/1.1 form of the bad authority: Host names it.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let (response, _) = raw_h1(
        proxy.address(0),
        b"GET /echo HTTP/1.1\r\nHost: web.local evil.example\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    assert_eq!(
        app.requests.load(Ordering::SeqCst),
        0,
        "forwarded to the app"
    );
}

#[tokio::test]
async fn http1_host_with_userinfo_is_rejected_and_not_forwarded() {
    // As for `:authority`: `Host: user@host` is not a host.
    let _serial = SERIAL.lock().await;
    let app = Upstream::start().await;
    let proxy = inbound_proxy(&app, "http").await;
    let (response, _) = raw_h1(
        proxy.address(0),
        b"GET /echo HTTP/1.1\r\nHost: evil.example@web.local\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    assert_eq!(
        app.requests.load(Ordering::SeqCst),
        0,
        "forwarded to the app"
    );
}
