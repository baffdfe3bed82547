//! HTTP/1.1 carriers (`http://`, and `https://` over TLS), pong-go's "POST, then raw
//! bytes" style: the local writes one `POST PATH HTTP/1.1` request with an empty body,
//! the remote answers `200` with a head that delimits no body (so the rest of the TCP
//! stream is the response), and from then on both directions carry raw bytes on that
//! same connection. TCP's FIN is the half-close.
//!
//! The local waits for the answer before its first byte (pong-go's server drops bytes
//! that arrive with the request, and its client drops bytes that arrive with the
//! answer), and the remote never speaks first, so neither peer loses data. Bytes that
//! do arrive together with a head are kept and read first.
//!
//! Bounds: a head may be at most [`MAX_HEAD`] bytes with at most [`MAX_HEADERS`]
//! header lines; anything else is an error (`431`/`400` to a client). The waits are
//! bounded by the caller (pong's connect and header timeouts).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::url::CarrierUrl;

/// Largest request or response head accepted.
pub const MAX_HEAD: usize = 16 << 10;
/// Most header lines accepted in a head.
pub const MAX_HEADERS: usize = 64;

/// A stream whose first bytes were already read (with the HTTP head) and are returned
/// before the rest.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads until the end of an HTTP head (`\r\n\r\n`); returns the head's length and
/// everything read so far.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S, what: &str) -> io::Result<(usize, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        // Search from a little before the new bytes, in case the end straddles reads.
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("http carrier: the connection closed inside the {what}"),
            ));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((from + i + 4, buf));
        }
        if buf.len() > MAX_HEAD {
            return Err(bad(format!(
                "http carrier: the {what} is longer than {MAX_HEAD} bytes"
            )));
        }
    }
}

/// Client side: sends the `POST` for `url` on `s` (already TLS for `https://`) and
/// reads the answer; returns the raw stream once the remote answered with a 2xx status.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    url: &CarrierUrl,
) -> io::Result<Prefixed<S>> {
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tunnelbed\r\nContent-Length: 0\r\n\r\n",
        url.path,
        url.authority()
    );
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let (len, mut buf) = read_head(&mut s, "answer").await?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf[..len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("http carrier: a partial answer")),
        Err(e) => return Err(bad(format!("http carrier: a malformed answer: {e}"))),
    }
    let code = resp.code.unwrap_or(0);
    if !(200..300).contains(&code) {
        let reason = resp.reason.unwrap_or("").to_string();
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("http carrier: the remote answered {code} {reason}"),
        ));
    }
    let rest = Bytes::from(buf.split_off(len));
    Ok(Prefixed {
        prefix: rest,
        inner: s,
    })
}

/// Server side: reads the request on `s` (already TLS for `https://`); a `POST` (any
/// path, as for WebSocket carriers) is answered `200` and the raw stream returned.
/// Anything else is answered with an error status and fails.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<Prefixed<S>> {
    let (len, mut buf) = match read_head(&mut s, "request").await {
        Ok(x) => x,
        Err(e) => {
            if e.kind() == io::ErrorKind::InvalidData {
                refuse(&mut s, "431 Request Header Fields Too Large").await;
            }
            return Err(e);
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => {
            refuse(&mut s, "400 Bad Request").await;
            return Err(bad("http carrier: a malformed request"));
        }
    }
    let method = req.method.unwrap_or("").to_string();
    if method != "POST" {
        refuse(&mut s, "405 Method Not Allowed").await;
        return Err(bad(format!(
            "http carrier: {method} request refused (only POST carries pong)"
        )));
    }
    s.write_all(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n\r\n")
        .await?;
    s.flush().await?;
    let rest = Bytes::from(buf.split_off(len));
    Ok(Prefixed {
        prefix: rest,
        inner: s,
    })
}

/// Answers with `status` and no body; errors are moot, the connection is dropped next.
async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, status: &str) {
    let head = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.shutdown().await;
}
