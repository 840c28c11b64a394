//! The HTTP/1.1 fast path: plain HTTP/1.1 requests to an HTTP/1.1 upstream, proxied in the
//! downstream connection's own task. It reads the head with `httparse`, runs the same phases
//! as [`super::http`] (check, observe, rewrite, forward, respond, stream), writes the upstream
//! request in one piece on a pooled connection that it speaks itself, and passes the response
//! body through as it comes. No connection task, no channel and no body frames between the two
//! sides: the cost that made hyper's client and server together the larger half of a proxied
//! request.
//!
//! It takes only what is plain: HTTP/1.1, origin-form target, one clean Host, no
//! Transfer-Encoding, Upgrade or Expect, no hop-by-hop fields but `Connection: keep-alive` or
//! `close`, a body of at most [`MAX_BODY`] bytes with a Content-Length, not gRPC. Anything else
//! — and anything malformed — hands the rest of the connection, with the bytes already read,
//! to the general path, which answers it exactly as it always did (400, 431, smuggling rules,
//! upgrades, streaming bodies, h2c).

mod chunked;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::response_body::Tracker;
use super::http::HttpProxy;
use super::limits::{
    COALESCE, Limits, MAX_BODY, MAX_REQUEST_HEADERS, MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS,
    READ_SIZE,
};
use super::exchange::{self, Failure, Replay, SendError, is_hop_by_hop_bytes};
use super::upstream::{self, Attempt, Endpoint, HttpClient};
use super::observe::ResponseFlags;
use super::pool::{Pool, RawConn};
use chunked::Chunked;

/// How a connection left the fast path.
pub enum Exit {
    /// Closed: the peer left, a deadline passed, a drain began, or the exchange could not go on.
    Closed,
    /// The rest of the connection belongs to the general path: `read` was read from it and
    /// not consumed; `remaining` is what is left of the head read deadline.
    Handoff { read: Bytes, remaining: Duration },
}

/// Per-connection state, reused request after request.
struct Conn {
    /// Bytes read from the caller and not yet consumed.
    buf: BytesMut,
    /// The request head (and body) for the upstream.
    request: Vec<u8>,
    /// The response head (and the start of the body) for the caller.
    response: Vec<u8>,
    /// Offsets of the header fields being forwarded: name start, name end, value start, end.
    fields: Vec<[u32; 4]>,
}

/// Serves the connection's requests while they are plain, in this task.
pub async fn serve<S>(
    io: &mut S,
    peer: SocketAddr,
    proxy: &HttpProxy,
    limits: &Limits,
    stop: &mut watch::Receiver<bool>,
) -> Exit
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        buf: BytesMut::new(),
        request: Vec::new(),
        response: Vec::new(),
        fields: Vec::new(),
    };
    // One timer per connection, moved forward per request: extending a tokio deadline is
    // cheap, registering a new timer per request is not.
    let head_timer = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(head_timer);
    let upstream_timer = tokio::time::sleep(proxy.request_timeout.unwrap_or(Duration::MAX / 4));
    tokio::pin!(upstream_timer);
    loop {
        let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
        head_timer.as_mut().reset(deadline);
        // Phase 1: check. A whole head, and plain enough for this path.
        let head = loop {
            if !conn.buf.is_empty() {
                match parse_request(&conn.buf, &mut conn.fields) {
                    Parsed::Plain(head) => break head,
                    Parsed::Partial if conn.buf.len() <= limits.max_header_bytes => {}
                    _ => return handoff(conn.buf.freeze(), deadline),
                }
            }
            // A drain closes connections that sit between requests, never one mid-head.
            let idle = conn.buf.is_empty();
            let draining = idle.then_some(&mut *stop);
            if !read_more(io, &mut conn.buf, head_timer.as_mut(), draining).await {
                return Exit::Closed;
            }
        };
        let whole = head.len + head.content_length as usize;
        while conn.buf.len() < whole {
            if !read_more(io, &mut conn.buf, head_timer.as_mut(), None).await {
                return Exit::Closed;
            }
        }
        let message = conn.buf.split_to(whole).freeze();
        let Some(mut parts) = request_parts(&message, &head, &conn.fields) else {
            // A target or a value the http types refuse: the general path says why.
            let mut rest = BytesMut::from(&message[..]);
            rest.extend_from_slice(&conn.buf);
            return handoff(rest.freeze(), deadline);
        };
        let started = Instant::now();

        // Phase 2: observe.
        let mut tracker = proxy
            .observer
            .on_request(&proxy.info, peer, &mut parts)
            .map(|e| Tracker::with_request_size(e, head.content_length));

        // Phase 3: rewrite.
        let close = head.close || *stop.borrow();
        // What the general path's rewrite does to a plain request comes down to this: the
        // target is origin-form already, the one Host is a plain host[:port], and no
        // hop-by-hop field came through.
        proxy.set_forwarded_proto(&mut parts.headers);
        encode_request(&mut conn.request, &parts, &message[head.len..]);
        drop(parts);
        // Phase 4: forward.
        let forwarded = forward(
            proxy,
            &conn.request,
            &head.method,
            head.content_length == 0,
            &mut conn.response,
            upstream_timer.as_mut(),
        )
        .await;
        let (pool, mut upstream, response) = match forwarded {
            Ok(sent) => sent,
            Err(failure) => {
                let reply = local_reply(&mut conn.response, failure, close, tracker.as_mut());
                let _stats = proxy.stats_guard(started, reply);
                if write_out(io, &conn.response).await.is_err() || close {
                    return Exit::Closed;
                }
                continue;
            }
        };

        // Phase 5: respond. A drain that began while the upstream was answering closes the
        // connection after this response, so the caller must be told not to send another.
        let close = close || response.framing == Framing::Close || *stop.borrow();
        if close {
            conn.response.extend_from_slice(b"connection: close\r\n");
        }
        conn.response.extend_from_slice(b"\r\n");
        if let Some(t) = &mut tracker {
            t.status = response.status.as_u16();
            if let Some(e) = t.exchange_mut() {
                e.on_response(response.status, &HeaderMap::new());
            }
        }
        let _stats = proxy.stats_guard(started, response.status.as_u16());

        // Phase 6: stream.
        match stream_body(io, &mut upstream, &mut conn.response, response.framing).await {
            Ok(streamed) => {
                if let Some(t) = &mut tracker {
                    t.count_response_bytes(streamed.body_bytes);
                    t.finish(false);
                }
                if response.reusable && streamed.clean {
                    pool.put_raw(upstream);
                }
            }
            Err(BodyFailure::Upstream(sent)) => {
                // The head is out: all that is left is to cut the caller short, so the
                // truncation shows, and to record the abort once.
                if let Some(t) = &mut tracker {
                    t.count_response_bytes(sent);
                    t.flags.insert(ResponseFlags::UC);
                    t.finish(true);
                }
                let _ = io.flush().await;
                return Exit::Closed;
            }
            Err(BodyFailure::Downstream(sent)) => {
                if let Some(t) = &mut tracker {
                    t.count_response_bytes(sent);
                }
                // The tracker, dropped unfinished, records the caller's leaving (DC).
                return Exit::Closed;
            }
        }
        if io.flush().await.is_err() {
            return Exit::Closed;
        }
        if close {
            let _ = io.shutdown().await;
            return Exit::Closed;
        }
    }
}

fn handoff(read: Bytes, deadline: tokio::time::Instant) -> Exit {
    Exit::Handoff {
        read,
        remaining: deadline.saturating_duration_since(tokio::time::Instant::now()),
    }
}

/// Reads more into `buf`. False when the peer closed, the read failed, the deadline passed,
/// or (with `stop`) a drain began.
async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    deadline: Pin<&mut Sleep>,
    stop: Option<&mut watch::Receiver<bool>>,
) -> bool {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    let read = io.read_buf(buf);
    let result = match stop {
        Some(stop) => tokio::select! {
            biased;
            r = read => Some(r),
            _ = stop.wait_for(|s| *s) => None,
            () = deadline => None,
        },
        None => tokio::select! {
            biased;
            r = read => Some(r),
            () = deadline => None,
        },
    };
    matches!(result, Some(Ok(n)) if n > 0)
}

async fn write_out<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

// ---------------------------------------------------------------------------------------------
// The request head
// ---------------------------------------------------------------------------------------------

struct RequestHead {
    /// Bytes of the head, final CRLF included.
    len: usize,
    method: Method,
    target: (usize, usize),
    content_length: u64,
    /// The caller asked to close after this exchange.
    close: bool,
}

enum Parsed {
    Plain(RequestHead),
    Partial,
    /// Malformed, or something only the general path handles.
    Other,
}

fn parse_request(buf: &[u8], fields: &mut Vec<[u32; 4]>) -> Parsed {
    // Uninitialised slots: zeroing 128 of them cost more than parsing a small head.
    let mut headers =
        [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parsed::Other;
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return Parsed::Other;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    let offset = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
    fields.clear();
    let mut hosts = 0;
    let mut content_length = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                if !plain_authority(value) {
                    return Parsed::Other;
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        // It names other fields as hop-by-hop: the general path removes them.
                        return Parsed::Other;
                    }
                }
                // Hop-by-hop: not forwarded.
                continue;
            }
            12 if name.eq_ignore_ascii_case(b"content-type")
                && value.len() >= 16
                && value[..16].eq_ignore_ascii_case(b"application/grpc") =>
            {
                return Parsed::Other;
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if content_length.is_some() {
                    return Parsed::Other;
                }
                match digits(value) {
                    Some(n) if n <= MAX_BODY => content_length = Some(n),
                    _ => return Parsed::Other,
                }
            }
            // Hop-by-hop fields, and what asks for an interim answer or a protocol switch,
            // are the general path's to judge.
            6 if name.eq_ignore_ascii_case(b"expect") => return Parsed::Other,
            14 if name.eq_ignore_ascii_case(b"http2-settings") => return Parsed::Other,
            _ if is_hop_by_hop_bytes(name) => return Parsed::Other,
            _ => {}
        }
        let (ns, vs) = (offset(name), offset(value));
        fields.push([
            ns as u32,
            (ns + name.len()) as u32,
            vs as u32,
            (vs + value.len()) as u32,
        ]);
    }
    if hosts != 1 {
        return Parsed::Other;
    }
    let start = offset(target.as_bytes());
    Parsed::Plain(RequestHead {
        len,
        method,
        target: (start, start + target.len()),
        content_length: content_length.unwrap_or(0),
        close,
    })
}

/// A Host value that is surely a valid authority: a name or IPv4 address, and a port of
/// digits. The general path judges the rest (IPv6 literals, odd characters, userinfo).
fn plain_authority(value: &[u8]) -> bool {
    let (host, port) = match value.iter().position(|b| *b == b':') {
        Some(at) => (&value[..at], Some(&value[at + 1..])),
        None => (value, None),
    };
    !host.is_empty()
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
}

fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The head as the observer and the rewrite see it. The values share `message`'s memory.
fn request_parts(
    message: &Bytes,
    head: &RequestHead,
    fields: &[[u32; 4]],
) -> Option<http::request::Parts> {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = head.method.clone();
    parts.version = Version::HTTP_11;
    parts.uri = Uri::from_maybe_shared(message.slice(head.target.0..head.target.1)).ok()?;
    // `Uri` drops a fragment (`/a#b` reads as `/a`), which no request target may carry: the
    // general path judges such a target rather than this one forwarding it shortened.
    if parts.uri.path_and_query().map(|p| p.as_str().len()) != Some(head.target.1 - head.target.0) {
        return None;
    }
    // Room for what observe and rewrite add (request id, B3, forwarded proto).
    let mut headers = HeaderMap::with_capacity(fields.len() + 8);
    for &[ns, ne, vs, ve] in fields {
        let name = HeaderName::from_bytes(&message[ns as usize..ne as usize]).ok()?;
        let value = HeaderValue::from_maybe_shared(message.slice(vs as usize..ve as usize)).ok()?;
        headers.append(name, value);
    }
    parts.headers = headers;
    Some(parts)
}

fn encode_request(out: &mut Vec<u8>, parts: &http::request::Parts, body: &[u8]) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

// ---------------------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

struct ResponseHead {
    status: StatusCode,
    framing: Framing,
    /// The upstream connection may carry another request after this response.
    reusable: bool,
}

/// Forwards through [`exchange::forward`], the rules the general path follows too. On
/// success, `response` holds the head for the caller (without its final CRLF).
async fn forward<'p>(
    proxy: &'p HttpProxy,
    request: &[u8],
    method: &Method,
    bodyless: bool,
    response: &mut Vec<u8>,
    timer: Pin<&mut Sleep>,
) -> Result<(&'p std::sync::Arc<Pool>, RawConn, ResponseHead), Failure> {
    let timer = proxy.request_timeout.map(|limit| (limit, timer));
    let mut attempt = RawAttempt {
        request,
        method,
        bodyless,
        response,
    };
    let (endpoint, (conn, head)) = upstream::forward(&proxy.upstream, timer, &mut attempt).await?;
    Ok((&endpoint.client, conn, head))
}

/// The fast path's request, in bytes, and where its response head goes.
struct RawAttempt<'a> {
    request: &'a [u8],
    method: &'a Method,
    bodyless: bool,
    response: &'a mut Vec<u8>,
}

impl Attempt for RawAttempt<'_> {
    type Sent = (RawConn, ResponseHead);

    async fn send(&mut self, endpoint: &Endpoint<HttpClient>) -> Result<Self::Sent, SendError> {
        send(
            &endpoint.client,
            self.request,
            self.method,
            self.bodyless,
            self.response,
        )
        .await
    }
}

/// Sends the request on a pooled connection of one endpoint, or a new one, and reads the
/// response head; a failed attempt goes again as [`Replay`] says.
async fn send(
    pool: &Pool,
    request: &[u8],
    method: &Method,
    bodyless: bool,
    response: &mut Vec<u8>,
) -> Result<(RawConn, ResponseHead), SendError> {
    let mut replay = Replay::new(method, bodyless);
    let is_head = *method == Method::HEAD;
    loop {
        let pooled = if replay.pooled() {
            pool.checkout_raw()
        } else {
            None
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => pool
                .connect_raw()
                .await
                .map_err(|error| SendError::Connect { error, again: true })?,
        };
        conn.buf.clear();
        let written = match conn.stream.write(request).await {
            Ok(n) if n > 0 => conn
                .stream
                .write_all(&request[n..])
                .await
                .map_err(|e| (false, e)),
            Ok(_) => Err((true, io::Error::from(io::ErrorKind::WriteZero))),
            Err(e) => Err((true, e)),
        };
        let (untouched, error) = match written {
            Ok(()) => match read_response_head(&mut conn, is_head, response).await {
                Ok(head) => return Ok((conn, head)),
                Err(HeadError::Unanswered(e)) => (false, e),
                Err(HeadError::Invalid(e)) => return Err(SendError::Reset(Box::new(e))),
            },
            Err(failed) => failed,
        };
        if replay.again(reused, untouched, true).is_none() {
            return Err(SendError::Reset(Box::new(error)));
        }
    }
}

enum HeadError {
    /// Closed or reset before any byte of a response.
    Unanswered(io::Error),
    Invalid(io::Error),
}

/// Reads the upstream's response head and writes the caller's version of it into `out`:
/// status line and end-to-end fields, without the final CRLF. 1xx responses are skipped, as
/// the general path's client does.
async fn read_response_head(
    conn: &mut RawConn,
    is_head: bool,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, HeadError> {
    let invalid = |what: &str| HeadError::Invalid(io::Error::new(io::ErrorKind::InvalidData, what));
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            match encode_response_head(&conn.buf, is_head, out) {
                Ok(Some((len, head))) => {
                    conn.buf.advance(len);
                    match head {
                        Some(head) => return Ok(head),
                        // Informational: the real head follows.
                        None => continue,
                    }
                }
                Ok(None) if conn.buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(invalid("response head too large"));
                }
                Ok(None) => {}
                Err(what) => return Err(invalid(what)),
            }
        }
        if conn.buf.capacity() - conn.buf.len() < READ_SIZE / 4 {
            conn.buf.reserve(READ_SIZE);
        }
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) if !answered => {
                return Err(HeadError::Unanswered(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => return Err(invalid("connection closed inside the response head")),
            Ok(_) => {}
            Err(e) if !answered && exchange::unanswered(e.kind()) => {
                return Err(HeadError::Unanswered(e));
            }
            Err(e) => return Err(HeadError::Invalid(e)),
        }
    }
}

/// `Ok(None)`: more bytes needed. `Ok(Some((len, None)))`: an informational response of `len`
/// bytes to skip.
#[allow(clippy::type_complexity)]
fn encode_response_head(
    buf: &[u8],
    is_head: bool,
    out: &mut Vec<u8>,
) -> Result<Option<(usize, Option<ResponseHead>)>, &'static str> {
    let mut headers =
        [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_RESPONSE_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed response head"),
    };
    let code = res.code.ok_or("malformed response head")?;
    let status = StatusCode::from_u16(code).map_err(|_| "invalid status code")?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("101 without an upgrade");
    }
    if status.is_informational() {
        return Ok(Some((len, None)));
    }
    let http11 = res.version == Some(1);
    let mut close = !http11;
    let mut chunked = false;
    let mut content_length: Option<u64> = None;
    let mut named: Vec<&[u8]> = Vec::new();
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if !matches!(name.len(), 10 | 14 | 17) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close = close && http11;
                } else if !token.is_empty() {
                    named.push(token);
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err("unsupported transfer-encoding");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = digits(h.value.trim_ascii()).ok_or("invalid content-length")?;
            if content_length.is_some_and(|m| m != n) {
                return Err("conflicting content-length");
            }
            content_length = Some(n);
        }
    }
    let no_body = is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::Close
    };

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        res.reason
            .filter(|r| !r.is_empty())
            .or(status.canonical_reason())
            .unwrap_or("")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        let hop_by_hop = response_hop_by_hop(name)
            || (!named.is_empty() && named.iter().any(|n| name.eq_ignore_ascii_case(n)));
        // The body passes through as framed: its Transfer-Encoding stays, and a
        // Content-Length beside it (which it overrides) goes.
        let overridden =
            chunked && name.len() == 14 && name.eq_ignore_ascii_case(b"content-length");
        if hop_by_hop || overridden {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    Ok(Some((
        len,
        Some(ResponseHead {
            status,
            framing,
            reusable: !close && framing != Framing::Close,
        }),
    )))
}

/// The hop-by-hop fields but Transfer-Encoding, which the fast path keeps with the body it
/// frames.
fn response_hop_by_hop(name: &[u8]) -> bool {
    is_hop_by_hop_bytes(name) && !name.eq_ignore_ascii_case(b"transfer-encoding")
}

// ---------------------------------------------------------------------------------------------
// The response body
// ---------------------------------------------------------------------------------------------

struct Streamed {
    /// Body bytes, decoded size (Envoy's `response_size`).
    body_bytes: u64,
    /// The upstream sent nothing past the body: its connection can carry another request.
    clean: bool,
}

enum BodyFailure {
    /// The upstream failed or closed mid-body; body bytes sent so far.
    Upstream(u64),
    /// The caller went away; body bytes sent so far.
    Downstream(u64),
}

/// Writes the response head in `head` and the body behind it to the caller, the body as the
/// upstream frames it.
async fn stream_body<S: AsyncWrite + Unpin>(
    io: &mut S,
    upstream: &mut RawConn,
    head: &mut Vec<u8>,
    framing: Framing,
) -> Result<Streamed, BodyFailure> {
    let mut chunked = Chunked::default();
    let mut remaining = match framing {
        Framing::Empty => 0,
        Framing::Length(n) => n,
        Framing::Chunked | Framing::Close => u64::MAX,
    };
    let mut body_bytes = 0u64;
    let mut head_sent = false;
    loop {
        // What of the buffer belongs to this body.
        let available = &upstream.buf[..];
        let take = match framing {
            Framing::Empty => 0,
            Framing::Length(_) => available.len().min(remaining as usize),
            Framing::Chunked => chunked
                .feed(available)
                .map_err(|_| BodyFailure::Upstream(body_bytes))?,
            Framing::Close => available.len(),
        };
        let piece = &upstream.buf[..take];
        if !head_sent {
            if piece.len() <= COALESCE {
                head.extend_from_slice(piece);
                io.write_all(head).await
            } else {
                match io.write_all(head).await {
                    Ok(()) => io.write_all(piece).await,
                    Err(e) => Err(e),
                }
            }
            .map_err(|_| BodyFailure::Downstream(body_bytes))?;
            head_sent = true;
        } else if !piece.is_empty() {
            io.write_all(piece)
                .await
                .map_err(|_| BodyFailure::Downstream(body_bytes))?;
        }
        match framing {
            Framing::Length(_) => {
                remaining -= take as u64;
                body_bytes += take as u64;
            }
            Framing::Close => body_bytes += take as u64,
            Framing::Chunked => body_bytes = chunked.data_bytes(),
            Framing::Empty => {}
        }
        upstream.buf.advance(take);
        let done = match framing {
            Framing::Empty => true,
            Framing::Length(_) => remaining == 0,
            Framing::Chunked => chunked.is_done(),
            Framing::Close => false,
        };
        if done {
            return Ok(Streamed {
                body_bytes,
                clean: upstream.buf.is_empty(),
            });
        }
        // Nothing left unread: start the buffer over instead of growing it.
        upstream.buf.clear();
        if upstream.buf.capacity() < READ_SIZE * 4 {
            upstream.buf.reserve(READ_SIZE * 4);
        }
        match upstream.stream.read_buf(&mut upstream.buf).await {
            Ok(0) if framing == Framing::Close => {
                return Ok(Streamed {
                    body_bytes,
                    clean: false,
                });
            }
            Ok(0) | Err(_) => return Err(BodyFailure::Upstream(body_bytes)),
            Ok(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Local replies
// ---------------------------------------------------------------------------------------------

/// A local reply, observed like any response. Returns its status.
fn local_reply(
    out: &mut Vec<u8>,
    failure: Failure,
    close: bool,
    tracker: Option<&mut Tracker>,
) -> u16 {
    failure.encode_local_reply(out, close);
    if let Some(t) = tracker {
        t.status = failure.status.as_u16();
        t.flags.insert(failure.flags);
        if let Some(e) = t.exchange_mut() {
            // As for every fast-path response: no headers an observer reads (see `Exchange`).
            e.on_response(failure.status, &HeaderMap::new());
        }
        t.count_response_bytes(failure.reason.len() as u64);
        t.finish(false);
    }
    failure.status.as_u16()
}

// ---------------------------------------------------------------------------------------------
// Handing a connection over
// ---------------------------------------------------------------------------------------------

/// A connection with bytes already read from it: they are read again first.
pub struct Rewind<S> {
    read: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(read: Bytes, inner: S) -> Self {
        Rewind { read, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------------------------

/// Runs the fast path's parsers and encoders over `data`, without I/O, and panics only when
/// one of their invariants breaks. Exists for the `h1_heads` fuzz target and its replay test
/// (`fuzz/src/lib.rs`, `tests/fuzz_regressions.rs`); nothing else calls it.
///
/// `data` is read three ways: as a request head (with its body), as an upstream's response
/// heads (informational ones skipped, as `read_response_head` does), and as a chunked body.
#[doc(hidden)]
pub fn fuzz_heads(data: &[u8]) {
    fuzz_request(data);
    for is_head in [false, true] {
        fuzz_response(data, is_head);
    }
    fuzz_chunked(data);
}

fn fuzz_request(data: &[u8]) {
    let mut fields = Vec::new();
    let Parsed::Plain(head) = parse_request(data, &mut fields) else {
        return;
    };
    assert!(head.len <= data.len(), "head longer than the input");
    let (ts, te) = head.target;
    assert!(ts < te && te <= head.len, "target outside the head");
    for &[ns, ne, vs, ve] in &fields {
        let [ns, ne, vs, ve] = [ns, ne, vs, ve].map(|o| o as usize);
        assert!(
            ns < ne && ne <= vs && vs <= ve && ve <= head.len,
            "field outside the head"
        );
    }
    assert!(head.content_length <= MAX_BODY, "body over MAX_BODY");
    let whole = head.len + head.content_length as usize;
    if data.len() < whole {
        return;
    }
    let message = Bytes::copy_from_slice(&data[..whole]);
    let Some(parts) = request_parts(&message, &head, &fields) else {
        return;
    };
    let mut out = Vec::new();
    encode_request(&mut out, &parts, &message[head.len..]);

    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(&out);
    let shown = String::from_utf8_lossy(&out);
    assert!(
        matches!(status, Ok(httparse::Status::Complete(n)) if n == out.len() - head.content_length as usize),
        "encoded request does not parse back: {status:?} {shown:?}"
    );
    assert_eq!(req.method, Some(head.method.as_str()), "method: {shown:?}");
    let target = std::str::from_utf8(&data[ts..te]).expect("httparse targets are text");
    assert_eq!(req.path, Some(target), "target: {shown:?}");
    assert_eq!(
        req.headers.len(),
        parts.headers.len(),
        "header count: {shown:?}"
    );
}

fn fuzz_response(data: &[u8], is_head: bool) {
    let mut out = Vec::new();
    let mut buf = data;
    loop {
        let Ok(Some((len, head))) = encode_response_head(buf, is_head, &mut out) else {
            return;
        };
        assert!(0 < len && len <= buf.len(), "head length outside the input");
        buf = &buf[len..];
        let Some(head) = head else {
            // Informational: the real head follows.
            continue;
        };
        let shown = String::from_utf8_lossy(&out);
        assert!(out.starts_with(b"HTTP/1.1 "), "status line: {shown:?}");
        assert!(out.ends_with(b"\r\n"), "unterminated: {shown:?}");
        let mut whole = out.clone();
        whole.extend_from_slice(b"\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let status = res.parse(&whole);
        assert!(
            matches!(status, Ok(httparse::Status::Complete(n)) if n == whole.len()),
            "encoded head does not parse back: {status:?} {shown:?}"
        );
        assert_eq!(res.code, Some(head.status.as_u16()), "status: {shown:?}");
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            assert!(
                !response_hop_by_hop(name),
                "hop-by-hop field {:?} forwarded: {shown:?}",
                h.name
            );
        }
        if is_head {
            assert_eq!(head.framing, Framing::Empty, "a HEAD response has no body");
        } else if head.framing == Framing::Chunked {
            fuzz_chunked(buf);
        }
        return;
    }
}

/// The chunked framing reads the same however the body is cut: whole, byte by byte, and in
/// two pieces at a point the first byte picks.
fn fuzz_chunked(data: &[u8]) {
    let whole = chunked_outcome([data].into_iter());
    let bytes = chunked_outcome(data.chunks(1));
    assert_eq!(whole, bytes, "whole vs byte by byte");
    let at = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let (a, b) = data.split_at(at);
    let split = chunked_outcome([a, b].into_iter());
    assert_eq!(whole, split, "whole vs split at {at}");
}

/// Feeds the pieces as `stream_body` does, stopping at the end of the body: what it consumed
/// (or that it failed), whether it ended, and its data bytes.
fn chunked_outcome<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Option<usize>, bool, u64) {
    let mut chunked = Chunked::default();
    let mut consumed = 0;
    for piece in pieces {
        let Ok(n) = chunked.feed(piece) else {
            return (None, chunked.is_done(), chunked.data_bytes());
        };
        assert!(n <= piece.len(), "took more than it was given");
        consumed += n;
        if chunked.is_done() {
            break;
        }
        assert_eq!(n, piece.len(), "an unfinished body takes every byte");
    }
    (Some(consumed), chunked.is_done(), chunked.data_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &[u8]) -> Parsed {
        parse_request(head, &mut Vec::new())
    }

    fn is_plain(head: &[u8]) -> bool {
        matches!(parse(head), Parsed::Plain(_))
    }

    #[test]
    fn a_plain_get_takes_the_fast_path() {
        assert!(is_plain(b"GET /1k HTTP/1.1\r\nHost: web:8080\r\n\r\n"));
    }

    #[test]
    fn a_small_post_with_content_length_takes_the_fast_path() {
        match parse(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello") {
            Parsed::Plain(head) => assert_eq!(head.content_length, 5),
            _ => panic!("not plain"),
        }
    }

    #[test]
    fn connection_close_is_noted_and_not_forwarded() {
        let mut fields = Vec::new();
        match parse_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            &mut fields,
        ) {
            Parsed::Plain(head) => assert!(head.close),
            _ => panic!("not plain"),
        }
        assert_eq!(fields.len(), 1, "only Host is forwarded");
    }

    #[test]
    fn framing_the_general_path_must_judge_goes_there() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        ] {
            assert!(!is_plain(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn upgrades_connect_and_h2_go_to_the_general_path() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(!is_plain(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn odd_hosts_go_to_the_general_path() {
        for head in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        ] {
            assert!(!is_plain(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn http10_absolute_form_and_grpc_go_to_the_general_path() {
        for head in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n\r\n",
        ] {
            assert!(!is_plain(head), "{}", String::from_utf8_lossy(head));
        }
    }

    /// Found by the `h1_heads` fuzz target: `Uri` cut the fragment off `/#1k`, and the
    /// upstream was sent `GET /`. Such a target now goes to the general path.
    #[test]
    fn a_target_with_a_fragment_is_not_forwarded_shortened() {
        for (head, plain) in [
            (&b"GET /#1k HTTP/1.1\r\nHost: a\r\n\r\n"[..], false),
            (b"GET /a?b#c HTTP/1.1\r\nHost: a\r\n\r\n", false),
            (b"GET /a? HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (b"GET /a?b=%23 HTTP/1.1\r\nHost: a\r\n\r\n", true),
        ] {
            let mut fields = Vec::new();
            let Parsed::Plain(parsed) = parse_request(head, &mut fields) else {
                panic!("not plain");
            };
            let message = Bytes::copy_from_slice(head);
            let parts = request_parts(&message, &parsed, &fields);
            assert_eq!(parts.is_some(), plain, "{}", String::from_utf8_lossy(head));
            fuzz_heads(head);
        }
    }

    #[test]
    fn an_unfinished_head_is_partial() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Partial
        ));
    }

    fn response(head: &[u8], is_head: bool) -> (String, ResponseHead) {
        let mut out = Vec::new();
        let (len, head) = encode_response_head(head, is_head, &mut out)
            .expect("valid")
            .expect("complete");
        assert!(len > 0);
        (String::from_utf8(out).expect("text"), head.expect("final"))
    }

    #[test]
    fn response_hop_by_hop_fields_are_dropped_and_the_rest_kept_as_sent() {
        let (out, head) = response(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nok",
            false,
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nX-Kept: 2\r\nContent-Length: 2\r\n");
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.reusable);
    }

    #[test]
    fn a_chunked_response_keeps_its_framing_and_loses_a_content_length() {
        let (out, head) = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n");
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn a_response_without_length_is_read_to_the_close_and_not_reused() {
        let (_, head) = response(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(head.framing, Framing::Close);
        assert!(!head.reusable);
    }

    #[test]
    fn head_204_and_304_responses_have_no_body() {
        assert_eq!(
            response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
                .1
                .framing,
            Framing::Empty
        );
        for status in ["204 No Content", "304 Not Modified"] {
            let head = format!("HTTP/1.1 {status}\r\n\r\n");
            assert_eq!(response(head.as_bytes(), false).1.framing, Framing::Empty);
        }
    }

    #[test]
    fn informational_responses_are_skipped() {
        let mut out = Vec::new();
        let skipped = encode_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", false, &mut out);
        assert!(matches!(skipped, Ok(Some((25, None)))));
    }

    #[test]
    fn http10_and_connection_close_responses_are_not_reused() {
        assert!(
            !response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false)
                .1
                .reusable
        );
        assert!(
            !response(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .1
            .reusable
        );
    }

    #[test]
    fn conflicting_lengths_and_unknown_codings_are_refused() {
        let mut out = Vec::new();
        for head in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(encode_response_head(head, false, &mut out).is_err());
        }
    }
}
