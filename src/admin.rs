//! The admin server (README, Operations), apart from the data path: loopback by default.
//!
//! - `GET /ready`: 200 once listeners are bound and a policy is loaded, 503 while draining.
//! - `GET /metrics` (alias `/stats/prometheus`): Prometheus text.
//! - `GET /config_dump`: what applies now, the document `tracecar explain` prints.
//! - `POST /quitquitquit`: graceful shutdown, as SIGTERM.
//! - `GET /logging`: the log filter; `POST /logging?filter=…` (or the filter as the body)
//!   changes it at run time.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::policy::Effective;

/// Changes the log filter at run time.
pub trait LogControl: Send + Sync {
    fn current(&self) -> String;
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// What the admin server shows and controls.
pub struct AdminState {
    pub effective: ArcSwap<Effective>,
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    pub draining: AtomicBool,
    /// Notified by `/quitquitquit`.
    pub quit: Notify,
    pub log: Option<Box<dyn LogControl>>,
}

impl AdminState {
    pub fn new(
        effective: Effective,
        metrics: Arc<Metrics>,
        log: Option<Box<dyn LogControl>>,
    ) -> AdminState {
        AdminState {
            effective: ArcSwap::from_pointee(effective),
            metrics,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            quit: Notify::new(),
            log,
        }
    }
}

/// Binds the admin address; serves until `drain` says to stop.
pub(crate) async fn serve(
    address: &str,
    state: Arc<AdminState>,
    mut drain: crate::drain::Watcher,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address} (admin): {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = drain.draining() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let response = match (method, path.as_str()) {
        (Method::GET | Method::HEAD, "/ready") => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        (Method::GET | Method::HEAD, "/metrics" | "/stats/prometheus") => {
            let mut response = text(StatusCode::OK, state.metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (Method::GET | Method::HEAD, "/config_dump") => {
            let effective = state.effective.load();
            match serde_json::to_vec_pretty(&**effective) {
                Ok(json) => {
                    let mut response = text(StatusCode::OK, json);
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    response
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        (Method::POST, "/quitquitquit") => {
            state.quit.notify_one();
            text(StatusCode::OK, "OK\n")
        }
        (Method::GET, "/logging") => match &state.log {
            Some(log) => text(StatusCode::OK, format!("{}\n", log.current())),
            None => text(StatusCode::NOT_FOUND, "logging is not controllable here\n"),
        },
        (Method::POST, "/logging") => {
            let query_filter = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("filter="))
                    .map(|v| v.replace("%2C", ",").replace("%3D", "=").replace('+', " "))
            });
            let filter = match query_filter {
                Some(f) => f,
                None => match Limited::new(req.into_body(), 4096).collect().await {
                    Ok(body) => String::from_utf8_lossy(&body.to_bytes()).trim().to_string(),
                    Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "filter too long\n")),
                },
            };
            match &state.log {
                None => text(StatusCode::NOT_FOUND, "logging is not controllable here\n"),
                Some(_) if filter.is_empty() => text(
                    StatusCode::BAD_REQUEST,
                    "give ?filter=… or the filter as the body\n",
                ),
                Some(log) => match log.set(&filter) {
                    Ok(()) => text(StatusCode::OK, format!("{filter}\n")),
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("invalid filter: {e}\n")),
                },
            }
        }
        (
            _,
            "/ready" | "/metrics" | "/stats/prometheus" | "/config_dump" | "/quitquitquit"
            | "/logging",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready, /metrics, /config_dump, /logging, POST /quitquitquit\n",
        ),
    };
    Ok(response)
}
