//! Datadog propagation (`x-datadog-*`), as Datadog's tracers read and write it:
//!
//! - `x-datadog-trace-id` and `x-datadog-parent-id` are decimal unsigned 64-bit ids; zero,
//!   a sign, a non-digit, an overflow or a missing one make the context invalid.
//! - A 128-bit trace id travels as its low 64 bits plus the `_dd.p.tid` tag of
//!   `x-datadog-tags` (16 lower-case hex digits, the high 64 bits).
//! - `x-datadog-sampling-priority`: `<= 0` is not sampled, `1` sampled, `2` debug (user keep);
//!   anything else defers the decision.
//! - `x-datadog-origin` and the other `_dd.p.*` tags pass through unchanged. Tags that break
//!   the `key=value,…` form are dropped (and counted); the ids still count.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::context::{Read, SamplingState, SpanContext, TraceContext, trim_ows};
use super::id::{SpanId, TraceId};
use crate::proxy::observe::Fields;

pub const TRACE_ID: HeaderName = HeaderName::from_static("x-datadog-trace-id");
pub const PARENT_ID: HeaderName = HeaderName::from_static("x-datadog-parent-id");
pub const SAMPLING_PRIORITY: HeaderName = HeaderName::from_static("x-datadog-sampling-priority");
pub const ORIGIN: HeaderName = HeaderName::from_static("x-datadog-origin");
pub const TAGS: HeaderName = HeaderName::from_static("x-datadog-tags");
/// Every header Datadog propagation reads.
pub const HEADERS: [HeaderName; 5] = [TRACE_ID, PARENT_ID, SAMPLING_PRIORITY, ORIGIN, TAGS];

/// Datadog's tracers refuse a longer `x-datadog-tags`.
pub const MAX_TAGS_LEN: usize = 512;
const TID: &[u8] = b"_dd.p.tid";

/// What a request carried in Datadog headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The caller's span as `ids.span_id` (no parent), priority, origin and tags.
    pub context: Read<TraceContext>,
    /// `x-datadog-tags` (or its `_dd.p.tid`) came in malformed and was dropped.
    pub tags_invalid: bool,
}

/// Reads the caller's Datadog context. Never fails: what cannot be read is ignored.
pub fn extract(headers: &HeaderMap) -> Extracted {
    let trace = headers.get(&TRACE_ID);
    let parent = headers.get(&PARENT_ID);
    if trace.is_none() && parent.is_none() {
        let stray = headers.contains_key(&SAMPLING_PRIORITY)
            || headers.contains_key(&ORIGIN)
            || headers.contains_key(&TAGS);
        return Extracted {
            // A priority, origin or tags without ids is not a context.
            context: if stray { Read::Invalid } else { Read::Absent },
            tags_invalid: false,
        };
    }
    let ids = trace
        .and_then(|t| parse_id(t.as_bytes()))
        .zip(parent.and_then(|p| parse_id(p.as_bytes())));
    let Some((low, span)) = ids else {
        return Extracted {
            context: Read::Invalid,
            tags_invalid: false,
        };
    };
    let priority = headers
        .get(&SAMPLING_PRIORITY)
        .and_then(|v| std::str::from_utf8(trim_ows(v.as_bytes())).ok())
        .and_then(|v| v.parse::<i8>().ok());
    let (tags, high, tags_invalid) = match headers.get(&TAGS) {
        None => (None, 0, false),
        Some(value) => match parse_tags(value.as_bytes()) {
            Some(Tags { high, others }) => (
                others.and_then(|o| HeaderValue::from_maybe_shared(o).ok()),
                high,
                false,
            ),
            None => (None, 0, true),
        },
    };
    Extracted {
        context: Read::Valid(TraceContext {
            ids: Some(SpanContext {
                trace_id: TraceId {
                    high,
                    low,
                    wide: high != 0,
                },
                span_id: SpanId(span),
                parent_id: None,
            }),
            sampling: priority.and_then(sampling),
            dd_priority: priority.filter(|p| sampling(*p).is_some()),
            dd_origin: headers.get(&ORIGIN).filter(|v| !v.is_empty()).cloned(),
            dd_tags: tags,
            ..TraceContext::default()
        }),
        tags_invalid,
    }
}

/// `<= 0` no, `1` yes, `2` debug; other values defer.
pub fn sampling(priority: i8) -> Option<SamplingState> {
    match priority {
        i8::MIN..=0 => Some(SamplingState::Deny),
        1 => Some(SamplingState::Accept),
        2 => Some(SamplingState::Debug),
        _ => None,
    }
}

/// A decimal, unsigned, non-zero 64-bit id.
pub fn parse_id(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut id: u64 = 0;
    for &d in digits {
        id = id.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (id != 0).then_some(id)
}

/// `x-datadog-tags` read: the high trace id bits from `_dd.p.tid`, and the other `_dd.p.*`
/// tags in their order (tags outside `_dd.p.` are not propagated).
struct Tags {
    high: u64,
    others: Option<bytes::Bytes>,
}

/// `None` when the value breaks the `key=value,…` form, is too long, or `_dd.p.tid` is not
/// 16 lower-case hex digits.
fn parse_tags(value: &[u8]) -> Option<Tags> {
    if value.len() > MAX_TAGS_LEN {
        return None;
    }
    let mut high = 0;
    let mut others = bytes::BytesMut::new();
    for tag in value.split(|b| *b == b',') {
        let eq = tag.iter().position(|b| *b == b'=')?;
        let (key, val) = (&tag[..eq], &tag[eq + 1..]);
        if key.is_empty()
            || val.is_empty()
            || !key.iter().all(|b| b.is_ascii_graphic())
            || !val.iter().all(|b| (0x20..=0x7e).contains(b))
        {
            return None;
        }
        if key == TID {
            if val.len() != 16 || !val.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return None;
            }
            high = val.iter().fold(0u64, |acc, b| {
                (acc << 4)
                    | u64::from(if b.is_ascii_digit() {
                        b - b'0'
                    } else {
                        b - b'a' + 10
                    })
            });
        } else if key.starts_with(b"_dd.p.") {
            if !others.is_empty() {
                others.extend_from_slice(b",");
            }
            others.extend_from_slice(tag);
        }
    }
    Some(Tags {
        high,
        others: (!others.is_empty()).then(|| others.freeze()),
    })
}

/// Writes the Datadog headers for this hop: the low 64 bits of the trace id and this hop's
/// span id in decimal, the priority, origin, and tags with `_dd.p.tid` for a 128-bit id.
/// Headers this hop does not send are removed.
pub fn inject(
    headers: &mut HeaderMap,
    context: &SpanContext,
    priority: i8,
    origin: Option<&HeaderValue>,
    tags: Option<&HeaderValue>,
) {
    write(
        &mut Fields::in_map(headers),
        context,
        priority,
        origin,
        tags,
    );
}

/// [`inject`] into `fields`.
pub(crate) fn write(
    fields: &mut Fields<'_>,
    context: &SpanContext,
    priority: i8,
    origin: Option<&HeaderValue>,
    tags: Option<&HeaderValue>,
) {
    // The three numbers written together: into a map, one allocation for them all.
    let (mut trace, mut parent, mut sampling) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    let [trace_id, parent_id, sampling_priority] = [TRACE_ID, PARENT_ID, SAMPLING_PRIORITY];
    fields.set_all(&[
        (&trace_id, trace.format(context.trace_id.low).as_bytes()),
        (&parent_id, parent.format(context.span_id.0).as_bytes()),
        (&sampling_priority, sampling.format(priority).as_bytes()),
    ]);
    match origin {
        Some(origin) => fields.set_value(&ORIGIN, origin),
        None => fields.remove(&ORIGIN),
    }
    let high = context.trace_id.high;
    match (tags, high) {
        (None, 0) => fields.remove(&TAGS),
        (Some(tags), 0) => fields.set_value(&TAGS, tags),
        (tags, high) => {
            let mut value = Vec::with_capacity(64);
            if let Some(tags) = tags {
                value.extend_from_slice(tags.as_bytes());
                value.extend_from_slice(b",");
            }
            value.extend_from_slice(b"_dd.p.tid=");
            value.extend_from_slice(SpanId(high).to_hex().as_bytes());
            fields.set(&TAGS, &value);
        }
    }
}

/// The priority to send for a decision: the caller's own when it says the same.
pub fn priority(sampled: bool, debug: bool, incoming: Option<i8>) -> i8 {
    let wanted = match (debug, sampled) {
        (true, _) => SamplingState::Debug,
        (false, true) => SamplingState::Accept,
        (false, false) => SamplingState::Deny,
    };
    match incoming {
        Some(p) if sampling(p) == Some(wanted) => p,
        _ => match wanted {
            SamplingState::Debug => 2,
            SamplingState::Accept => 1,
            SamplingState::Deny => 0,
        },
    }
}
