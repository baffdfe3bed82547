//! Carrier URLs: `tcp://host:port`, `tls://host:port`, `ws://host:port/path`,
//! `wss://host:port/path`, `h2c://host:port/path`, `h2://host:port/path`,
//! `h3://host:port/path`, `http://host[:port]/path` and `https://host[:port]/path`.

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
    /// One HTTP/2 request over cleartext TCP (prior knowledge), its request body one
    /// direction and its response body the other.
    H2c,
    /// The same HTTP/2 request over TLS (ALPN `h2`).
    H2,
    /// One HTTP/3 request over QUIC (ALPN `h3`, UDP), used the same way.
    H3,
    /// An HTTP/1.1 `POST` answered `200`, then raw bytes both ways on that TCP stream.
    Http,
    /// The same `POST` exchange over TLS.
    Https,
}

impl CarrierKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [CarrierKind; 9] = [
        CarrierKind::Tcp,
        CarrierKind::Tls,
        CarrierKind::Ws,
        CarrierKind::Wss,
        CarrierKind::H2c,
        CarrierKind::H2,
        CarrierKind::H3,
        CarrierKind::Http,
        CarrierKind::Https,
    ];

    /// The URL scheme naming this kind.
    pub fn scheme(self) -> &'static str {
        match self {
            CarrierKind::Tcp => "tcp",
            CarrierKind::Tls => "tls",
            CarrierKind::Ws => "ws",
            CarrierKind::Wss => "wss",
            CarrierKind::H2c => "h2c",
            CarrierKind::H2 => "h2",
            CarrierKind::H3 => "h3",
            CarrierKind::Http => "http",
            CarrierKind::Https => "https",
        }
    }

    /// The kind a scheme names, if any.
    pub fn from_scheme(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.scheme() == s)
    }

    /// Whether the carrier runs over TLS (a listener needs a certificate, a client a
    /// trust anchor).
    pub fn uses_tls(self) -> bool {
        matches!(
            self,
            CarrierKind::Tls
                | CarrierKind::Wss
                | CarrierKind::H2
                | CarrierKind::H3
                | CarrierKind::Https
        )
    }

    /// Whether the carrier runs over UDP (QUIC) rather than TCP: a listener binds a UDP
    /// socket ([`crate::http3::H3Listener`]) instead of a TCP listener.
    pub fn uses_udp(self) -> bool {
        self == CarrierKind::H3
    }

    /// Whether the URL's path is sent to the server (WebSocket and HTTP carriers).
    pub fn has_path(self) -> bool {
        !matches!(self, CarrierKind::Tcp | CarrierKind::Tls)
    }

    /// The kinds from before the HTTP carriers, for protocols that only take those
    /// (VLESS).
    pub const TCP_TLS_WS: [CarrierKind; 4] = [
        CarrierKind::Tcp,
        CarrierKind::Tls,
        CarrierKind::Ws,
        CarrierKind::Wss,
    ];
}

/// Schemes the parser accepts, for error messages.
const SCHEMES: &str = "tcp://, tls://, ws://, wss://, h2c://, h2://, h3://, http:// or https://";

/// A parsed carrier URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarrierUrl {
    /// Kind.
    pub kind: CarrierKind,
    /// Host name or address (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path for WebSocket and HTTP carriers (`/` by default; tcp:// and tls:// ignore
    /// it).
    pub path: String,
}

impl CarrierUrl {
    /// Parses `s` and accepts only the kinds in `allowed` (a protocol that runs over
    /// some carriers only refuses the others with the same kind of message).
    pub fn parse_among(s: &str, allowed: &[CarrierKind]) -> Result<Self, String> {
        let u: Self = s.parse()?;
        if allowed.contains(&u.kind) {
            return Ok(u);
        }
        let names: Vec<String> = allowed
            .iter()
            .map(|k| format!("{}://", k.scheme()))
            .collect();
        Err(format!(
            "{s:?}: unsupported scheme {:?} here (use {})",
            u.kind.scheme(),
            names.join(", ")
        ))
    }

    /// `host:port` as an HTTP authority (IPv6 addresses in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for CarrierUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| format!("{s:?}: {e} (expected {SCHEMES})"))?;
        let kind = CarrierKind::from_scheme(u.scheme())
            .ok_or_else(|| format!("{s:?}: unsupported scheme {:?} (use {SCHEMES})", u.scheme()))?;
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{s:?}: no host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = u
            .port_or_known_default()
            .ok_or_else(|| format!("{s:?}: no port"))?;
        if u.query().is_some() || u.fragment().is_some() {
            return Err(format!("{s:?}: a carrier URL takes no query or fragment"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!("{s:?}: a carrier URL takes no user or password"));
        }
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
        let scheme = self.kind.scheme();
        let authority = self.authority();
        if self.kind.has_path() {
            write!(f, "{scheme}://{authority}{}", self.path)
        } else {
            write!(f, "{scheme}://{authority}")
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
        let u: CarrierUrl = "h2c://127.0.0.1:8080/p".parse().unwrap();
        assert_eq!((u.kind, u.path.as_str()), (CarrierKind::H2c, "/p"));
        assert_eq!(u.to_string(), "h2c://127.0.0.1:8080/p");
        let u: CarrierUrl = "h2://[::1]:8443".parse().unwrap();
        assert_eq!((u.kind, u.path.as_str()), (CarrierKind::H2, "/"));
        assert_eq!(u.to_string(), "h2://[::1]:8443/");
        let u: CarrierUrl = "h3://127.0.0.1:8443/q".parse().unwrap();
        assert_eq!((u.kind, u.path.as_str()), (CarrierKind::H3, "/q"));
        assert!(u.kind.uses_tls() && u.kind.uses_udp());
        let u: CarrierUrl = "http://example.test/up".parse().unwrap();
        assert_eq!((u.kind, u.port), (CarrierKind::Http, 80));
        let u: CarrierUrl = "https://example.test".parse().unwrap();
        assert_eq!(
            (u.kind, u.port, u.path.as_str()),
            (CarrierKind::Https, 443, "/")
        );
        for k in CarrierKind::ALL {
            assert_eq!(CarrierKind::from_scheme(k.scheme()), Some(k));
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = |s: &str| s.parse::<CarrierUrl>().unwrap_err();
        assert!(err("grpc://x:1").contains("unsupported scheme \"grpc\""));
        assert!(err("quic://x:1").contains("unsupported scheme"));
        assert!(err("h3://x").contains("no port"));
        assert!(err("tcp://x").contains("no port"));
        assert!(err("h2c://x").contains("no port"));
        assert!(err("h2c:///p").contains("no host"));
        assert!(err("http://x:1/p?q=1").contains("no query"));
        assert!(err("https://u:p@x:1/").contains("no user"));
        assert!(err("nonsense").contains("expected tcp://"));
        let e = CarrierUrl::parse_among("h2c://x:1", &CarrierKind::TCP_TLS_WS).unwrap_err();
        assert!(e.contains("unsupported scheme \"h2c\" here (use tcp://, tls://, ws://, wss://)"));
        assert!(CarrierUrl::parse_among("wss://x:1/p", &CarrierKind::TCP_TLS_WS).is_ok());
        assert!(err("http://x:99999/").contains("invalid port"));
    }
}
