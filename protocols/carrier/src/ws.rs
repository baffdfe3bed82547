//! WebSocket carriers as byte streams: every write becomes one binary message (as
//! pong-go does), and reads return message payloads in order. Ping/pong and close are
//! handled by tungstenite; a close or the end of the stream reads as end-of-file.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::url::CarrierUrl;

/// Largest WebSocket message accepted (pong frames are at most 64 KiB; leave room).
pub const MAX_MESSAGE: usize = 1 << 20;

fn config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.max_message_size = Some(MAX_MESSAGE);
    c.max_frame_size = Some(MAX_MESSAGE);
    c
}

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

/// A WebSocket connection seen as a byte stream.
pub struct WsBytes<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
    eof: bool,
    close_sent: bool,
}

/// Client handshake over `s` for `url` (its host, port and path).
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    url: &CarrierUrl,
) -> io::Result<WsBytes<S>> {
    let scheme = match url.kind {
        crate::CarrierKind::Wss => "wss",
        _ => "ws",
    };
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let target = format!("{scheme}://{host}:{}{}", url.port, url.path);
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(target, s, Some(config()))
        .await
        .map_err(to_io)?;
    Ok(WsBytes {
        ws,
        pending: Bytes::new(),
        eof: false,
        close_sent: false,
    })
}

/// Server handshake over `s` (any path is accepted).
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(s: S) -> io::Result<WsBytes<S>> {
    let ws = tokio_tungstenite::accept_async_with_config(s, Some(config()))
        .await
        .map_err(to_io)?;
    Ok(WsBytes {
        ws,
        pending: Bytes::new(),
        eof: false,
        close_sent: false,
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
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
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => this.pending = b,
                Some(Ok(Message::Text(t))) => this.pending = Bytes::copy_from_slice(t.as_bytes()),
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Ok(_)) => {} // ping/pong/raw frames: tungstenite answers pings itself
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(MAX_MESSAGE);
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(to_io)
    }
    /// Closes with status 1000 (normal closure): a close without a status (1005) is an
    /// error to gorilla/websocket peers such as v2ray, which then drop data still
    /// buffered on their side instead of ending cleanly.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            match ready!(Pin::new(&mut this.ws).poll_ready(cx)) {
                Ok(()) => {
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    };
                    match Pin::new(&mut this.ws).start_send(Message::Close(Some(frame))) {
                        Ok(())
                        | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)
                        | Err(tokio_tungstenite::tungstenite::Error::AlreadyClosed) => {}
                        Err(e) => return Poll::Ready(Err(to_io(e))),
                    }
                }
                Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)
                | Err(tokio_tungstenite::tungstenite::Error::AlreadyClosed) => {}
                Err(e) => return Poll::Ready(Err(to_io(e))),
            }
            this.close_sent = true;
        }
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}
