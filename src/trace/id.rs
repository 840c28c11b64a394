//! Trace and span ids: lower-case hex on the wire, 64 or 128 bits for traces, 64 for spans,
//! never zero.

use std::fmt;

/// A trace id that remembers the width it was recorded with: an incoming 128-bit id stays 128
/// bits on every hop, a 64-bit one stays 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId {
    pub high: u64,
    pub low: u64,
    pub wide: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

impl TraceId {
    /// A new random id, 128 bits wide when `wide`.
    pub fn random(wide: bool) -> TraceId {
        TraceId {
            high: if wide { nonzero_random() } else { 0 },
            low: nonzero_random(),
            wide,
        }
    }

    /// Parses 16 or 32 hex characters, upper or lower case; all zeros is invalid.
    pub fn parse(hex: &[u8]) -> Option<TraceId> {
        let id = match hex.len() {
            16 => TraceId {
                high: 0,
                low: parse_hex_u64(hex)?,
                wide: false,
            },
            32 => TraceId {
                high: parse_hex_u64(&hex[..16])?,
                low: parse_hex_u64(&hex[16..])?,
                wide: true,
            },
            _ => return None,
        };
        (id.high != 0 || id.low != 0).then_some(id)
    }

    /// The 16 or 32 hex characters.
    pub fn to_hex(self) -> HexBuf<32> {
        let mut buf = HexBuf::new();
        if self.wide {
            buf.push_u64(self.high);
        }
        buf.push_u64(self.low);
        buf
    }
}

impl SpanId {
    pub fn random() -> SpanId {
        SpanId(nonzero_random())
    }

    /// Parses exactly 16 hex characters; zero is invalid.
    pub fn parse(hex: &[u8]) -> Option<SpanId> {
        if hex.len() != 16 {
            return None;
        }
        parse_hex_u64(hex).filter(|v| *v != 0).map(SpanId)
    }

    pub fn to_hex(self) -> HexBuf<16> {
        let mut buf = HexBuf::new();
        buf.push_u64(self.0);
        buf
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_hex().as_str())
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_hex().as_str())
    }
}

fn nonzero_random() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

fn parse_hex_u64(hex: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for &c in hex {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(digit);
    }
    Some(value)
}

/// Hex text on the stack: ids are formatted on every traced request, so no allocation.
#[derive(Clone, Copy)]
pub struct HexBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> HexBuf<N> {
    fn new() -> Self {
        HexBuf {
            bytes: [0; N],
            len: 0,
        }
    }

    fn push_u64(&mut self, value: u64) {
        self.bytes[self.len..self.len + 16].copy_from_slice(&hex_u64(value));
        self.len += 16;
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A random UUID (version 4, RFC 9562) as its 36 characters, lower-case, hyphenated: the
/// request id tracecar gives a request that has none, on every traced request.
pub fn random_uuid() -> [u8; 36] {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = bytes[6] & 0x0f | 0x40; // version 4
    bytes[8] = bytes[8] & 0x3f | 0x80; // variant 10x
    let hex = |half: &[u8]| hex_u64(u64::from_be_bytes(half.try_into().unwrap_or_default()));
    let (high, low) = (hex(&bytes[..8]), hex(&bytes[8..]));
    let mut text = [b'-'; 36];
    text[..8].copy_from_slice(&high[..8]);
    text[9..13].copy_from_slice(&high[8..12]);
    text[14..18].copy_from_slice(&high[12..]);
    text[19..23].copy_from_slice(&low[..4]);
    text[24..].copy_from_slice(&low[4..]);
    text
}

/// The 16 lower-case hex digits of `value`, eight at a time: a half's nibbles are spread one
/// to a byte, then made ASCII digits with word arithmetic instead of a table lookup per digit
/// (ids are written into headers on every request, sampled or not).
fn hex_u64(value: u64) -> [u8; 16] {
    let mut hex = [0; 16];
    hex[..8].copy_from_slice(&hex_u32((value >> 32) as u32));
    hex[8..].copy_from_slice(&hex_u32(value as u32));
    hex
}

fn hex_u32(value: u32) -> [u8; 8] {
    const BYTES: u64 = 0x0101_0101_0101_0101;
    let mut x = u64::from(value);
    x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in each byte that holds 10 or more (10 + 6 carries into the byte's bit 4), which
    // then gets `b'a' - b'0' - 10` more than a decimal digit.
    let letters = ((x + 6 * BYTES) >> 4) & BYTES;
    (x + u64::from(b'0') * BYTES + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

impl<const N: usize> fmt::Debug for HexBuf<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{SpanId, TraceId};

    proptest::proptest! {
        #[test]
        fn ids_are_written_as_zero_padded_lower_hex(high: u64, low: u64) {
            proptest::prop_assert_eq!(SpanId(low).to_string(), format!("{low:016x}"));
            let wide = TraceId { high, low, wide: true };
            proptest::prop_assert_eq!(wide.to_string(), format!("{high:016x}{low:016x}"));
            let narrow = TraceId { high: 0, low, wide: false };
            proptest::prop_assert_eq!(narrow.to_string(), format!("{low:016x}"));
        }
    }

    #[test]
    fn request_ids_are_version_4_uuids_in_lower_case_hex() {
        for _ in 0..1000 {
            let text = super::random_uuid();
            let text = std::str::from_utf8(&text).unwrap_or_default();
            let groups: Vec<&str> = text.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(
                groups
                    .concat()
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{text}"
            );
            assert!(groups[2].starts_with('4'), "{text}");
            assert!(groups[3].starts_with(['8', '9', 'a', 'b']), "{text}");
        }
    }

    #[test]
    fn request_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| super::random_uuid()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn every_digit_is_written() {
        assert_eq!(
            SpanId(0x0123_4567_89ab_cdef).to_hex().as_str(),
            "0123456789abcdef"
        );
        assert_eq!(SpanId(u64::MAX).to_hex().as_str(), "ffffffffffffffff");
        assert_eq!(
            SpanId(0xa09f_0000_0000_0001).to_hex().as_str(),
            "a09f000000000001"
        );
    }
}
