//! Zipkin v2: JSON (`httpJson`) or protobuf `ListOfSpans` (`httpProto`), POSTed to the url.
//! Every span carries `localEndpoint.serviceName`; `shared` and `debug` appear only when true;
//! roots have no `parentId`; ids keep the width they were recorded with.

pub mod json;
pub mod proto;

use http::header::{self, HeaderValue};

use super::{Encode, Encoded, Payload, WriteBatch};
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
    fn batch(&self, spans: usize) -> Box<dyn WriteBatch> {
        let mut body = Vec::new();
        if self.api == ApiVersion::HttpJson {
            json::open(&mut body, spans);
        }
        Box::new(ZipkinBatch {
            api: self.api,
            body,
            spans: 0,
        })
    }
}

/// A list of spans is its spans one after another (in JSON, between brackets): each is
/// written at the end of the payload as it comes.
struct ZipkinBatch {
    api: ApiVersion,
    body: Vec<u8>,
    spans: usize,
}

impl WriteBatch for ZipkinBatch {
    fn add(&mut self, span: &Span) {
        let span = std::slice::from_ref(span);
        match self.api {
            ApiVersion::HttpJson => json::append(&mut self.body, span),
            ApiVersion::HttpProto => proto::append(&mut self.body, span),
        }
        self.spans += 1;
    }

    fn finish(mut self: Box<Self>) -> Encoded {
        let content_type = match self.api {
            ApiVersion::HttpJson => {
                json::close(&mut self.body);
                "application/json"
            }
            ApiVersion::HttpProto => "application/x-protobuf",
        };
        let body = std::mem::take(&mut self.body);
        Encoded {
            payloads: vec![Payload {
                body: body.into(),
                spans: self.spans,
                headers: vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            }],
            too_large: 0,
        }
    }
}
