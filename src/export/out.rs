//! The output the span encoders write into: a zeroed buffer of a guessed size, written once
//! from the start with bounds-checked copies that never grow a vector. A write past the end
//! is counted, not made, and the whole batch is written again into as many bytes as it took
//! ([`written`]). Zipkin JSON and the OTLP wire writer share it; the protobuf pieces (nested
//! lengths, varints) are OTLP's own (`otlp/wire.rs`).

/// What `write` writes, into `size` bytes if it fits, else once more into as many as it took.
pub(super) fn written(size: usize, write: impl Fn(&mut Out<'_>)) -> Vec<u8> {
    let mut buf = Vec::new();
    write_onto(&mut buf, size, write);
    buf
}

/// [`written`], appended to `buf`.
pub(super) fn write_onto(buf: &mut Vec<u8>, mut size: usize, write: impl Fn(&mut Out<'_>)) {
    let start = buf.len();
    loop {
        buf.resize(start + size, 0);
        let mut out = Out {
            buf: &mut buf[start..],
            at: 0,
            short: false,
            reach: 0,
        };
        write(&mut out);
        if !out.short {
            let end = start + out.at;
            buf.truncate(end);
            return;
        }
        // `at` counted every byte, written or not; a length written in fewer bytes than
        // guessed took some back, after the content had reached further.
        size = out.reach.max(out.at);
        buf.truncate(start);
    }
}

/// Zeroed bytes, written from the start. A write past the end is counted in `at` but not
/// made, and marks the output `short`: the caller then writes it all again into `at` bytes.
/// So no write can fail or grow a vector, and the hot functions copy the position into a
/// local [`Out`] of their own, where it stays in a register (a `Vec::push` loads and stores
/// the vector's length at every byte, since the byte written might alias it).
pub(super) struct Out<'a> {
    pub(super) buf: &'a mut [u8],
    pub(super) at: usize,
    pub(super) short: bool,
    /// The furthest `at` was before a length took bytes back (OTLP's nested lengths).
    pub(super) reach: usize,
}

impl Out<'_> {
    /// The same output, for a function to write through with its own position.
    #[inline(always)]
    pub(super) fn local(&mut self) -> Out<'_> {
        Out {
            buf: self.buf,
            at: self.at,
            short: self.short,
            reach: 0,
        }
    }

    /// Takes back a local output's position.
    #[inline(always)]
    pub(super) fn take(&mut self, at: usize, short: bool) {
        self.at = at;
        self.short = short;
    }

    #[inline(always)]
    pub(super) fn byte(&mut self, byte: u8) {
        match self.buf.get_mut(self.at) {
            Some(slot) => *slot = byte,
            None => self.short = true,
        }
        self.at += 1;
    }

    /// Bytes of a length known where it is called (constants, ids): the copy compiles to
    /// moves. For text of any length, [`Out::text`].
    #[inline(always)]
    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        match self.buf.get_mut(self.at..end) {
            Some(slots) => slots.copy_from_slice(bytes),
            None => self.short = true,
        }
        self.at = end;
    }

    /// Bytes of a length known only when it runs, short ones without a call to `memcpy`.
    #[inline(always)]
    pub(super) fn text(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        match self.buf.get_mut(self.at..end) {
            Some(slots) => copy_short(slots, bytes),
            None => self.short = true,
        }
        self.at = end;
    }
}

/// Text up to this long is copied by [`copy_short`] without a call to `memcpy`.
pub(super) const SHORT: usize = 128;

/// `dst.copy_from_slice(src)` for the short keys and values of tags, without a call to
/// `memcpy`: for each range of lengths up to [`SHORT`] bytes (an OTLP short pair, most tag
/// values), copies of a fixed size from the start and from the end, overlapping in the
/// middle. As loads and stores of integers, and no loop: LLVM turns a copying loop back into
/// a call to `memcpy`, and merges the fixed-size copies of the branches into one call with a
/// variable size.
/// Those calls were a fifth of the OTLP encoder's time.
#[inline(always)]
pub(super) fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    match n {
        0 => {}
        // One to three bytes: first, middle and last cover them all.
        1..4 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..8 => {
            let (head, tail) = (word::<4>(src, 0), word::<4>(src, n - 4));
            dst[..4].copy_from_slice(&head);
            dst[n - 4..].copy_from_slice(&tail);
        }
        8..16 => {
            let (head, tail) = (word::<8>(src, 0), word::<8>(src, n - 8));
            dst[..8].copy_from_slice(&head);
            dst[n - 8..].copy_from_slice(&tail);
        }
        16..=SHORT => {
            // Whole 16-byte words from the start, then the last 16 bytes.
            let mut at = 0;
            for _ in 0..7 {
                if at + 16 >= n {
                    break;
                }
                dst[at..at + 16].copy_from_slice(&word::<16>(src, at));
                at += 16;
            }
            let tail = word::<16>(src, n - 16);
            dst[n - 16..].copy_from_slice(&tail);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// `N` bytes of `src` from `at`, as a value (an integer load).
#[inline(always)]
pub(super) fn word<const N: usize>(src: &[u8], at: usize) -> [u8; N] {
    let mut word = [0; N];
    word.copy_from_slice(&src[at..at + N]);
    word
}
