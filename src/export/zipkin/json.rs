//! Zipkin JSON v2 (`ListOfSpans`), written directly into one buffer per batch. A general
//! serializer spent most of its time checking every string for characters to escape; here the
//! common case (nothing to escape) is one scan and one copy.

use bytes::Bytes;

use crate::export::out::{Out, SHORT, copy_short, word, write_onto};
use crate::trace::{Span, SpanKind};

/// Bytes a span takes, for the output's first size (one with Envoy's tags takes 700–900); a
/// batch of larger spans is written again into as many bytes as the first try counted.
const SPAN_BYTES: usize = 1024;

/// A JSON array of spans.
pub fn encode(spans: &[Span]) -> Bytes {
    let mut body = Vec::new();
    open(&mut body, spans.len());
    append(&mut body, spans);
    close(&mut body);
    body.into()
}

/// Starts an array of `spans` spans, and makes room for them.
pub(super) fn open(body: &mut Vec<u8>, spans: usize) {
    body.reserve(spans * SPAN_BYTES + 2);
    body.push(b'[');
}

/// More spans of the array [`open`] started.
pub(super) fn append(body: &mut Vec<u8>, spans: &[Span]) {
    let comma = body.last() != Some(&b'[');
    write_onto(body, spans.len() * SPAN_BYTES + 1, |out| {
        for (i, span) in spans.iter().enumerate() {
            if i > 0 || comma {
                out.byte(b',');
            }
            write_span(span, out);
        }
    });
}

pub(super) fn close(body: &mut Vec<u8>) {
    body.push(b']');
}

fn write_span(span: &Span, shared: &mut Out<'_>) {
    let mut local = shared.local();
    let out = &mut local;
    out.bytes(b"{\"traceId\":\"");
    out.text(span.trace_id.to_hex().as_bytes());
    out.byte(b'"');
    if let Some(parent) = span.parent_id {
        out.bytes(b",\"parentId\":\"");
        out.text(parent.to_hex().as_bytes());
        out.byte(b'"');
    }
    out.bytes(b",\"id\":\"");
    out.text(span.id.to_hex().as_bytes());
    out.bytes(match span.kind {
        SpanKind::Server => b"\",\"kind\":\"SERVER\",\"name\":",
        SpanKind::Client => b"\",\"kind\":\"CLIENT\",\"name\":",
    });
    write_str(out, span.name.as_bytes());
    out.bytes(b",\"timestamp\":");
    write_u64(out, span.timestamp_us);
    out.bytes(b",\"duration\":");
    write_u64(out, span.duration_us);
    out.bytes(b",\"localEndpoint\":{\"serviceName\":");
    write_str(out, span.local_service.as_bytes());
    out.byte(b'}');
    if let Some(remote) = &span.remote_service {
        out.bytes(b",\"remoteEndpoint\":{\"serviceName\":");
        write_str(out, remote.as_bytes());
        out.byte(b'}');
    }
    if !span.tags.is_empty() {
        out.bytes(b",\"tags\":{");
        // One scan of all the values together rather than one per value: values are short,
        // and a scan's start and end cost more than its words. Nearly always nothing needs
        // escaping, and each value is then copied as it is.
        let plain = !needs_escape(span.tags.text_bytes());
        for (key, value) in span.tags.iter_bytes() {
            write_tag(out, key, value, plain);
        }
        // The last tag's comma becomes the closing brace.
        out.at -= 1;
        out.byte(b'}');
    }
    if span.debug {
        out.bytes(b",\"debug\":true");
    }
    if span.shared {
        out.bytes(b",\"shared\":true");
    }
    out.byte(b'}');
    let (at, short) = (local.at, local.short);
    shared.take(at, short);
}

/// `"key":"value",`. Keys are tracecar's own constants (`http.url`, …): nothing in them
/// needs escaping, so they are copied, not scanned. Most values need no escaping either
/// (`plain`: known for all of them at once) and are short: the pair is then written with one
/// bounds check and no call to `memcpy`.
#[inline(always)]
fn write_tag(out: &mut Out<'_>, key: &'static str, v: &[u8], plain: bool) {
    let k = key.as_bytes();
    debug_assert!(!needs_escape(k), "tag key {key:?}");
    if k.len() <= SHORT && v.len() <= SHORT && (plain || !needs_escape(v)) {
        let end = out.at + 1 + k.len() + 3 + v.len() + 2;
        if let Some(dst) = out.buf.get_mut(out.at..end) {
            dst[0] = b'"';
            let (key_bytes, rest) = dst[1..].split_at_mut(k.len());
            copy_short(key_bytes, k);
            let (colon, rest) = rest.split_at_mut(3);
            colon.copy_from_slice(b"\":\"");
            let (value_bytes, close) = rest.split_at_mut(v.len());
            copy_short(value_bytes, v);
            close.copy_from_slice(b"\",");
            out.at = end;
            return;
        }
    }
    out.byte(b'"');
    out.text(k);
    out.bytes(b"\":");
    write_str(out, v);
    out.byte(b',');
}

fn write_u64(out: &mut Out<'_>, value: u64) {
    out.text(itoa::Buffer::new().format(value).as_bytes());
}

/// A JSON string (RFC 8259) from UTF-8 text: quotes, backslashes and control characters
/// escaped; any other UTF-8 passes as it is. The common case (short, nothing to escape) is one
/// scan, one bounds check and one copy.
#[inline(always)]
fn write_str(out: &mut Out<'_>, bytes: &[u8]) {
    let n = bytes.len();
    if n <= SHORT
        && !needs_escape(bytes)
        && let Some(dst) = out.buf.get_mut(out.at..out.at + n + 2)
    {
        dst[0] = b'"';
        copy_short(&mut dst[1..=n], bytes);
        dst[n + 1] = b'"';
        out.at += n + 2;
        return;
    }
    write_escaped(out, bytes);
}

/// [`write_str`] for any string: long, needing escapes, or past the end of the output.
#[inline(never)]
fn write_escaped(out: &mut Out<'_>, bytes: &[u8]) {
    out.byte(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.text(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.bytes(b"\\u00");
            out.byte(HEX[usize::from(b >> 4)]);
            out.byte(HEX[usize::from(b & 0xf)]);
        } else {
            out.text(escape);
        }
        start = i + 1;
    }
    out.text(&bytes[start..]);
    out.byte(b'"');
}

/// Whether any byte is `"`, `\\` or below 0x20, eight bytes at a time (SWAR: a byte-wise
/// compare on a whole word). Text of 16 bytes or more (a span's tag values together) goes 16
/// bytes a step with no branch until the end, the bytes past the last whole step checked as one
/// more, the last 16 (some twice): a branch per word took twice as many instructions, a third of
/// the encoder. Shorter text goes a word at a time, its tail as one more word: the last eight
/// bytes, or for shorter text its bytes padded with spaces.
#[inline(always)]
fn needs_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n >= 16 {
        let pair = |at: usize| {
            escape_bits(u64::from_le_bytes(word(bytes, at)))
                | escape_bits(u64::from_le_bytes(word(bytes, at + 8)))
        };
        let mut found = 0;
        let mut at = 0;
        while at + 16 <= n {
            found |= pair(at);
            at += 16;
        }
        if at < n {
            found |= pair(n - 16);
        }
        return found != 0;
    }
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        if word_needs_escape(u64::from_le_bytes(word(chunk, 0))) {
            return true;
        }
    }
    if words.remainder().is_empty() {
        return false;
    }
    let last = match n {
        8.. => u64::from_le_bytes(word(bytes, n - 8)),
        4..8 => {
            // Two words of four, overlapping in the middle.
            let head = u32::from_le_bytes(word(bytes, 0));
            let tail = u32::from_le_bytes(word(bytes, n - 4));
            u64::from(head) | u64::from(tail) << 32
        }
        _ => u64::from_le_bytes([
            bytes[0],
            bytes[n / 2],
            bytes[n - 1],
            b' ',
            b' ',
            b' ',
            b' ',
            b' ',
        ]),
    };
    word_needs_escape(last)
}

/// Per byte, `b ^ 2` is below 0x21 exactly when `b` is below 0x20 or is `"` (0x22), so one
/// "below" test covers both, and a second finds `\\`. A "below" test on a word sets the high
/// bit of a byte that is below, and can set others only above a byte that already did (its
/// borrow), so it never answers yes for a word without one. Bytes of 0x80 and up never count:
/// their high bit is masked out.
#[inline(always)]
fn word_needs_escape(x: u64) -> bool {
    escape_bits(x) != 0
}

/// The high bit of each byte of `x` that needs escaping set (and maybe others above it: see
/// [`word_needs_escape`]), every other bit clear.
#[inline(always)]
fn escape_bits(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control_or_quote = x ^ (ONES * 2);
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (control_or_quote.wrapping_sub(ONES * 0x21) & !control_or_quote
        | backslash.wrapping_sub(ONES) & !backslash)
        & HIGH
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{encode, needs_escape, write_str};
    use crate::export::out::written;
    use crate::policy::effective::Direction;
    use crate::trace::id::{SpanId, TraceId};
    use crate::trace::{Span, SpanKind};

    fn json(s: &str) -> String {
        // A first size too small for most strings: the second write must give the same.
        let out = written(4, |out| write_str(out, s.as_bytes()));
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_would_read_them() {
        for s in [
            "plain",
            "quo\"te",
            "back\\slash",
            "new\nline\r\t",
            "\u{1}\u{1f}",
            "café ☕",
            "",
            "sixteen chars ok",
            "sixteen chars \"q",
            "0123456789abcdef\u{7f}\u{80}\u{1f}",
        ] {
            let parsed: String = serde_json::from_str(&json(s)).unwrap_or_default();
            assert_eq!(parsed, s);
        }
    }

    #[test]
    fn a_character_to_escape_is_found_at_any_place_in_text_of_any_length() {
        // The scan reads steps of 16 (or words of eight below that), then the tail as one
        // more block or word: every place of each.
        for len in 0..=56 {
            let plain = "a".repeat(len);
            assert!(!needs_escape(plain.as_bytes()), "{len}");
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{1f}'] {
                    let mut text = plain.clone();
                    text.replace_range(at..=at, &c.to_string());
                    assert!(needs_escape(text.as_bytes()), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn no_byte_but_a_control_character_a_quote_or_a_backslash_needs_escaping() {
        // Alone, as the tail word, at each place of a whole word and of a step of 16.
        for b in 0..=255u8 {
            let want = b < 0x20 || b == b'"' || b == b'\\';
            assert_eq!(needs_escape(&[b]), want, "{b:#04x}");
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = b;
                assert_eq!(needs_escape(&word), want, "{b:#04x} at {at}");
            }
            // In a step of 16, and in the last step of longer text.
            for len in [16, 40] {
                for at in 0..len {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    assert_eq!(needs_escape(&text), want, "{b:#04x} at {at} of {len}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_round_trips_through_json(s in ".*") {
            let parsed: String = serde_json::from_str(&json(&s)).unwrap_or_default();
            proptest::prop_assert_eq!(parsed, s);
        }
    }

    /// What a span should read as, built with serde_json rather than written by hand.
    fn expected(span: &Span) -> serde_json::Value {
        let mut v = serde_json::json!({
            "traceId": span.trace_id.to_hex().as_str(),
            "id": span.id.to_hex().as_str(),
            "kind": match span.kind { SpanKind::Server => "SERVER", SpanKind::Client => "CLIENT" },
            "name": span.name,
            "timestamp": span.timestamp_us,
            "duration": span.duration_us,
            "localEndpoint": { "serviceName": &*span.local_service },
        });
        if let Some(parent) = span.parent_id {
            v["parentId"] = parent.to_hex().as_str().into();
        }
        if let Some(remote) = &span.remote_service {
            v["remoteEndpoint"] = serde_json::json!({ "serviceName": &**remote });
        }
        if !span.tags.is_empty() {
            let tags: serde_json::Map<_, _> = span
                .tags
                .iter()
                .map(|(k, t)| (k.to_string(), t.into()))
                .collect();
            v["tags"] = tags.into();
        }
        if span.debug {
            v["debug"] = true.into();
        }
        if span.shared {
            v["shared"] = true.into();
        }
        v
    }

    const KEYS: [&str; 4] = [
        "http.url",
        "user_agent",
        "guid:x-request-id",
        "a.tag.key.of.some.length.beyond.sixteen",
    ];

    fn any_span() -> impl proptest::strategy::Strategy<Value = Span> {
        use proptest::prelude::*;
        (
            (
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                any::<u64>(),
                any::<Option<u64>>(),
            ),
            (
                ".{0,40}",
                "\\PC{0,200}",
                ".{0,20}",
                proptest::option::of(".{0,20}"),
            ),
            proptest::collection::vec((0..KEYS.len(), "(.|\\PC){0,150}"), 0..5),
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<u64>(),
                any::<u64>(),
            ),
        )
            .prop_map(
                |(
                    (high, low, wide, id, parent),
                    (name, url, local, remote),
                    tags,
                    (server, debug, shared, ts, dur),
                )| Span {
                    trace_id: TraceId { high, low, wide },
                    id: SpanId(id),
                    parent_id: parent.map(SpanId),
                    kind: if server {
                        SpanKind::Server
                    } else {
                        SpanKind::Client
                    },
                    direction: Direction::Inbound,
                    name,
                    timestamp_us: ts,
                    duration_us: dur,
                    local_service: Arc::from(local),
                    remote_service: remote.map(Arc::from),
                    shared,
                    debug,
                    error: false,
                    tags: std::iter::once(("http.url", url))
                        .chain(tags.into_iter().map(|(k, v)| (KEYS[k], v)))
                        .collect(),
                    trace_state: None,
                },
            )
    }

    proptest::proptest! {
        /// The exporter writes a batch a span at a time, as spans are queued: in either Zipkin
        /// encoding, the batch is the list of all its spans written at once.
        #[test]
        fn a_batch_written_a_span_at_a_time_is_the_list_written_at_once(
            spans in proptest::collection::vec(any_span(), 1..8),
        ) {
            use crate::export::Encode;
            use crate::export::zipkin::{Zipkin, proto};
            use crate::policy::effective::ApiVersion;

            for api in [ApiVersion::HttpJson, ApiVersion::HttpProto] {
                let batch = Zipkin::new(api).encode(&spans);
                let body = &batch.payloads[0].body[..];
                match api {
                    ApiVersion::HttpJson => proptest::prop_assert_eq!(body, &encode(&spans)[..]),
                    // A span's tags are a protobuf map, written in a hash map's order: the
                    // same list, not the same bytes.
                    ApiVersion::HttpProto => {
                        use crate::export::zipkin::proto::ListOfSpans;
                        use prost::Message;
                        let read = ListOfSpans::decode(body).ok();
                        proptest::prop_assert!(read.is_some());
                        proptest::prop_assert_eq!(read, ListOfSpans::decode(&proto::encode(&spans)[..]).ok());
                    }
                }
            }
        }

        #[test]
        fn any_batch_reads_back_as_the_spans_it_was_written_from(
            spans in proptest::collection::vec(any_span(), 0..6)
        ) {
            // Long and escaped values, and batches past the first size, take the slow paths.
            let read: serde_json::Value = serde_json::from_slice(&encode(&spans)).unwrap_or_default();
            let want: Vec<serde_json::Value> = spans.iter().map(expected).collect();
            proptest::prop_assert_eq!(read, serde_json::Value::Array(want));
        }
    }

    #[test]
    fn a_span_is_written_in_a_fixed_field_order() {
        let span = Span {
            trace_id: TraceId {
                high: 0,
                low: 0xab,
                wide: false,
            },
            id: SpanId(0xcd),
            parent_id: Some(SpanId(0xef)),
            kind: SpanKind::Client,
            direction: Direction::Outbound,
            name: "backend".into(),
            timestamp_us: 1_700_000_000_000_000,
            duration_us: 42,
            local_service: Arc::from("web"),
            remote_service: Some(Arc::from("backend")),
            shared: true,
            debug: true,
            error: false,
            tags: [("component", "proxy"), ("http.method", "GET")]
                .into_iter()
                .collect(),
            trace_state: None,
        };
        let text = String::from_utf8(encode(&[span]).to_vec()).unwrap_or_default();
        assert_eq!(
            text,
            concat!(
                r#"[{"traceId":"00000000000000ab","parentId":"00000000000000ef","id":"00000000000000cd","#,
                r#""kind":"CLIENT","name":"backend","timestamp":1700000000000000,"duration":42,"#,
                r#""localEndpoint":{"serviceName":"web"},"remoteEndpoint":{"serviceName":"backend"},"#,
                r#""tags":{"component":"proxy","http.method":"GET"},"debug":true,"shared":true}]"#
            )
        );
    }
}
