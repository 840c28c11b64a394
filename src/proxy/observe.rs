//! The seam between the data path and what watches it (tracing, metrics). The data path calls
//! an [`Observer`] in named phases and knows nothing of what it does with them:
//!
//! 1. **request**: the request head arrived; the observer may rewrite headers (inject trace
//!    context) and returns per-request state, or `None` to watch nothing more of this request.
//! 2. **response**: the response head is known (from the upstream, or a local reply).
//! 3. **end**: the response body ended (trailers included), or either side aborted.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::policy::effective::Direction;
use crate::policy::resource::Protocol;

/// What a listener is, for observers: fixed per listener, shared by its requests.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub direction: Direction,
    pub protocol: Protocol,
    /// The listener's own address (`host:port`).
    pub address: Arc<str>,
    /// The proxy's service (local service of every span).
    pub local_service: Arc<str>,
    /// The service on the other side: the inbound's service, or the outbound's destination.
    pub service: Arc<str>,
    /// Envoy's `upstream_cluster`.
    pub upstream_cluster: Arc<str>,
    /// Whether the downstream connection is TLS (for `x-forwarded-proto` and `http.url`).
    pub tls: bool,
}

pub trait Observer: Send + Sync + 'static {
    /// Phase 1. `head` is the request as it will be forwarded; `started` is when the proxy
    /// had it, the instant the proxy's own timings start from too.
    fn on_request(
        &self,
        listener: &Arc<ListenerInfo>,
        peer: SocketAddr,
        head: &mut Forwarded<'_>,
        started: Instant,
    ) -> Option<Box<dyn Exchange>>;
}

/// The request as it will be forwarded: its `http` view, and on the HTTP/1.1 fast path the
/// field lines added to it that the map does not hold.
pub struct Forwarded<'a> {
    pub parts: &'a mut http::request::Parts,
    lines: Option<&'a mut FieldLines>,
}

impl<'a> Forwarded<'a> {
    /// A request whose every field is in its map (the general path).
    pub fn new(parts: &'a mut http::request::Parts) -> Forwarded<'a> {
        Forwarded { parts, lines: None }
    }

    /// A request whose new fields are written as lines (the fast path, which writes the
    /// request upstream as bytes).
    pub fn with_lines(
        parts: &'a mut http::request::Parts,
        lines: &'a mut FieldLines,
    ) -> Forwarded<'a> {
        Forwarded {
            parts,
            lines: Some(lines),
        }
    }

    /// The fields added as lines (`name: value\r\n` each), after the map's.
    pub fn lines(&self) -> &[u8] {
        self.lines.as_deref().map_or(&[], FieldLines::as_bytes)
    }

    /// A field's value as the upstream will get it: the map's, else an added line's.
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        match self.parts.headers.get(name) {
            Some(value) => Some(value.as_bytes()),
            None => self.lines.as_deref().and_then(|lines| lines.get(name)),
        }
    }

    /// Writes fields into the request. With `absent`, the caller knows that no field it
    /// writes is there yet: the fast path then writes them as lines, without the map (a hashed
    /// insert and an allocated value each, about a third of what tracing an unsampled request
    /// cost).
    pub fn fields(&mut self, absent: bool) -> Fields<'_> {
        Fields {
            absent,
            lines: if absent {
                self.lines.as_deref_mut()
            } else {
                None
            },
            map: &mut self.parts.headers,
        }
    }
}

/// Where an observer (or the proxy's own rewrite) writes header fields: the request's map, or
/// the fast path's lines for fields known to be absent.
pub struct Fields<'a> {
    /// No field written is in the request yet.
    absent: bool,
    lines: Option<&'a mut FieldLines>,
    map: &'a mut HeaderMap,
}

impl<'a> Fields<'a> {
    /// Fields written into `map`.
    pub fn in_map(map: &'a mut HeaderMap) -> Fields<'a> {
        Fields {
            absent: false,
            lines: None,
            map,
        }
    }

    /// Sets `name` to `value`, replacing what the request carried. A value that is not a
    /// valid field value (never one the proxy makes) is not written.
    pub fn set(&mut self, name: &HeaderName, value: &[u8]) {
        if let Some(lines) = self.lines.as_deref_mut() {
            if !is_field_value(value) {
                return;
            }
            if lines.push(name, value) {
                return;
            }
        }
        // `from_bytes` checks the value as `is_field_value` does.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            self.map.insert(name.clone(), value);
        }
    }

    /// Sets each name to its value, as [`Fields::set`] does one. Into a map, the values share
    /// one allocation (one for a trace context's ids, rather than one for each id).
    pub fn set_all(&mut self, fields: &[(&HeaderName, &[u8])]) {
        if self.lines.is_some() {
            for (name, value) in fields {
                self.set(name, value);
            }
            return;
        }
        // A byte of room to spare: a buffer with room left is frozen as shared at once, and
        // its slices cost a count's increment; a full one is promoted at the first slice, and
        // every slice after pays for the check (90 instructions an h2c request).
        let room = fields.iter().map(|(_, v)| v.len()).sum::<usize>() + 1;
        let mut text = bytes::BytesMut::with_capacity(room);
        for (_, value) in fields {
            text.extend_from_slice(value);
        }
        let text = text.freeze();
        let mut at = 0;
        for (name, value) in fields {
            let shared = text.slice(at..at + value.len());
            at += value.len();
            // Checked as `is_field_value` does.
            if let Ok(value) = HeaderValue::from_maybe_shared(shared) {
                self.map.insert((*name).clone(), value);
            }
        }
    }

    /// Sets `name` to a value the request carried (or to a constant): no copy in the map.
    pub fn set_value(&mut self, name: &HeaderName, value: &HeaderValue) {
        if let Some(lines) = self.lines.as_deref_mut()
            && lines.push(name, value.as_bytes())
        {
            return;
        }
        self.map.insert(name.clone(), value.clone());
    }

    /// Removes a field the request carried; fields known absent have nothing to remove.
    pub fn remove(&mut self, name: &HeaderName) {
        if !self.absent {
            self.map.remove(name);
        }
    }
}

/// HTTP field value bytes (RFC 9110 5.5), as `HeaderValue` accepts them: visible ASCII,
/// obs-text, space and tab. No CR or LF: a line written from it stays one line.
fn is_field_value(value: &[u8]) -> bool {
    // Every byte looked at, without a branch per byte: the loop runs in vector steps.
    value.iter().fold(true, |ok, &b| {
        ok & (((b >= 0x20) & (b != 0x7f)) | (b == b'\t'))
    })
}

/// Field lines (`name: value\r\n`) added to a request on the fast path, written after its
/// own fields. Lent on the stack for one request; what does not fit goes into the map.
pub struct FieldLines {
    len: usize,
    bytes: [u8; FIELD_LINES],
}

/// What the proxy and a tracer add to a request that carried no context: a request id, the
/// native format's ids and `x-forwarded-proto` take under 200 bytes.
const FIELD_LINES: usize = 384;

impl Default for FieldLines {
    fn default() -> FieldLines {
        FieldLines {
            len: 0,
            bytes: [0; FIELD_LINES],
        }
    }
}

impl FieldLines {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends `name: value\r\n`; false when it does not fit.
    fn push(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        let name = name.as_str().as_bytes();
        let end = self.len + name.len() + 2 + value.len() + 2;
        let Some(line) = self.bytes.get_mut(self.len..end) else {
            return false;
        };
        let (n, rest) = line.split_at_mut(name.len());
        n.copy_from_slice(name);
        let (colon, rest) = rest.split_at_mut(2);
        colon.copy_from_slice(b": ");
        let (v, crlf) = rest.split_at_mut(value.len());
        v.copy_from_slice(value);
        crlf.copy_from_slice(b"\r\n");
        self.len = end;
        true
    }

    /// The value of the line named `name`.
    fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        let name = name.as_str().as_bytes();
        self.as_bytes()
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(b": "))
    }
}

/// Per-request state of an observer.
pub trait Exchange: Send + 'static {
    /// Phase 2. On the HTTP/1.1 fast path (never gRPC) `headers` is empty: nothing there is
    /// read for plain HTTP, and building a map per response is what that path saves.
    fn on_response(&mut self, _status: http::StatusCode, _headers: &HeaderMap) {}
    /// Phase 3, called exactly once.
    fn on_end(self: Box<Self>, end: &End<'_>);
}

/// How an exchange ended.
#[derive(Debug)]
pub struct End<'a> {
    /// The status sent downstream; 0 when no response was sent.
    pub status: u16,
    pub response_flags: ResponseFlags,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub trailers: Option<&'a HeaderMap>,
    /// The body did not end normally: a side went away or the upstream reset mid-body.
    pub aborted: bool,
    /// When the exchange ended. Read once where it ends, for the span's duration and the
    /// request's metrics (and on the HTTP/1.1 fast path, the pooled connection's idle stamp).
    pub ended: Instant,
}

/// Envoy's response flags, the ones a sidecar produces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u8);

impl ResponseFlags {
    pub const NONE: ResponseFlags = ResponseFlags(0);
    /// Upstream connection failure.
    pub const UF: ResponseFlags = ResponseFlags(1);
    /// Upstream request timeout.
    pub const UT: ResponseFlags = ResponseFlags(2);
    /// Upstream connection termination (reset before or during the response).
    pub const UC: ResponseFlags = ResponseFlags(4);
    /// No healthy upstream (no endpoints at all).
    pub const UH: ResponseFlags = ResponseFlags(8);
    /// Downstream connection termination.
    pub const DC: ResponseFlags = ResponseFlags(16);

    const NAMES: [(ResponseFlags, &'static str); 5] = [
        (ResponseFlags::UH, "UH"),
        (ResponseFlags::UF, "UF"),
        (ResponseFlags::UT, "UT"),
        (ResponseFlags::UC, "UC"),
        (ResponseFlags::DC, "DC"),
    ];

    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Envoy's format: `-` when none, else comma-separated codes.
impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in ResponseFlags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Whether a request or response is gRPC (`content-type: application/grpc[+proto…]`): the
/// data path and observers tell gRPC apart the same way.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    is_grpc_content_type(headers.get(http::header::CONTENT_TYPE))
}

/// [`is_grpc`] from the `content-type` value itself.
pub fn is_grpc_content_type(value: Option<&HeaderValue>) -> bool {
    value.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Observes nothing: the data path alone.
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_request(
        &self,
        _: &Arc<ListenerInfo>,
        _: SocketAddr,
        _: &mut Forwarded<'_>,
        _: Instant,
    ) -> Option<Box<dyn Exchange>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderName, HeaderValue};

    use super::{FIELD_LINES, FieldLines, Forwarded};

    const NAME: HeaderName = HeaderName::from_static("x-b3-traceid");

    fn request() -> http::request::Parts {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts
            .headers
            .insert(http::header::HOST, HeaderValue::from_static("web"));
        parts
    }

    #[test]
    fn a_field_known_absent_is_written_as_a_line_on_the_fast_path() {
        let mut parts = request();
        let mut lines = FieldLines::default();
        let mut head = Forwarded::with_lines(&mut parts, &mut lines);
        head.fields(true).set(&NAME, b"463ac35c9f6413ad");
        assert_eq!(head.lines(), b"x-b3-traceid: 463ac35c9f6413ad\r\n");
        assert_eq!(head.get(&NAME), Some(&b"463ac35c9f6413ad"[..]));
        assert_eq!(parts.headers.len(), 1, "the map is left as it was");
    }

    #[test]
    fn a_field_that_may_be_there_replaces_it_in_the_map() {
        let mut parts = request();
        parts
            .headers
            .insert(NAME, HeaderValue::from_static("0000000000000001"));
        let mut lines = FieldLines::default();
        let mut head = Forwarded::with_lines(&mut parts, &mut lines);
        head.fields(false).set(&NAME, b"463ac35c9f6413ad");
        assert!(head.lines().is_empty());
        assert_eq!(parts.headers.get_all(&NAME).iter().count(), 1);
        assert_eq!(parts.headers[&NAME], "463ac35c9f6413ad");
    }

    #[test]
    fn the_general_path_takes_every_field_into_the_map() {
        let mut parts = request();
        let mut head = Forwarded::new(&mut parts);
        head.fields(true).set(&NAME, b"463ac35c9f6413ad");
        assert!(head.lines().is_empty());
        assert_eq!(parts.headers[&NAME], "463ac35c9f6413ad");
    }

    #[test]
    fn fields_past_the_lines_room_go_into_the_map() {
        let mut parts = request();
        let mut lines = FieldLines::default();
        let mut head = Forwarded::with_lines(&mut parts, &mut lines);
        let long = vec![b'a'; FIELD_LINES];
        head.fields(true).set(&NAME, &long);
        assert!(head.lines().is_empty());
        assert_eq!(head.get(&NAME), Some(&long[..]));
        assert_eq!(parts.headers[&NAME].as_bytes(), &long[..]);
    }

    #[test]
    fn a_value_that_would_break_the_head_is_never_written() {
        for value in [&b"1\r\nx-evil: 1"[..], b"1\n", b"\0", b"\x7f"] {
            let mut parts = request();
            let mut lines = FieldLines::default();
            let mut head = Forwarded::with_lines(&mut parts, &mut lines);
            head.fields(true).set(&NAME, value);
            head.fields(false).set(&NAME, value);
            assert!(head.lines().is_empty(), "{value:?}");
            assert!(!parts.headers.contains_key(&NAME), "{value:?}");
        }
    }

    #[test]
    fn removing_touches_only_fields_that_may_be_there() {
        let mut parts = request();
        let mut head = Forwarded::new(&mut parts);
        head.fields(true).remove(&http::header::HOST);
        assert!(head.get(&http::header::HOST).is_some());
        head.fields(false).remove(&http::header::HOST);
        assert!(head.get(&http::header::HOST).is_none());
    }
}
