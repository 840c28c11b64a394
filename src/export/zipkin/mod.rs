//! Zipkin v2: JSON (`httpJson`) or protobuf `ListOfSpans` (`httpProto`), POSTed to the url.
//! Every span carries `localEndpoint.serviceName`; `shared` and `debug` appear only when true;
//! roots have no `parentId`; ids keep the width they were recorded with.

pub mod json;
pub mod proto;

use http::header::{self, HeaderValue};

use super::{Encode, Encoded, Payload};
use crate::policy::effective::ApiVersion;
use crate::trace::Span;

pub struct Zipkin {
    api: ApiVersion,
}

impl Zipkin {
    pub fn new(api: ApiVersion) -> Zipkin {
        Zipkin { api }
    }
}

impl Encode for Zipkin {
    fn encode(&self, spans: &[Span]) -> Encoded {
        let (body, content_type) = match self.api {
            ApiVersion::HttpJson => (json::encode(spans), "application/json"),
            ApiVersion::HttpProto => (proto::encode(spans), "application/x-protobuf"),
        };
        Encoded {
            payloads: vec![Payload {
                body,
                spans: spans.len(),
                headers: vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            }],
            too_large: 0,
        }
    }
}
