//! Idle keep-alive connections: open many, send one request on each, read the answer, and hold
//! them open while the proxy's memory is read.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::nginx::PATH;

/// Opens `count` connections to `address` (`parallel` at a time), each after one complete
/// keep-alive exchange. Dropping the result closes them.
pub async fn hold(
    address: SocketAddr,
    count: usize,
    parallel: usize,
) -> anyhow::Result<(Vec<TcpStream>, Vec<Duration>)> {
    let results: Vec<anyhow::Result<(TcpStream, Duration)>> = futures_util::stream::iter(0..count)
        .map(|_| async move {
            tokio::time::timeout(Duration::from_secs(10), one(address))
                .await
                .context("timed out")?
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let held: Vec<(TcpStream, Duration)> = results.into_iter().collect::<anyhow::Result<_>>()?;
    Ok(held.into_iter().unzip())
}

/// A connection whose one request was answered, and how long from connect to the answer.
async fn one(address: SocketAddr) -> anyhow::Result<(TcpStream, Duration)> {
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let request = format!("GET {PATH} HTTP/1.1\r\nHost: bench.local\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the response ended");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            bail!("answer: {}", head.lines().next().unwrap_or(""));
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no content-length")?;
        if buf.len() >= end + 4 + length {
            return Ok((stream, started.elapsed()));
        }
    }
}
