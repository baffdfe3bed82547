//! HTTP/2 carriers (`h2c://` cleartext with prior knowledge, `h2://` over TLS with ALPN
//! `h2`), the way pong-go carries pong over HTTP/2: the local sends one `POST` to the
//! URL's path with a body that never ends until the local closes, the remote answers
//! `200` at once with a body that streams back, and the two bodies are the byte stream
//! (request body local -> remote, response body remote -> local). END_STREAM on a body
//! is a half-close; RST_STREAM or a lost connection reads as an error.
//!
//! One carrier is one HTTP/2 connection holding one request. A second request on the
//! same connection is refused with REFUSED_STREAM (pong-go's Go client may pool several
//! pong connections onto one HTTP/2 connection; ours never does).
//!
//! Bounds: HTTP/2 flow control caps what either side buffers ([`WINDOW`] per stream,
//! [`CONN_WINDOW`] per connection, [`MAX_SEND_BUFFER`] queued for sending); header lists
//! are capped at [`MAX_HEADER_LIST`]; after the carrier is dropped its connection gets
//! [`LINGER`] to say goodbye, then it is dropped too. The handshake itself is bounded by
//! the caller (pong's connect and header timeouts).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::url::CarrierUrl;
use crate::CarrierKind;

/// Per-stream receive window: large enough that one carrier fills a fast link.
pub const WINDOW: u32 = 4 << 20;
/// Per-connection receive window (one stream per connection, so a little above it).
pub const CONN_WINDOW: u32 = 8 << 20;
/// Largest DATA frame we accept.
pub const MAX_FRAME: u32 = 1 << 16;
/// Largest header list we accept.
pub const MAX_HEADER_LIST: u32 = 16 << 10;
/// Bytes one stream may have queued for sending.
pub const MAX_SEND_BUFFER: usize = 1 << 20;
/// How long a dropped carrier's connection may take to close.
pub const LINGER: Duration = Duration::from_secs(10);

fn to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        match e.into_io() {
            Some(e) => e,
            None => io::Error::other("http/2 i/o error"),
        }
    } else {
        io::Error::other(e)
    }
}

/// An HTTP/2 request body and response body seen as one byte stream.
pub struct H2Bytes {
    send: SendStream<Bytes>,
    recv: RecvStream,
    pending: Bytes,
    eof: bool,
    end_sent: bool,
    /// Dropped with the carrier: tells the connection task to wind down.
    _alive: oneshot::Sender<()>,
}

impl H2Bytes {
    fn new(send: SendStream<Bytes>, recv: RecvStream, alive: oneshot::Sender<()>) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            eof: false,
            end_sent: false,
            _alive: alive,
        }
    }
}

/// Client side: HTTP/2 handshake on `s` (already TLS for `h2://`), then the `POST` to
/// `url`'s path; returns once the remote answered with a 2xx status.
pub async fn client<S>(s: S, url: &CarrierUrl) -> io::Result<H2Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send_req, conn) = h2::client::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .enable_push(false)
        .handshake::<_, Bytes>(s)
        .await
        .map_err(to_io)?;
    let (alive, dropped) = oneshot::channel();
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            biased;
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!("h2 carrier (client): connection ended: {e}");
                }
                return;
            }
            _ = dropped => {}
        }
        // The carrier is gone: its stream was reset or ended, so the connection closes
        // by itself once that is sent; give it a bounded time.
        let _ = tokio::time::timeout(LINGER, conn).await;
    });
    let scheme = match url.kind {
        CarrierKind::H2 => "https",
        _ => "http",
    };
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{scheme}://{}{}", url.authority(), url.path))
        .body(())
        .map_err(io::Error::other)?;
    let (resp, send) = send_req.send_request(req, false).map_err(to_io)?;
    let resp = resp.await.map_err(to_io)?;
    if !resp.status().is_success() {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("h2 carrier: the remote answered {}", resp.status()),
        ));
    }
    Ok(H2Bytes::new(send, resp.into_body(), alive))
}

/// Server side: HTTP/2 handshake on `s` (already TLS for `h2://`), then the first
/// request, which must be a `POST` (any path, as for WebSocket carriers); it is answered
/// `200` at once. Other methods get `405` and an error.
pub async fn server<S>(s: S) -> io::Result<H2Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = h2::server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(1)
        .handshake::<_, Bytes>(s)
        .await
        .map_err(to_io)?;
    let (req, mut respond) = match conn.accept().await {
        Some(r) => r.map_err(to_io)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "h2 carrier: the connection closed before a request",
            ))
        }
    };
    if req.method() != Method::POST {
        let method = req.method().clone();
        let answer = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(())
            .map_err(io::Error::other)?;
        let _ = respond.send_response(answer, true);
        conn.graceful_shutdown();
        let _ = tokio::time::timeout(LINGER, conn.accept()).await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("h2 carrier: {method} request refused (only POST carries pong)"),
        ));
    }
    let ok = Response::builder()
        .status(StatusCode::OK)
        .body(())
        .map_err(io::Error::other)?;
    let send = respond.send_response(ok, false).map_err(to_io)?;
    let recv = req.into_body();
    let (alive, mut dropped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        // Polling `accept` drives the connection; further requests are refused.
        loop {
            tokio::select! {
                biased;
                next = conn.accept() => match next {
                    Some(Ok((_, mut extra))) => extra.send_reset(Reason::REFUSED_STREAM),
                    Some(Err(e)) => {
                        tracing::debug!("h2 carrier (server): connection ended: {e}");
                        return;
                    }
                    None => return,
                },
                _ = &mut dropped => break,
            }
        }
        conn.graceful_shutdown();
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok((_, mut extra))) = conn.accept().await {
                extra.send_reset(Reason::REFUSED_STREAM);
            }
        })
        .await;
    });
    Ok(H2Bytes::new(send, recv, alive))
}

impl AsyncRead for H2Bytes {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(b)) => {
                    // The chunk is at most one frame; give its window back now, so the
                    // peer can send the next while this one is read.
                    let _ = this.recv.flow_control().release_capacity(b.len());
                    this.pending = b;
                }
                None => this.eof = true,
                Some(Err(e)) => {
                    if e.reason() == Some(Reason::NO_ERROR) {
                        this.eof = true;
                    } else {
                        return Poll::Ready(Err(to_io(e)));
                    }
                }
            }
        }
    }
}

impl AsyncWrite for H2Bytes {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.end_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.send.reserve_capacity(buf.len());
        let cap = loop {
            let c = this.send.capacity();
            if c > 0 {
                break c;
            }
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(c)) if c > 0 => break c,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "h2 carrier: the stream was reset",
                    )))
                }
            }
        };
        let n = cap.min(buf.len());
        this.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Data handed to `send_data` is written by the connection task.
        Poll::Ready(Ok(()))
    }

    /// Ends our body (END_STREAM): a half-close.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.end_sent {
            this.end_sent = true;
            this.send.reserve_capacity(0);
            // An error means the stream is already gone, which is closed enough.
            let _ = this.send.send_data(Bytes::new(), true);
        }
        Poll::Ready(Ok(()))
    }
}
