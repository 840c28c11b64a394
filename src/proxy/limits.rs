//! Limits and protocol constants of the data path, in one place. Defaults follow Envoy's
//! where it has one.

use std::time::Duration;

/// Limits of the downstream side. Defaults follow Envoy's where it has one.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest HTTP/1.1 request head (request line + headers), bytes. Envoy: 60 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1.1 request. Envoy: 100.
    pub max_headers: usize,
    /// Largest HTTP/2 header list, bytes.
    pub h2_max_header_list_bytes: u32,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Streams a client may reset before the server accepted them (rapid reset, CVE-2023-44487).
    pub h2_max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for protocol errors before closing the connection.
    pub h2_max_local_error_reset_streams: usize,
    /// Time to receive a request head (slowloris). For HTTP/1.1 it is also how long a
    /// keep-alive connection may sit idle between requests. nginx: 60 s.
    pub header_read_timeout: Duration,
    /// HTTP/2 PING interval; a connection that does not answer within `h2_keep_alive_timeout`
    /// is closed.
    pub h2_keep_alive_interval: Duration,
    pub h2_keep_alive_timeout: Duration,
    /// TLS handshake deadline.
    pub tls_handshake_timeout: Duration,
    /// Plain HTTP/1.1 requests to an HTTP/1.1 upstream take the fast path (`super::h1`).
    pub http1_fast_path: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            h2_max_header_list_bytes: 60 * 1024,
            h2_max_concurrent_streams: 1024,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 1024,
            header_read_timeout: Duration::from_secs(60),
            h2_keep_alive_interval: Duration::from_secs(60),
            h2_keep_alive_timeout: Duration::from_secs(20),
            tls_handshake_timeout: Duration::from_secs(10),
            http1_fast_path: true,
        }
    }
}

/// HTTP/2 flow control windows and the largest frame a peer may send, both directions.
/// Fixed and larger than h2's 64 KiB: on loopback the adaptive window never grows (the
/// bandwidth-delay product is tiny), and a stream would stall for WINDOW_UPDATEs every
/// 64 KiB. A stream may have at most this much in flight, so it bounds buffering too.
pub(crate) const H2_STREAM_WINDOW: u32 = 1024 * 1024;
pub(crate) const H2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
pub(crate) const H2_MAX_FRAME: u32 = 64 * 1024;

// The HTTP/1.1 fast path (`super::h1`).

/// Request bodies up to this size take the fast path: read whole, then sent with the head
/// (nginx buffers request bodies too). Larger ones stream through the general path.
pub const MAX_BODY: u64 = 64 * 1024;
/// Most header fields of a request here; more goes to the general path and its own limit.
pub(crate) const MAX_REQUEST_HEADERS: usize = 128;
/// Most header fields of an upstream response (hyper's default as a client).
pub(crate) const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest upstream response head.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// What a read asks the kernel for at least.
pub(crate) const READ_SIZE: usize = 4096;
/// Body bytes that go out in the same write as the response head, copied behind it.
pub(crate) const COALESCE: usize = 16 * 1024;

// Upstreams.

/// Upstream connection settings.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// How long an endpoint that refused a connection is skipped.
    pub retry_after: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_endpoint: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            // Envoy's (and Kuma's) default connect timeout.
            connect_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(60),
            // Enough for steady keep-alive traffic; a burst of thousands of connections does
            // not leave thousands of idle upstream connections (and their buffers) behind.
            pool_max_idle_per_endpoint: 256,
        }
    }
}

/// Time allowed for an upstream's response head on non-streaming requests (Envoy's route
/// timeout).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// PING interval on upstream h2 connections, and how long an answer may take.
pub(crate) const UPSTREAM_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub(crate) const UPSTREAM_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

// Chunked bodies (`super::h1::chunked`).

/// Longest chunk-size line (size, extensions) and trailer line accepted.
pub(crate) const CHUNK_LINE_MAX: u32 = 4096;
/// Most trailer bytes accepted, in all.
pub(crate) const CHUNK_TRAILERS_MAX: u32 = 16 * 1024;
