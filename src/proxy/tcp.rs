//! Plain TCP passthrough (`kuma.io/protocol` tcp, kafka, tls or absent): bytes both ways,
//! never traced.
//!
//! The copy holds no buffer of its own while a connection is quiet: each read goes into a
//! buffer on the stack of the poll and is written on straight away; only bytes the other side
//! would not take yet are kept, on the heap, until they are written. A thousand idle
//! connections so hold no copy buffers at all, where `tokio::io::copy_bidirectional` keeps two
//! of 8 KiB for each. The transparent passthrough and upgraded (WebSocket) tunnels copy the
//! same way ([`copy_both_ways`]).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connect::{Accepted, EndpointConnector};
use super::upstream::Upstream;

/// Bytes read at a time, into the poll's stack.
const READ_SIZE: usize = 8 * 1024;

/// Connects to the next endpoint that accepts and copies bytes until either side closes.
#[allow(clippy::manual_async_fn)] // an async block: see `listener::Connection::serve`
pub(crate) fn pass_through(
    mut downstream: Accepted,
    upstream: Arc<Upstream<EndpointConnector>>,
) -> impl Future<Output = ()> {
    async move {
        for endpoint in upstream.plan() {
            // Boxed: connecting takes more room than copying (the connect future is about
            // 1.1 KiB), and a task is as large as its largest state: 1,512 → 408 bytes for
            // every connection, for one allocation while it connects.
            match Box::pin(endpoint.client.connect()).await {
                Ok(mut stream) => {
                    upstream.mark_up(endpoint);
                    if let Err(e) = copy_both_ways(&mut downstream, &mut stream).await {
                        tracing::debug!(endpoint = %endpoint.address, error = %e, "tcp stream ended with an error");
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.address, error = %e, "tcp connect failed");
                    upstream.mark_down(endpoint);
                }
            }
        }
        // No endpoint accepted: closing the connection is all TCP can say.
    }
}

/// Copies `a` to `b` and `b` to `a` until both have ended (each end is passed on as a
/// write shutdown), or until either fails.
pub(crate) async fn copy_both_ways<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Pipe::default();
    let mut b_to_a = Pipe::default();
    poll_fn(|cx| {
        let there = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        if there.is_ready() && back.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// One direction of the copy.
#[derive(Default)]
struct Pipe {
    /// Read but not yet taken by the writer; empty (and unallocated) most of the time.
    pending: Vec<u8>,
    /// How much of `pending` is written.
    at: usize,
    /// Written since the last flush.
    unflushed: bool,
    /// The reader ended.
    read_done: bool,
    /// The end was passed on.
    done: bool,
}

impl Pipe {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.at < self.pending.len() {
                let n = ready!(writer.as_mut().poll_write(cx, &self.pending[self.at..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.at += n;
                self.unflushed = true;
            }
            if !self.pending.is_empty() {
                // All of it went: the heap buffer goes too.
                self.pending = Vec::new();
                self.at = 0;
            }
            if self.read_done {
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut stack = [0u8; READ_SIZE];
            let mut read = ReadBuf::new(&mut stack);
            if reader.as_mut().poll_read(cx, &mut read)?.is_pending() {
                // Nothing more to send for now: what was written must not wait in a buffer
                // (a TLS stream's) for more that may never come.
                if self.unflushed {
                    ready!(writer.as_mut().poll_flush(cx))?;
                    self.unflushed = false;
                }
                return Poll::Pending;
            }
            let data = read.filled();
            if data.is_empty() {
                self.read_done = true;
                continue;
            }
            let mut written = 0;
            while written < data.len() {
                match writer.as_mut().poll_write(cx, &data[written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if written < data.len() {
                // The writer is full: keep the rest until it takes it.
                self.pending.extend_from_slice(&data[written..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::copy_both_ways;

    /// A writer that takes 64 bytes at a time makes most reads leave bytes pending: every
    /// byte must still arrive, in order, and both ends pass on.
    #[tokio::test]
    async fn bytes_a_slow_side_cannot_take_yet_arrive_in_order() {
        let (mut client, mut proxy_a) = tokio::io::duplex(64);
        let (mut proxy_b, mut server) = tokio::io::duplex(64);
        let copy = tokio::spawn(async move { copy_both_ways(&mut proxy_a, &mut proxy_b).await });
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let to_send = sent.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&to_send).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert!(
            received == sent,
            "{} bytes of {}",
            received.len(),
            sent.len()
        );
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        copy.await.unwrap().unwrap();
    }
}
