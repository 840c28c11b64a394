//! Where a chunked body ends (RFC 9112 §7.1). The fast path forwards chunked bodies as they
//! come, byte for byte, so it does not decode them: it only follows the framing to know where
//! the message ends and how many data bytes it carried.
//!
//! Strict on purpose: a framing error ends the exchange rather than guessing, so a response can
//! never run into the next one on a reused connection.

use crate::proxy::limits::{CHUNK_LINE_MAX as MAX_LINE, CHUNK_TRAILERS_MAX as MAX_TRAILERS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of the chunk size.
    Size,
    /// After the size: whitespace before `;` or CR (RFC 9112's BWS).
    SizeSpace,
    /// After `;`: the extensions, up to CR.
    Extension,
    /// CR seen after the size line; LF next.
    SizeLf,
    Data,
    /// CRLF after the data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    Trailer,
    TrailerLf,
    /// CR of the final empty line seen; LF next.
    EndLf,
    Done,
}

/// A framing error in a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

#[derive(Debug)]
pub(crate) struct Chunked {
    state: State,
    /// Chunk size being read, then data bytes left in the chunk.
    remaining: u64,
    digits: u8,
    line: u32,
    trailers: u32,
    data_bytes: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line: 0,
            trailers: 0,
            data_bytes: 0,
        }
    }
}

impl Chunked {
    /// Data bytes seen so far (the body's decoded size: Envoy's `response_size`).
    pub(crate) fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows the framing over `bytes`, the next bytes of the body. Returns how many of them
    /// belong to the body: all of them while it goes on, fewer when it ended inside `bytes`.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Data {
                let take = (bytes.len() - i).min(self.remaining.min(usize::MAX as u64) as usize);
                self.remaining -= take as u64;
                self.data_bytes += take as u64;
                i += take;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // 16 hex digits fill a u64; more is an attack or a broken server.
                        if self.digits == 16 {
                            return Err(Malformed);
                        }
                        self.digits += 1;
                        self.remaining = (self.remaining << 4) | u64::from(hex(b));
                        State::Size
                    }
                    b'\r' if self.digits > 0 => State::SizeLf,
                    b';' if self.digits > 0 => {
                        self.line = 0;
                        State::Extension
                    }
                    b' ' | b'\t' if self.digits > 0 => {
                        self.line = 0;
                        State::SizeSpace
                    }
                    _ => return Err(Malformed),
                },
                State::SizeSpace => match b {
                    b' ' | b'\t' => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err(Malformed);
                        }
                        State::SizeSpace
                    }
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(Malformed),
                },
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    // Field-value bytes only: no control characters but HTAB.
                    0x00..=0x08 | 0x0a..=0x1f | 0x7f => return Err(Malformed),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err(Malformed);
                        }
                        State::Extension
                    }
                },
                State::SizeLf => match b {
                    b'\n' if self.remaining == 0 => State::TrailerStart,
                    b'\n' => State::Data,
                    _ => return Err(Malformed),
                },
                State::Data => unreachable!("handled above"),
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(Malformed),
                },
                State::DataLf => match b {
                    b'\n' => {
                        self.digits = 0;
                        State::Size
                    }
                    _ => return Err(Malformed),
                },
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(Malformed),
                    _ => {
                        self.line = 1;
                        self.count_trailer()?;
                        State::Trailer
                    }
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(Malformed),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err(Malformed);
                        }
                        self.count_trailer()?;
                        State::Trailer
                    }
                },
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(Malformed),
                },
                State::EndLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(i);
                    }
                    _ => return Err(Malformed),
                },
                State::Done => return Ok(i - 1),
            };
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), Malformed> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(Malformed);
        }
        Ok(())
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> (Result<usize, Malformed>, Chunked) {
        let mut c = Chunked::default();
        let r = c.feed(body);
        (r, c)
    }

    #[test]
    fn a_body_ends_after_the_last_chunk_and_its_empty_line() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1";
        let (r, c) = whole(body);
        assert_eq!(r, Ok(body.len() - "GET / HTTP/1.1".len()));
        assert!(c.is_done());
        assert_eq!(c.data_bytes(), 11);
    }

    #[test]
    fn the_framing_is_followed_one_byte_at_a_time() {
        let body = b"a;name=value\r\n0123456789\r\n0\r\ngrpc-status: 0\r\n\r\n";
        let mut c = Chunked::default();
        for (i, b) in body.iter().enumerate() {
            assert_eq!(c.feed(std::slice::from_ref(b)), Ok(1), "byte {i}");
        }
        assert!(c.is_done());
        assert_eq!(c.data_bytes(), 10);
    }

    #[test]
    fn uppercase_hex_sizes_are_read() {
        let (r, c) = whole(b"A\r\n0123456789\r\n0\r\n\r\n");
        assert!(r.is_ok());
        assert!(c.is_done());
    }

    #[test]
    fn a_missing_crlf_after_data_is_malformed() {
        assert_eq!(whole(b"3\r\nabcX\r\n0\r\n\r\n").0, Err(Malformed));
    }

    #[test]
    fn a_bare_lf_is_malformed() {
        assert_eq!(whole(b"3\nabc\r\n0\r\n\r\n").0, Err(Malformed));
    }

    #[test]
    fn whitespace_may_come_before_extensions_but_not_between_digits() {
        assert!(whole(b"3 ;x=y\r\nabc\r\n0\r\n\r\n").1.is_done());
        assert!(whole(b"3 \r\nabc\r\n0\r\n\r\n").1.is_done());
        assert_eq!(whole(b"5 5\r\nhello\r\n").0, Err(Malformed));
    }

    #[test]
    fn control_characters_in_extensions_are_malformed() {
        assert_eq!(whole(b"3;a\x01b\r\nabc\r\n").0, Err(Malformed));
    }

    #[test]
    fn an_empty_size_is_malformed() {
        assert_eq!(whole(b"\r\n").0, Err(Malformed));
    }

    #[test]
    fn a_size_wider_than_64_bits_is_malformed() {
        assert_eq!(whole(b"10000000000000000\r\n").0, Err(Malformed));
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let (r, c) = whole(b"5\r\nhel");
        assert_eq!(r, Ok(6));
        assert!(!c.is_done());
        assert_eq!(c.data_bytes(), 3);
    }
}
