//! The one raw HTTP/1.1 client of the tests: it writes bytes exactly as given and reads
//! responses by their framing, so framing, field-name case and connection reuse are seen as
//! sent. Every wait is bounded by [`WAIT`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one connect, write or read may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// One response as the client received it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Status line and fields, as received (field-name case included).
    pub head: String,
    pub headers: Vec<(String, String)>,
    /// The body as framed on the wire (chunk sizes, extensions and trailers included).
    pub wire_body: Vec<u8>,
    /// The body's data.
    pub data: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A client connection that writes bytes as given and reads responses by their framing.
pub struct Raw {
    pub stream: TcpStream,
    /// Read and not yet consumed.
    pub buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(address: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(address))
            .await
            .expect("connect in time")
            .expect("connect");
        let _ = stream.set_nodelay(true);
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// Reads more; 0 when the peer closed. Panics after `WAIT`.
    pub async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("the proxy answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next response; `head_request` when it answers a HEAD (no body follows).
    pub async fn answer(&mut self, head_request: bool) -> Answer {
        let (len, status, headers) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut fields);
            match response
                .parse(&self.buf)
                .expect("a well-formed response head")
            {
                httparse::Status::Complete(len) => {
                    let headers = response
                        .headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value).into_owned();
                            (h.name.to_string(), value)
                        })
                        .collect::<Vec<_>>();
                    break (len, response.code.expect("status"), headers);
                }
                httparse::Status::Partial => {
                    assert!(self.fill().await > 0, "closed inside a response head");
                }
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..len - 2]).into_owned();
        self.buf.drain(..len);
        let mut answer = Answer {
            status,
            head,
            headers,
            wire_body: Vec::new(),
            data: Vec::new(),
        };
        let no_body = head_request || status < 200 || status == 204 || status == 304;
        if no_body {
            return answer;
        }
        if answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            let (len, data) = loop {
                if let Some(end) = chunked_end(&self.buf) {
                    break end;
                }
                assert!(self.fill().await > 0, "closed inside a chunked body");
            };
            answer.wire_body = self.buf.drain(..len).collect();
            answer.data = data;
        } else if let Some(length) = answer.header("content-length") {
            let length: usize = length.trim().parse().expect("content-length");
            while self.buf.len() < length {
                assert!(self.fill().await > 0, "closed inside a body");
            }
            answer.wire_body = self.buf.drain(..length).collect();
            answer.data = answer.wire_body.clone();
        } else {
            // Close-delimited.
            while self.fill().await > 0 {}
            answer.wire_body = std::mem::take(&mut self.buf);
            answer.data = answer.wire_body.clone();
        }
        answer
    }

    /// One request, its answer.
    pub async fn exchange(&mut self, request: &[u8]) -> Answer {
        self.send(request).await;
        self.answer(request.starts_with(b"HEAD ")).await
    }

    /// Whether the proxy closes the connection (within `WAIT`) without sending anything more.
    pub async fn closes(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Where a chunked body that starts `buf` ends, and its data; `None` while incomplete.
pub fn chunked_end(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let line = |from: usize| -> Option<usize> {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let mut i = 0;
    let mut data = Vec::new();
    loop {
        let end = line(i)?;
        let text = std::str::from_utf8(&buf[i..end]).expect("chunk size line");
        let size_text = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("chunk size");
        i = end + 2;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let end = line(i)?;
                let empty = end == i;
                i = end + 2;
                if empty {
                    return Some((i, data));
                }
            }
        }
        if buf.len() < i + size + 2 {
            return None;
        }
        data.extend_from_slice(&buf[i..i + size]);
        i += size + 2;
    }
}

/// Writes `request` on a fresh connection and reads until the proxy closes it, at most
/// `limit`. Returns what came back and whether the connection was closed. A failed write is
/// no failure: a proxy may answer and close before it has read everything.
pub async fn until_close(address: SocketAddr, request: &[u8], limit: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    };
    (String::from_utf8_lossy(&received).into_owned(), closed)
}
