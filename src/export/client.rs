//! The HTTP client exporters POST with: pooled, http or https (rustls with ring, Mozilla's
//! roots), bounded in time.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::Payload;

#[derive(Clone)]
pub struct ExportClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Why a send failed, and whether trying again may help.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub retryable: bool,
    /// How long the collector asked us to wait before trying again (`Retry-After`, gRPC
    /// `RetryInfo`); `None` leaves the backoff to the exporter.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(message: impl Into<String>, retryable: bool) -> Failure {
        Failure {
            message: message.into(),
            retryable,
            retry_after: None,
        }
    }
}

/// A collector's answer to a POST: its status, `Retry-After` and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// The most of an answer's body that is kept (an OTLP response is a few bytes; anything
/// longer is an error page nobody reads).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl Default for ExportClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ExportClient {
    pub fn new() -> ExportClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth()
        });
        let connector = match tls {
            Ok(config) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
            // The ring provider always supports the default versions; keep plain http working
            // even if that ever changes.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        ExportClient { client }
    }

    /// POSTs a payload; 2xx is success. Connect errors, timeouts, 429 and 5xx are retryable.
    pub async fn post(
        &self,
        uri: &http::Uri,
        payload: &Payload,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let answer = self.exchange(uri, payload, timeout).await?;
        let status = answer.status;
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::new(
                format!("the collector answered {status}"),
                status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
            ))
        }
    }

    /// POSTs a payload and returns the collector's answer, whatever its status. Only
    /// connect errors and timeouts are failures here (retryable); what a status means is
    /// the caller's rule.
    pub async fn exchange(
        &self,
        uri: &http::Uri,
        payload: &Payload,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let mut request = Request::post(uri.clone());
        for (name, value) in &payload.headers {
            request = request.header(name, value);
        }
        let request = request
            .header(header::CONTENT_LENGTH, payload.body.len())
            .body(Full::new(payload.body.clone()))
            .map_err(|e| Failure::new(format!("cannot build the request: {e}"), false))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::new(chain(&e), true))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            // Read the answer to the end so the connection can be reused.
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<Answer, Failure>(Answer {
                status,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Failure::new(format!("no answer within {timeout:?}"), true))?
    }
}

/// `Retry-After` as delay-seconds. The HTTP-date form is not followed (collectors send
/// seconds); it leaves the backoff to the exporter.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An error with its causes, `a: b: c`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
