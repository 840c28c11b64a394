//! The fast path's parsers and encoders without I/O, for the `h1_heads` fuzz target and its
//! replay test. Compiled with the `fuzzing` feature (and in unit tests) only.

use bytes::Bytes;

use crate::proxy::limits::{MAX_BODY, MAX_REQUEST_HEADERS, MAX_RESPONSE_HEADERS};

use super::chunked::Chunked;
use super::request::{Parsed, encode_request, parse_request, request_parts};
use super::response::{Framing, Head, read_response_head, response_hop_by_hop};

/// one of their invariants breaks. Exists for the `h1_heads` fuzz target and its replay test
/// (`fuzz/src/lib.rs`, `tests/fuzz_regressions.rs`); nothing else calls it.
///
/// `data` is read three ways: as a request head (with its body), as an upstream's response
/// heads (informational ones skipped, as `read_response_head` does), and as a chunked body.
pub fn heads(data: &[u8]) {
    fuzz_request(data);
    for is_head in [false, true] {
        fuzz_response(data, is_head);
    }
    fuzz_chunked(data);
}

fn fuzz_request(data: &[u8]) {
    let mut fields = Vec::new();
    let Parsed::Plain(head) = parse_request(data, &mut fields) else {
        return;
    };
    assert!(head.len <= data.len(), "head longer than the input");
    let (ts, te) = head.target;
    assert!(ts < te && te <= head.len, "target outside the head");
    for &[ns, ne, vs, ve] in &fields {
        let [ns, ne, vs, ve] = [ns, ne, vs, ve].map(|o| o as usize);
        assert!(
            ns < ne && ne <= vs && vs <= ve && ve <= head.len,
            "field outside the head"
        );
    }
    assert!(head.content_length <= MAX_BODY, "body over MAX_BODY");
    let whole = head.len + head.content_length as usize;
    if data.len() < whole {
        return;
    }
    let message = Bytes::copy_from_slice(&data[..whole]);
    let Some(mut parts) = request_parts(&message, &head, &fields, http::HeaderMap::new()) else {
        return;
    };
    let mut out = Vec::new();
    encode_request(
        &mut out,
        &crate::proxy::observe::Forwarded::new(&mut parts),
        &message[head.len..],
    );

    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(&out);
    let shown = String::from_utf8_lossy(&out);
    assert!(
        matches!(status, Ok(httparse::Status::Complete(n)) if n == out.len() - head.content_length as usize),
        "encoded request does not parse back: {status:?} {shown:?}"
    );
    assert_eq!(req.method, Some(head.method.as_str()), "method: {shown:?}");
    let target = std::str::from_utf8(&data[ts..te]).expect("httparse targets are text");
    assert_eq!(req.path, Some(target), "target: {shown:?}");
    assert_eq!(
        req.headers.len(),
        parts.headers.len(),
        "header count: {shown:?}"
    );
}

fn fuzz_response(data: &[u8], is_head: bool) {
    let mut out = Vec::new();
    let mut buf = data;
    loop {
        let (len, head) = match read_response_head(buf, is_head, &mut out) {
            Ok(Head::Final(len, head)) => (len, head),
            Ok(Head::Informational(len)) => {
                assert!(0 < len && len <= buf.len(), "head length outside the input");
                // The real head follows.
                buf = &buf[len..];
                continue;
            }
            Ok(Head::Partial) | Err(_) => return,
        };
        assert!(0 < len && len <= buf.len(), "head length outside the input");
        buf = &buf[len..];
        let shown = String::from_utf8_lossy(&out);
        assert!(out.starts_with(b"HTTP/1.1 "), "status line: {shown:?}");
        assert!(out.ends_with(b"\r\n"), "unterminated: {shown:?}");
        let mut whole = out.clone();
        whole.extend_from_slice(b"\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let status = res.parse(&whole);
        assert!(
            matches!(status, Ok(httparse::Status::Complete(n)) if n == whole.len()),
            "encoded head does not parse back: {status:?} {shown:?}"
        );
        assert_eq!(res.code, Some(head.status.as_u16()), "status: {shown:?}");
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            assert!(
                !response_hop_by_hop(name),
                "hop-by-hop field {:?} forwarded: {shown:?}",
                h.name
            );
        }
        if is_head {
            assert_eq!(head.framing, Framing::Empty, "a HEAD response has no body");
        } else if head.framing == Framing::Chunked {
            fuzz_chunked(buf);
        }
        return;
    }
}

/// The chunked framing reads the same however the body is cut: whole, byte by byte, and in
/// two pieces at a point the first byte picks.
fn fuzz_chunked(data: &[u8]) {
    let whole = chunked_outcome([data].into_iter());
    let bytes = chunked_outcome(data.chunks(1));
    assert_eq!(whole, bytes, "whole vs byte by byte");
    let at = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let (a, b) = data.split_at(at);
    let split = chunked_outcome([a, b].into_iter());
    assert_eq!(whole, split, "whole vs split at {at}");
}

/// Feeds the pieces as `stream_body` does, stopping at the end of the body: what it consumed
/// (or that it failed), whether it ended, and its data bytes.
fn chunked_outcome<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Option<usize>, bool, u64) {
    let mut chunked = Chunked::default();
    let mut consumed = 0;
    for piece in pieces {
        let Ok(n) = chunked.feed(piece) else {
            return (None, chunked.is_done(), chunked.data_bytes());
        };
        assert!(n <= piece.len(), "took more than it was given");
        consumed += n;
        if chunked.is_done() {
            break;
        }
        assert_eq!(n, piece.len(), "an unfinished body takes every byte");
    }
    (Some(consumed), chunked.is_done(), chunked.data_bytes())
}
