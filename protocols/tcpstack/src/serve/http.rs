//! The bulk-data HTTP/1.1 responder of `tunnelbed tcpstack serve --http-source`:
//! `GET /bytes/N` answers N bytes of the same pattern as `tunnelbed http-source`, so a
//! download through our stack is checked by SHA-256 without a file on disk.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::socket::TcpStackStream;

/// Largest request head we read before answering 431.
const MAX_HEAD: usize = 16 * 1024;

/// Byte `i` of every body (the formula of `tunnelbed http-source`; a test in
/// `tests/tcpstack_serve.rs` keeps the two equal).
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// Fills `buf` with the pattern starting at offset `off`.
pub fn fill_pattern(off: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(off + k as u64);
    }
}

async fn read_timed<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut [u8],
    idle: Duration,
) -> io::Result<usize> {
    tokio::time::timeout(idle, s.read(buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))?
}

/// Serves one connection: reads one request head, answers it, half-closes, and waits
/// (at most `idle`) for the client to close and to acknowledge our FIN, since dropping
/// earlier would reset it.
pub async fn serve_http(
    mut s: TcpStackStream,
    max_bytes: u64,
    idle: Duration,
    linger: Duration,
) -> io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = read_timed(&mut s, &mut buf, idle).await?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
        if req.len() > MAX_HEAD {
            s.write_all(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n",
            )
            .await?;
            return finish(s, idle, linger).await;
        }
    }
    let line = String::from_utf8_lossy(&req);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let n: Option<u64> = path.strip_prefix("/bytes/").and_then(|x| x.parse().ok());
    let Some(n) = n.filter(|n| *n <= max_bytes) else {
        let body = format!("use GET /bytes/N with N <= {max_bytes}\n");
        s.write_all(
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        return finish(s, idle, linger).await;
    };
    s.write_all(
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    while off < n {
        let k = (n - off).min(chunk.len() as u64) as usize;
        fill_pattern(off, &mut chunk[..k]);
        tokio::time::timeout(idle, s.write_all(&chunk[..k]))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write stalled"))??;
        off += k as u64;
    }
    finish(s, idle, linger).await
}

/// Half-closes, drains until the client's end of stream and lingers until our FIN is
/// acknowledged (bounded by `idle` and `linger`).
async fn finish(mut s: TcpStackStream, idle: Duration, linger: Duration) -> io::Result<()> {
    s.shutdown().await?;
    let mut buf = [0u8; 2048];
    while read_timed(&mut s, &mut buf, idle).await? > 0 {}
    super::relay::linger(&s, linger).await
}
