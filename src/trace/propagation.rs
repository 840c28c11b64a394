//! Every propagation format at once (README, Propagation): which context a request carries, and what
//! the next hop is told.
//!
//! - Extract: the first valid context in this order: the backend's native format, then W3C
//!   `traceparent`, B3 single, B3 multi, Datadog. Invalid input in one format is ignored
//!   (and counted) and the next is tried. A B3 sampling state without ids (`b3: 0`) is
//!   honoured when no format carries ids.
//! - Inject: the native format always, plus every format that came in (also one that came in
//!   invalid, written fresh), all carrying the same trace id, this hop's span id and decision.
//! - `tracestate` travels on when the incoming `traceparent` is valid and its trace goes on;
//!   Datadog origin and `_dd.p.*` tags likewise with the Datadog context. A trace that
//!   restarts takes none of them along.

use http::header::HeaderMap;

use super::b3;
use super::context::{Format, SpanContext, TraceContext};
use super::datadog;
use super::w3c;
use crate::proxy::observe::Forwarded;

/// What a request carried, all formats read into one context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The context of the first valid format: the caller's span as `ids.span_id`.
    pub context: TraceContext,
    /// The format the ids came from; `None` when none carried ids.
    pub source: Option<Format>,
    /// Formats that came in, valid or not: each is written back.
    pub b3: bool,
    pub w3c: bool,
    pub datadog: bool,
    /// The single `b3` header came in valid: answered in kind.
    pub b3_single: bool,
    /// Formats whose input was malformed and ignored (each counted once per request).
    pub invalid_b3: bool,
    pub invalid_w3c: bool,
    pub invalid_datadog: bool,
    /// No header that any format reads came in: writing needs to remove nothing stale.
    pub bare: bool,
}

impl Incoming {
    /// The formats whose input was malformed.
    pub fn invalid(&self) -> impl Iterator<Item = Format> + use<> {
        [
            (self.invalid_b3, Format::B3),
            (self.invalid_w3c, Format::W3c),
            (self.invalid_datadog, Format::Datadog),
        ]
        .into_iter()
        .filter_map(|(invalid, format)| invalid.then_some(format))
    }
}

/// The order formats are tried in, native first.
pub fn order(native: Format) -> [Format; 3] {
    match native {
        Format::B3 => [Format::B3, Format::W3c, Format::Datadog],
        Format::W3c => [Format::W3c, Format::B3, Format::Datadog],
        Format::Datadog => [Format::Datadog, Format::W3c, Format::B3],
    }
}

/// Reads every format. Never fails: what cannot be read is ignored.
pub fn extract(headers: &HeaderMap, native: Format) -> Incoming {
    if may_carry_context(headers) {
        read_every_format(headers, native)
    } else {
        Incoming {
            b3: native == Format::B3,
            bare: true,
            ..Incoming::default()
        }
    }
}

/// Whether a header that some format reads may be there. One pass over the names is a
/// fraction of the dozen lookups, each hashing its name, that reading every format takes; a
/// request that starts a trace (most at the edge, and every unsampled one from an
/// application that does not trace) carries none of them.
fn may_carry_context(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str();
        name == "b3"
            || name.starts_with("x-b3-")
            || name.starts_with("trace")
            || name.starts_with("x-datadog-")
    })
}

fn read_every_format(headers: &HeaderMap, native: Format) -> Incoming {
    let b3 = b3::extract(headers);
    let w3c = w3c::extract(headers);
    let dd = datadog::extract(headers);
    let b3_context = b3.context.map(|ids| TraceContext {
        ids: Some(ids),
        sampling: b3.sampling,
        ..TraceContext::default()
    });

    let mut chosen: Option<(Format, &TraceContext)> = None;
    for format in order(native) {
        let context = match format {
            Format::B3 => b3_context.as_ref(),
            Format::W3c => w3c.context.valid(),
            Format::Datadog => dd.context.valid(),
        };
        if let Some(context) = context {
            chosen = Some((format, context));
            break;
        }
    }
    let (source, mut context) = match chosen {
        Some((format, context)) => (Some(format), context.clone()),
        // No ids anywhere: a lone B3 sampling state still counts.
        None => (
            None,
            TraceContext {
                sampling: b3.sampling,
                ..TraceContext::default()
            },
        ),
    };
    if let Some(ids) = context.ids {
        // What rides with another format's context travels on when it is the same trace.
        if source != Some(Format::W3c)
            && let Some(w) = w3c.context.valid()
            && same_trace(w, &ids)
        {
            context.random = w.random;
            context.trace_state = w.trace_state.clone();
        }
        if source != Some(Format::Datadog)
            && let Some(d) = dd.context.valid()
            && same_trace(d, &ids)
        {
            context.dd_origin = d.dd_origin.clone();
            context.dd_tags = d.dd_tags.clone();
            context.dd_priority = d.dd_priority;
        }
    }
    Incoming {
        context,
        source,
        b3: native == Format::B3 || b3.invalid || b3.single || b3::present(headers),
        w3c: !w3c.context.is_absent(),
        datadog: !dd.context.is_absent(),
        b3_single: b3.single,
        invalid_b3: b3.invalid,
        invalid_w3c: w3c.context.is_invalid() || w3c.state_invalid,
        invalid_datadog: dd.context.is_invalid() || dd.tags_invalid,
        bare: false,
    }
}

/// The low 64 bits agree, and the high ones too when both sides have them.
fn same_trace(other: &TraceContext, ids: &SpanContext) -> bool {
    other.ids.is_some_and(|o| {
        o.trace_id.low == ids.trace_id.low
            && (o.trace_id.high == 0
                || ids.trace_id.high == 0
                || o.trace_id.high == ids.trace_id.high)
    })
}

/// What this hop tells the next.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Trace id, this hop's span id, its parent.
    pub hop: &'a SpanContext,
    pub sampled: bool,
    pub debug: bool,
    /// The trace went on from the incoming context (else it restarted: nothing rides along).
    pub continued: bool,
}

/// Writes the native format and every format that came in, all saying the same.
pub fn inject(head: &mut Forwarded<'_>, native: Format, incoming: &Incoming, out: Outgoing<'_>) {
    let carried = out.continued.then_some(&incoming.context);
    // A request that carried no context header gets every field new: nothing to replace or
    // remove.
    let fields = &mut head.fields(incoming.bare);
    if native == Format::B3 || incoming.b3 {
        b3::write(fields, out.hop, out.sampled, out.debug, incoming.b3_single);
    }
    if native == Format::W3c || incoming.w3c {
        // Newly created trace ids are random; a kept one is as random as its creator said.
        let random = carried.is_none_or(|c| c.random);
        w3c::write(
            fields,
            out.hop,
            out.sampled,
            random,
            carried.and_then(|c| c.trace_state.as_ref()),
        );
    }
    if native == Format::Datadog || incoming.datadog {
        let priority =
            datadog::priority(out.sampled, out.debug, carried.and_then(|c| c.dd_priority));
        datadog::write(
            fields,
            out.hop,
            priority,
            carried.and_then(|c| c.dd_origin.as_ref()),
            carried.and_then(|c| c.dd_tags.as_ref()),
        );
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderMap, HeaderName, HeaderValue};

    use super::{Format, Incoming, extract, may_carry_context, read_every_format};
    use crate::trace::{b3, datadog, w3c};

    /// The shortcut must never skip a header a format reads.
    #[test]
    fn every_header_a_format_reads_counts_as_a_context_header() {
        let read = b3::HEADERS
            .into_iter()
            .chain(w3c::HEADERS)
            .chain(datadog::HEADERS);
        for name in read {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), HeaderValue::from_static("x"));
            assert!(may_carry_context(&headers), "{name}");
        }
    }

    #[test]
    fn a_request_without_context_headers_reads_as_reading_every_format_would() {
        let mut headers = HeaderMap::new();
        // Near misses included: names that only begin like a format's.
        for name in ["user-agent", "x-request-id", "accept", "x-b3", "b3-extra"] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        assert!(!may_carry_context(&headers));
        for native in [Format::B3, Format::W3c, Format::Datadog] {
            let short = extract(&headers, native);
            assert!(short.bare);
            assert_eq!(
                Incoming {
                    bare: false,
                    ..short
                },
                read_every_format(&headers, native)
            );
        }
    }
}
