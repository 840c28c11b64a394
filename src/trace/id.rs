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
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for shift in (0..16).rev() {
            self.bytes[self.len] = DIGITS[((value >> (shift * 4)) & 0xf) as usize];
            self.len += 1;
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> fmt::Debug for HexBuf<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
