//! Upstreams: where a listener forwards to. An inbound has one endpoint (the application); an
//! outbound has the service's endpoints, used round robin. An endpoint that refuses a
//! connection is skipped for a while and then tried again.
//!
//! Each endpoint has its own connection pool (HTTP/1.1 keep-alive or one multiplexed h2
//! connection) that always dials that endpoint: the request keeps the caller's authority, so
//! `Host`/`:authority` arrive unchanged.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::connect::{EndpointConnector, UpstreamTls, Wire, connectors};
use super::exchange::{Failure, SendError};
use super::limits::UpstreamSettings;
use super::pool::Pool;

/// The pooled connections of one endpoint.
pub(crate) type HttpClient = Arc<Pool>;

/// One endpoint and how to reach it: a pooled HTTP client, or a bare connector for TCP.
pub(crate) struct Endpoint<C> {
    pub(crate) address: String,
    pub(crate) client: C,
    /// Milliseconds since `Upstream::epoch` before which the endpoint is skipped.
    down_until_ms: AtomicU64,
}

/// A set of endpoints used round robin.
pub(crate) struct Upstream<C = HttpClient> {
    pub(crate) wire: Wire,
    pub(crate) tls: bool,
    endpoints: Vec<Endpoint<C>>,
    next: AtomicUsize,
    epoch: Instant,
    retry_after: Duration,
}

impl Upstream<HttpClient> {
    pub(crate) fn http(
        addresses: &[String],
        wire: Wire,
        tls: Option<&UpstreamTls>,
        settings: &UpstreamSettings,
    ) -> anyhow::Result<Self> {
        let clients = connectors(addresses, tls, settings)?
            .into_iter()
            .map(|(address, c)| {
                let pool = Pool::new(
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
    pub(crate) fn tcp(
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
    pub(crate) fn new(
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

    pub(crate) fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The endpoints to try for one request, in order: round robin from the next one,
    /// skipping those recently refused; if all were refused, all of them anyway (one may be
    /// back) so the request still gets its chance.
    pub(crate) fn plan(&self) -> impl Iterator<Item = &Endpoint<C>> {
        let n = self.endpoints.len();
        let start = if n > 1 {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        // A lone endpoint is tried whether it is down or not: no need to read the clock.
        let now = if n > 1 { self.now_ms() } else { 0 };
        let rotation = (0..n).map(move |i| &self.endpoints[(start + i) % n]);
        let any_up = rotation
            .clone()
            .any(|e| e.down_until_ms.load(Ordering::Relaxed) <= now);
        rotation.filter(move |e| !any_up || e.down_until_ms.load(Ordering::Relaxed) <= now)
    }

    /// Records that `endpoint` refused a connection.
    pub(crate) fn mark_down(&self, endpoint: &Endpoint<C>) {
        let until = self.now_ms() + self.retry_after.as_millis() as u64;
        endpoint.down_until_ms.store(until, Ordering::Relaxed);
    }

    pub(crate) fn mark_up(&self, endpoint: &Endpoint<C>) {
        if endpoint.down_until_ms.load(Ordering::Relaxed) != 0 {
            endpoint.down_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Trying the endpoints (both HTTP paths)
// ---------------------------------------------------------------------------------------------

/// One way of sending a request to one endpoint: each path speaks its own wire.
pub(crate) trait Attempt {
    type Sent;
    /// Sends to `endpoint` and waits for the response head.
    async fn send(&mut self, endpoint: &Endpoint<HttpClient>) -> Result<Self::Sent, SendError>;
}

/// Round robin over the endpoints: an endpoint that refuses the connection is marked down
/// and the request goes to the next one while it is still whole; any other failure ends the
/// exchange. `timer`, when given, limits each attempt to its duration: the caller sets it for
/// the first attempt, and it is reset for each further one, not allocated. Both HTTP paths
/// forward through this.
pub(crate) async fn forward<'u, A: Attempt>(
    upstream: &'u Upstream,
    mut timer: Option<(Duration, Pin<&mut Sleep>)>,
    attempt: &mut A,
) -> Result<(&'u Endpoint<HttpClient>, A::Sent), Failure> {
    if upstream.is_empty() {
        return Err(Failure::NO_UPSTREAM);
    }
    for (tried, endpoint) in upstream.plan().enumerate() {
        let result = match &mut timer {
            Some((limit, sleep)) => {
                if tried > 0 {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *limit);
                }
                tokio::select! {
                    biased;
                    r = attempt.send(endpoint) => r,
                    () = sleep.as_mut() => return Err(Failure::TIMEOUT),
                }
            }
            None => attempt.send(endpoint).await,
        };
        match result {
            Ok(sent) => {
                upstream.mark_up(endpoint);
                return Ok((endpoint, sent));
            }
            Err(SendError::Connect { error, again }) => {
                tracing::debug!(endpoint = %endpoint.address, %error, "upstream connect failed");
                upstream.mark_down(endpoint);
                if !again {
                    break;
                }
            }
            Err(SendError::Reset(error)) => {
                tracing::debug!(endpoint = %endpoint.address, %error, "upstream request failed");
                return Err(Failure::RESET);
            }
        }
    }
    Err(Failure::CONNECT_FAILED)
}
