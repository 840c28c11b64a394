//! OpenTelemetry (OTLP) export for MeshTrace's `openTelemetry` backend: OTLP/gRPC
//! (`TraceService/Export`, h2c to `host:port`) or OTLP/HTTP protobuf
//! (`POST http://host:port<path>/v1/traces`). Messages from `opentelemetry-proto`; the same
//! queue, batching, drop counters and drain as every backend, OTLP's own retry rules, and
//! partial success counted as `rejected`.
//!
//! - `encoding`: spans → `ExportTraceServiceRequest` (the mapping the README's Export section states).
//! - `wire`: the same request written straight to bytes (what the exporter sends).
//! - `transport`: the two ways a payload travels, and which failures are retried.
//! - here: the backend's configuration → an exporter target.

pub mod encoding;
pub mod transport;
pub mod wire;

pub use encoding::Otlp;
pub use transport::{OtlpGrpc, OtlpHttp};

use super::client::ExportClient;
use super::{Target, redact_userinfo};
use crate::policy::effective::{OpenTelemetryBackend, OtlpProtocol};

/// OTLP/gRPC's well-known port, used when the endpoint names none.
pub const DEFAULT_GRPC_PORT: u16 = 4317;
/// OTLP/HTTP's well-known port, used when the endpoint names none.
pub const DEFAULT_HTTP_PORT: u16 = 4318;

/// Where the backend's spans go: the gRPC origin or the HTTP url.
pub fn url(conf: &OpenTelemetryBackend) -> String {
    let endpoint = conf.endpoint.trim();
    let default_port = match conf.protocol {
        OtlpProtocol::Grpc => DEFAULT_GRPC_PORT,
        OtlpProtocol::Http => DEFAULT_HTTP_PORT,
    };
    let authority = if has_port(endpoint) {
        endpoint.to_string()
    } else if endpoint.contains(':') && !endpoint.starts_with('[') {
        format!("[{endpoint}]:{default_port}")
    } else {
        format!("{endpoint}:{default_port}")
    };
    match conf.protocol {
        OtlpProtocol::Grpc => format!("http://{authority}"),
        OtlpProtocol::Http => {
            let prefix = conf.path.as_deref().unwrap_or("").trim_end_matches('/');
            let slash = if prefix.is_empty() || prefix.starts_with('/') {
                ""
            } else {
                "/"
            };
            format!("http://{authority}{slash}{prefix}/v1/traces")
        }
    }
}

/// `host:port` or `[v6]:port`.
fn has_port(endpoint: &str) -> bool {
    match endpoint.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}

/// The exporter target of an `openTelemetry` backend named `name`.
pub fn target(
    name: &str,
    conf: &OpenTelemetryBackend,
    client: &ExportClient,
) -> anyhow::Result<Target> {
    let url = url(conf);
    let uri: http::Uri = url.parse().map_err(|e| {
        anyhow::anyhow!(
            "backend \"{name}\": invalid OpenTelemetry endpoint {}: {e}",
            redact_userinfo(&url)
        )
    })?;
    if uri.host().is_none_or(str::is_empty) {
        anyhow::bail!("backend \"{name}\": OpenTelemetry endpoint {url} names no host");
    }
    let transport: Box<dyn super::Transport> = match conf.protocol {
        OtlpProtocol::Grpc => Box::new(OtlpGrpc::new(uri)),
        OtlpProtocol::Http => Box::new(OtlpHttp {
            uri,
            client: client.clone(),
        }),
    };
    Ok(Target {
        name: name.to_string(),
        encoder: Box::new(Otlp::new()),
        transport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(endpoint: &str, protocol: OtlpProtocol, path: Option<&str>) -> OpenTelemetryBackend {
        OpenTelemetryBackend {
            endpoint: endpoint.to_string(),
            protocol,
            path: path.map(str::to_string),
        }
    }

    #[test]
    fn grpc_goes_to_the_endpoint_with_4317_by_default() {
        assert_eq!(
            url(&conf("otel:4317", OtlpProtocol::Grpc, None)),
            "http://otel:4317"
        );
        assert_eq!(
            url(&conf("otel", OtlpProtocol::Grpc, None)),
            "http://otel:4317"
        );
        assert_eq!(
            url(&conf("::1", OtlpProtocol::Grpc, None)),
            "http://[::1]:4317"
        );
        assert_eq!(
            url(&conf("[::1]:5000", OtlpProtocol::Grpc, None)),
            "http://[::1]:5000"
        );
    }

    #[test]
    fn http_appends_v1_traces_to_the_path_prefix() {
        assert_eq!(
            url(&conf("otel:4318", OtlpProtocol::Http, None)),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            url(&conf("otel:4318", OtlpProtocol::Http, Some("/otlp/"))),
            "http://otel:4318/otlp/v1/traces"
        );
        assert_eq!(
            url(&conf("otel", OtlpProtocol::Http, Some("otlp"))),
            "http://otel:4318/otlp/v1/traces"
        );
    }

    #[test]
    fn an_endpoint_that_is_no_authority_is_a_clear_error() {
        let error = target(
            "otel",
            &conf("not a host", OtlpProtocol::Grpc, None),
            &ExportClient::new(),
        )
        .err()
        .expect("an error");
        assert!(error.to_string().contains("backend \"otel\""), "{error}");
    }
}
