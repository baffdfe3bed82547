//! Which transport carries a tunnel, as the command line and the scenarios name it.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A carrier address: KCP over UDP (`udp://ADDR`, one KCP session per client address,
/// as vproxy) or plain TCP (`tcp://ADDR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// KCP in stream mode over UDP.
    Udp(SocketAddr),
    /// A TCP connection.
    Tcp(SocketAddr),
}

impl Carrier {
    /// The socket address, whichever the transport.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Carrier::Udp(a) | Carrier::Tcp(a) => *a,
        }
    }
}

impl fmt::Display for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Carrier::Udp(a) => write!(f, "udp://{a}"),
            Carrier::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Why a carrier address did not parse; the message says what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CarrierError {
    /// No `scheme://` prefix.
    #[error("{0:?}: expected udp://HOST:PORT or tcp://HOST:PORT")]
    NoScheme(String),
    /// The address part is not `IP:PORT`.
    #[error("{0:?}: bad address: {1}")]
    BadAddress(String, String),
    /// A scheme other than `udp` or `tcp`.
    #[error("{0:?}: unknown scheme {1:?} (udp or tcp)")]
    UnknownScheme(String, String),
}

impl FromStr for Carrier {
    type Err = CarrierError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| CarrierError::NoScheme(s.to_string()))?;
        let addr: SocketAddr = rest.parse().map_err(|e: std::net::AddrParseError| {
            CarrierError::BadAddress(s.into(), e.to_string())
        })?;
        match scheme {
            "udp" => Ok(Carrier::Udp(addr)),
            "tcp" => Ok(Carrier::Tcp(addr)),
            other => Err(CarrierError::UnknownScheme(s.into(), other.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_and_round_trips() {
        for s in ["udp://127.0.0.1:9000", "tcp://[::1]:80"] {
            let c: Carrier = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
        }
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        assert!(matches!(
            "127.0.0.1:1".parse::<Carrier>(),
            Err(CarrierError::NoScheme(_))
        ));
        assert!(matches!(
            "quic://127.0.0.1:1".parse::<Carrier>(),
            Err(CarrierError::UnknownScheme(..))
        ));
        assert!(matches!(
            "udp://localhost:1".parse::<Carrier>(),
            Err(CarrierError::BadAddress(..))
        ));
    }
}
