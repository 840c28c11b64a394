//! The rules both HTTP paths share, each written once: how an exchange fails and what the
//! caller is told ([`Failure`]), when a request is sent again on an HTTP/1.1 connection
//! ([`Replay`]), and which header fields are hop-by-hop ([`HOP_BY_HOP`]). Which endpoint gets
//! the request, and when the next one does, is `super::upstream::forward`, on top of these.
//!
//! The general path ([`super::http`]) and the HTTP/1.1 fast path ([`super::h1`]) differ in
//! how they speak (hyper's types, or bytes), never in these rules.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::observe::ResponseFlags;

// ---------------------------------------------------------------------------------------------
// Failures and their local replies
// ---------------------------------------------------------------------------------------------

/// Why an exchange got no response from the upstream: the status of the local reply, the
/// response flag it is recorded with, and the reason the caller reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub flags: ResponseFlags,
    pub reason: &'static str,
}

impl Failure {
    /// The endpoints list is empty (`UH`).
    pub(crate) const NO_UPSTREAM: Failure = Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        flags: ResponseFlags::UH,
        reason: "no healthy upstream",
    };
    /// No endpoint accepted a connection (`UF`).
    pub(crate) const CONNECT_FAILED: Failure = Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        flags: ResponseFlags::UF,
        reason: "upstream connect error",
    };
    /// The upstream closed, reset, or answered nonsense before a response head (`UC`).
    pub(crate) const RESET: Failure = Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        flags: ResponseFlags::UC,
        reason: "upstream connect error or disconnect/reset before headers",
    };
    /// No response head within the request timeout (`UT`).
    pub(crate) const TIMEOUT: Failure = Failure {
        status: StatusCode::GATEWAY_TIMEOUT,
        flags: ResponseFlags::UT,
        reason: "upstream request timeout",
    };

    /// A request that cannot be forwarded (400, no flag).
    pub(crate) const fn bad_request(reason: &'static str) -> Failure {
        Failure {
            status: StatusCode::BAD_REQUEST,
            flags: ResponseFlags::NONE,
            reason,
        }
    }

    /// The gRPC status a gRPC caller gets instead of the HTTP one (as Envoy maps them):
    /// DEADLINE_EXCEEDED (4) for a timeout, INTERNAL (13) for a bad request, UNAVAILABLE (14)
    /// for the rest.
    pub(crate) fn grpc_status(&self) -> &'static str {
        match self.status {
            StatusCode::GATEWAY_TIMEOUT => "4",
            StatusCode::BAD_REQUEST => "13",
            _ => "14",
        }
    }

    /// The local reply as the general path sends it: head, and body text. gRPC callers get
    /// what gRPC expects: HTTP 200, trailers-only, [`Self::grpc_status`] and the reason as
    /// `grpc-message`.
    pub(crate) fn local_reply(&self, grpc: bool) -> (Response<()>, Option<Bytes>) {
        let mut response = Response::new(());
        let headers = response.headers_mut();
        if grpc {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from_static(self.grpc_status()));
            headers.insert("grpc-message", HeaderValue::from_static(self.reason));
            return (response, None);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        *response.status_mut() = self.status;
        (response, Some(Bytes::from_static(self.reason.as_bytes())))
    }

    /// The same local reply as the fast path writes it (never gRPC: gRPC never takes that
    /// path), into `out`, whole.
    pub(crate) fn encode_local_reply(&self, out: &mut Vec<u8>, close: bool) {
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: text/plain\r\ncontent-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(self.reason.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.reason.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// gRPC deadlines
// ---------------------------------------------------------------------------------------------

/// The deadline a gRPC caller set: `grpc-timeout`, at most 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`). `None` when absent or malformed (then the call has no deadline here).
pub(crate) fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How long before our deadline a caller's reset already counts as the deadline: the
/// caller's clock started before ours, by the time its request took to arrive (a tenth of
/// the timeout, from 20 ms to 100 ms).
pub(crate) fn deadline_grace(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(20), Duration::from_millis(100))
}

// ---------------------------------------------------------------------------------------------
// Sending, and sending again on HTTP/1.1
// ---------------------------------------------------------------------------------------------

/// Why one attempt on one endpoint got no response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made: nothing was sent. `again`: the request is still whole
    /// and may go to the next endpoint.
    #[error("connect: {error}")]
    Connect { error: io::Error, again: bool },
    /// The connection failed, closed or answered nonsense before a response head.
    #[error("request: {0}")]
    Reset(Box<dyn std::error::Error + Send + Sync>),
}

/// RFC 9110 §9.2.2: safe to send again when nothing was answered.
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::DELETE | Method::PUT
    )
}

/// An error that means the connection ended before any answer: closed, reset, broken pipe.
pub(crate) fn unanswered(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// When a request on an HTTP/1.1 connection goes again, after its connection failed before
/// a response head:
///
/// - on a pooled connection that the server closed while it sat idle, with nothing of the
///   request taken: again, on another connection (pooled or new) — it is still ours;
/// - unanswered, idempotent and without a body: once more, on a fresh connection (this also
///   covers a connection the kernel accepted for a server that then went away);
/// - otherwise never.
pub(crate) struct Replay {
    replayable: bool,
    fresh_only: bool,
}

/// Where the next attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Again {
    /// Any connection, pooled first.
    Any,
    /// A new connection, not a pooled one.
    Fresh,
}

impl Replay {
    /// `replayable`: idempotent and nothing to send but the head.
    pub(crate) fn new(method: &Method, bodyless: bool) -> Replay {
        Replay {
            replayable: bodyless && idempotent(method),
            fresh_only: false,
        }
    }

    /// Whether the request may go once more on a fresh connection (its head is worth keeping).
    pub(crate) fn may_replay(&self) -> bool {
        self.replayable
    }

    /// Whether a pooled connection may be used for the next attempt.
    pub(crate) fn pooled(&self) -> bool {
        !self.fresh_only
    }

    /// After a failed attempt: `reused`, the connection came from the pool; `untouched`,
    /// nothing of the request was taken; `unanswered`, the connection ended with no byte
    /// of a response. `None`: the request fails.
    pub(crate) fn again(
        &mut self,
        reused: bool,
        untouched: bool,
        unanswered: bool,
    ) -> Option<Again> {
        if reused && untouched {
            return Some(Again::Any);
        }
        if unanswered && self.replayable && !self.fresh_only {
            self.fresh_only = true;
            return Some(Again::Fresh);
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Hop-by-hop fields
// ---------------------------------------------------------------------------------------------

/// RFC 9110 §7.6.1's hop-by-hop fields, and the obsolete ones proxies drop too: the one list
/// both views below are made from.
const HOP_BY_HOP_NAMES: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// The `HeaderName` view of [`HOP_BY_HOP_NAMES`].
pub(crate) const HOP_BY_HOP: [HeaderName; 6] = [
    HeaderName::from_static(HOP_BY_HOP_NAMES[0]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[1]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[2]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[3]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[4]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[5]),
];

/// The lengths of the names as a bit set: most names are none of them, and are told so by
/// their length alone.
const HOP_BY_HOP_LENGTHS: u64 = {
    let mut set = 0u64;
    let mut i = 0;
    while i < HOP_BY_HOP_NAMES.len() {
        set |= 1 << HOP_BY_HOP_NAMES[i].len();
        i += 1;
    }
    set
};

/// The byte view: whether a field name as read off the wire (any case) is hop-by-hop.
pub(crate) fn is_hop_by_hop_bytes(name: &[u8]) -> bool {
    name.len() < 64
        && HOP_BY_HOP_LENGTHS & (1 << name.len()) != 0
        && HOP_BY_HOP_NAMES
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// The `HeaderName` view (names are lowercase already).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_bytes(name.as_str().as_bytes())
}

/// The tokens of a `Connection` (or `TE`) value.
pub(crate) fn connection_tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the hop-by-hop fields and those the Connection header names. `te: trailers`
/// survives: gRPC needs it end to end, and it is the one TE value h2 allows.
pub(crate) fn remove_hop_by_hop(headers: &mut http::HeaderMap) {
    // Most messages carry none of them: one pass over the names instead of six removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // `Connection: keep-alive` / `close` name no other field: the common case costs nothing.
    let names_fields = |v: &HeaderValue| {
        let v = v.as_bytes();
        !v.eq_ignore_ascii_case(b"keep-alive") && !v.eq_ignore_ascii_case(b"close")
    };
    if headers.get_all(header::CONNECTION).iter().any(names_fields) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(connection_tokens)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            if name != header::TE {
                headers.remove(&name);
            }
        }
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case("trailers")));
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_views_of_the_hop_by_hop_list_agree() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name));
            assert!(is_hop_by_hop_bytes(
                name.as_str().to_ascii_uppercase().as_bytes()
            ));
        }
        for name in ["host", "content-length", "x-connection", "expect", ""] {
            assert!(!is_hop_by_hop_bytes(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn te_trailers_survives_and_named_fields_go() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop, te"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers, gzip"));
        headers.insert("x-kept", HeaderValue::from_static("2"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[header::TE], "trailers");
        assert_eq!(headers["x-kept"], "2");
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_malformed_ones_ignored() {
        let timeout = |v: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", HeaderValue::from_static(v));
            grpc_timeout(&headers)
        };
        assert_eq!(timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_request_goes_again_once_on_a_fresh_connection_only_when_replayable() {
        let mut replay = Replay::new(&Method::GET, true);
        assert_eq!(replay.again(true, true, false), Some(Again::Any));
        assert_eq!(replay.again(true, false, true), Some(Again::Fresh));
        assert!(!replay.pooled());
        assert_eq!(replay.again(false, false, true), None);
        let mut post = Replay::new(&Method::POST, true);
        assert_eq!(post.again(false, false, true), None);
    }
}
