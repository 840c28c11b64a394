//! Zipkin v2: JSON (`httpJson`) or protobuf `ListOfSpans` (`httpProto`), POSTed to the url.
//! Every span carries `localEndpoint.serviceName`; `shared` and `debug` appear only when true;
//! roots have no `parentId`; ids keep the width they were recorded with.

pub mod json;
pub mod proto;

use http::header::{self, HeaderName, HeaderValue};

use super::{Encode, Encoded, Payload, Pieces};
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
        let mut body = Vec::new();
        self.open(&mut body, spans.len());
        self.append(&mut body, spans);
        self.close(&mut body);
        Encoded {
            payloads: vec![Payload {
                body: body.into(),
                spans: spans.len(),
                headers: self.headers(),
            }],
            too_large: 0,
        }
    }

    fn pieces(&self) -> Option<&dyn Pieces> {
        Some(self)
    }
}

/// A list of spans is its spans one after another, in JSON between brackets.
impl Pieces for Zipkin {
    fn open(&self, body: &mut Vec<u8>, spans: usize) {
        match self.api {
            ApiVersion::HttpJson => json::open(body, spans),
            ApiVersion::HttpProto => {}
        }
    }

    fn append(&self, body: &mut Vec<u8>, spans: &[Span]) {
        match self.api {
            ApiVersion::HttpJson => json::append(body, spans),
            ApiVersion::HttpProto => proto::append(body, spans),
        }
    }

    fn close(&self, body: &mut Vec<u8>) {
        match self.api {
            ApiVersion::HttpJson => json::close(body),
            ApiVersion::HttpProto => {}
        }
    }

    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let content_type = match self.api {
            ApiVersion::HttpJson => "application/json",
            ApiVersion::HttpProto => "application/x-protobuf",
        };
        vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))]
    }
}
