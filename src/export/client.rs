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

/// Why a POST failed, and whether trying again may help.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub retryable: bool,
}

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
        let mut request = Request::post(uri.clone());
        for (name, value) in &payload.headers {
            request = request.header(name, value);
        }
        let request = request
            .header(header::CONTENT_LENGTH, payload.body.len())
            .body(Full::new(payload.body.clone()))
            .map_err(|e| Failure {
                message: format!("cannot build the request: {e}"),
                retryable: false,
            })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| Failure {
                message: chain(&e),
                retryable: true,
            })?;
            let status = response.status();
            // Read the answer to the end so the connection can be reused.
            let _ = response.into_body().collect().await;
            Ok::<StatusCode, Failure>(status)
        };
        let status = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Failure {
                message: format!("no answer within {timeout:?}"),
                retryable: true,
            })??;
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure {
                message: format!("the collector answered {status}"),
                retryable: status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
            })
        }
    }
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
