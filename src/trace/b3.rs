//! B3 propagation (openzipkin/b3-propagation), read as Envoy's Zipkin tracer reads it and
//! written so every next hop can read it:
//!
//! - A valid single `b3` header wins over the `x-b3-*` headers; an invalid one is ignored and
//!   the multi headers are used if they are valid.
//! - Multi headers need both `x-b3-traceid` and `x-b3-spanid`. A lone id, an all-zero id, a
//!   wrong length, non-hex, an empty value or a bad `x-b3-parentspanid` make the multi-header
//!   context malformed: ignored as a whole (and counted by the caller).
//! - `x-b3-sampled`: `1`/`0`, leniently `true`/`false`; any other value defers the decision.
//!   `x-b3-flags: 1` is debug, even next to `x-b3-sampled: 0`; other flag values are ignored.
//! - A sampling state alone (`b3: 0`, or `x-b3-sampled` without ids) is honoured.
//! - With repeated headers the first value wins. Uppercase hex is accepted.

use http::header::{HeaderMap, HeaderName};

use super::id::{SpanId, TraceId};
use crate::proxy::observe::Fields;

pub const B3: HeaderName = HeaderName::from_static("b3");
pub const TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// Every header B3 reads.
pub const HEADERS: [HeaderName; 6] = [B3, TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS];

pub use super::context::{SamplingState, SpanContext};

/// What a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extracted {
    pub context: Option<SpanContext>,
    /// `None`: no decision came in (defer to the sampler).
    pub sampling: Option<SamplingState>,
    /// The caller used the single `b3` header (validly): answer in kind too.
    pub single: bool,
    /// Some malformed context was ignored.
    pub invalid: bool,
}

/// Any B3 header came in (valid or not).
pub fn present(headers: &HeaderMap) -> bool {
    HEADERS.iter().any(|name| headers.contains_key(name))
}

/// Reads the caller's B3 context. Never fails: what cannot be read is ignored.
pub fn extract(headers: &HeaderMap) -> Extracted {
    let mut invalid = false;
    if let Some(value) = headers.get(&B3) {
        match parse_single(value.as_bytes()) {
            Some((context, sampling)) => {
                return Extracted {
                    context,
                    sampling,
                    single: true,
                    invalid: false,
                };
            }
            None => invalid = true,
        }
    }
    match parse_multi(headers) {
        Some((context, sampling)) => Extracted {
            context,
            sampling,
            single: false,
            invalid,
        },
        None => Extracted {
            invalid: true,
            ..Extracted::default()
        },
    }
}

/// `{trace}-{span}[-{sampling}[-{parent}]]`, or a lone `{sampling}`.
fn parse_single(value: &[u8]) -> Option<(Option<SpanContext>, Option<SamplingState>)> {
    let mut parts = value.split(|b| *b == b'-');
    let first = parts.next()?;
    let Some(second) = parts.next() else {
        // A lone sampling state.
        return Some((None, Some(single_sampling(first)?)));
    };
    let trace_id = TraceId::parse(first)?;
    let span_id = SpanId::parse(second)?;
    let sampling = match parts.next() {
        None => None,
        Some(s) => Some(single_sampling(s)?),
    };
    let parent_id = match parts.next() {
        None => None,
        Some(p) => Some(SpanId::parse(p)?),
    };
    if parts.next().is_some() {
        return None;
    }
    Some((
        Some(SpanContext {
            trace_id,
            span_id,
            parent_id,
        }),
        sampling,
    ))
}

fn single_sampling(value: &[u8]) -> Option<SamplingState> {
    match value {
        b"1" => Some(SamplingState::Accept),
        b"0" => Some(SamplingState::Deny),
        b"d" => Some(SamplingState::Debug),
        _ => None,
    }
}

/// `None` when the multi-header context is malformed.
fn parse_multi(headers: &HeaderMap) -> Option<(Option<SpanContext>, Option<SamplingState>)> {
    let debug = headers.get(&FLAGS).is_some_and(|v| v.as_bytes() == b"1");
    let sampling = if debug {
        Some(SamplingState::Debug)
    } else {
        headers.get(&SAMPLED).and_then(|v| match v.as_bytes() {
            b"1" | b"true" => Some(SamplingState::Accept),
            b"0" | b"false" => Some(SamplingState::Deny),
            // Unknown: no decision.
            _ => None,
        })
    };
    let trace = headers.get(&TRACE_ID);
    let span = headers.get(&SPAN_ID);
    let parent = headers.get(&PARENT_SPAN_ID);
    if trace.is_none() && span.is_none() {
        // A parent without ids says nothing usable: malformed.
        return match parent {
            Some(_) => None,
            None => Some((None, sampling)),
        };
    }
    let trace_id = TraceId::parse(trace?.as_bytes())?;
    let span_id = SpanId::parse(span?.as_bytes())?;
    let parent_id = match parent {
        None => None,
        Some(p) => Some(SpanId::parse(p.as_bytes())?),
    };
    Some((
        Some(SpanContext {
            trace_id,
            span_id,
            parent_id,
        }),
        sampling,
    ))
}

/// Writes the context for the next hop: always the multi-header form, plus the single `b3`
/// header when the caller used it, the two consistent. Stale B3 headers do not survive.
pub fn inject(
    headers: &mut HeaderMap,
    context: &SpanContext,
    sampled: bool,
    debug: bool,
    single: bool,
) {
    write(
        &mut Fields::in_map(headers),
        context,
        sampled,
        debug,
        single,
    );
}

/// [`inject`] into `fields`. Fields opened as absent (no B3 header is there) skip the lookups
/// that remove the ones this hop does not send (three hashed lookups, about half of writing
/// into a map).
pub(crate) fn write(
    fields: &mut Fields<'_>,
    context: &SpanContext,
    sampled: bool,
    debug: bool,
    single: bool,
) {
    // `set` replaces every earlier value; only headers this hop does not send are removed.
    let trace = context.trace_id.to_hex();
    let span = context.span_id.to_hex();
    let parent = context.parent_id.map(SpanId::to_hex);
    let state: &[u8] = match (debug, sampled) {
        (true, _) => b"d",
        (false, true) => b"1",
        (false, false) => b"0",
    };
    let mut single_value = [0u8; 32 + 1 + 16 + 1 + 1 + 1 + 16];
    let mut len = 0;
    if single {
        let parent = parent.as_ref().map(|p| p.as_bytes());
        let pieces: [&[u8]; 7] = [
            trace.as_bytes(),
            b"-",
            span.as_bytes(),
            b"-",
            state,
            if parent.is_some() { b"-" } else { b"" },
            parent.unwrap_or(b""),
        ];
        for piece in pieces {
            single_value[len..len + piece.len()].copy_from_slice(piece);
            len += piece.len();
        }
    }
    // Every value this hop sends, written together (into a map: one allocation for all).
    let [b3, trace_id, span_id, parent_span_id, sampled_name, flags] = HEADERS;
    let mut sent: [(&HeaderName, &[u8]); 5] = [(&trace_id, trace.as_bytes()); 5];
    let mut count = 1;
    sent[count] = (&span_id, span.as_bytes());
    count += 1;
    if let Some(parent) = &parent {
        sent[count] = (&parent_span_id, parent.as_bytes());
        count += 1;
    }
    // Debug implies accept: B3 sends the flag instead of a sampled state.
    sent[count] = if debug {
        (&flags, b"1")
    } else {
        (&sampled_name, state)
    };
    count += 1;
    if single {
        sent[count] = (&b3, &single_value[..len]);
        count += 1;
    }
    fields.set_all(&sent[..count]);
    if parent.is_none() {
        fields.remove(&parent_span_id);
    }
    fields.remove(if debug { &sampled_name } else { &flags });
    if !single {
        fields.remove(&b3);
    }
}
