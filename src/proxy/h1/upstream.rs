//! Phase 4 of the fast path: the request, in bytes, on a pooled upstream connection that
//! this path speaks itself, through the endpoint loop and the replay rule both paths share.

use std::io;
use std::pin::Pin;
use std::time::Instant;

use bytes::Buf;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

use crate::proxy::exchange::{self, Failure, Replay, SendError};
use crate::proxy::http::HttpProxy;
use crate::proxy::limits::{MAX_RESPONSE_HEAD, READ_SIZE};
use crate::proxy::pool::{Pool, RawConn};
use crate::proxy::upstream::{self, Attempt, Endpoint, HttpClient};

use super::response::{Head, ResponseHead, read_response_head};

/// success, `response` holds the head for the caller (without its final CRLF).
pub(super) async fn forward<'p>(
    proxy: &'p HttpProxy,
    mut attempt: RawAttempt<'_>,
    timer: Pin<&mut Sleep>,
) -> Result<(&'p std::sync::Arc<Pool>, RawConn, ResponseHead), Failure> {
    let timer = proxy.request_timeout.map(|limit| (limit, timer));
    let (endpoint, (conn, head)) = upstream::forward(&proxy.upstream, timer, &mut attempt).await?;
    Ok((&endpoint.client, conn, head))
}

/// The fast path's request, in bytes, and where its response head goes. Passed whole, by
/// value to [`forward`] and by reference below it: each argument of an async fn takes room in
/// its future, and the exchange's future must stay within the allocator's per-thread cache.
pub(super) struct RawAttempt<'a> {
    pub(super) request: &'a [u8],
    pub(super) method: &'a Method,
    pub(super) bodyless: bool,
    pub(super) response: &'a mut Vec<u8>,
    /// When the request was read: "now" for the pool's freshness check.
    pub(super) started: Instant,
}

impl Attempt for RawAttempt<'_> {
    type Sent = (RawConn, ResponseHead);

    async fn send(&mut self, endpoint: &Endpoint<HttpClient>) -> Result<Self::Sent, SendError> {
        send(&endpoint.client, self).await
    }
}

/// Sends the request on a pooled connection of one endpoint, or a new one, and reads the
/// response head; a failed attempt goes again as [`Replay`] says.
async fn send(
    pool: &Pool,
    attempt: &mut RawAttempt<'_>,
) -> Result<(RawConn, ResponseHead), SendError> {
    // Read through `attempt` where used, not copied out: a copy that lives across an await
    // takes room in the future.
    let mut replay = Replay::new(attempt.method, attempt.bodyless);
    let is_head = *attempt.method == Method::HEAD;
    loop {
        let pooled = if replay.pooled() {
            pool.checkout_raw(attempt.started)
        } else {
            None
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(conn) => conn,
            // Boxed: connecting (and a TLS handshake's state) is rare next to reusing, and
            // would otherwise add its size to every connection's task for good.
            None => Box::pin(pool.connect_raw())
                .await
                .map_err(|error| SendError::Connect { error, again: true })?,
        };
        conn.buf.clear();
        let written = match conn.stream.write(attempt.request).await {
            Ok(n) if n > 0 => conn
                .stream
                .write_all(&attempt.request[n..])
                .await
                .map_err(|e| (false, e)),
            Ok(_) => Err((true, io::Error::from(io::ErrorKind::WriteZero))),
            Err(e) => Err((true, e)),
        };
        let (untouched, error) = match written {
            Ok(()) => match receive_head(&mut conn, is_head, attempt.response).await {
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

/// Why no response head came.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    /// Closed or reset before any byte of a response: the request may go again.
    #[error("unanswered: {0}")]
    Unanswered(io::Error),
    /// A head that cannot be forwarded, or a connection lost inside one.
    #[error("invalid response head: {0}")]
    Invalid(io::Error),
}

/// Reads the upstream's response head and writes the caller's version of it into `out`:
/// status line and end-to-end fields, without the final CRLF. 1xx responses are skipped, as
/// the general path's client does.
async fn receive_head(
    conn: &mut RawConn,
    is_head: bool,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, HeadError> {
    let invalid = |what: &str| HeadError::Invalid(io::Error::new(io::ErrorKind::InvalidData, what));
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            match read_response_head(&conn.buf, is_head, out) {
                Ok(Head::Final(len, head)) => {
                    conn.buf.advance(len);
                    return Ok(head);
                }
                // The real head follows.
                Ok(Head::Informational(len)) => {
                    conn.buf.advance(len);
                    continue;
                }
                Ok(Head::Partial) if conn.buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(invalid("response head too large"));
                }
                Ok(Head::Partial) => {}
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
