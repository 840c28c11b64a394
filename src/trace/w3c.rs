//! W3C Trace Context Level 2 (`traceparent`, `tracestate`), read as the specification's
//! processing model says:
//!
//! - `traceparent` is `version-traceid-parentid-flags`, lower-case hex only. Version `ff` is
//!   invalid. Version `00` is exactly 55 characters; a higher version is read by the fields
//!   version `00` defines and must end there or go on with `-`. All-zero ids are invalid.
//!   More than one `traceparent` header is invalid.
//! - Flags: `sampled` is the caller's decision; the Level 2 `random` flag is kept; other bits
//!   are zeroed.
//! - `tracestate`: several headers are one list, combined in order. At most 32 members, keys
//!   and values by the grammar (`key` or `tenant@system`), no key twice. A valid list is
//!   forwarded unchanged when the incoming `traceparent` is used; an invalid one is dropped
//!   whole. It is never sent empty.
//!
//! A 64-bit trace id is written left-padded with zeros; a `traceparent` whose high half is
//! zero is read back as 64 bits wide, so the width survives a round trip through W3C.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::context::{
    FLAG_RANDOM, FLAG_SAMPLED, Read, SamplingState, SpanContext, TraceContext, trim_ows,
};
use super::id::{SpanId, TraceId};
use crate::proxy::observe::Fields;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Every header W3C Trace Context reads.
pub const HEADERS: [HeaderName; 2] = [TRACEPARENT, TRACESTATE];

/// At most this many list members in `tracestate`.
pub const MAX_MEMBERS: usize = 32;
const MAX_SIMPLE_KEY: usize = 256;
const MAX_TENANT: usize = 241;
const MAX_SYSTEM: usize = 14;
const MAX_VALUE: usize = 256;

/// `tracestate` as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceState {
    /// No header, or only empty members: nothing to forward, nothing wrong.
    Empty,
    /// Broke the grammar or the limits: dropped whole.
    Invalid,
    /// The combined list, as received.
    Valid(HeaderValue),
}

/// What a request carried in W3C headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The caller's span as `ids.span_id` (no parent), the sampled flag as the sampling state,
    /// the random flag, and `tracestate` when valid.
    pub context: Read<TraceContext>,
    /// A `tracestate` came in and was invalid (dropped whole; the `traceparent` still counts).
    pub state_invalid: bool,
}

/// Reads the caller's W3C context. Never fails: what cannot be read is ignored.
pub fn extract(headers: &HeaderMap) -> Extracted {
    let mut all = headers.get_all(&TRACEPARENT).iter();
    let Some(first) = all.next() else {
        return Extracted {
            context: Read::Absent,
            state_invalid: false,
        };
    };
    // "Exactly one traceparent": a second header makes the whole context unreadable.
    let parsed = if all.next().is_some() {
        None
    } else {
        parse_traceparent(first.as_bytes())
    };
    let Some((trace_id, span_id, flags)) = parsed else {
        return Extracted {
            context: Read::Invalid,
            state_invalid: false,
        };
    };
    let (trace_state, state_invalid) = match read_tracestate(headers) {
        TraceState::Empty => (None, false),
        TraceState::Invalid => (None, true),
        TraceState::Valid(v) => (Some(v), false),
    };
    Extracted {
        context: Read::Valid(TraceContext {
            ids: Some(SpanContext {
                trace_id,
                span_id,
                parent_id: None,
            }),
            sampling: Some(if flags & FLAG_SAMPLED != 0 {
                SamplingState::Accept
            } else {
                SamplingState::Deny
            }),
            random: flags & FLAG_RANDOM != 0,
            trace_state,
            ..TraceContext::default()
        }),
        state_invalid,
    }
}

/// `traceparent`: the trace id, the caller's span id and the known flags.
pub fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, u8)> {
    let v = trim_ows(value);
    if v.len() < 55 {
        return None;
    }
    let version = lower_hex(&v[0..2])?;
    if version == 0xff || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    match version {
        0 if v.len() != 55 => return None,
        // A future version: its first fields are read as version 00's; more may follow a `-`.
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    let high = lower_hex(&v[3..19])?;
    let low = lower_hex(&v[19..35])?;
    let span = lower_hex(&v[36..52])?;
    let flags = lower_hex(&v[53..55])? as u8;
    if (high == 0 && low == 0) || span == 0 {
        return None;
    }
    let trace_id = TraceId {
        high,
        low,
        wide: high != 0,
    };
    Some((trace_id, SpanId(span), flags & (FLAG_SAMPLED | FLAG_RANDOM)))
}

/// Lower-case hex only (the spec forbids upper case), at most 16 digits.
fn lower_hex(hex: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for &c in hex {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(digit);
    }
    Some(value)
}

/// Every `tracestate` header, combined in order and validated.
pub fn read_tracestate(headers: &HeaderMap) -> TraceState {
    let mut all = headers.get_all(&TRACESTATE).iter();
    let Some(first) = all.next() else {
        return TraceState::Empty;
    };
    let Some(second) = all.next() else {
        // One header (the usual case): forwarded as the very same value, no copy.
        return match validate_tracestate(first.as_bytes()) {
            Some(0) => TraceState::Empty,
            Some(_) => TraceState::Valid(first.clone()),
            None => TraceState::Invalid,
        };
    };
    let mut combined = bytes::BytesMut::with_capacity(first.len() + second.len() + 1);
    combined.extend_from_slice(first.as_bytes());
    for value in std::iter::once(second).chain(all) {
        combined.extend_from_slice(b",");
        combined.extend_from_slice(value.as_bytes());
        // Past the largest valid list (32 full members and commas between empty ones aside):
        // no need to keep copying a hostile request's headers.
        if combined.len() > 64 * 1024 {
            return TraceState::Invalid;
        }
    }
    match validate_tracestate(&combined) {
        Some(0) => TraceState::Empty,
        Some(_) => match HeaderValue::from_maybe_shared(combined.freeze()) {
            Ok(value) => TraceState::Valid(value),
            Err(_) => TraceState::Invalid,
        },
        None => TraceState::Invalid,
    }
}

/// The number of non-empty members of a valid list; `None` when invalid.
pub fn validate_tracestate(list: &[u8]) -> Option<usize> {
    let mut keys: [&[u8]; MAX_MEMBERS] = [&[]; MAX_MEMBERS];
    let mut count = 0;
    for member in list.split(|b| *b == b',') {
        let member = trim_ows(member);
        if member.is_empty() {
            // Empty members are allowed (several headers make them); they are not members.
            continue;
        }
        let eq = member.iter().position(|b| *b == b'=')?;
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !valid_key(key) || !valid_value(value) {
            return None;
        }
        if count == MAX_MEMBERS || keys[..count].contains(&key) {
            return None;
        }
        keys[count] = key;
        count += 1;
    }
    Some(count)
}

/// `simple-key` or `tenant-id@system-id`.
fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|b| *b == b'@') {
        None => {
            key.len() <= MAX_SIMPLE_KEY
                && key.first().is_some_and(u8::is_ascii_lowercase)
                && key[1..].iter().all(|b| key_char(*b))
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            tenant.len() <= MAX_TENANT
                && tenant
                    .first()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && tenant[1..].iter().all(|b| key_char(*b))
                && system.len() <= MAX_SYSTEM
                && system.first().is_some_and(u8::is_ascii_lowercase)
                && system[1..].iter().all(|b| key_char(*b))
        }
    }
}

fn key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// `0*255(chr) nblk-chr`: printable ASCII without `,` and `=`, spaces inside only.
fn valid_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE
        && value
            .iter()
            .all(|b| (0x20..=0x7e).contains(b) && *b != b',' && *b != b'=')
        && value.last() != Some(&b' ')
}

/// Writes `traceparent` (version 00) for this hop, and `tracestate` when there is one to
/// forward; a stale `tracestate` does not survive.
pub fn inject(
    headers: &mut HeaderMap,
    context: &SpanContext,
    sampled: bool,
    random: bool,
    trace_state: Option<&HeaderValue>,
) {
    write(
        &mut Fields::in_map(headers),
        context,
        sampled,
        random,
        trace_state,
    );
}

/// [`inject`] into `fields`.
pub(crate) fn write(
    fields: &mut Fields<'_>,
    context: &SpanContext,
    sampled: bool,
    random: bool,
    trace_state: Option<&HeaderValue>,
) {
    fields.set(&TRACEPARENT, &traceparent(context, sampled, random));
    match trace_state {
        Some(state) => fields.set_value(&TRACESTATE, state),
        None => fields.remove(&TRACESTATE),
    }
}

/// `00-<trace id, 32 hex>-<span id>-<flags>`.
pub fn traceparent(context: &SpanContext, sampled: bool, random: bool) -> [u8; 55] {
    let mut buf = [0u8; 55];
    buf[..3].copy_from_slice(b"00-");
    let wide = TraceId {
        wide: true,
        ..context.trace_id
    };
    buf[3..35].copy_from_slice(wide.to_hex().as_bytes());
    buf[35] = b'-';
    buf[36..52].copy_from_slice(context.span_id.to_hex().as_bytes());
    buf[52] = b'-';
    let flags = (u8::from(sampled) * FLAG_SAMPLED) | (u8::from(random) * FLAG_RANDOM);
    buf[53] = b'0';
    buf[54] = b"0123456789abcdef"[usize::from(flags)];
    buf
}
