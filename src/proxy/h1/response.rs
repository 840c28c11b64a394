//! Phase 5 of the fast path, in bytes: the upstream's response head read (its status, how
//! its body is framed, whether its connection can be reused), and the head the caller gets.
//! Reading and writing are separate steps: [`read_response_head`] judges, [`encode`] writes.

use http::StatusCode;

use crate::proxy::exchange::is_hop_by_hop_bytes;
use crate::proxy::limits::MAX_RESPONSE_HEADERS;

use super::request::digits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

pub(super) struct ResponseHead {
    pub status: StatusCode,
    pub framing: Framing,
    /// The upstream connection may carry another request after this response.
    pub reusable: bool,
}

/// What the bytes read so far hold.
pub(super) enum Head {
    /// Not a whole head yet.
    Partial,
    /// An informational (1xx) response of this many bytes, to skip: the real head follows.
    Informational(usize),
    /// A final response head of this many bytes.
    Final(usize, ResponseHead),
}

/// Reads a response head from `buf` and, when it is a final one, writes the caller's version
/// of it into `out`: status line and end-to-end fields, without the final CRLF.
pub(super) fn read_response_head(
    buf: &[u8],
    is_head: bool,
    out: &mut Vec<u8>,
) -> Result<Head, &'static str> {
    let mut headers =
        [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_RESPONSE_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(_) => return Err("malformed response head"),
    };
    match judge(&res, is_head)? {
        None => Ok(Head::Informational(len)),
        Some((head, named)) => {
            encode(&res, &head, &named, out);
            Ok(Head::Final(len, head))
        }
    }
}

/// The response's status, framing and reuse, and the fields its Connection header names
/// (hop-by-hop too); `None` for an informational response.
#[allow(clippy::type_complexity)]
fn judge<'b>(
    res: &httparse::Response<'_, 'b>,
    is_head: bool,
) -> Result<Option<(ResponseHead, Vec<&'b [u8]>)>, &'static str> {
    let code = res.code.ok_or("malformed response head")?;
    let status = StatusCode::from_u16(code).map_err(|_| "invalid status code")?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("101 without an upgrade");
    }
    if status.is_informational() {
        return Ok(None);
    }
    let http11 = res.version == Some(1);
    let mut close = !http11;
    let mut chunked = false;
    let mut content_length: Option<u64> = None;
    let mut named: Vec<&[u8]> = Vec::new();
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if !matches!(name.len(), 10 | 14 | 17) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close = close && http11;
                } else if !token.is_empty() {
                    named.push(token);
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err("unsupported transfer-encoding");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = digits(h.value.trim_ascii()).ok_or("invalid content-length")?;
            if content_length.is_some_and(|m| m != n) {
                return Err("conflicting content-length");
            }
            content_length = Some(n);
        }
    }
    let no_body = is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    let head = ResponseHead {
        status,
        framing,
        reusable: !close && framing != Framing::Close,
    };
    Ok(Some((head, named)))
}

/// Writes the caller's head: the status line and the end-to-end fields as the upstream sent
/// them, without the final CRLF.
fn encode(
    res: &httparse::Response<'_, '_>,
    head: &ResponseHead,
    named: &[&[u8]],
    out: &mut Vec<u8>,
) {
    let status = head.status;
    let chunked = head.framing == Framing::Chunked;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        res.reason
            .filter(|r| !r.is_empty())
            .or(status.canonical_reason())
            .unwrap_or("")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        let hop_by_hop = response_hop_by_hop(name)
            || (!named.is_empty() && named.iter().any(|n| name.eq_ignore_ascii_case(n)));
        // The body passes through as framed: its Transfer-Encoding stays, and a
        // Content-Length beside it (which it overrides) goes.
        let overridden =
            chunked && name.len() == 14 && name.eq_ignore_ascii_case(b"content-length");
        if hop_by_hop || overridden {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// The hop-by-hop fields but Transfer-Encoding, which the fast path keeps with the body it
/// frames.
pub(super) fn response_hop_by_hop(name: &[u8]) -> bool {
    is_hop_by_hop_bytes(name) && !name.eq_ignore_ascii_case(b"transfer-encoding")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(head: &[u8], is_head: bool) -> (String, ResponseHead) {
        let mut out = Vec::new();
        let Ok(Head::Final(len, head)) = read_response_head(head, is_head, &mut out) else {
            panic!("not a whole final head");
        };
        assert!(len > 0);
        (String::from_utf8(out).expect("text"), head)
    }

    #[test]
    fn response_hop_by_hop_fields_are_dropped_and_the_rest_kept_as_sent() {
        let (out, head) = response(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nok",
            false,
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nX-Kept: 2\r\nContent-Length: 2\r\n");
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.reusable);
    }

    #[test]
    fn a_chunked_response_keeps_its_framing_and_loses_a_content_length() {
        let (out, head) = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n");
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn a_response_without_length_is_read_to_the_close_and_not_reused() {
        let (_, head) = response(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(head.framing, Framing::Close);
        assert!(!head.reusable);
    }

    #[test]
    fn head_204_and_304_responses_have_no_body() {
        assert_eq!(
            response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
                .1
                .framing,
            Framing::Empty
        );
        for status in ["204 No Content", "304 Not Modified"] {
            let head = format!("HTTP/1.1 {status}\r\n\r\n");
            assert_eq!(response(head.as_bytes(), false).1.framing, Framing::Empty);
        }
    }

    #[test]
    fn informational_responses_are_skipped() {
        let mut out = Vec::new();
        let skipped = read_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", false, &mut out);
        assert!(matches!(skipped, Ok(Head::Informational(25))));
    }

    #[test]
    fn http10_and_connection_close_responses_are_not_reused() {
        assert!(
            !response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false)
                .1
                .reusable
        );
        assert!(
            !response(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .1
            .reusable
        );
    }

    #[test]
    fn conflicting_lengths_and_unknown_codings_are_refused() {
        let mut out = Vec::new();
        for head in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(read_response_head(head, false, &mut out).is_err());
        }
    }
}
