//! Phase 6 of the fast path: the response body, passed through as the upstream frames it.

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    /// The upstream failed or closed mid-body; body bytes sent so far.
    Upstream(u64),
    /// The caller went away; body bytes sent so far.
    Downstream(u64),
}

/// Writes the response head in `head` and the body behind it to the caller, the body as the
/// upstream frames it.
pub(super) async fn stream_body<S: AsyncWrite + Unpin>(
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
