//! The tracing layer of the data path: for each request on an http/http2/grpc listener it reads
//! the caller's context in every propagation format (B3, W3C Trace Context, Datadog; README,
//! Propagation), decides once whether to sample, writes the context for the next hop in the backend's
//! native format and every format that came in, and — only when sampled — records a span that
//! ends with the response body.
//!
//! Unsampled requests allocate no span and build no tags: they pay for the header lookups and
//! the ids they forward, nothing more.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::SpanSink;
use super::context::{Format, SpanContext};
use super::id::{SpanId, TraceId};
use super::propagation::{self, Outgoing};
use super::span::{Span, SpanKind, Tags};
use crate::metrics::FormatLabels;
use crate::policy::effective::Direction;
use crate::proxy::observe::{
    End, Exchange, Forwarded, ListenerInfo, Observer, ResponseFlags, is_grpc_content_type,
};
use crate::spare::{self, Spares};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// `http.url` keeps at most this many characters of the path (Envoy's limit).
const MAX_PATH_CHARS: usize = 256;

/// gRPC codes that mark a span as an error (Envoy's list): Unknown, DeadlineExceeded,
/// ResourceExhausted, Unimplemented, Internal, Unavailable, DataLoss.
const GRPC_ERROR_CODES: [&[u8]; 7] = [b"2", b"4", b"8", b"12", b"13", b"14", b"15"];

/// The backend a proxy traces to, as the data path needs it.
pub struct TracedBackend {
    pub name: Arc<str>,
    /// Sampling in basis points (0–10,000).
    pub basis_points: u32,
    /// The SERVER span shares the caller's span id. A Zipkin notion: false for Datadog.
    pub shared_span_context: bool,
    /// New root traces get 128-bit ids.
    pub trace_id_128bit: bool,
    /// The backend's own propagation format: read first, always written (zipkin: B3,
    /// datadog: Datadog, openTelemetry: W3C).
    pub propagation: Format,
    pub sink: Arc<dyn SpanSink>,
    /// MeshTrace's sampling knobs and tags; `None` under TrafficTrace.
    pub meshtrace: Option<Arc<super::meshtrace::MeshTraceSettings>>,
}

/// What the tracing layer applies now; replaced whole on a policy change.
#[derive(Default)]
pub struct TraceConfig {
    /// `None`: no TrafficTrace (or no backend) applies; nothing is traced.
    pub backend: Option<TracedBackend>,
}

pub struct Tracer {
    config: ArcSwap<TraceConfig>,
    /// Envoy's `node_id` tag: `<mesh>.<dataplane>`.
    node_id: Arc<str>,
    /// Malformed contexts, by format (`Format::ALL` order), resolved once.
    invalid_contexts: [Counter; 3],
}

impl Tracer {
    pub fn new(node_id: &str, config: TraceConfig) -> Tracer {
        Tracer::with_invalid_counter(node_id, config, Family::default())
    }

    /// Counts malformed contexts on `invalid_contexts` (a registered metric with a `format`
    /// label).
    pub fn with_invalid_counter(
        node_id: &str,
        config: TraceConfig,
        invalid_contexts: Family<FormatLabels, Counter>,
    ) -> Tracer {
        let counter = |format: Format| {
            invalid_contexts
                .get_or_create(&FormatLabels {
                    format: format.label(),
                })
                .clone()
        };
        Tracer {
            config: ArcSwap::from_pointee(config),
            node_id: Arc::from(node_id),
            invalid_contexts: Format::ALL.map(counter),
        }
    }

    /// Applies a new configuration to the requests that start from now on.
    pub fn set_config(&self, config: TraceConfig) {
        self.config.store(Arc::new(config));
    }

    /// Malformed contexts ignored, all formats together.
    pub fn invalid_contexts(&self) -> u64 {
        self.invalid_contexts.iter().map(Counter::get).sum()
    }

    /// Malformed contexts of one format ignored.
    pub fn invalid_contexts_of(&self, format: Format) -> u64 {
        self.invalid_contexts[format as usize].get()
    }
}

impl Observer for Tracer {
    fn on_request(
        &self,
        listener: &Arc<ListenerInfo>,
        peer: SocketAddr,
        head: &mut Forwarded<'_>,
        started: Instant,
    ) -> Option<Box<dyn Exchange>> {
        if !listener.protocol.is_traced() {
            return None;
        }
        let config = self.config.load();
        let backend = config.backend.as_ref()?;

        // Never rewrite a caller's request id; make one when there is none. Looked up once:
        // the sampling key and the span's `guid:x-request-id` tag both come from here.
        let generated;
        let request_id: &[u8] = match head.parts.headers.get(&X_REQUEST_ID) {
            Some(id) => id.as_bytes(),
            None => {
                generated = super::id::random_uuid();
                head.fields(true).set(&X_REQUEST_ID, &generated);
                &generated
            }
        };
        let native = backend.propagation;
        let incoming = propagation::extract(&head.parts.headers, native);
        for format in incoming.invalid() {
            self.invalid_contexts[format as usize].inc();
        }
        let sampling = incoming.context.sampling;
        let decision = match &incoming.context.ids {
            Some(c) => backend.decide(
                sampling,
                c.trace_id.to_hex().as_bytes(),
                &head.parts.headers,
            ),
            None => backend.decide(sampling, request_id, &head.parts.headers),
        };
        // A span's first tags, the request id among them, are taken before the context is
        // written into the headers.
        let tags = decision
            .sampled
            .then(|| first_tags(self, backend, head.parts, request_id, Spare::take()));
        let inbound = listener.direction == Direction::Inbound;
        let (context, shared) = match incoming.context.ids {
            Some(caller) if inbound && backend.shared_span_context => (caller, true),
            Some(caller) => (
                SpanContext {
                    trace_id: caller.trace_id,
                    span_id: SpanId::random(),
                    parent_id: Some(caller.span_id),
                },
                false,
            ),
            None => (
                SpanContext {
                    trace_id: TraceId::random(backend.trace_id_128bit),
                    span_id: SpanId::random(),
                    parent_id: None,
                },
                false,
            ),
        };
        propagation::inject(
            head,
            native,
            &incoming,
            Outgoing {
                hop: &context,
                sampled: decision.sampled,
                debug: decision.debug,
                continued: incoming.context.ids.is_some(),
            },
        );
        let (tags, name) = tags?;
        let trace_state = incoming
            .context
            .trace_state
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(Box::from);
        Some(Box::new(Recording::start(
            listener,
            backend,
            peer,
            head,
            context,
            shared,
            decision.debug,
            trace_state,
            tags,
            name,
            started,
        )))
    }
}

/// A sampled span's tag list with its first three tags, `node_id`, `component` and
/// `guid:x-request-id`, sized for all it will get: the index for each tag it can get (14 for
/// HTTP, three more for gRPC, and the MeshTrace tags), the text for the node id and the
/// path, and room for the rest (host, user agent, UUID, address, cluster, numbers).
fn first_tags(
    tracer: &Tracer,
    backend: &TracedBackend,
    head: &http::request::Parts,
    request_id: &[u8],
    spare: Spare,
) -> (Tags, String) {
    let user_tags = backend.meshtrace.as_ref().map_or(0, |m| m.tags.len());
    // Room for gRPC's three whether or not the request is gRPC: the list is the thread's
    // own, kept from span to span, and knowing would take a lookup of `content-type` here.
    let grpc = 3;
    // `http.url` keeps at most MAX_PATH_CHARS of the path, most often one byte each.
    let path = head
        .uri
        .path_and_query()
        .map_or(0, |p| p.as_str().len().min(MAX_PATH_CHARS));
    let mut tags = spare.tags;
    tags.reserve(14 + grpc + user_tags, tracer.node_id.len() + path + 320);
    tags.push("node_id", &tracer.node_id);
    tags.push("component", "proxy");
    tags.push_header("guid:x-request-id", request_id);
    (tags, spare.name)
}

/// A finished span's tag list and name, emptied, for a span this thread starts next: the
/// span is written into its batch where it ends, so its buffers are free again at once, and
/// the next span takes them instead of allocating three buffers and freeing them.
#[derive(Default)]
struct Spare {
    tags: Tags,
    name: String,
}

/// Spare sets a thread keeps: more than the sampled requests one worker has in flight.
const SPARE_SETS: usize = 64;

/// A set grown past this (a long URL, many tags) is freed rather than kept.
const SPARE_BYTES: usize = 4096;

thread_local! {
    static SPARE: Spares<Spare> = const { Spares::new(Vec::new()) };
}

impl Spare {
    fn take() -> Spare {
        spare::take(&SPARE).unwrap_or_default()
    }

    fn give(mut self) {
        if self.tags.capacity_bytes() + self.name.capacity() > SPARE_BYTES {
            return;
        }
        self.tags.clear();
        self.name.clear();
        spare::give(&SPARE, self, SPARE_SETS);
    }
}

/// A sampled request's span under way.
struct Recording {
    span: Span,
    started: Instant,
    sink: Arc<dyn SpanSink>,
    upstream_cluster: Arc<str>,
    grpc: bool,
    status: StatusCode,
    /// gRPC status and message of a trailers-only response (in the headers).
    grpc_status: Option<HeaderValue>,
    grpc_message: Option<HeaderValue>,
}

impl Recording {
    #[allow(clippy::too_many_arguments)]
    fn start(
        listener: &ListenerInfo,
        backend: &TracedBackend,
        peer: SocketAddr,
        head: &Forwarded<'_>,
        context: SpanContext,
        shared: bool,
        debug: bool,
        trace_state: Option<Box<str>>,
        mut tags: Tags,
        mut name: String,
        started: Instant,
    ) -> Recording {
        let timestamp_us = wall_micros(started);
        let request = &*head.parts;
        let read = SpanFields::read(&request.headers);
        let grpc = is_grpc_content_type(read.content_type);
        let host = request
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| read.host.and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let path = request.uri.path_and_query().map_or("/", |p| p.as_str());

        let scheme = if listener.tls { "https://" } else { "http://" };
        tags.push_parts("http.url", &[scheme, host, cut_chars(path, MAX_PATH_CHARS)]);
        tags.push("http.method", request.method.as_str());
        tags.push(
            "http.protocol",
            match request.version {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
        );
        if let Some(agent) = read.user_agent {
            tags.push_header("user_agent", agent.as_bytes());
        }
        push_ip(&mut tags, "peer.address", peer.ip());
        if grpc {
            tags.push("grpc.path", request.uri.path());
        }
        if let Some(meshtrace) = &backend.meshtrace {
            // Read from the request as forwarded: the request id and context written above.
            meshtrace.push_tags(head, &mut tags);
        }

        let (kind, remote_service) = match listener.direction {
            Direction::Inbound => (SpanKind::Server, None),
            Direction::Outbound => (SpanKind::Client, Some(listener.service.clone())),
        };
        Recording {
            span: Span {
                trace_id: context.trace_id,
                id: context.span_id,
                parent_id: context.parent_id,
                kind,
                direction: listener.direction,
                name: {
                    name.push_str(host);
                    name
                },
                timestamp_us,
                duration_us: 0,
                local_service: listener.local_service.clone(),
                remote_service,
                shared,
                debug,
                error: false,
                tags,
                trace_state,
            },
            started,
            sink: backend.sink.clone(),
            upstream_cluster: listener.upstream_cluster.clone(),
            grpc,
            status: StatusCode::OK,
            grpc_status: None,
            grpc_message: None,
        }
    }
}

impl Exchange for Recording {
    fn on_response(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.status = status;
        if self.grpc {
            self.grpc_status = headers.get(&GRPC_STATUS).cloned();
            self.grpc_message = headers.get(&GRPC_MESSAGE).cloned();
        }
    }

    fn on_end(mut self: Box<Self>, end: &End<'_>) {
        // Finished where it lies: the span is lent to the sink and freed with the box, never
        // moved out of it (a span is some 200 bytes; each move is a copy).
        let Recording {
            span,
            started,
            sink,
            upstream_cluster,
            grpc,
            grpc_status,
            grpc_message,
            ..
        } = &mut *self;
        span.duration_us =
            (end.ended.saturating_duration_since(*started).as_micros() as u64).max(1);
        let tags = &mut span.tags;
        tags.push_u64("request_size", end.request_bytes);
        tags.push_u64("response_size", end.response_bytes);
        tags.push("upstream_cluster", upstream_cluster);
        tags.push_u64("http.status_code", u64::from(end.status));
        if end.response_flags.is_empty() {
            tags.push("response_flags", "-");
        } else {
            tags.push("response_flags", &end.response_flags.to_string());
        }
        let mut grpc_error = false;
        if *grpc {
            // Trailers carry the status; a trailers-only response carries it in its headers.
            let status = end
                .trailers
                .and_then(|t| t.get(&GRPC_STATUS))
                .or(grpc_status.as_ref());
            let message = end
                .trailers
                .and_then(|t| t.get(&GRPC_MESSAGE))
                .or(grpc_message.as_ref());
            if let Some(code) = status.filter(|v| !v.is_empty()) {
                grpc_error = GRPC_ERROR_CODES.contains(&code.as_bytes());
                tags.push_header("grpc.status_code", code.as_bytes());
            }
            if let Some(message) = message.filter(|v| !v.is_empty()) {
                tags.push_header("grpc.message", message.as_bytes());
            }
        }
        // A caller that left is an error, as in Envoy, but a cancelled gRPC call is not.
        let left = end.response_flags.contains(ResponseFlags::DC);
        let no_response = end.status == 0 && !left;
        span.error = end.status >= 500 || no_response || grpc_error || (left && !*grpc);
        if span.error {
            span.tags.push("error", "true");
        }
        sink.try_send(span);
        Spare {
            tags: std::mem::take(&mut span.tags),
            name: std::mem::take(&mut span.name),
        }
        .give();
    }
}

/// The request's fields a span reads: the first value of each, found in one pass over the
/// head's fields. A request head is short, and a look at each name costs less than the three
/// hashed lookups.
#[derive(Default)]
struct SpanFields<'a> {
    host: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
    content_type: Option<&'a HeaderValue>,
}

impl<'a> SpanFields<'a> {
    fn read(headers: &'a HeaderMap) -> SpanFields<'a> {
        let mut read = SpanFields::default();
        for (name, value) in headers {
            let slot = if name == header::HOST {
                &mut read.host
            } else if name == header::USER_AGENT {
                &mut read.user_agent
            } else if name == header::CONTENT_TYPE {
                &mut read.content_type
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        read
    }
}

/// How long a thread goes on from one reading of the wall clock (see [`wall_micros`]).
const WALL_CLOCK_REFRESH: Duration = Duration::from_secs(1);

thread_local! {
    /// A monotonic instant and the wall clock's microseconds since the epoch at that instant.
    static WALL_CLOCK: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// The wall clock, in microseconds since the Unix epoch, at the monotonic instant `at`
/// (a span's start, which the proxy has read already): the thread's last reading of both
/// clocks plus the time since. The two clocks run at the same rate (NTP slews both), so this
/// is the wall clock itself; only a step of the wall clock shows late, within
/// [`WALL_CLOCK_REFRESH`], when the thread reads both again. That saves a clock read per
/// sampled request, some 30 ns in a virtual machine.
fn wall_micros(at: Instant) -> u64 {
    WALL_CLOCK.with(|clock| {
        let (base, base_us) = match clock.get() {
            Some((base, base_us)) if at >= base && at.duration_since(base) < WALL_CLOCK_REFRESH => {
                (base, base_us)
            }
            _ => {
                let reading = (
                    Instant::now(),
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as u64),
                );
                clock.set(Some(reading));
                reading
            }
        };
        match at.checked_duration_since(base) {
            Some(after) => base_us + after.as_micros() as u64,
            None => base_us.saturating_sub(base.duration_since(at).as_micros() as u64),
        }
    })
}

/// An address as text; IPv4 (the common case) without the formatting machinery.
fn push_ip(tags: &mut Tags, key: &'static str, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                let mut buffer = itoa::Buffer::new();
                let digits = buffer.format(*octet).as_bytes();
                text[len..len + digits.len()].copy_from_slice(digits);
                len += digits.len();
            }
            tags.push(key, std::str::from_utf8(&text[..len]).unwrap_or(""));
        }
        std::net::IpAddr::V6(v6) => tags.push(key, &v6.to_string()),
    }
}

/// The first `max` characters of `s`. Text of at most `max` bytes has at most `max`
/// characters: kept whole without walking them.
fn cut_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use http::header::{self, HeaderMap, HeaderValue};

    use super::{SpanFields, WALL_CLOCK, WALL_CLOCK_REFRESH, cut_chars, wall_micros};

    #[test]
    fn a_span_reads_the_first_value_of_each_field_it_tags() {
        let mut headers = HeaderMap::new();
        headers.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.append(header::USER_AGENT, HeaderValue::from_static("first"));
        headers.append(header::HOST, HeaderValue::from_static("web"));
        headers.append(header::USER_AGENT, HeaderValue::from_static("second"));
        let read = SpanFields::read(&headers);
        assert_eq!(read.host, Some(&HeaderValue::from_static("web")));
        assert_eq!(read.user_agent, Some(&HeaderValue::from_static("first")));
        assert_eq!(read.content_type, None);
        // As a lookup would: the first value of a repeated field.
        assert_eq!(read.user_agent, headers.get(header::USER_AGENT));
    }

    fn wall_clock_now_us() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }

    #[test]
    fn a_span_starts_at_the_wall_clock_time_of_its_request() {
        let before = wall_clock_now_us();
        let started = Instant::now();
        let stamped = wall_micros(started);
        let after = wall_clock_now_us();
        // A millisecond either side for the order the clocks are read in and rounding.
        assert!(
            (before - 1_000..=after + 1_000).contains(&stamped),
            "{before} {stamped} {after}"
        );
    }

    #[test]
    fn starts_within_a_second_of_the_threads_reading_count_on_from_it() {
        // A reading set by hand, far from the real clock: used as it is.
        let base = Instant::now();
        WALL_CLOCK.with(|clock| clock.set(Some((base, 1_000_000))));
        assert_eq!(wall_micros(base + Duration::from_millis(10)), 1_010_000);
        assert_eq!(
            wall_micros(base + Duration::from_micros(999_999)),
            1_999_999
        );
    }

    #[test]
    fn a_start_a_second_after_the_threads_reading_reads_the_clocks_again() {
        // A wrong reading is replaced once it is a second old: a step of the wall clock shows
        // within a second.
        let base = Instant::now();
        WALL_CLOCK.with(|clock| clock.set(Some((base, 1_000_000))));
        let later = base + WALL_CLOCK_REFRESH;
        let stamped = wall_micros(later);
        let expected = wall_clock_now_us()
            + later.saturating_duration_since(Instant::now()).as_micros() as u64;
        assert!(stamped.abs_diff(expected) < 50_000, "{stamped} {expected}");
    }

    #[test]
    fn a_cut_keeps_at_most_max_characters_and_never_splits_one() {
        assert_eq!(cut_chars("", 2), "");
        assert_eq!(cut_chars("ab", 2), "ab");
        assert_eq!(cut_chars("abc", 2), "ab");
        // More bytes than `max`, no more characters: kept whole.
        assert_eq!(cut_chars("éé", 2), "éé");
        assert_eq!(cut_chars("ééé", 2), "éé");
        assert_eq!(cut_chars("aé", 1), "a");
    }
}
