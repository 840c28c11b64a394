//! Upstreams: where a listener forwards to. An inbound has one endpoint (the application); an
//! outbound has the service's endpoints, used round robin. An endpoint that refuses a
//! connection is skipped for a while and then tried again.
//!
//! Each endpoint has its own connection pool (HTTP/1.1 keep-alive or one multiplexed h2
//! connection) that always dials that endpoint: the request keeps the caller's authority, so
//! `Host`/`:authority` arrive unchanged.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How an upstream is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Http1,
    /// HTTP/2 with prior knowledge (h2c), or h2 over TLS.
    Http2,
}

/// Upstream connection settings.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// How long an endpoint that refused a connection is skipped.
    pub retry_after: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_endpoint: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            // Envoy's (and Kuma's) default connect timeout.
            connect_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(60),
            // Enough for steady keep-alive traffic; a burst of thousands of connections does
            // not leave thousands of idle upstream connections (and their buffers) behind.
            pool_max_idle_per_endpoint: 256,
        }
    }
}

/// TLS origination towards the endpoints.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: tokio_rustls::TlsConnector,
    /// SNI and the name the certificate must carry; `None` means the endpoint's host.
    pub server_name: Option<ServerName<'static>>,
}

/// The pooled connections of one endpoint.
pub type HttpClient = Arc<super::pool::Pool>;

/// One endpoint and how to reach it: a pooled HTTP client, or a bare connector for TCP.
pub struct Endpoint<C> {
    pub address: String,
    pub client: C,
    /// Milliseconds since `Upstream::epoch` before which the endpoint is skipped.
    down_until_ms: AtomicU64,
}

/// A set of endpoints used round robin.
pub struct Upstream<C = HttpClient> {
    pub wire: Wire,
    pub tls: bool,
    endpoints: Vec<Endpoint<C>>,
    next: AtomicUsize,
    epoch: Instant,
    retry_after: Duration,
}

/// A connector per endpoint address.
pub fn connectors(
    addresses: &[String],
    tls: Option<&UpstreamTls>,
    settings: &UpstreamSettings,
) -> anyhow::Result<Vec<(String, EndpointConnector)>> {
    addresses
        .iter()
        .map(|address| {
            let tls = match tls {
                None => None,
                Some(t) => {
                    let name =
                        match &t.server_name {
                            Some(name) => name.clone(),
                            None => ServerName::try_from(host_of(address).to_string()).map_err(
                                |_| anyhow::anyhow!("{address}: not a valid TLS server name"),
                            )?,
                        };
                    Some((t.connector.clone(), name))
                }
            };
            let connector = EndpointConnector {
                address: Arc::from(address.as_str()),
                tls,
                connect_timeout: settings.connect_timeout,
            };
            Ok((address.clone(), connector))
        })
        .collect()
}

impl Upstream<HttpClient> {
    pub fn http(
        addresses: &[String],
        wire: Wire,
        tls: Option<&UpstreamTls>,
        settings: &UpstreamSettings,
    ) -> anyhow::Result<Self> {
        let clients = connectors(addresses, tls, settings)?
            .into_iter()
            .map(|(address, c)| {
                let pool = super::pool::Pool::new(
                    c,
                    wire,
                    settings.pool_max_idle_per_endpoint,
                    settings.pool_idle_timeout,
                );
                (address, Arc::new(pool))
            })
            .collect();
        Ok(Upstream::new(clients, wire, tls.is_some(), settings))
    }
}

impl Upstream<EndpointConnector> {
    pub fn tcp(
        addresses: &[String],
        tls: Option<&UpstreamTls>,
        settings: &UpstreamSettings,
    ) -> anyhow::Result<Self> {
        let connectors = connectors(addresses, tls, settings)?;
        Ok(Upstream::new(
            connectors,
            Wire::Http1,
            tls.is_some(),
            settings,
        ))
    }
}

impl<C> Upstream<C> {
    pub fn new(
        clients: Vec<(String, C)>,
        wire: Wire,
        tls: bool,
        settings: &UpstreamSettings,
    ) -> Self {
        Upstream {
            wire,
            tls,
            endpoints: clients
                .into_iter()
                .map(|(address, client)| Endpoint {
                    address,
                    client,
                    down_until_ms: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            retry_after: settings.retry_after,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The endpoints to try for one request, in order: round robin from the next one,
    /// skipping those recently refused; if all were refused, all of them anyway (one may be
    /// back) so the request still gets its chance.
    pub fn plan(&self) -> impl Iterator<Item = &Endpoint<C>> {
        let n = self.endpoints.len();
        let start = if n > 1 {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        let now = self.now_ms();
        let rotation = (0..n).map(move |i| &self.endpoints[(start + i) % n]);
        let any_up = rotation
            .clone()
            .any(|e| e.down_until_ms.load(Ordering::Relaxed) <= now);
        rotation.filter(move |e| !any_up || e.down_until_ms.load(Ordering::Relaxed) <= now)
    }

    /// Records that `endpoint` refused a connection.
    pub fn mark_down(&self, endpoint: &Endpoint<C>) {
        let until = self.now_ms() + self.retry_after.as_millis() as u64;
        endpoint.down_until_ms.store(until, Ordering::Relaxed);
    }

    pub fn mark_up(&self, endpoint: &Endpoint<C>) {
        if endpoint.down_until_ms.load(Ordering::Relaxed) != 0 {
            endpoint.down_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

impl EndpointConnector {
    /// Opens a connection to the endpoint (TLS when configured).
    pub async fn connect(&self) -> io::Result<Stream> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*self.address))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timeout"))??;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }
}

/// `host` of `host:port` / `[v6]:port`.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Dials one fixed endpoint.
#[derive(Clone)]
pub struct EndpointConnector {
    address: Arc<str>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

/// A connection to an upstream, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
