//! Phase 6 of the fast path: the response body, passed through as the upstream frames it.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proxy::limits::{COALESCE, READ_SIZE};
use crate::proxy::pool::RawConn;

use super::chunked::Chunked;
use super::response::Framing;

pub(super) struct Streamed {
    /// Body bytes, decoded size (Envoy's `response_size`).
    pub body_bytes: u64,
    /// The upstream sent nothing past the body: its connection can carry another request.
    pub clean: bool,
}

pub(super) enum BodyFailure {
    /// The upstream's body was malformed before anything of the response went out.
    Unsent,
    /// The upstream failed or closed mid-body; body bytes sent so far.
    Upstream(u64),
    /// The caller went away; body bytes sent so far.
    Downstream(u64),
}

/// Writes the response head in `head` and the body behind it to the caller, the body as the
/// upstream frames it.
///
/// While it waits for the upstream, it watches the caller ([`caller_gone`]): bytes it sends
/// (pipelined requests) are kept in `caller_buf`, and its leaving ends the body at once.
pub(super) async fn stream_body<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    caller_buf: &mut BytesMut,
    caller_buf_limit: usize,
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
            Framing::Chunked => match chunked.feed(available) {
                Ok(n) => n,
                Err(_) if !head_sent => return Err(BodyFailure::Unsent),
                Err(_) => return Err(BodyFailure::Upstream(body_bytes)),
            },
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
        let read = tokio::select! {
            biased;
            read = upstream.stream.read_buf(&mut upstream.buf) => read,
            () = caller_gone(io, caller_buf, caller_buf_limit) => {
                return Err(BodyFailure::Downstream(body_bytes));
            }
        };
        match read {
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

/// Resolves when the caller closes or resets its connection while the exchange waits for
/// the upstream. What it sends meanwhile (pipelined requests) is kept in `buf`, up to
/// `limit`; past that it is no longer read.
pub(super) async fn caller_gone<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    limit: usize,
) {
    // Read straight into `buf`: a scratch array here would live in every connection's task,
    // busy or idle.
    while buf.len() < limit {
        let room = limit - buf.len();
        match io.read_buf(&mut BufMut::limit(&mut *buf, room)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}
