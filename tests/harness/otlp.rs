//! An OTLP receiver in the test process: `opentelemetry-proto`'s own tonic `TraceService`
//! server for OTLP/gRPC (h2c), and `POST /v1/traces` for OTLP/HTTP protobuf, on two loopback
//! ports sharing one store. Replies follow a script (then accept), so tests can make the
//! collector refuse, fail, ask for a later retry or accept only part of a batch.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

use tracecar::export::otlp::transport::{
    ProtoAny, ProtoDuration, RETRY_INFO_TYPE, RetryInfo, RpcStatus,
};
use tracecar::policy::effective::{
    Backend, BackendConf, BackendKind, OpenTelemetryBackend, OtlpProtocol,
};

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Success; `rejected` spans reported as refused (partial success) when above 0.
    Accept { rejected: i64 },
    /// gRPC: this status, with a RetryInfo delay when given. HTTP: 503 (see `Http`).
    Grpc {
        code: tonic::Code,
        retry_delay: Option<Duration>,
    },
    /// HTTP: this status, with `Retry-After` seconds when given. gRPC: UNAVAILABLE.
    Http {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Waits this long, then accepts.
    Slow(Duration),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub transport: &'static str,
    pub path: String,
    pub content_type: String,
    pub request: ExportTraceServiceRequest,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Requests answered, refusals included.
    answered: usize,
    script: VecDeque<Reply>,
    /// Answered once the script is used up.
    otherwise: Option<Reply>,
}

#[derive(Clone)]
pub struct Receiver {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Accepts everything.
    pub async fn start() -> Receiver {
        Receiver::scripted(Vec::new(), None).await
    }

    /// Answers `script` in order, then `otherwise` (accept when `None`).
    pub async fn scripted(script: Vec<Reply>, otherwise: Option<Reply>) -> Receiver {
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            otherwise,
            ..State::default()
        }));
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let receiver = Receiver {
            grpc: grpc_listener.local_addr().expect("address"),
            http: http_listener.local_addr().expect("address"),
            state,
        };
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = grpc_listener.accept().await {
                let service = hyper_util::service::TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let http = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = http_listener.accept().await {
                let http = http.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let http = http.clone();
                        async move { Ok::<_, Infallible>(http.serve_http(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    /// An `openTelemetry` backend named `name` pointing at this receiver.
    pub fn backend(&self, name: &str, protocol: OtlpProtocol) -> Backend {
        backend(
            name,
            match protocol {
                OtlpProtocol::Grpc => self.grpc,
                OtlpProtocol::Http => self.http,
            },
            protocol,
        )
    }

    fn next_reply(&self) -> Reply {
        let Ok(mut state) = self.state.lock() else {
            return Reply::Accept { rejected: 0 };
        };
        state.answered += 1;
        state
            .script
            .pop_front()
            .or_else(|| state.otherwise.clone())
            .unwrap_or(Reply::Accept { rejected: 0 })
    }

    fn store(&self, received: Received) {
        if let Ok(mut state) = self.state.lock() {
            state.received.push(received);
        }
    }

    async fn serve_http(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let reply = self.next_reply();
        if let Reply::Slow(wait) = &reply {
            tokio::time::sleep(*wait).await;
        }
        let mut response = Response::new(Full::new(Bytes::new()));
        match reply {
            Reply::Accept { rejected } => {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    *response.status_mut() = StatusCode::BAD_REQUEST;
                    return response;
                };
                self.store(Received {
                    transport: "http",
                    path,
                    content_type,
                    request,
                });
                *response.body_mut() = Full::new(Bytes::from(answer(rejected).encode_to_vec()));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
            }
            Reply::Slow(_) => {
                if let Ok(request) = ExportTraceServiceRequest::decode(body) {
                    self.store(Received {
                        transport: "http",
                        path,
                        content_type,
                        request,
                    });
                }
            }
            Reply::Http {
                status,
                retry_after,
            } => {
                *response.status_mut() = StatusCode::from_u16(status).expect("a status");
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
                }
            }
            Reply::Grpc { .. } => *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE,
        }
        response
    }

    /// Every request received (and accepted), in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }

    /// How many requests were answered, refusals included.
    pub fn answered(&self) -> usize {
        self.state.lock().map(|s| s.answered).unwrap_or(0)
    }

    /// Every span received, with the `service.name` of its resource.
    pub fn spans(&self) -> Vec<(String, Span)> {
        let mut spans = Vec::new();
        for received in self.received() {
            for resource_spans in received.request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| string_attribute(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        spans.push((service.clone(), span));
                    }
                }
            }
        }
        spans
    }

    /// Waits until at least `n` spans arrived.
    pub async fn wait_for_spans(&self, n: usize) -> Vec<(String, Span)> {
        for _ in 0..500 {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} spans at the receiver, got {:?}", self.spans());
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let reply = self.next_reply();
        let content_type = request
            .metadata()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match reply {
            Reply::Accept { rejected } => {
                self.store(Received {
                    transport: "grpc",
                    path: String::new(),
                    content_type,
                    request: request.into_inner(),
                });
                Ok(tonic::Response::new(answer(rejected)))
            }
            Reply::Slow(wait) => {
                tokio::time::sleep(wait).await;
                self.store(Received {
                    transport: "grpc",
                    path: String::new(),
                    content_type,
                    request: request.into_inner(),
                });
                Ok(tonic::Response::new(answer(0)))
            }
            Reply::Grpc { code, retry_delay } => Err(match retry_delay {
                None => tonic::Status::new(code, "refused by the test"),
                Some(delay) => tonic::Status::with_details(
                    code,
                    "refused by the test, with a retry delay",
                    Bytes::from(
                        RpcStatus {
                            code: code as i32,
                            message: String::new(),
                            details: vec![ProtoAny {
                                type_url: RETRY_INFO_TYPE.to_string(),
                                value: RetryInfo {
                                    retry_delay: Some(ProtoDuration {
                                        seconds: delay.as_secs() as i64,
                                        nanos: delay.subsec_nanos() as i32,
                                    }),
                                }
                                .encode_to_vec(),
                            }],
                        }
                        .encode_to_vec(),
                    ),
                ),
            }),
            Reply::Http { .. } => Err(tonic::Status::unavailable("refused by the test")),
        }
    }
}

fn answer(rejected: i64) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: "refused by the test".to_string(),
        }),
    }
}

/// An `openTelemetry` backend named `name` at `address`.
pub fn backend(name: &str, address: SocketAddr, protocol: OtlpProtocol) -> Backend {
    Backend {
        name: name.to_string(),
        kind: BackendKind::OpenTelemetry,
        sampling: 100.0,
        conf: BackendConf::OpenTelemetry(OpenTelemetryBackend {
            endpoint: address.to_string(),
            protocol,
            path: None,
        }),
    }
}

/// The string value of attribute `key`.
pub fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|v| match v {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

/// The int value of attribute `key`.
pub fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|v| match v {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        })
}

/// `ddapm-test-agent` receiving OTLP on both transports (free ports), as a child process;
/// killed when dropped. It stores requests as JSON with snake_case keys and base64 ids.
pub struct OtlpAgent {
    pub grpc_port: u16,
    pub http_port: u16,
    _child: tokio::process::Child,
}

impl OtlpAgent {
    pub async fn start() -> OtlpAgent {
        let (port, grpc_port, http_port) =
            (super::free_port(), super::free_port(), super::free_port());
        let child = tokio::process::Command::new("ddapm-test-agent")
            .args(["--port", &port.to_string()])
            .args(["--otlp-http-port", &http_port.to_string()])
            .args(["--otlp-grpc-port", &grpc_port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("ddapm-test-agent starts (pip install ddapm-test-agent)");
        let agent = OtlpAgent {
            grpc_port,
            http_port,
            _child: child,
        };
        for _ in 0..300 {
            let ready = super::export::http_get(&agent.traces_url()).await;
            // The gRPC server comes up after the HTTP one: wait for its port too.
            if matches!(ready, Ok((StatusCode::OK, _)))
                && tokio::net::TcpStream::connect(("127.0.0.1", grpc_port))
                    .await
                    .is_ok()
            {
                return agent;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ddapm-test-agent did not answer on OTLP port {http_port} within 30 s");
    }

    fn traces_url(&self) -> String {
        format!("http://127.0.0.1:{}/test/session/traces", self.http_port)
    }

    /// An `openTelemetry` backend named `name` at the agent's port for `protocol`.
    pub fn backend(&self, name: &str, protocol: OtlpProtocol) -> Backend {
        let port = match protocol {
            OtlpProtocol::Grpc => self.grpc_port,
            OtlpProtocol::Http => self.http_port,
        };
        backend(name, SocketAddr::from(([127, 0, 0, 1], port)), protocol)
    }

    /// Every span the agent stored, each with its resource's attributes, as the agent's
    /// JSON.
    pub async fn spans(&self) -> Vec<(serde_json::Value, serde_json::Value)> {
        let (status, body) = super::export::http_get(&self.traces_url())
            .await
            .expect("agent answers");
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let requests: Vec<serde_json::Value> =
            serde_json::from_slice(&body).expect("traces as JSON");
        let mut spans = Vec::new();
        for request in requests {
            for resource_spans in request["resource_spans"].as_array().into_iter().flatten() {
                let resource = resource_spans["resource"]["attributes"].clone();
                for scope in resource_spans["scope_spans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        spans.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }

    /// Waits until the agent holds at least `n` spans.
    pub async fn wait_for_spans(&self, n: usize) -> Vec<(serde_json::Value, serde_json::Value)> {
        let mut spans = Vec::new();
        for _ in 0..200 {
            spans = self.spans().await;
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} spans at the agent, got {spans:?}");
    }
}

/// The value of attribute `key` in the agent's JSON (`[{key, value: {string_value|int_value}}]`):
/// strings as they are, ints as the text protobuf's JSON gives them.
pub fn agent_attribute(attributes: &serde_json::Value, key: &str) -> Option<serde_json::Value> {
    attributes
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .map(|kv| kv["value"].clone())
}
