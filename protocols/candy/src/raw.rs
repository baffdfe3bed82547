//! A message-level connection to a Candy server over any [`Net`], for tests and hostile
//! scenarios that must send what a well-behaved client never would (wrong hashes,
//! replayed AUTHs, spoofed sources, floods, garbage) and see how the server answers.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tunnelbed_carrier::BoxStream;
use tunnelbed_netio::Net;

use crate::connect::open_ws;
use crate::wire::{Message, WireError};
use crate::ws::WsUrl;

/// What the server did next.
#[derive(Debug)]
pub enum Seen {
    /// A binary message.
    Message(Bytes),
    /// The connection closed (a close frame, the end of the stream, or an error).
    Closed,
    /// Nothing within the wait.
    Nothing,
}

/// One WebSocket to a Candy server.
pub struct RawConn<N: Net> {
    ws: WebSocketStream<BoxStream>,
    _net: std::marker::PhantomData<N>,
}

impl<N: Net> RawConn<N> {
    /// Connects to `url` (the simulator's deterministic handshake when `unmasked` has a
    /// seed; plain `ws://` only), within `timeout`.
    pub async fn open(
        net: &N,
        url: &WsUrl,
        unmasked: Option<u64>,
        timeout: Duration,
    ) -> io::Result<Self> {
        let max = crate::wire::MAX_MESSAGE;
        let ws = tokio::time::timeout(timeout, open_ws(net, url, max, unmasked, None))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect"))??;
        Ok(Self {
            ws,
            _net: std::marker::PhantomData,
        })
    }

    /// Queues one message (sent on the next [`RawConn::flush`]).
    pub async fn feed(&mut self, m: &Message) -> io::Result<()> {
        let b = m
            .to_bytes()
            .map_err(|e: WireError| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.feed_bytes(b.freeze()).await
    }

    /// Queues raw bytes as one binary message.
    pub async fn feed_bytes(&mut self, b: Bytes) -> io::Result<()> {
        self.ws
            .feed(WsMessage::Binary(b))
            .await
            .map_err(io::Error::other)
    }

    /// Sends what was queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.ws.flush().await.map_err(io::Error::other)
    }

    /// Sends one message now.
    pub async fn send(&mut self, m: &Message) -> io::Result<()> {
        self.feed(m).await?;
        self.flush().await
    }

    /// The next binary message, the close, or nothing within `wait` (pings and pongs
    /// are skipped).
    pub async fn recv(&mut self, wait: Duration) -> Seen {
        let end = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(end, self.ws.next()).await {
                Err(_) => return Seen::Nothing,
                Ok(Some(Ok(WsMessage::Binary(b)))) => return Seen::Message(b),
                Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    return Seen::Closed
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits up to `wait` for the server to close, skipping messages; true if it did.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let end = tokio::time::Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Seen::Closed => return true,
                Seen::Nothing => return false,
                Seen::Message(_) => {}
            }
        }
    }
}
