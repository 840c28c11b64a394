//! Listeners: accept loops, TLS termination, and the per-connection HTTP server settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::connect::{Accepted, EndpointConnector, Wire};
use super::h1;
use super::http::HttpProxy;
use super::limits::{H2_CONNECTION_WINDOW, H2_MAX_FRAME, H2_STREAM_WINDOW, Limits};
use super::tcp;
use super::upstream::Upstream;
use crate::drain;

/// The HTTP server settings for downstream connections: HTTP/1.1 and h2c on one port.
pub(crate) fn server_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
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
pub(crate) enum Handler {
    Http(Arc<HttpProxy>, Arc<auto::Builder<TokioExecutor>>),
    Tcp(Arc<Upstream<EndpointConnector>>),
}

/// Accepts until a drain begins. Every connection holds a clone of `drain`, so the drain
/// waits for it: HTTP connections are told to finish (h2 GOAWAY, h1 close after the current
/// response), TCP ones run to their end.
pub(crate) async fn serve(
    listener: impl Into<super::transparent::Incoming>,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    limits: Arc<Limits>,
    mut drain: drain::Watcher,
) {
    let mut listener = listener.into();
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.draining() => break,
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
                let connection = Connection {
                    peer,
                    proxy: proxy.clone(),
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                    limits: limits.clone(),
                    drain: drain.clone(),
                };
                // The connection's future is spawned as it is, not inside another: each layer
                // of future keeps its own copy of what it was given, in every connection's task.
                match tls.clone() {
                    None => {
                        tokio::spawn(connection.serve(Accepted::Plain(stream)));
                    }
                    // Boxed: a task is as large as its largest state, and a TLS session would
                    // make every plain connection's task that large too.
                    Some(acceptor) => {
                        tokio::spawn(Box::pin(async move {
                            let handshake = tokio::time::timeout(
                                connection.limits.tls_handshake_timeout,
                                acceptor.accept(stream),
                            );
                            match handshake.await {
                                Ok(Ok(tls)) => connection.serve(Accepted::Tls(Box::new(tls))).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }));
                    }
                }
            }
            Handler::Tcp(upstream) => {
                let upstream = upstream.clone();
                let tls = tls.clone();
                let limits = limits.clone();
                let drain = drain.clone();
                tokio::spawn(async move {
                    let _drain = drain;
                    match tls {
                        None => tcp::pass_through(Accepted::Plain(stream), upstream).await,
                        // Boxed, as for HTTP: a TLS session would make every plain
                        // connection's task that large too.
                        Some(acceptor) => {
                            Box::pin(async move {
                                if let Ok(Ok(tls)) = tokio::time::timeout(
                                    limits.tls_handshake_timeout,
                                    acceptor.accept(stream),
                                )
                                .await
                                {
                                    tcp::pass_through(Accepted::Tls(Box::new(tls)), upstream).await;
                                }
                            })
                            .await
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    // Tells hyper's connections to finish; the drain waits for each by its watcher.
    graceful.shutdown().await;
}

/// One accepted HTTP connection and what serving it needs.
struct Connection {
    peer: SocketAddr,
    proxy: Arc<HttpProxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: Arc<Limits>,
    /// Held for as long as the connection lives: the drain waits for it.
    drain: drain::Watcher,
}

impl Connection {
    /// The fast path while requests are plain, the general path from the first that is not.
    ///
    /// An async block, not an async fn: an async fn's future keeps its arguments twice, once
    /// as given and once as the body's locals, and this future is every connection's task.
    #[allow(clippy::manual_async_fn)] // smaller futures: see the comment
    fn serve(mut self, mut stream: Accepted) -> impl Future<Output = ()> {
        async move {
            let fast = self.limits.http1_fast_path && self.proxy.upstream.wire == Wire::Http1;
            // The general path's connection (hyper's HTTP/1.1 and h2 state) is boxed, here and
            // at the hand-off: a task is as large as its largest state, and an idle fast-path
            // connection would otherwise carry that room unused. Both go through the hand-off's
            // type, so that hyper's server is built once into the binary.
            if !fast {
                let first_request = self.limits.header_read_timeout;
                return Box::pin(serve_http(
                    h1::Rewind::new(bytes::Bytes::new(), stream),
                    self.peer,
                    self.proxy,
                    &self.builder,
                    self.watcher,
                    first_request,
                ))
                .await;
            }
            let exit = h1::serve(
                &mut stream,
                self.peer,
                &self.proxy,
                &self.limits,
                &mut self.drain,
            )
            .await;
            if let h1::Exit::Handoff { read, remaining } = exit {
                Box::pin(serve_http(
                    h1::Rewind::new(read, stream),
                    self.peer,
                    self.proxy,
                    &self.builder,
                    self.watcher,
                    remaining,
                ))
                .await;
            }
        }
    }
}

#[allow(clippy::manual_async_fn)] // an async block: see `Connection::serve`
fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    proxy: Arc<HttpProxy>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    first_request: Duration,
) -> impl Future<Output = ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    async move {
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
}

/// Connections the kernel completes and holds before they are accepted: Envoy's default
/// (`tcp_backlog_size`), capped by `net.core.somaxconn`. The standard library's and tokio's
/// 128 overflow when a few hundred clients connect at once (a pool reconnecting after a
/// deploy): the kernel drops the SYNs past it, and each of those clients waits a second for
/// its retransmission.
pub(crate) const LISTEN_BACKLOG: i32 = 1024;

/// The most open files tracecar raises its own limit to: Linux's default `fs.nr_open`.
const MAX_OPEN_FILES: u64 = 1 << 20;

/// Raises the soft open-files limit to the hard one (at most [`MAX_OPEN_FILES`]), as Go
/// programs do at start: under the soft limit of 1,024 that some container runtimes and
/// login shells set, a sidecar would refuse connections past about a thousand. Returns the
/// limit before and after.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    let wanted = limit.maximum.unwrap_or(u64::MAX).min(MAX_OPEN_FILES);
    if soft >= wanted {
        return Ok((soft, soft));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        },
    )?;
    Ok((soft, wanted))
}

/// Descriptors the process's file table is sized for at start (fewer under a lower open-files
/// limit): 10,000 connections and their upstreams with room to spare, for 128 KiB of kernel
/// memory. The kernel grows the table at each power of two, and in a process with more than one
/// thread each growth waits for an RCU grace period with the table locked: every accept and
/// connect stops, here for up to 35 ms, at 256, 512, … descriptors. Past this size that still
/// happens, once per doubling.
pub const FILE_TABLE: u32 = 16_384;

/// Grows the file table to hold `wanted` descriptors (fewer under a lower open-files limit)
/// now, while the process is one thread and nothing waits on it, by placing a descriptor at
/// the top and closing it. Returns the size reserved, 0 when there was nothing to do (a
/// limit of a handful). The proxy reserves [`FILE_TABLE`]; the load bench, which opens as
/// many connections as the proxy holds, reserves its own.
pub fn reserve_file_table(wanted: u32) -> std::io::Result<u32> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    // At most `wanted`, so it fits.
    let size = limit.min(u64::from(wanted)) as u32;
    let Some(top) = size
        .checked_sub(1)
        .filter(|top| *top > 3)
        .and_then(|top| i32::try_from(top).ok())
    else {
        return Ok(0);
    };
    let (any, _other_end) = std::io::pipe()?;
    // Lands at `top` or above, unless the process already has that many open.
    let placed = rustix::io::fcntl_dupfd_cloexec(&any, top)?;
    drop(placed);
    Ok(size)
}

/// Binds a listener, with a clear error naming the address.
pub(crate) async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    let fail = |e: std::io::Error| anyhow::anyhow!("cannot listen on {address}: {e}");
    let mut last = None;
    for address in tokio::net::lookup_host(address).await.map_err(fail)? {
        match listen(address, false) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(fail(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })))
}

/// A listening socket on `address` with [`LISTEN_BACKLOG`] (`only_v6`: an IPv6 socket that
/// leaves IPv4 to another), address reuse on, as tokio's own bind sets it.
pub(crate) fn listen(address: SocketAddr, only_v6: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if only_v6 {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpStream;

    /// Clients that connect while the proxy has not accepted them yet complete their handshake
    /// and wait in the kernel's queue, well past the standard library's 128: a SYN the kernel
    /// drops instead costs its client a second, then three more.
    #[tokio::test]
    async fn three_hundred_clients_connect_before_any_is_accepted() {
        // The host caps every backlog at `net.core.somaxconn` (4,096 since Linux 5.4; 128
        // before): under a lower cap, only that many can wait.
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(300);
        let clients = cap.min(300);
        let listener = super::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut connecting = tokio::task::JoinSet::new();
        for _ in 0..clients {
            connecting.spawn(tokio::time::timeout(
                Duration::from_secs(5),
                TcpStream::connect(address),
            ));
        }
        let mut connected = 0;
        while let Some(result) = connecting.join_next().await {
            if matches!(result, Ok(Ok(Ok(_)))) {
                connected += 1;
            }
        }
        assert_eq!(connected, clients);
        drop(listener);
    }

    /// What `/proc/self/status` says the file table holds now.
    fn file_table() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn reserving_grows_the_file_table_to_16384_descriptors_or_the_limit() {
        let reserved = super::reserve_file_table(super::FILE_TABLE).unwrap();
        let (table, limit) = (
            file_table(),
            rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(u64::MAX),
        );
        assert_eq!(u64::from(reserved), limit.min(16_384));
        assert!(table >= u64::from(reserved), "FDSize {table}");
    }

    #[tokio::test]
    async fn an_address_that_cannot_be_bound_is_named_in_the_error() {
        let taken = super::bind("127.0.0.1:0").await.unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let error = super::bind(&address).await.unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cannot listen on {address}: ")),
            "{error}"
        );
    }
}
