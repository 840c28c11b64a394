//! How OTLP payloads travel: `POST <url>/v1/traces` with our hyper client, or
//! `TraceService/Export` over h2c with tonic. Both send the encoded `ExportTraceServiceRequest`
//! as it is, read partial success from the answer, and follow OTLP's retry rules.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::StatusCode;
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use crate::export::client::{ExportClient, Failure};
use crate::export::{Delivered, Payload, SendFuture, Transport};

/// The gRPC method every OTLP receiver serves.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// OTLP/HTTP protobuf to a `…/v1/traces` url.
pub struct OtlpHttp {
    pub uri: http::Uri,
    pub client: ExportClient,
}

impl Transport for OtlpHttp {
    fn send<'a>(&'a self, payload: &'a Payload, timeout: Duration) -> SendFuture<'a> {
        Box::pin(async move {
            let answer = self.client.exchange(&self.uri, payload, timeout).await?;
            if answer.status.is_success() {
                return Ok(delivered(&answer.body));
            }
            // OTLP/HTTP: only these are transient; every other status is final.
            let retryable = matches!(
                answer.status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            );
            Err(Failure {
                message: format!("the collector answered {}", answer.status),
                retryable,
                retry_after: answer.retry_after.filter(|_| retryable),
            })
        })
    }

    fn destination(&self) -> String {
        crate::export::redact_userinfo(&self.uri.to_string())
    }
}

/// Partial success from a 2xx body; a body that is empty or not an OTLP response is full
/// success (the status said so).
fn delivered(body: &[u8]) -> Delivered {
    let rejected = ExportTraceServiceResponse::decode(body)
        .ok()
        .and_then(|r| r.partial_success)
        .map_or(0, |p| p.rejected_spans.max(0) as usize);
    Delivered { rejected }
}

/// OTLP/gRPC over h2c to `http://host:port`. The channel connects on first use (and
/// reconnects by itself), inside the exporter's worker.
pub struct OtlpGrpc {
    pub origin: http::Uri,
    channel: OnceLock<Channel>,
}

impl OtlpGrpc {
    pub fn new(origin: http::Uri) -> OtlpGrpc {
        OtlpGrpc {
            origin,
            channel: OnceLock::new(),
        }
    }

    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| {
                Endpoint::from(self.origin.clone())
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .connect_lazy()
            })
            .clone()
    }
}

impl Transport for OtlpGrpc {
    fn send<'a>(&'a self, payload: &'a Payload, timeout: Duration) -> SendFuture<'a> {
        Box::pin(async move {
            let mut grpc = tonic::client::Grpc::new(self.channel());
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let mut request = tonic::Request::new(payload.body.clone());
                request.set_timeout(timeout);
                grpc.unary(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
                    .await
            };
            let response = tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| Failure::new(format!("no answer within {timeout:?}"), true))?
                .map_err(|status| grpc_failure(&status))?;
            let rejected = response
                .into_inner()
                .partial_success
                .map_or(0, |p| p.rejected_spans.max(0) as usize);
            Ok(Delivered { rejected })
        })
    }

    fn destination(&self) -> String {
        self.origin.to_string()
    }
}

/// OTLP/gRPC's retry rules: these codes are transient, `RESOURCE_EXHAUSTED` only when the
/// server says when to come back (RetryInfo); a RetryInfo delay is honoured.
pub fn grpc_failure(status: &tonic::Status) -> Failure {
    let retry_after = retry_delay(status.details());
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_after.is_some(),
        _ => false,
    };
    let message = if status.message().is_empty() {
        format!("the collector answered {:?}", status.code())
    } else {
        format!(
            "the collector answered {:?}: {}",
            status.code(),
            status.message()
        )
    };
    Failure {
        message,
        retryable,
        retry_after: retry_after.filter(|_| retryable),
    }
}

/// `google.rpc.Status` as `grpc-status-details-bin` carries it: only what the retry rule reads.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The RetryInfo delay in status details, if there is one (a RetryInfo without a delay
/// means "retry", with no wait of its own).
fn retry_delay(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|a| a.type_url == RETRY_INFO_TYPE)?;
    let info = RetryInfo::decode(any.value.as_slice()).ok()?;
    Some(info.retry_delay.map_or(Duration::ZERO, |d| {
        Duration::new(
            d.seconds.max(0) as u64,
            d.nanos.clamp(0, 999_999_999) as u32,
        )
    }))
}

/// Sends the already encoded request as the message and decodes the answer.
struct RawCodec;

struct RawEncoder;

struct ResponseDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("an invalid export response: {e}")))
    }
}
