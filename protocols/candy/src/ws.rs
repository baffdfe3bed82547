//! WebSocket plumbing shared by the roles: one Candy message per binary WebSocket
//! message, over any byte stream (a `Net`'s TCP stream, or TLS over it), with message
//! sizes bounded by tungstenite itself so a peer cannot make us buffer more.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// The Unix time now, as a `Duration` since 1970: the real binary reads the system
/// clock, the simulator gives a fixed epoch plus virtual time.
pub type UnixClock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The largest WebSocket message or frame tungstenite accepts for `max_message`-byte
/// Candy messages (a little more, so the machine sees the oversize message and closes
/// the connection with its own reason).
pub fn config(max_message: usize) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    let cap = max_message.saturating_add(1).max(64);
    c.max_message_size = Some(cap);
    c.max_frame_size = Some(cap);
    // Bound what tungstenite buffers on the write side too.
    c.max_write_buffer_size = 4 << 20;
    c
}

/// Server handshake over `s` (any path is accepted).
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    max_message: usize,
) -> io::Result<WebSocketStream<S>> {
    tokio_tungstenite::accept_async_with_config(s, Some(config(max_message)))
        .await
        .map_err(io::Error::other)
}

/// Client handshake over `s` for `url` (`ws://host:port/path`; only the request line and
/// Host header come from it).
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    url: &str,
    max_message: usize,
) -> io::Result<WebSocketStream<S>> {
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, s, Some(config(max_message)))
        .await
        .map_err(io::Error::other)?;
    Ok(ws)
}

/// A `ws://HOST:PORT[/PATH]` address, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path, `/` when absent.
    pub path: String,
}

impl WsUrl {
    /// Parses `ws://HOST:PORT[/PATH]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{s:?}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed ["))?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port"))?,
            None => 80,
        };
        Ok(Self { host, port, path })
    }

    /// The URL as text for the handshake.
    pub fn to_url(&self) -> String {
        if self.host.contains(':') {
            format!("ws://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("ws://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls() {
        let u = WsUrl::parse("ws://10.0.0.1:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.0.1", 8080, "/")
        );
        let u = WsUrl::parse("ws://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 9, "/x"));
        assert_eq!(u.to_url(), "ws://[::1]:9/x");
        assert_eq!(WsUrl::parse("ws://h").unwrap().port, 80);
        assert!(WsUrl::parse("http://h:1").is_err());
        assert!(WsUrl::parse("ws://:1").is_err());
        assert!(WsUrl::parse("ws://h:x").is_err());
    }
}
