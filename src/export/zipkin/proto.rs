//! Zipkin protobuf (`zipkin.proto3.ListOfSpans`), messages written from the spec's
//! `zipkin.proto` with prost.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;

use crate::trace::{Span, SpanKind};

#[derive(Clone, PartialEq, Message)]
pub struct ListOfSpans {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<ProtoSpan>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    #[prost(enumeration = "Kind", tag = "4")]
    pub kind: i32,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<Endpoint>,
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<Endpoint>,
    #[prost(map = "string, string", tag = "11")]
    pub tags: HashMap<String, String>,
    #[prost(bool, tag = "12")]
    pub debug: bool,
    #[prost(bool, tag = "13")]
    pub shared: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Endpoint {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    #[prost(int32, tag = "4")]
    pub port: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Kind {
    Unspecified = 0,
    Client = 1,
    Server = 2,
    Producer = 3,
    Consumer = 4,
}

fn endpoint(service: &str) -> Endpoint {
    Endpoint {
        service_name: service.to_string(),
        ..Endpoint::default()
    }
}

pub fn to_proto(span: &Span) -> ProtoSpan {
    let mut trace_id = Vec::with_capacity(16);
    if span.trace_id.wide {
        trace_id.extend_from_slice(&span.trace_id.high.to_be_bytes());
    }
    trace_id.extend_from_slice(&span.trace_id.low.to_be_bytes());
    ProtoSpan {
        trace_id,
        parent_id: span
            .parent_id
            .map(|p| p.0.to_be_bytes().to_vec())
            .unwrap_or_default(),
        id: span.id.0.to_be_bytes().to_vec(),
        kind: match span.kind {
            SpanKind::Server => Kind::Server,
            SpanKind::Client => Kind::Client,
        } as i32,
        name: span.name.clone(),
        timestamp: span.timestamp_us,
        duration: span.duration_us,
        local_endpoint: Some(endpoint(&span.local_service)),
        remote_endpoint: span.remote_service.as_deref().map(endpoint),
        tags: span
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        debug: span.debug,
        shared: span.shared,
    }
}

pub fn encode(spans: &[Span]) -> Bytes {
    let mut body = Vec::new();
    append(&mut body, spans);
    body.into()
}

/// More spans of a `ListOfSpans`: its only field is the repeated span, so a list is its
/// spans' fields one after another, and lists written one after another are one list.
pub(super) fn append(body: &mut Vec<u8>, spans: &[Span]) {
    let list = ListOfSpans {
        spans: spans.iter().map(to_proto).collect(),
    };
    body.reserve(list.encoded_len());
    list.encode_raw(body);
}
