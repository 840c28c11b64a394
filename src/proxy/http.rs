//! The HTTP request path, as named phases (in order):
//!
//! 1. `check`        — refuse what cannot be forwarded (400).
//! 2. `observe`      — the observer (tracing, metrics) sees the request head and may rewrite it.
//! 3. `rewrite`      — hop-by-hop headers out, `x-forwarded-proto` in, URI and version for the
//!    upstream's wire.
//! 4. `forward`      — round robin over the endpoints; one that refuses the connection is
//!    skipped and the request goes to the next while its body is unread.
//! 5. `respond`      — hop-by-hop headers out of the response; a failure becomes a local reply
//!    (503 `UF`/`UH`/`UC`, 504 `UT`; gRPC callers get a trailers-only gRPC status instead).
//! 6. `stream`       — the body streams back; its end (or an abort) ends the exchange.
//!
//! HTTP/1.1 upgrades (WebSocket) are tunnelled after phase 5.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::connect::Wire;
use super::exchange::{self, Failure, SendError, connection_tokens, remove_hop_by_hop};
use super::observe::{Forwarded, ListenerInfo, Observer, is_grpc};
use super::pool::Lease;
use super::request_body::RequestBody;
use super::response_body::{ResponseBody, ResponseInner, StatsGuard, Tracker};
use super::upstream::{self, Attempt, Endpoint, HttpClient, Upstream};

/// Per-listener state of the HTTP path.
pub(crate) struct HttpProxy {
    pub(crate) info: Arc<ListenerInfo>,
    pub(crate) upstream: Upstream,
    pub(crate) observer: Arc<dyn Observer>,
    /// Time allowed for the upstream's response head on non-streaming requests (gRPC and
    /// upgrades are streams: no limit).
    pub(crate) request_timeout: Option<Duration>,
    /// Request metrics of this listener.
    pub(crate) stats: Option<Arc<crate::metrics::ListenerStats>>,
}

impl HttpProxy {
    /// Serves one request. Never fails: every failure is a response.
    pub(crate) async fn serve(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let started = std::time::Instant::now();
        let grpc = is_grpc(req.headers());
        // Phase 1: check.
        if let Err(reason) = check(&req) {
            return Ok(self.fail(
                None,
                self.stats_guard(started, 0),
                Failure::bad_request(reason),
                grpc,
            ));
        }
        // A gRPC caller's deadline, enforced here as Envoy does.
        let deadline = if grpc {
            exchange::grpc_timeout(req.headers())
        } else {
            None
        };
        let downstream_version = req.version();
        let upgrade = wants_upgrade(&req);
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut head, body) = req.into_parts();
        // Phase 2: observe.
        let exchange =
            self.observer
                .on_request(&self.info, peer, &mut Forwarded::new(&mut head), started);
        let request_bytes = exchange.as_ref().map(|_| Arc::new(AtomicU64::new(0)));
        let mut tracker = exchange.map(|e| Box::new(Tracker::new(e, request_bytes.clone())));
        // Counted from here on, whatever happens: a caller that leaves before the response
        // drops this future, and the guard with it, and is counted with status 0.
        let mut stats = self.stats_guard(started, 0);
        if let (Some(t), Some(timeout)) = (&mut tracker, deadline) {
            t.deadline_from = started
                .checked_add(timeout)
                .and_then(|d| d.checked_sub(exchange::deadline_grace(timeout)));
        }

        // Phase 3: rewrite.
        let unframed_body = !http_body::Body::is_end_stream(&body)
            && !head.headers.contains_key(header::CONTENT_LENGTH);
        if let Err(reason) = self.rewrite(&mut head, upgrade, unframed_body) {
            return Ok(self.fail(tracker, stats, Failure::bad_request(reason), grpc));
        }

        // Phase 4: forward. gRPC and upgrades are streams: no timeout but the caller's deadline.
        let timeout = if grpc || upgrade {
            deadline
        } else {
            self.request_timeout
        };
        let result = self.forward(head, body, request_bytes, timeout).await;

        // Phase 5: respond.
        let (response, lease) = match result {
            Ok(sent) => sent,
            Err(failure) => return Ok(self.fail(tracker, stats, failure, grpc)),
        };
        let mut response = response;
        let upstream_upgrade = (response.status() == StatusCode::SWITCHING_PROTOCOLS && upgrade)
            .then(|| hyper::upgrade::on(&mut response));
        let (mut parts, upstream_body) = response.into_parts();
        // The caller gets its own protocol back, whatever the upstream spoke.
        parts.version = downstream_version;
        if parts.status != StatusCode::SWITCHING_PROTOCOLS {
            remove_hop_by_hop(&mut parts.headers);
        }
        if let Some(t) = &mut tracker {
            t.status = parts.status.as_u16();
            // A trailers-only answer carries its gRPC status in the head.
            t.note_deadline_answer(&parts.headers);
            if let Some(e) = t.exchange_mut() {
                e.on_response(parts.status, &parts.headers);
            }
        }
        if let (Some(down), Some(up)) = (downstream_upgrade, upstream_upgrade) {
            tokio::spawn(tunnel(down, up));
        }
        // Phase 6: stream.
        if let Some(stats) = &mut stats {
            stats.status = parts.status.as_u16();
        }
        // An upgraded connection belongs to the tunnel now, not to the pool.
        let lease = lease.filter(|_| parts.status != StatusCode::SWITCHING_PROTOCOLS);
        Ok(Response::from_parts(
            parts,
            ResponseBody::new(ResponseInner::Upstream(upstream_body), tracker, stats)
                .with_lease(lease)
                .with_deadline(deadline.and_then(|d| started.checked_add(d))),
        ))
    }

    /// `x-forwarded-proto` as the caller spoke to us, unless it came set.
    pub(super) fn set_forwarded_proto(&self, head: &mut Forwarded<'_>) {
        if !head.parts.headers.contains_key(X_FORWARDED_PROTO) {
            let proto = if self.info.tls { "https" } else { "http" };
            head.fields(true)
                .set_value(&X_FORWARDED_PROTO, &HeaderValue::from_static(proto));
        }
    }

    /// `unframed_body`: a body whose length is not known up front (chunked, or h2 without
    /// content-length).
    fn rewrite(
        &self,
        head: &mut http::request::Parts,
        upgrade: bool,
        unframed_body: bool,
    ) -> Result<(), &'static str> {
        let upgrade_value = if upgrade {
            head.headers.get(header::UPGRADE).cloned()
        } else {
            None
        };
        remove_hop_by_hop(&mut head.headers);
        if let Some(value) = upgrade_value {
            head.headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            head.headers.insert(header::UPGRADE, value);
        }
        self.set_forwarded_proto(&mut Forwarded::new(head));
        // The authority the caller asked for: `:authority` (h2) or Host (HTTP/1.1).
        let authority = match head.uri.authority() {
            Some(a) => a.clone(),
            None => {
                let host = head
                    .headers
                    .get(header::HOST)
                    .ok_or("missing Host header")?;
                http::uri::Authority::try_from(host.as_bytes())
                    .map_err(|_| "invalid Host header")?
            }
        };
        let path = head
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        match self.upstream.wire {
            Wire::Http1 => {
                // Origin form; Host names the authority.
                head.uri = Uri::from(path);
                head.version = Version::HTTP_11;
                if !head.headers.contains_key(header::HOST) {
                    let host = HeaderValue::from_str(authority.as_str())
                        .map_err(|_| "invalid authority")?;
                    head.headers.insert(header::HOST, host);
                }
                // Said explicitly: for GET, HEAD and the like, hyper would otherwise send an
                // unframed body as no body at all.
                if unframed_body {
                    head.headers.insert(
                        header::TRANSFER_ENCODING,
                        HeaderValue::from_static("chunked"),
                    );
                }
            }
            Wire::Http2 => {
                head.uri = Uri::builder()
                    .scheme(if self.upstream.tls { "https" } else { "http" })
                    .authority(authority)
                    .path_and_query(path)
                    .build()
                    .map_err(|_| "invalid request target")?;
                head.version = Version::HTTP_2;
                // `:authority` carries it; a duplicate Host confuses some h2 servers.
                head.headers.remove(header::HOST);
            }
        }
        Ok(())
    }

    async fn forward(
        &self,
        head: http::request::Parts,
        body: Incoming,
        request_bytes: Option<Arc<AtomicU64>>,
        timeout: Option<Duration>,
    ) -> Result<(Response<Incoming>, Option<Lease>), Failure> {
        let mut sleep = std::pin::pin!(timeout.map(tokio::time::sleep));
        let timer = timeout.zip(sleep.as_mut().as_pin_mut());
        let mut attempt = HyperAttempt {
            pending: Some((head, body)),
            request_bytes,
            single: self.upstream.len() == 1,
        };
        let sent = upstream::forward(&self.upstream, timer, &mut attempt).await;
        sent.map(|(_, sent)| sent)
    }

    /// A local reply, observed like any response.
    fn fail(
        &self,
        mut tracker: Option<Box<Tracker>>,
        mut stats: Option<StatsGuard>,
        failure: Failure,
        grpc: bool,
    ) -> Response<ResponseBody> {
        let (response, text) = failure.local_reply(grpc);
        if let Some(t) = &mut tracker {
            t.status = response.status().as_u16();
            t.flags.insert(failure.flags);
            if let Some(e) = t.exchange_mut() {
                e.on_response(response.status(), response.headers());
            }
        }
        if let Some(stats) = &mut stats {
            stats.status = response.status().as_u16();
        }
        response.map(|()| ResponseBody::new(ResponseInner::Local(text), tracker, stats))
    }

    pub(super) fn stats_guard(
        &self,
        started: std::time::Instant,
        status: u16,
    ) -> Option<StatsGuard> {
        self.stats.as_ref().map(|stats| StatsGuard {
            stats: stats.clone(),
            started,
            status,
            ended: None,
        })
    }
}

/// The general path's request, and what it takes to send it to the next endpoint.
struct HyperAttempt {
    /// The request while it is still whole.
    pending: Option<(http::request::Parts, Incoming)>,
    request_bytes: Option<Arc<AtomicU64>>,
    /// One endpoint: nowhere else to go, so no bookkeeping for a retry.
    single: bool,
}

impl Attempt for HyperAttempt {
    type Sent = (Response<Incoming>, Option<Lease>);

    async fn send(&mut self, endpoint: &Endpoint<HttpClient>) -> Result<Self::Sent, SendError> {
        let Some((head, body)) = self.pending.take() else {
            return Err(SendError::Connect {
                error: std::io::Error::other("request body already read"),
                again: false,
            });
        };
        let counter = self.request_bytes.clone();
        let (request, reclaim) = if self.single {
            let body = RequestBody::direct(body, counter);
            (Request::from_parts(head, body), None)
        } else {
            let (body, reclaim) = RequestBody::reclaimable(body, counter);
            let copy = super::pool::copy_head(&head.method, &head.uri, head.version, &head.headers);
            (Request::from_parts(head, body), Some((copy, reclaim)))
        };
        match endpoint.client.send(request).await {
            Err(SendError::Connect { error, .. }) => {
                // The next endpoint gets the request only if its body was never read.
                self.pending = reclaim.and_then(|(copy, reclaim)| Some((copy, reclaim.take()?)));
                let again = self.pending.is_some();
                Err(SendError::Connect { error, again })
            }
            other => other,
        }
    }
}

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn check<B>(req: &Request<B>) -> Result<(), &'static str> {
    // RFC 9110 §4.2.4: userinfo in an http(s) authority is an error, never forwarded.
    let authority = match req.uri().authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => req.headers().get(header::HOST).map(HeaderValue::as_bytes),
    };
    if authority.is_some_and(|a| a.contains(&b'@')) {
        return Err("userinfo in the authority");
    }
    if req.method() == Method::CONNECT {
        return Err("CONNECT is not supported");
    }
    if req.version() == Version::HTTP_2 {
        if req.uri().authority().is_none() && !req.headers().contains_key(header::HOST) {
            return Err("missing :authority");
        }
    } else if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err("more than one Host header");
    }
    Ok(())
}

fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")))
}

/// Copies bytes both ways between the two upgraded connections until either side closes.
async fn tunnel(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::join!(downstream, upstream) {
        (Ok(d), Ok(u)) => (d, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut down = hyper_util::rt::TokioIo::new(down);
    let mut up = hyper_util::rt::TokioIo::new(up);
    // No copy buffers held while the tunnel is quiet (WebSockets mostly are): see `tcp`.
    if let Err(e) = super::tcp::copy_both_ways(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}
