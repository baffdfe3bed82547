//! Carrier URLs: `tcp://host:port`, `tls://host:port`, `ws://host:port/path`,
//! `wss://host:port/path`.

use std::fmt;
use std::str::FromStr;

/// The kind of carrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarrierKind {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket over TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

/// A parsed carrier URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarrierUrl {
    /// Kind.
    pub kind: CarrierKind,
    /// Host name or address (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path for WebSocket carriers (`/` by default).
    pub path: String,
}

impl FromStr for CarrierUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
        let kind = match u.scheme() {
            "tcp" => CarrierKind::Tcp,
            "tls" => CarrierKind::Tls,
            "ws" => CarrierKind::Ws,
            "wss" => CarrierKind::Wss,
            other => {
                return Err(format!(
                    "{s:?}: unsupported scheme {other:?} (use tcp://, tls://, ws:// or wss://)"
                ))
            }
        };
        let host = u
            .host_str()
            .ok_or_else(|| format!("{s:?}: no host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = u
            .port_or_known_default()
            .ok_or_else(|| format!("{s:?}: no port"))?;
        let path = if u.path().is_empty() {
            "/".into()
        } else {
            u.path().to_string()
        };
        Ok(Self {
            kind,
            host,
            port,
            path,
        })
    }
}

impl fmt::Display for CarrierUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            CarrierKind::Tcp => "tcp",
            CarrierKind::Tls => "tls",
            CarrierKind::Ws => "ws",
            CarrierKind::Wss => "wss",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.kind {
            CarrierKind::Ws | CarrierKind::Wss => {
                write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
            }
            _ => write!(f, "{scheme}://{host}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let u: CarrierUrl = "tcp://127.0.0.1:9000".parse().unwrap();
        assert_eq!(
            (u.kind, u.host.as_str(), u.port),
            (CarrierKind::Tcp, "127.0.0.1", 9000)
        );
        let u: CarrierUrl = "wss://example.test:8443/pong".parse().unwrap();
        assert_eq!((u.kind, u.path.as_str()), (CarrierKind::Wss, "/pong"));
        let u: CarrierUrl = "tls://[::1]:443".parse().unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.to_string(), "tls://[::1]:443");
        assert!("http://x:1"
            .parse::<CarrierUrl>()
            .unwrap_err()
            .contains("unsupported scheme"));
        assert!("tcp://x"
            .parse::<CarrierUrl>()
            .unwrap_err()
            .contains("no port"));
    }
}
