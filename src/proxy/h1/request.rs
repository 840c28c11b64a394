//! Phase 1 and 3 of the fast path, in bytes: the request head read and judged plain (or not),
//! the `http` view of it the observer sees, and the request as it goes upstream.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use crate::proxy::exchange::is_hop_by_hop_bytes;
use crate::proxy::limits::{MAX_BODY, MAX_REQUEST_HEADERS};
use crate::proxy::observe::Forwarded;

pub(super) struct RequestHead {
    /// Bytes of the head, final CRLF included.
    pub len: usize,
    pub method: Method,
    pub target: (usize, usize),
    pub content_length: u64,
    /// The caller asked to close after this exchange.
    pub close: bool,
}

pub(super) enum Parsed {
    Plain(RequestHead),
    Partial,
    /// Malformed, or something only the general path handles.
    Other,
}

pub(super) fn parse_request(buf: &[u8], fields: &mut Vec<[u32; 4]>) -> Parsed {
    // Uninitialised slots: zeroing 128 of them cost more than parsing a small head.
    let mut headers =
        [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parsed::Other;
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return Parsed::Other;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    let offset = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
    fields.clear();
    let mut hosts = 0;
    let mut content_length = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                if !plain_authority(value) {
                    return Parsed::Other;
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        // It names other fields as hop-by-hop: the general path removes them.
                        return Parsed::Other;
                    }
                }
                // Hop-by-hop: not forwarded.
                continue;
            }
            12 if name.eq_ignore_ascii_case(b"content-type")
                && value.len() >= 16
                && value[..16].eq_ignore_ascii_case(b"application/grpc") =>
            {
                return Parsed::Other;
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if content_length.is_some() {
                    return Parsed::Other;
                }
                match digits(value) {
                    Some(n) if n <= MAX_BODY => content_length = Some(n),
                    _ => return Parsed::Other,
                }
            }
            // Hop-by-hop fields, and what asks for an interim answer or a protocol switch,
            // are the general path's to judge.
            6 if name.eq_ignore_ascii_case(b"expect") => return Parsed::Other,
            14 if name.eq_ignore_ascii_case(b"http2-settings") => return Parsed::Other,
            _ if is_hop_by_hop_bytes(name) => return Parsed::Other,
            _ => {}
        }
        let (ns, vs) = (offset(name), offset(value));
        fields.push([
            ns as u32,
            (ns + name.len()) as u32,
            vs as u32,
            (vs + value.len()) as u32,
        ]);
    }
    if hosts != 1 {
        return Parsed::Other;
    }
    let start = offset(target.as_bytes());
    Parsed::Plain(RequestHead {
        len,
        method,
        target: (start, start + target.len()),
        content_length: content_length.unwrap_or(0),
        close,
    })
}

/// A Host value that is surely a valid authority: a name or IPv4 address, and a port of
/// digits. The general path judges the rest (IPv6 literals, odd characters, userinfo).
fn plain_authority(value: &[u8]) -> bool {
    let (host, port) = match value.iter().position(|b| *b == b':') {
        Some(at) => (&value[..at], Some(&value[at + 1..])),
        None => (value, None),
    };
    !host.is_empty()
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
}

pub(super) fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The head as the observer and the rewrite see it. The values share `message`'s memory.
/// The fields go into `headers`, an empty map: one kept from an earlier request keeps its
/// room ([`super::spare_headers`]).
pub(super) fn request_parts(
    message: &Bytes,
    head: &RequestHead,
    fields: &[[u32; 4]],
    mut headers: HeaderMap,
) -> Option<http::request::Parts> {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = head.method.clone();
    parts.version = Version::HTTP_11;
    parts.uri = Uri::from_maybe_shared(message.slice(head.target.0..head.target.1)).ok()?;
    // `Uri` drops a fragment (`/a#b` reads as `/a`), which no request target may carry: the
    // general path judges such a target rather than this one forwarding it shortened.
    if parts.uri.path_and_query().map(|p| p.as_str().len()) != Some(head.target.1 - head.target.0) {
        return None;
    }
    // Room for what observe and rewrite add (request id, B3, forwarded proto).
    debug_assert!(headers.is_empty());
    headers.reserve(fields.len() + 8);
    for &[ns, ne, vs, ve] in fields {
        let name = HeaderName::from_bytes(&message[ns as usize..ne as usize]).ok()?;
        let value = HeaderValue::from_maybe_shared(message.slice(vs as usize..ve as usize)).ok()?;
        headers.append(name, value);
    }
    parts.headers = headers;
    Some(parts)
}

pub(super) fn encode_request(out: &mut Vec<u8>, head: &Forwarded<'_>, body: &[u8]) {
    let parts = &*head.parts;
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(head.lines());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &[u8]) -> Parsed {
        parse_request(head, &mut Vec::new())
    }

    fn is_plain(head: &[u8]) -> bool {
        matches!(parse(head), Parsed::Plain(_))
    }

    #[test]
    fn a_plain_get_takes_the_fast_path() {
        assert!(is_plain(b"GET /1k HTTP/1.1\r\nHost: web:8080\r\n\r\n"));
    }

    #[test]
    fn a_small_post_with_content_length_takes_the_fast_path() {
        match parse(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello") {
            Parsed::Plain(head) => assert_eq!(head.content_length, 5),
            _ => panic!("not plain"),
        }
    }

    #[test]
    fn connection_close_is_noted_and_not_forwarded() {
        let mut fields = Vec::new();
        match parse_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            &mut fields,
        ) {
            Parsed::Plain(head) => assert!(head.close),
            _ => panic!("not plain"),
        }
        assert_eq!(fields.len(), 1, "only Host is forwarded");
    }

    #[test]
    fn framing_the_general_path_must_judge_goes_there() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        ] {
            assert!(!is_plain(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn upgrades_connect_and_h2_go_to_the_general_path() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(!is_plain(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn odd_hosts_go_to_the_general_path() {
        for head in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        ] {
            assert!(!is_plain(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn http10_absolute_form_and_grpc_go_to_the_general_path() {
        for head in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n\r\n",
        ] {
            assert!(!is_plain(head), "{}", String::from_utf8_lossy(head));
        }
    }

    /// Found by the `h1_heads` fuzz target: `Uri` cut the fragment off `/#1k`, and the
    /// upstream was sent `GET /`. Such a target now goes to the general path.
    #[test]
    fn a_target_with_a_fragment_is_not_forwarded_shortened() {
        for (head, plain) in [
            (&b"GET /#1k HTTP/1.1\r\nHost: a\r\n\r\n"[..], false),
            (b"GET /a?b#c HTTP/1.1\r\nHost: a\r\n\r\n", false),
            (b"GET /a? HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (b"GET /a?b=%23 HTTP/1.1\r\nHost: a\r\n\r\n", true),
        ] {
            let mut fields = Vec::new();
            let Parsed::Plain(parsed) = parse_request(head, &mut fields) else {
                panic!("not plain");
            };
            let message = Bytes::copy_from_slice(head);
            let parts = request_parts(&message, &parsed, &fields, HeaderMap::new());
            assert_eq!(parts.is_some(), plain, "{}", String::from_utf8_lossy(head));
            #[cfg(feature = "fuzzing")]
            super::super::fuzz::heads(head);
        }
    }

    #[test]
    fn an_unfinished_head_is_partial() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Partial
        ));
    }
}
