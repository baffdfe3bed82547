//! WebSocket plumbing shared by the roles: one Candy message per binary WebSocket
//! message, over any byte stream (a `Net`'s TCP stream, or TLS over it), with message
//! sizes bounded by tungstenite itself so a peer cannot make us buffer more.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
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

/// Server handshake over `s` (any path is accepted); `unmasked` also takes unmasked
/// client frames (the simulator's clients, see [`connect_unmasked`]).
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    max_message: usize,
    unmasked: bool,
) -> io::Result<WebSocketStream<S>> {
    let cfg = if unmasked {
        accept_unmasked(max_message)
    } else {
        config(max_message)
    };
    tokio_tungstenite::accept_async_with_config(s, Some(cfg))
        .await
        .map_err(io::Error::other)
}

/// The simulator's client handshake: no randomness anywhere, so a capture replays byte
/// for byte. The key comes from `seed`, and frames go unmasked (tungstenite masks client
/// frames with an unseeded RNG); the server must be told to accept unmasked frames
/// ([`accept_unmasked`]). Real networks use [`connect`]: RFC 6455 servers refuse
/// unmasked client frames.
pub async fn connect_unmasked<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    url: &WsUrl,
    max_message: usize,
    seed: u64,
) -> io::Result<WebSocketStream<S>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&seed.to_be_bytes());
    key[8..].copy_from_slice(&seed.rotate_left(29).to_le_bytes());
    let host = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n\r\n",
        url.path,
        base64(&key)
    );
    s.write_all(req.as_bytes()).await?;
    // The answer, byte by byte up to its blank line (the server sends nothing after it
    // until we do), at most 4 KiB.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handshake answer over 4 KiB",
            ));
        }
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during the handshake",
            ));
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&head[..head.len().min(64)]).into_owned();
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("handshake refused: {line:?}"),
        ));
    }
    let cfg = config(max_message).accept_unmasked_frames(true);
    Ok(WebSocketStream::from_raw_socket(s, Role::Server, Some(cfg)).await)
}

/// The server config that also takes unmasked client frames (the simulator's clients).
pub fn accept_unmasked(max_message: usize) -> WebSocketConfig {
    config(max_message).accept_unmasked_frames(true)
}

/// Standard base64 with padding.
fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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

/// A `ws://` or `wss://HOST:PORT[/PATH]` address, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80, or 443 for wss://, when absent).
    pub port: u16,
    /// Path, `/` when absent.
    pub path: String,
    /// `wss://`: the WebSocket runs inside TLS.
    pub tls: bool,
}

impl WsUrl {
    /// A plain `ws://` address.
    pub fn plain(host: &str, port: u16) -> Self {
        Self {
            host: host.to_string(),
            port,
            path: "/".into(),
            tls: false,
        }
    }

    /// Parses `ws://HOST:PORT[/PATH]` or `wss://HOST:PORT[/PATH]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (rest, tls) = if let Some(r) = s.strip_prefix("ws://") {
            (r, false)
        } else if let Some(r) = s.strip_prefix("wss://") {
            (r, true)
        } else {
            return Err(format!("{s:?}: only ws:// and wss:// URLs are supported"));
        };
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
            None if tls => 443,
            None => 80,
        };
        Ok(Self {
            host,
            port,
            path,
            tls,
        })
    }

    /// The URL as text for the handshake.
    pub fn to_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
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
        let u = WsUrl::parse("wss://h").unwrap();
        assert_eq!((u.port, u.tls), (443, true));
        assert_eq!(u.to_url(), "wss://h:443/");
        assert!(!WsUrl::parse("ws://h:1").unwrap().tls);
        assert!(WsUrl::parse("http://h:1").is_err());
        assert!(WsUrl::parse("ws://:1").is_err());
        assert!(WsUrl::parse("ws://h:x").is_err());
    }

    #[test]
    fn base64_known_values() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff; 16]), "/////////////////////w==");
    }
}
