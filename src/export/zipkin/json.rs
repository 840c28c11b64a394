//! Zipkin JSON v2 (`ListOfSpans`), written directly into one buffer per batch. A general
//! serializer spent most of its time checking every string for characters to escape; here the
//! common case (nothing to escape) is one scan and one copy.

use bytes::Bytes;

use crate::trace::{Span, SpanKind};

/// A JSON array of spans.
pub fn encode(spans: &[Span]) -> Bytes {
    let mut out = Vec::with_capacity(spans.len() * 900 + 2);
    out.push(b'[');
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_span(&mut out, span);
    }
    out.push(b']');
    out.into()
}

fn write_span(out: &mut Vec<u8>, span: &Span) {
    out.extend_from_slice(b"{\"traceId\":\"");
    out.extend_from_slice(span.trace_id.to_hex().as_bytes());
    out.push(b'"');
    if let Some(parent) = span.parent_id {
        out.extend_from_slice(b",\"parentId\":\"");
        out.extend_from_slice(parent.to_hex().as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b",\"id\":\"");
    out.extend_from_slice(span.id.to_hex().as_bytes());
    out.extend_from_slice(match span.kind {
        SpanKind::Server => b"\",\"kind\":\"SERVER\",\"name\":",
        SpanKind::Client => b"\",\"kind\":\"CLIENT\",\"name\":",
    });
    write_str(out, &span.name);
    out.extend_from_slice(b",\"timestamp\":");
    write_u64(out, span.timestamp_us);
    out.extend_from_slice(b",\"duration\":");
    write_u64(out, span.duration_us);
    out.extend_from_slice(b",\"localEndpoint\":{\"serviceName\":");
    write_str(out, &span.local_service);
    out.push(b'}');
    if let Some(remote) = &span.remote_service {
        out.extend_from_slice(b",\"remoteEndpoint\":{\"serviceName\":");
        write_str(out, remote);
        out.push(b'}');
    }
    if !span.tags.is_empty() {
        out.extend_from_slice(b",\"tags\":{");
        for (i, (key, value)) in span.tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(out, key);
            write_str(out, value.as_str());
        }
        out.push(b'}');
    }
    if span.debug {
        out.extend_from_slice(b",\"debug\":true");
    }
    if span.shared {
        out.extend_from_slice(b",\"shared\":true");
    }
    out.push(b'}');
}

/// A tag key and its colon. Keys are tracecar's own constants (`http.url`, …): nothing in
/// them needs escaping, so they are copied, not scanned.
fn write_key(out: &mut Vec<u8>, key: &'static str) {
    debug_assert!(!needs_escape(key.as_bytes()), "tag key {key:?}");
    out.reserve(key.len() + 3);
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A JSON string (RFC 8259): quotes, backslashes and control characters escaped; any other
/// UTF-8 passes as it is.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
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
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any byte is `"`, `\\` or below 0x20, eight bytes at a time (SWAR: a byte-wise
/// compare on a whole word; tag values rarely need escaping, so this is the common path).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // Bytes below 0x20 (bytes of 0x80 and up never count: their high bit is masked out).
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0;
        if control
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::write_str;

    fn json(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
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

    proptest::proptest! {
        #[test]
        fn any_string_round_trips_through_json(s in ".*") {
            let parsed: String = serde_json::from_str(&json(&s)).unwrap_or_default();
            proptest::prop_assert_eq!(parsed, s);
        }
    }
}
