//! The data path: listeners, HTTP/1.1-h2-gRPC forwarding, TCP passthrough, TLS, upstream
//! pools. It knows nothing of Zipkin or Datadog: whatever watches requests plugs in as an
//! [`observe::Observer`].

pub(crate) mod connect;
mod exchange;
pub mod h1;
pub(crate) mod http;
pub mod limits;
pub(crate) mod listener;
pub mod observe;
pub(crate) mod pool;
pub(crate) mod request_body;
pub(crate) mod response_body;
pub(crate) mod tcp;
pub mod tls;
pub mod transparent;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::drain;
use crate::policy::effective::{Direction, Effective, Listener};
use crate::policy::resource::{Dataplane, Protocol};
use connect::{UpstreamTls, Wire};
use limits::{Limits, UpstreamSettings};
use listener::Handler;
pub use listener::{FILE_TABLE, raise_open_files_limit, reserve_file_table};
use observe::{ListenerInfo, Observer};
use upstream::Upstream;

/// Settings of the data path.
#[derive(Clone)]
pub struct ProxyConfig {
    pub limits: Limits,
    pub upstream: UpstreamSettings,
    /// Time allowed for an upstream's response head on non-streaming requests.
    pub request_timeout: Option<Duration>,
    /// Where request metrics go; `None` records none.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            limits: Limits::default(),
            upstream: UpstreamSettings::default(),
            request_timeout: Some(limits::REQUEST_TIMEOUT),
            metrics: None,
        }
    }
}

/// The running listeners.
pub struct Running {
    /// Bound addresses, in the order of the effective config's listeners.
    pub addresses: Vec<SocketAddr>,
    /// Every listener and every connection holds one of its watchers.
    drain: drain::Trigger,
}

impl Running {
    /// Stops accepting and waits up to `deadline` for in-flight requests and streams. Returns
    /// whether everything finished in time.
    pub async fn drain(self, deadline: Duration) -> bool {
        self.drain.drain(deadline).await
    }
}

/// Binds every listener of the effective config and starts serving.
pub async fn start(
    dataplane: &Dataplane,
    effective: &Effective,
    observer: Arc<dyn Observer>,
    config: &ProxyConfig,
) -> anyhow::Result<Running> {
    let base = dataplane
        .meta
        .source
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let networking = dataplane.spec.networking();
    let limits = Arc::new(config.limits.clone());
    let builder = Arc::new(listener::server_builder(&config.limits));
    let (trigger, watcher) = drain::channel();
    let mut addresses = Vec::new();
    let mut inbounds = networking.inbound.iter();
    let mut outbounds = networking.outbound.iter();
    let mut routes = transparent::Routes::default();
    for l in &effective.listeners {
        let (server_tls, client_tls) = match l.direction {
            Direction::Inbound => {
                let tls = inbounds.next().and_then(|i| i.tls.as_ref());
                let server = match tls {
                    Some(t) => Some(tls::server_config(
                        &resolve(&base, &t.cert_file),
                        &resolve(&base, &t.key_file),
                        l.protocol != Protocol::Tcp && l.protocol != Protocol::Kafka,
                    )?),
                    None => None,
                };
                (server, None)
            }
            Direction::Outbound => {
                let tls = outbounds.next().and_then(|o| o.tls.as_ref());
                let client = match tls {
                    Some(t) => {
                        let alpn = match wire_of(l.protocol) {
                            Some(Wire::Http2) => Some(tls::ALPN_H2),
                            Some(Wire::Http1) => Some(tls::ALPN_HTTP11),
                            None => None,
                        };
                        let config = tls::client_config(&resolve(&base, &t.ca_file), alpn)?;
                        let server_name = if t.server_name.is_empty() {
                            None
                        } else {
                            Some(
                                rustls::pki_types::ServerName::try_from(t.server_name.clone())
                                    .map_err(|_| {
                                        anyhow::anyhow!(
                                            "tls.serverName \"{}\" is not a valid name",
                                            t.server_name
                                        )
                                    })?,
                            )
                        };
                        Some(UpstreamTls {
                            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
                            server_name,
                        })
                    }
                    None => None,
                };
                (None, client)
            }
        };
        let endpoints = upstream_addresses(l);
        let handler = match wire_of(l.protocol) {
            Some(wire) => Handler::Http(
                Arc::new(http::HttpProxy {
                    info: Arc::new(ListenerInfo {
                        direction: l.direction,
                        protocol: l.protocol,
                        address: Arc::from(l.address.as_str()),
                        local_service: Arc::from(effective.dataplane.service.as_str()),
                        service: Arc::from(l.service.as_str()),
                        upstream_cluster: Arc::from(upstream_cluster(l)),
                        tls: server_tls.is_some(),
                    }),
                    upstream: Upstream::http(
                        &endpoints,
                        wire,
                        client_tls.as_ref(),
                        &config.upstream,
                    )?,
                    observer: observer.clone(),
                    request_timeout: config.request_timeout,
                    stats: config.metrics.as_ref().map(|m| {
                        Arc::new(crate::metrics::ListenerStats::new(
                            m,
                            match l.direction {
                                Direction::Inbound => "inbound",
                                Direction::Outbound => "outbound",
                            },
                            &l.service,
                            l.protocol.as_str(),
                        ))
                    }),
                }),
                builder.clone(),
            ),
            None => Handler::Tcp(Arc::new(Upstream::tcp(
                &endpoints,
                client_tls.as_ref(),
                &config.upstream,
            )?)),
        };
        let socket = match l.is_virtual {
            true => routes.add(l)?,
            false => listener::bind(&l.address).await?.into(),
        };
        addresses.push(socket.local_addr()?);
        let acceptor = server_tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        tokio::spawn(listener::serve(
            socket,
            acceptor,
            handler,
            limits.clone(),
            watcher.clone(),
        ));
        tracing::info!(
            direction = ?l.direction,
            address = %l.address,
            protocol = %l.protocol,
            upstream = %l.upstream,
            traced = l.traced,
            "listening"
        );
    }
    if let Some(ports) = effective.transparent_proxying {
        transparent::start(ports, routes, watcher.clone())?;
    }
    Ok(Running {
        addresses,
        drain: trigger,
    })
}

/// HTTP listeners speak HTTP/1.1 upstream for `http`, HTTP/2 for `http2` and `grpc`.
fn wire_of(protocol: Protocol) -> Option<Wire> {
    match protocol {
        Protocol::Http => Some(Wire::Http1),
        Protocol::Http2 | Protocol::Grpc => Some(Wire::Http2),
        Protocol::Tcp | Protocol::Kafka => None,
    }
}

fn upstream_addresses(l: &Listener) -> Vec<String> {
    match &l.endpoints {
        Some(endpoints) => endpoints.clone(),
        None => vec![l.upstream.clone()],
    }
}

/// Envoy's cluster naming as Kuma sets it: `localhost:<port>` for an inbound, the service for
/// an outbound.
fn upstream_cluster(l: &Listener) -> String {
    match l.direction {
        Direction::Inbound => {
            let port = l.upstream.rsplit_once(':').map_or("", |(_, p)| p);
            format!("localhost:{port}")
        }
        Direction::Outbound => l.service.clone(),
    }
}

/// TLS files are read relative to the Dataplane file.
fn resolve(base: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}
