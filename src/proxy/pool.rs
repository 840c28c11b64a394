//! Upstream connections of one endpoint, pooled.
//!
//! HTTP/1.1: a stack of idle connections. A connection goes back to the stack when the
//! response body it carried has been read to its end ([`Lease`]), so a keep-alive client gets
//! the same upstream connection request after request. HTTP/2: one connection, multiplexed,
//! replaced when it closes.
//!
//! A request that could not even start on a pooled connection (the server closed it while it
//! sat idle) is sent again on another; nothing of it reached the application.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::connect::{EndpointConnector, Stream, Wire};
use super::exchange::{Replay, SendError};
use super::request_body::RequestBody;

/// The connection ended before any answer: closed, reset, or a broken pipe.
fn unanswered(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return super::exchange::unanswered(io.kind());
        }
        source = cause.source();
    }
    false
}

/// Whether the upstream refused the stream before processing it: `REFUSED_STREAM`, or a
/// graceful GOAWAY whose last stream id is below it.
fn refused(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away()
                    && h2.is_remote()
                    && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = cause.source();
    }
    false
}

fn reset(error: hyper::Error) -> SendError {
    SendError::Reset(Box::new(error))
}

fn connect(error: io::Error) -> SendError {
    SendError::Connect { error, again: true }
}

/// A copy of a request's head (extensions are not carried).
pub(crate) fn copy_head(
    method: &http::Method,
    uri: &http::Uri,
    version: http::Version,
    headers: &http::HeaderMap,
) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method.clone();
    parts.uri = uri.clone();
    parts.version = version;
    parts.headers = headers.clone();
    parts
}

struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// An HTTP/1.1 connection that the fast path ([`super::h1`]) speaks itself, in the caller's
/// task: no connection task, no channels. `buf` holds what was read from it.
pub(crate) struct RawConn {
    pub(crate) stream: Stream,
    pub(crate) buf: bytes::BytesMut,
    since: Instant,
}

impl RawConn {
    /// Whether the connection looks usable: nothing arrived while it sat idle. For plain TCP
    /// this reads the reactor's readiness, no system call: an idle upstream connection that
    /// became readable was closed (or sent something unasked), either way it is done. TLS
    /// connections get no such check (session tickets make them readable); the replay of an
    /// unanswered request covers them.
    fn looks_open(&self) -> bool {
        match &self.stream {
            Stream::Plain(tcp) => {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                tcp.poll_read_ready(&mut cx).is_pending()
            }
            Stream::Tls(_) => true,
        }
    }
}

pub(crate) struct Pool {
    connector: EndpointConnector,
    wire: Wire,
    idle: Mutex<Vec<Idle>>,
    raw_idle: Mutex<Vec<RawConn>>,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// One h2 handshake at a time: concurrent first requests share it.
    h2_connecting: tokio::sync::Mutex<()>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// An HTTP/1.1 connection lent to one exchange; it returns to the pool when the response
/// body has been read to its end, and is closed if the exchange ends any other way.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    sender: http1::SendRequest<RequestBody>,
}

impl Lease {
    pub(crate) fn release(self) {
        self.pool.put(self.sender);
    }
}

impl Pool {
    pub(crate) fn new(
        connector: EndpointConnector,
        wire: Wire,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Pool {
        Pool {
            connector,
            wire,
            idle: Mutex::new(Vec::new()),
            raw_idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            max_idle,
            idle_timeout,
        }
    }

    /// Sends one request; an HTTP/1.1 response comes with the lease of its connection.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        match self.wire {
            Wire::Http1 => self.send_h1(request).await.map(|(r, l)| (r, Some(l))),
            Wire::Http2 => self.send_h2(request).await.map(|r| (r, None)),
        }
    }

    /// Sends on a pooled connection or a new one, sending again as [`Replay`] says.
    async fn send_h1(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let mut replay = Replay::new(
            request.method(),
            http_body::Body::is_end_stream(request.body()),
        );
        // A replay sends the head alone again: keep a copy of it for that.
        let mut head = replay.may_replay().then(|| {
            copy_head(
                request.method(),
                request.uri(),
                request.version(),
                request.headers(),
            )
        });
        loop {
            let pooled = if replay.pooled() {
                self.checkout()
            } else {
                None
            };
            let (mut sender, reused) = match pooled {
                Some(sender) => (sender, true),
                // Boxed, as every connect is: a request's future is as large as its largest
                // state, and connecting is rare next to sending on a pooled connection.
                None => (Box::pin(self.connect_h1()).await?, false),
            };
            if let Err(e) = sender.ready().await {
                match replay.again(reused, true, false) {
                    Some(_) => continue,
                    None => return Err(reset(e)),
                }
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok((
                        response,
                        Lease {
                            pool: self.clone(),
                            sender,
                        },
                    ));
                }
                Err(mut e) => {
                    let unsent = e.take_message();
                    let again = replay.again(reused, unsent.is_some(), unanswered(e.error()));
                    request = match (again, unsent) {
                        (Some(_), Some(unsent)) => unsent,
                        (Some(_), None) => match head.take() {
                            Some(head) => Request::from_parts(head, RequestBody::empty()),
                            None => return Err(reset(e.into_error())),
                        },
                        (None, _) => return Err(reset(e.into_error())),
                    };
                }
            }
        }
    }

    /// Sends on the shared h2 connection. A stream the upstream refused (`REFUSED_STREAM`, or
    /// above the last stream id of its GOAWAY, as a server that closes connections after N
    /// requests sends) was never processed, so it goes once more on a new connection (RFC 9113
    /// §8.7) — if what it carried is still at hand: a head with no body.
    async fn send_h2(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut head = http_body::Body::is_end_stream(request.body()).then(|| {
            copy_head(
                request.method(),
                request.uri(),
                request.version(),
                request.headers(),
            )
        });
        let mut tries = 0;
        loop {
            tries += 1;
            let mut sender = self.h2_sender().await?;
            let mut e = match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let unsent = e.take_message();
            if tries > 2 || !(unsent.is_some() || refused(e.error())) {
                return Err(reset(e.into_error()));
            }
            // That connection takes no new streams: the next request opens another.
            if let Ok(mut h2) = self.h2.lock() {
                *h2 = None;
            }
            request = match (unsent, head.take()) {
                (Some(unsent), _) => unsent,
                (None, Some(head)) => Request::from_parts(head, RequestBody::empty()),
                (None, None) => return Err(reset(e.into_error())),
            };
        }
    }

    /// The shared h2 connection, opened if there is none.
    async fn h2_sender(&self) -> Result<http2::SendRequest<RequestBody>, SendError> {
        let sender = match self.current_h2() {
            Some(sender) => sender,
            None => {
                let _one = self.h2_connecting.lock().await;
                match self.current_h2() {
                    Some(sender) => sender,
                    None => {
                        let sender = Box::pin(self.connect_h2()).await?;
                        if let Ok(mut h2) = self.h2.lock() {
                            *h2 = Some(sender.clone());
                        }
                        sender
                    }
                }
            }
        };
        Ok(sender)
    }

    fn current_h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let h2 = self.h2.lock().ok()?;
        h2.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The most recently used idle connection that is still open and fresh.
    fn checkout(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(Idle { sender, since }) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < self.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            // Drop the stale ones at the bottom of the stack while here.
            idle.retain(|i| !i.sender.is_closed() && i.since.elapsed() < self.idle_timeout);
            if idle.len() < self.max_idle {
                idle.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    /// The most recently used idle fast-path connection that still looks open and was fresh
    /// at `now` (the request's start: a connection put back since then is fresh).
    pub(crate) fn checkout_raw(&self, now: Instant) -> Option<RawConn> {
        let mut idle = self.raw_idle.lock().ok()?;
        while let Some(conn) = idle.pop() {
            if now.saturating_duration_since(conn.since) < self.idle_timeout && conn.looks_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a fast-path connection whose exchange ended cleanly at `now` (the caller's
    /// reading of the clock, shared with the request's span and metrics).
    pub(crate) fn put_raw(&self, mut conn: RawConn, now: Instant) {
        if let Ok(mut idle) = self.raw_idle.lock() {
            // The oldest sit at the bottom: drop the stale ones while here.
            while idle
                .first()
                .is_some_and(|c| now.duration_since(c.since) >= self.idle_timeout)
            {
                idle.remove(0);
            }
            if idle.len() < self.max_idle {
                conn.since = now;
                idle.push(conn);
            }
        }
    }

    /// A new fast-path connection.
    pub(crate) async fn connect_raw(&self) -> io::Result<RawConn> {
        let stream = self.connector.connect().await?;
        Ok(RawConn {
            stream,
            buf: bytes::BytesMut::new(),
            since: Instant::now(),
        })
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<RequestBody>, SendError> {
        let stream = self.connector.connect().await.map_err(connect)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect(io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<RequestBody>, SendError> {
        let stream = self.connector.connect().await.map_err(connect)?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(super::limits::H2_STREAM_WINDOW)
            .initial_connection_window_size(super::limits::H2_CONNECTION_WINDOW)
            .max_frame_size(super::limits::H2_MAX_FRAME)
            .keep_alive_interval(super::limits::UPSTREAM_H2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(super::limits::UPSTREAM_H2_KEEP_ALIVE_TIMEOUT)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect(io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream h2 connection ended with an error");
            }
        });
        Ok(sender)
    }
}
