//! Listeners: accept loops, TLS termination, and the per-connection HTTP server settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::h1;
use super::http::HttpProxy;
use super::tcp;
use super::upstream::{EndpointConnector, Upstream, Wire};

/// Limits of the downstream side. Defaults follow Envoy's where it has one.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest HTTP/1.1 request head (request line + headers), bytes. Envoy: 60 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1.1 request. Envoy: 100.
    pub max_headers: usize,
    /// Largest HTTP/2 header list, bytes.
    pub h2_max_header_list_bytes: u32,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Streams a client may reset before the server accepted them (rapid reset, CVE-2023-44487).
    pub h2_max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for protocol errors before closing the connection.
    pub h2_max_local_error_reset_streams: usize,
    /// Time to receive a request head (slowloris). For HTTP/1.1 it is also how long a
    /// keep-alive connection may sit idle between requests. nginx: 60 s.
    pub header_read_timeout: Duration,
    /// HTTP/2 PING interval; a connection that does not answer within `h2_keep_alive_timeout`
    /// is closed.
    pub h2_keep_alive_interval: Duration,
    pub h2_keep_alive_timeout: Duration,
    /// TLS handshake deadline.
    pub tls_handshake_timeout: Duration,
    /// Plain HTTP/1.1 requests to an HTTP/1.1 upstream take the fast path ([`super::h1`]).
    pub http1_fast_path: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            h2_max_header_list_bytes: 60 * 1024,
            h2_max_concurrent_streams: 1024,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 1024,
            header_read_timeout: Duration::from_secs(60),
            h2_keep_alive_interval: Duration::from_secs(60),
            h2_keep_alive_timeout: Duration::from_secs(20),
            tls_handshake_timeout: Duration::from_secs(10),
            http1_fast_path: true,
        }
    }
}

/// HTTP/2 flow control windows and the largest frame a peer may send, both directions.
/// Fixed and larger than h2's 64 KiB: on loopback the adaptive window never grows (the
/// bandwidth-delay product is tiny), and a stream would stall for WINDOW_UPDATEs every
/// 64 KiB. A stream may have at most this much in flight, so it bounds buffering too.
pub const H2_STREAM_WINDOW: u32 = 1024 * 1024;
pub const H2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
pub const H2_MAX_FRAME: u32 = 64 * 1024;

/// The HTTP server settings for downstream connections: HTTP/1.1 and h2c on one port.
pub fn server_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        // The upstream's Date passes through; the proxy adds none of its own.
        .auto_date_header(false)
        .half_close(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_bytes)
        .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
        .keep_alive_interval(limits.h2_keep_alive_interval)
        .keep_alive_timeout(limits.h2_keep_alive_timeout)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(H2_MAX_FRAME)
        .auto_date_header(false);
    builder
}

/// What a listener does with its connections.
pub enum Handler {
    Http(Arc<HttpProxy>, Arc<auto::Builder<TokioExecutor>>),
    Tcp(Arc<Upstream<EndpointConnector>>),
}

/// Accepts until `stop` turns true, then waits (no longer than the caller allows) for the
/// connections it accepted: HTTP connections are told to finish (h2 GOAWAY, h1 close after
/// the current response), TCP ones run to their end.
pub async fn serve(
    listener: impl Into<super::transparent::Incoming>,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listener = listener.into();
    let graceful = GracefulShutdown::new();
    let tasks = counter::TaskCounter::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match &handler {
            Handler::Http(proxy, builder) => {
                let proxy = proxy.clone();
                let builder = builder.clone();
                let tls = tls.clone();
                let limits = limits.clone();
                let watcher = graceful.watcher();
                let stop = stop.clone();
                // Fast-path connections are not hyper's to drain: counted like TCP ones.
                let guard = tasks.enter();
                tokio::spawn(async move {
                    let _guard = guard;
                    let connection = Connection {
                        peer,
                        proxy,
                        builder,
                        watcher,
                        limits,
                        stop,
                    };
                    match tls {
                        None => connection.serve(stream).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                connection.limits.tls_handshake_timeout,
                                acceptor.accept(stream),
                            );
                            match handshake.await {
                                Ok(Ok(tls)) => connection.serve(tls).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
            Handler::Tcp(upstream) => {
                let upstream = upstream.clone();
                let tls = tls.clone();
                let limits = limits.clone();
                let guard = tasks.enter();
                tokio::spawn(async move {
                    let _guard = guard;
                    match tls {
                        None => tcp::pass_through(stream, upstream).await,
                        Some(acceptor) => {
                            if let Ok(Ok(tls)) = tokio::time::timeout(
                                limits.tls_handshake_timeout,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                tcp::pass_through(tls, upstream).await;
                            }
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    tasks.wait_idle().await;
}

/// One accepted HTTP connection and what serving it needs.
struct Connection {
    peer: SocketAddr,
    proxy: Arc<HttpProxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: Arc<Limits>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// The fast path while requests are plain, the general path from the first that is not.
    async fn serve<S>(mut self, mut stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let fast = self.limits.http1_fast_path && self.proxy.upstream.wire == Wire::Http1;
        if !fast {
            let first_request = self.limits.header_read_timeout;
            return serve_http(
                stream,
                self.peer,
                self.proxy,
                &self.builder,
                self.watcher,
                first_request,
            )
            .await;
        }
        let exit = h1::serve(
            &mut stream,
            self.peer,
            &self.proxy,
            &self.limits,
            &mut self.stop,
        )
        .await;
        if let h1::Exit::Handoff { read, remaining } = exit {
            serve_http(
                h1::Rewind::new(read, stream),
                self.peer,
                self.proxy,
                &self.builder,
                self.watcher,
                remaining,
            )
            .await;
        }
    }
}

async fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    proxy: Arc<HttpProxy>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    first_request: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Until the first request head arrives the connection is cut after `first_request`:
    // hyper's own header timeout starts only once it has told HTTP/1.1 from h2, so a peer that
    // sends nothing, or trickles the h2 preface, would otherwise hold the socket forever.
    let started = Arc::new(AtomicBool::new(false));
    let seen = started.clone();
    let service = hyper::service::service_fn(move |req| {
        seen.store(true, Ordering::Relaxed);
        proxy.clone().serve(req, peer)
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let connection = watcher.watch(connection.into_owned());
    tokio::pin!(connection);
    let result = tokio::select! {
        result = &mut connection => result,
        _ = tokio::time::sleep(first_request) => {
            if !started.load(Ordering::Relaxed) {
                tracing::debug!(%peer, "no request within the header read timeout; closing");
                return;
            }
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Binds a listener, with a clear error naming the address.
pub async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

/// Counts live TCP passthrough tasks, so shutdown can wait for them.
mod counter {
    use std::sync::Arc;
    use tokio::sync::watch;

    #[derive(Clone)]
    pub struct TaskCounter {
        tx: Arc<watch::Sender<usize>>,
    }

    impl Default for TaskCounter {
        fn default() -> Self {
            TaskCounter {
                tx: Arc::new(watch::channel(0).0),
            }
        }
    }

    pub struct Guard(Arc<watch::Sender<usize>>);

    impl TaskCounter {
        pub fn enter(&self) -> Guard {
            self.tx.send_modify(|n| *n += 1);
            Guard(self.tx.clone())
        }

        pub async fn wait_idle(&self) {
            let mut rx = self.tx.subscribe();
            let _ = rx.wait_for(|n| *n == 0).await;
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.send_modify(|n| *n -= 1);
        }
    }
}
