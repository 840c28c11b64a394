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
//! `close`, a body of at most `MAX_BODY` bytes with a Content-Length, not gRPC. Anything else
//! — and anything malformed — hands the rest of the connection, with the bytes already read,
//! to the general path, which answers it exactly as it always did (400, 431, smuggling rules,
//! upgrades, streaming bodies, h2c).
//!
//! One file per phase: [`request`] (check and rewrite, in bytes), [`upstream`] (forward),
//! [`response`] (the response head), [`body`] (stream), [`handoff`] (the rest of the
//! connection to the general path). [`serve`] is the loop over them.

mod body;
mod chunked;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod handoff;
mod request;
mod response;
mod upstream;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::connect::{Accepted, Tcp};
use super::exchange::Failure;
use super::http::HttpProxy;
use super::limits::{Limits, READ_SIZE};
use super::observe::{FieldLines, Forwarded, ResponseFlags};
use super::pool::{Pool, RawConn};
use super::response_body::{StatsGuard, Tracker};
use crate::drain;
use crate::spare::{self, Spares};
use body::{BodyFailure, caller_gone, stream_body};
pub(crate) use handoff::Rewind;
use request::{Parsed, RequestHead, encode_request, parse_request, request_parts};
use response::{Framing, ResponseHead};

/// How a connection left the fast path.
pub(crate) enum Exit {
    /// Closed: the peer left, a deadline passed, a drain began, or the exchange could not go on.
    Closed,
    /// The rest of the connection belongs to the general path: `read` was read from it and
    /// not consumed; `remaining` is what is left of the head read deadline.
    Handoff { read: Bytes, remaining: Duration },
}

/// Per-connection state. The read buffer is the connection's own; the buffers an exchange
/// writes into are lent by the worker ([`Scratch`]) for one request at a time.
#[derive(Default)]
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

impl Conn {
    /// Takes the worker's spare exchange buffers, unless this connection holds some already.
    fn borrow(&mut self) {
        if self.request.capacity() == 0 && self.response.capacity() == 0 {
            let Scratch {
                request,
                response,
                fields,
            } = Scratch::take();
            (self.request, self.response, self.fields) = (request, response, fields);
        }
    }

    /// Gives the exchange buffers back to the worker between requests, and the read buffer
    /// too when nothing of the next request is in it.
    fn lend(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() != 0 {
            give_read_buffer(std::mem::take(&mut self.buf));
        }
        if self.request.capacity() != 0 || self.response.capacity() != 0 {
            Scratch {
                request: std::mem::take(&mut self.request),
                response: std::mem::take(&mut self.response),
                fields: std::mem::take(&mut self.fields),
            }
            .give();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.lend();
    }
}

/// The buffers one exchange writes into, kept by each worker thread between requests rather
/// than by each connection. A connection waiting for its next request then holds none, and
/// connections that come and go reuse the same few instead of each leaving its own behind in
/// the heap: with 10,000 keep-alive connections, those freed buffers, scattered between the
/// connections' tasks, had been a third of the memory.
#[derive(Default)]
struct Scratch {
    request: Vec<u8>,
    response: Vec<u8>,
    fields: Vec<[u32; 4]>,
}

/// Spare sets a worker keeps: more than the requests one worker has in flight at once.
const SPARE_SETS: usize = 64;

/// A set grown past this (a large head) is freed rather than kept.
const SPARE_BYTES: usize = 16 * 1024;

thread_local! {
    static SPARE: Spares<Scratch> = const { Spares::new(Vec::new()) };
    /// Read buffers lent the same way: a connection holds one from the moment bytes of a
    /// request are there to read until that exchange ends.
    static SPARE_READ: Spares<BytesMut> = const { Spares::new(Vec::new()) };
    /// Header maps lent the same way, from a request's parsing until it is written upstream.
    static SPARE_HEADERS: Spares<HeaderMap> = const { Spares::new(Vec::new()) };
}

/// A map with room for a request's fields and what the proxy adds (12), is 1.3 KB: past what
/// the allocator keeps per thread (1,032 bytes), so a new one per request took its slow path
/// twice, 600 instructions a request. The worker keeps them instead.
fn spare_headers() -> HeaderMap {
    spare::take(&SPARE_HEADERS).unwrap_or_default()
}

/// A map grown past this many fields (a large head) is freed rather than kept.
const SPARE_HEADER_FIELDS: usize = 64;

fn give_headers(mut headers: HeaderMap) {
    if headers.capacity() > SPARE_HEADER_FIELDS {
        return;
    }
    headers.clear();
    spare::give(&SPARE_HEADERS, headers, SPARE_SETS);
}

/// A read buffer from the worker's spares, or a new one of [`IDLE_READ`] bytes.
fn take_read_buffer() -> BytesMut {
    spare::take(&SPARE_READ).unwrap_or_else(|| BytesMut::with_capacity(IDLE_READ))
}

/// Kept when its whole allocation is free again (the request it held was split off and
/// dropped) and small: a TLS connection takes one as soon as it waits (it cannot tell whether
/// bytes are there without reading) and keeps it while idle. What is left after a split is
/// only the tail of the allocation; reclaiming gives the next reader all of it, so that a
/// short request still fits in one read.
fn give_read_buffer(mut buf: BytesMut) {
    if !buf.try_reclaim(IDLE_READ) || buf.capacity() > 4 * IDLE_READ {
        return;
    }
    spare::give(&SPARE_READ, buf, SPARE_SETS);
}

impl Scratch {
    fn take() -> Scratch {
        spare::take(&SPARE).unwrap_or_default()
    }

    /// Kept as they are: each is cleared by what writes into it (`parse_request`,
    /// `encode_request`, `read_response_head`), never read before.
    fn give(self) {
        if self.request.capacity() + self.response.capacity() > SPARE_BYTES {
            return;
        }
        spare::give(&SPARE, self, SPARE_SETS);
    }
}

/// A caller's connection that can wait for bytes without a buffer to read them into.
pub(crate) trait ReadReady {
    /// Ready when a read would not wait, or when that cannot be known without reading.
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>>;
}

impl ReadReady for Accepted {
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        match self {
            Tcp::Plain(tcp) => tcp.poll_read_ready(cx),
            // A TLS session may hold decrypted bytes already: it reads with a buffer.
            Tcp::Tls(_) => std::task::Poll::Ready(Ok(())),
        }
    }
}

/// What a connection without a buffer reads its next request into: a short GET fits.
const IDLE_READ: usize = 512;

/// A request read whole, judged plain, and its `http` view.
struct Plain {
    head: RequestHead,
    /// The head and body as read.
    message: Bytes,
    parts: http::request::Parts,
}

/// Serves the connection's requests while they are plain, in this task: the phases of
/// [`super::http`], in bytes, one function each.
///
/// An async block, not an async fn, as `Connection::serve` and [`read_request`] are: an
/// async fn's future keeps its arguments twice, and these futures are part of every idle
/// connection's task (1,240 → 1,016 bytes).
#[allow(clippy::manual_async_fn)] // smaller futures: see the comment
pub(crate) fn serve<S>(
    io: &mut S,
    peer: SocketAddr,
    proxy: &HttpProxy,
    limits: &Limits,
    drain: &mut drain::Watcher,
) -> impl Future<Output = Exit>
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin,
{
    async move {
        // A new connection starts as an idle one does: its first request, most often a short
        // one, is read without a full-size buffer.
        // No buffer until the first request's bytes are there (see `read_more`).
        let mut conn = Conn::default();
        // One timer per connection for each deadline, moved forward per request: extending a
        // tokio deadline is cheap, registering a new timer per request is not. (One timer for
        // both would save 112 bytes a connection, but moving a deadline earlier, as the upstream's
        // is than the head read's, takes the timer out of the wheel and puts it back: 160
        // instructions a request.)
        let head_timer = tokio::time::sleep(limits.header_read_timeout);
        tokio::pin!(head_timer);
        let upstream_timer = tokio::time::sleep(proxy.request_timeout.unwrap_or(Duration::MAX / 4));
        tokio::pin!(upstream_timer);
        // When the wait for the next request began: the connection's start, then the end of
        // the exchange before (read there once, for the span, the metrics and the pool too;
        // a TLS flush after the body's end counts in the wait).
        let mut waiting_since = Instant::now();
        loop {
            // Between requests the exchange buffers go back to the worker; the next request
            // borrows them once its first bytes are in.
            conn.lend();
            // Phases 1 to 3 in a block of their own: what they leave behind (the request as read,
            // its `http` view) is then no part of the connection's task while it waits on the
            // upstream and streams, and neither is the forwarding below once it is done. A task
            // is as large as its largest state, idle or not.
            let (head, started, close, tracker) = {
                // Phase 1: check. A whole request, and plain enough for this path.
                let Plain {
                    head,
                    message,
                    mut parts,
                } = match read_request(
                    io,
                    &mut conn,
                    limits,
                    head_timer.as_mut(),
                    drain,
                    tokio::time::Instant::from_std(waiting_since) + limits.header_read_timeout,
                )
                .await
                {
                    Ok(plain) => plain,
                    Err(exit) => return exit,
                };
                let started = Instant::now();

                // Phase 2: observe. What the observer adds to a request that did not carry
                // it is written as lines, not into the map.
                let mut lines = FieldLines::default();
                let mut request = Forwarded::with_lines(&mut parts, &mut lines);
                let tracker = proxy
                    .observer
                    .on_request(&proxy.info, peer, &mut request, started)
                    .map(|e| Tracker::with_request_size(e, head.content_length));

                // Phase 3: rewrite.
                let close = head.close || drain.is_draining();
                rewrite(proxy, &mut conn.request, request, &message[head.len..]);
                (head, started, close, tracker)
            };

            // Phases 4 to 6, boxed: their state (the forwarding, the caller watched meanwhile,
            // the streaming) is larger than all the rest of the connection's task, and a
            // connection waiting for its next request would carry that room unused: 1.9 KiB per
            // idle connection instead of 2.4. One allocation per request, as the forwarding alone
            // took before; what it works with stays here, in `Phases`, so the box stays under
            // 1 KiB, in the allocator's per-thread cache (an async fn keeps its arguments twice).
            let mut phases = Phases {
                io,
                proxy,
                conn: &mut conn,
                limits,
                drain,
                upstream_timer: upstream_timer.as_mut(),
                head,
                started,
                close,
                tracker,
            };
            match Box::pin(exchange(&mut phases)).await {
                Some(ended) => waiting_since = ended,
                None => return Exit::Closed,
            }
        }
    }
}

/// What phases 4 to 6 of one request work with: the connection's, and the request's as
/// phases 1 to 3 left it.
struct Phases<'a, S> {
    io: &'a mut S,
    proxy: &'a HttpProxy,
    conn: &'a mut Conn,
    limits: &'a Limits,
    drain: &'a drain::Watcher,
    upstream_timer: Pin<&'a mut Sleep>,
    head: RequestHead,
    started: Instant,
    close: bool,
    tracker: Option<Tracker>,
}

/// Phases 4 to 6 of one request: forward, respond, stream. When the connection goes on, when
/// the exchange ended; `None`: the caller's connection is done.
async fn exchange<S>(phases: &mut Phases<'_, S>) -> Option<Instant>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Phases {
        io,
        proxy,
        conn,
        limits,
        drain,
        upstream_timer,
        head,
        started,
        close,
        tracker,
    } = phases;
    let (proxy, limits, started, close) = (*proxy, *limits, *started, *close);
    // Phase 4: forward, while watching the caller: if it leaves, the upstream side (its
    // connection inside the dropped future) is closed, never pooled, and the tracker,
    // dropped unfinished, records status 0 and `DC`.
    //
    // The connection's timer, moved to this request's deadline. The request's start stands
    // for "now" here and in the pool: a clock read costs some 30 ns in a virtual machine, and
    // a request took nine of them.
    if let Some(limit) = proxy.request_timeout {
        upstream_timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(started) + limit);
    }
    let attempt = upstream::RawAttempt {
        request: &conn.request,
        method: &head.method,
        bodyless: head.content_length == 0,
        response: &mut conn.response,
        started,
    };
    let forwarded = tokio::select! {
        biased;
        forwarded = upstream::forward(proxy, attempt, upstream_timer.as_mut()) => forwarded,
        () = caller_gone(io, &mut conn.buf, limits.max_header_bytes) => {
            let _stats = proxy.stats_guard(started, 0);
            return None;
        }
    };
    let (pool, connection, response) = match forwarded {
        Ok(sent) => sent,
        Err(failure) => {
            let status = local_reply(&mut conn.response, failure, close, tracker.as_mut());
            let _stats = proxy.stats_guard(started, status);
            let written = write_out(io, &conn.response).await.is_ok();
            return (written && !close).then(Instant::now);
        }
    };

    // Phase 5: respond. A drain that began while the upstream was answering closes the
    // connection after this response, so the caller must be told not to send another.
    let close = close || drain.is_draining();
    let close = respond(&mut conn.response, &response, close, tracker.as_mut());
    let mut stats = proxy.stats_guard(started, response.status.as_u16());

    // Phase 6: stream.
    let ended = stream(
        io,
        pool,
        connection,
        conn,
        limits,
        &response,
        tracker.as_mut(),
        stats.as_mut(),
    )
    .await?;
    end_response(io, close).await.then_some(ended)
}

/// Phase 1: reads until a whole request is in (head, and the body its Content-Length
/// announces) or `deadline` passes, and judges it. `Err`: the connection closed, or goes to
/// the general path.
#[allow(clippy::manual_async_fn)] // smaller futures: see the comment
fn read_request<S: AsyncRead + ReadReady + Unpin>(
    io: &mut S,
    conn: &mut Conn,
    limits: &Limits,
    mut head_timer: Pin<&mut Sleep>,
    drain: &mut drain::Watcher,
    deadline: tokio::time::Instant,
) -> impl Future<Output = Result<Plain, Exit>> {
    // An async block: see `serve`.
    async move {
        // The timer is moved to `deadline` only when a read has to wait: a reset costs a trip to
        // the timer wheel.
        let mut pending_reset = Some(deadline);
        let head = loop {
            if !conn.buf.is_empty() {
                conn.borrow();
                match parse_request(&conn.buf, &mut conn.fields) {
                    // However the reads fell, a head over the limit goes to the general path,
                    // which refuses it (431), as it does one still incomplete at the limit.
                    Parsed::Plain(head) if head.len <= limits.max_header_bytes => break head,
                    Parsed::Partial if conn.buf.len() <= limits.max_header_bytes => {}
                    _ => return Err(handoff(conn.buf.split().freeze(), deadline)),
                }
            }
            // A drain closes connections that sit between requests, never one mid-head.
            let idle = conn.buf.is_empty();
            let draining = idle.then_some(&mut *drain);
            if let Some(deadline) = pending_reset.take() {
                head_timer.as_mut().reset(deadline);
            }
            if read_more(io, &mut conn.buf, head_timer.as_mut(), draining).await != More::Read {
                return Err(Exit::Closed);
            }
        };
        let whole = head.len + head.content_length as usize;
        while conn.buf.len() < whole {
            if let Some(deadline) = pending_reset.take() {
                head_timer.as_mut().reset(deadline);
            }
            if read_more(io, &mut conn.buf, head_timer.as_mut(), None).await != More::Read {
                return Err(Exit::Closed);
            }
        }
        let message = conn.buf.split_to(whole).freeze();
        let Some(parts) = request_parts(&message, &head, &conn.fields, spare_headers()) else {
            // A target or a value the http types refuse: the general path says why.
            let mut rest = BytesMut::from(&message[..]);
            rest.extend_from_slice(&conn.buf);
            return Err(handoff(rest.freeze(), deadline));
        };
        Ok(Plain {
            head,
            message,
            parts,
        })
    }
}

/// Phase 3: the request as it goes upstream. What the general path's rewrite does to a plain
/// request comes down to this: the target is origin-form already, the one Host is a plain
/// host[:port], and no hop-by-hop field came through.
fn rewrite(proxy: &HttpProxy, out: &mut Vec<u8>, mut head: Forwarded<'_>, body: &[u8]) {
    proxy.set_forwarded_proto(&mut head);
    encode_request(out, &head, body);
    give_headers(std::mem::take(&mut head.parts.headers));
}

/// Phase 5: ends the caller's head (`out` holds the rest of it) and shows the response to the
/// observer. Returns whether the connection closes after this response.
fn respond(
    out: &mut Vec<u8>,
    response: &ResponseHead,
    close: bool,
    tracker: Option<&mut Tracker>,
) -> bool {
    let close = close || response.framing == Framing::Close;
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(t) = tracker {
        t.status = response.status.as_u16();
        if let Some(e) = t.exchange_mut() {
            e.on_response(response.status, &HeaderMap::new());
        }
    }
    close
}

/// Phase 6: the head and the body to the caller; the upstream connection back to its pool
/// when the exchange ended cleanly. When it ended; `None`: the caller's connection is done.
#[allow(clippy::too_many_arguments)]
async fn stream<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    pool: &Pool,
    mut connection: RawConn,
    conn: &mut Conn,
    limits: &Limits,
    response: &ResponseHead,
    tracker: Option<&mut Tracker>,
    stats: Option<&mut StatsGuard>,
) -> Option<Instant> {
    let streamed = stream_body(
        io,
        &mut conn.buf,
        limits.max_header_bytes,
        &mut connection,
        &mut conn.response,
        response.framing,
    )
    .await;
    match streamed {
        Ok(streamed) => {
            // One reading of the clock for the end of the span, the metrics, the upstream
            // connection's idle time and the wait for the caller's next request.
            let ended = Instant::now();
            if let Some(t) = tracker {
                t.count_response_bytes(streamed.body_bytes);
                t.finish_at(false, ended);
            }
            if let Some(stats) = stats {
                stats.ended = Some(ended);
            }
            if response.reusable && streamed.clean {
                pool.put_raw(connection, ended);
            }
            Some(ended)
        }
        Err(BodyFailure::Unsent) => {
            // Nothing of the response went out and the connection closes, as on the general
            // path: what the caller got is no response (status 0).
            if let Some(t) = tracker {
                t.status = 0;
                t.flags.insert(ResponseFlags::UC);
                t.finish(true);
            }
            if let Some(stats) = stats {
                stats.status = 0;
            }
            None
        }
        Err(BodyFailure::Upstream(sent)) => {
            // The head is out: all that is left is to cut the caller short, so the
            // truncation shows, and to record the abort once.
            if let Some(t) = tracker {
                t.count_response_bytes(sent);
                t.flags.insert(ResponseFlags::UC);
                t.finish(true);
            }
            let _ = io.flush().await;
            None
        }
        Err(BodyFailure::Downstream(sent)) => {
            if let Some(t) = tracker {
                t.count_response_bytes(sent);
            }
            // The tracker, dropped unfinished, records the caller's leaving (DC).
            None
        }
    }
}

/// After the response: flushed, and the connection closed when it ends here. False: closed.
async fn end_response<S: AsyncWrite + Unpin>(io: &mut S, close: bool) -> bool {
    if io.flush().await.is_err() {
        return false;
    }
    if close {
        let _ = io.shutdown().await;
        return false;
    }
    true
}

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

fn handoff(read: Bytes, deadline: tokio::time::Instant) -> Exit {
    Exit::Handoff {
        read,
        remaining: deadline.saturating_duration_since(tokio::time::Instant::now()),
    }
}

/// How a read for more of a request ended.
#[derive(Debug, PartialEq, Eq)]
enum More {
    /// Bytes came.
    Read,
    /// The deadline passed first.
    Expired,
    /// The peer closed, the read failed, or (when watching `drain`) a drain began.
    Closed,
}

/// Reads more into `buf`. A connection without a buffer (one between requests, see
/// [`Conn::lend`]) waits for bytes first and then takes one; an empty buffer with room is
/// read into as it is; otherwise at least a quarter of `READ_SIZE` is made free first.
async fn read_more<S: AsyncRead + ReadReady + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    deadline: Pin<&mut Sleep>,
    drain: Option<&mut drain::Watcher>,
) -> More {
    let read = async {
        if buf.capacity() == 0 {
            // No buffer is held while the caller sends nothing.
            std::future::poll_fn(|cx| io.poll_read_ready(cx)).await?;
            *buf = take_read_buffer();
        } else {
            let spare = buf.capacity() - buf.len();
            if spare == 0 || (!buf.is_empty() && spare < READ_SIZE / 4) {
                buf.reserve(READ_SIZE);
            }
        }
        io.read_buf(buf).await
    };
    let result = match drain {
        Some(drain) => tokio::select! {
            biased;
            r = read => Some(r),
            () = drain.draining() => return More::Closed,
            () = deadline => None,
        },
        None => tokio::select! {
            biased;
            r = read => Some(r),
            () = deadline => None,
        },
    };
    match result {
        Some(Ok(n)) if n > 0 => More::Read,
        Some(_) => More::Closed,
        None => More::Expired,
    }
}

async fn write_out<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::{Conn, SPARE_BYTES, Scratch};

    fn spare_sets() -> usize {
        super::SPARE.with(|spare| spare.borrow().len())
    }

    /// The thread's spare sets emptied: tests may share a thread.
    fn no_spare_sets() {
        super::SPARE.with(|spare| spare.borrow_mut().clear());
        super::SPARE_READ.with(|spare| spare.borrow_mut().clear());
    }

    #[test]
    fn a_connection_between_requests_holds_no_exchange_buffers() {
        no_spare_sets();
        let mut conn = Conn::default();
        conn.borrow();
        conn.request.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        conn.response.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        conn.lend();
        assert_eq!(conn.request.capacity() + conn.response.capacity(), 0);
        assert_eq!(spare_sets(), 1);
    }

    #[test]
    fn a_connection_between_requests_holds_no_read_buffer() {
        no_spare_sets();
        let mut conn = Conn::default();
        conn.buf = super::take_read_buffer();
        conn.lend();
        assert_eq!(conn.buf.capacity(), 0);
        // ... and the next reader gets that one back rather than a new one.
        let again = super::take_read_buffer();
        assert!(again.capacity() >= super::IDLE_READ);
        assert_eq!(super::SPARE_READ.with(|spare| spare.borrow().len()), 0);
    }

    #[test]
    fn a_read_buffer_comes_back_whole_after_a_request_was_split_off_it() {
        no_spare_sets();
        let mut conn = Conn::default();
        conn.buf = super::take_read_buffer();
        conn.buf.extend_from_slice(&[b'x'; 400]);
        drop(conn.buf.split_to(400).freeze());
        conn.lend();
        assert!(super::take_read_buffer().capacity() >= super::IDLE_READ);
    }

    #[test]
    fn the_next_request_reuses_the_buffers_another_connection_gave_back() {
        no_spare_sets();
        let mut first = Conn::default();
        first.response.reserve(4096);
        drop(first);
        let mut second = Conn::default();
        second.borrow();
        assert!(second.response.capacity() >= 4096);
        assert_eq!(spare_sets(), 0);
    }

    #[test]
    fn buffers_grown_past_the_limit_are_freed_not_kept() {
        no_spare_sets();
        let mut big = Scratch::default();
        big.response.reserve(SPARE_BYTES + 1);
        big.give();
        assert_eq!(spare_sets(), 0);
    }
}
