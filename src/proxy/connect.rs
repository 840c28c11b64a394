//! Reaching an endpoint: how it is spoken to, its settings, and one connection to it, plain
//! or TLS.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::limits::UpstreamSettings;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How an upstream is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Http1,
    /// HTTP/2 with prior knowledge (h2c), or h2 over TLS.
    Http2,
}

/// TLS origination towards the endpoints.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    pub(crate) connector: tokio_rustls::TlsConnector,
    /// SNI and the name the certificate must carry; `None` means the endpoint's host.
    pub(crate) server_name: Option<ServerName<'static>>,
}

/// A connector per endpoint address.
pub(crate) fn connectors(
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

impl EndpointConnector {
    /// Opens a connection to the endpoint (TLS when configured).
    pub(crate) async fn connect(&self) -> io::Result<Stream> {
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
pub(crate) struct EndpointConnector {
    address: Arc<str>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

/// A TCP connection, plain or TLS; `T` is the client's or the server's side of a session.
/// One type for every connection of a side, rather than a type parameter: each type the
/// data path is generic over gets its own copy of that code (hyper's server, the fast path),
/// which the binary, and the memory its code takes, carried for nothing.
pub(crate) enum Tcp<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// A connection to an upstream.
pub(crate) type Stream = Tcp<tokio_rustls::client::TlsStream<TcpStream>>;

/// A connection a listener accepted.
pub(crate) type Accepted = Tcp<tokio_rustls::server::TlsStream<TcpStream>>;

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Tcp<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tcp::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Tcp::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Tcp<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Tcp::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Tcp::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Tcp::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Tcp::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Tcp::Plain(s) => s.is_write_vectored(),
            Tcp::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tcp::Plain(s) => Pin::new(s).poll_flush(cx),
            Tcp::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tcp::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Tcp::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
