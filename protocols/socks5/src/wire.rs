//! SOCKS5 messages. Parsers return `Ok(None)` when more bytes are needed, never panic,
//! and bound every length (a domain is 1..=255 bytes by construction).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// Protocol version byte.
pub const VERSION: u8 = 5;
/// Method: no authentication required.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method: no acceptable methods.
pub const METHOD_NONE: u8 = 0xff;

/// Why a SOCKS5 message was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Socks5Error {
    /// The version byte was not 5.
    #[error("not SOCKS5 (version byte {0})")]
    Version(u8),
    /// The client offers no method we accept.
    #[error("client offers no acceptable authentication method (no-auth required)")]
    NoAcceptableMethod,
    /// Unknown address type.
    #[error("address type {0} not supported")]
    AddrType(u8),
    /// Unknown command.
    #[error("command {0} not supported")]
    Command(u8),
    /// A zero-length or non-UTF-8 domain name.
    #[error("bad domain name")]
    BadDomain,
    /// Fragmented UDP datagrams are not supported.
    #[error("fragmented UDP datagram (frag {0}) not supported")]
    Fragment(u8),
}

/// A SOCKS5 address: IPv4, IPv6 or a domain name, with a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    /// ATYP 1 or 4.
    Ip(SocketAddr),
    /// ATYP 3: name (1..=255 bytes) and port.
    Domain(String, u16),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Ip(a) => write!(f, "{a}"),
            Addr::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

impl Addr {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Addr::Ip(a) => a.port(),
            Addr::Domain(_, p) => *p,
        }
    }

    /// Appends `ATYP | ADDR | PORT`. Domains longer than 255 bytes cannot be encoded.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), Socks5Error> {
        match self {
            Addr::Ip(SocketAddr::V4(a)) => {
                out.put_u8(1);
                out.put_slice(&a.ip().octets());
                out.put_u16(a.port());
            }
            Addr::Ip(SocketAddr::V6(a)) => {
                out.put_u8(4);
                out.put_slice(&a.ip().octets());
                out.put_u16(a.port());
            }
            Addr::Domain(h, p) => {
                if h.is_empty() || h.len() > 255 {
                    return Err(Socks5Error::BadDomain);
                }
                out.put_u8(3);
                out.put_u8(h.len() as u8);
                out.put_slice(h.as_bytes());
                out.put_u16(*p);
            }
        }
        Ok(())
    }

    /// Parses `ATYP | ADDR | PORT` at the start of `b`: `Ok(None)` if incomplete.
    pub fn decode(b: &[u8]) -> Result<Option<(Addr, usize)>, Socks5Error> {
        let Some(&atyp) = b.first() else {
            return Ok(None);
        };
        let (need, addr_len) = match atyp {
            1 => (1 + 4 + 2, 4),
            4 => (1 + 16 + 2, 16),
            3 => {
                let Some(&n) = b.get(1) else {
                    return Ok(None);
                };
                if n == 0 {
                    return Err(Socks5Error::BadDomain);
                }
                (2 + n as usize + 2, n as usize)
            }
            t => return Err(Socks5Error::AddrType(t)),
        };
        if b.len() < need {
            return Ok(None);
        }
        let port = u16::from_be_bytes([b[need - 2], b[need - 1]]);
        let addr = match atyp {
            1 => {
                let o: [u8; 4] = b[1..5].try_into().map_err(|_| Socks5Error::AddrType(1))?;
                Addr::Ip(SocketAddr::new(Ipv4Addr::from(o).into(), port))
            }
            4 => {
                let o: [u8; 16] = b[1..17].try_into().map_err(|_| Socks5Error::AddrType(4))?;
                Addr::Ip(SocketAddr::new(Ipv6Addr::from(o).into(), port))
            }
            _ => {
                let name =
                    std::str::from_utf8(&b[2..2 + addr_len]).map_err(|_| Socks5Error::BadDomain)?;
                Addr::Domain(name.to_string(), port)
            }
        };
        Ok(Some((addr, need)))
    }
}

/// Parses the client greeting; returns whether no-auth was offered and bytes used.
pub fn parse_greeting(b: &[u8]) -> Result<Option<(bool, usize)>, Socks5Error> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] != VERSION {
        return Err(Socks5Error::Version(b[0]));
    }
    let n = b[1] as usize;
    if b.len() < 2 + n {
        return Ok(None);
    }
    Ok(Some((b[2..2 + n].contains(&METHOD_NO_AUTH), 2 + n)))
}

/// A request's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// CONNECT (1).
    Connect,
    /// BIND (2).
    Bind,
    /// UDP ASSOCIATE (3).
    UdpAssociate,
}

/// Parses a request: `VER CMD RSV ATYP ADDR PORT`.
pub fn parse_request(b: &[u8]) -> Result<Option<(Command, Addr, usize)>, Socks5Error> {
    if b.len() < 4 {
        return Ok(None);
    }
    if b[0] != VERSION {
        return Err(Socks5Error::Version(b[0]));
    }
    let cmd = match b[1] {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        c => {
            // Still report the address type first if it is bad: both are failures.
            return Err(Socks5Error::Command(c));
        }
    };
    Ok(Addr::decode(&b[3..])?.map(|(a, n)| (cmd, a, 3 + n)))
}

/// Reply codes (RFC 1928 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// succeeded
    Succeeded = 0,
    /// general SOCKS server failure
    GeneralFailure = 1,
    /// connection not allowed by ruleset
    NotAllowed = 2,
    /// Network unreachable
    NetworkUnreachable = 3,
    /// Host unreachable
    HostUnreachable = 4,
    /// Connection refused
    ConnectionRefused = 5,
    /// TTL expired
    TtlExpired = 6,
    /// Command not supported
    CommandNotSupported = 7,
    /// Address type not supported
    AddrTypeNotSupported = 8,
}

/// Encodes a reply with the bound address.
pub fn encode_reply(rep: Reply, bound: &Addr, out: &mut BytesMut) {
    out.put_slice(&[VERSION, rep as u8, 0]);
    if bound.encode(out).is_err() {
        Addr::Ip(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0))
            .encode(out)
            .expect("an IPv4 address always encodes");
    }
}

/// Parses a reply: `VER REP RSV ATYP ADDR PORT` (client side).
pub fn parse_reply(b: &[u8]) -> Result<Option<(u8, Addr, usize)>, Socks5Error> {
    if b.len() < 4 {
        return Ok(None);
    }
    if b[0] != VERSION {
        return Err(Socks5Error::Version(b[0]));
    }
    Ok(Addr::decode(&b[3..])?.map(|(a, n)| (b[1], a, 3 + n)))
}

/// The header in front of every UDP ASSOCIATE datagram: `RSV(2) FRAG ATYP ADDR PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpHeader {
    /// Where the datagram goes (from the client) or came from (to the client).
    pub addr: Addr,
}

impl UdpHeader {
    /// Splits a client datagram into header and payload.
    pub fn decode(b: &[u8]) -> Result<Option<(UdpHeader, &[u8])>, Socks5Error> {
        if b.len() < 4 {
            return Ok(None);
        }
        if b[2] != 0 {
            return Err(Socks5Error::Fragment(b[2]));
        }
        Ok(Addr::decode(&b[3..])?.map(|(addr, n)| (UdpHeader { addr }, &b[3 + n..])))
    }

    /// Encodes the header followed by `payload`.
    pub fn encode(&self, payload: &[u8], out: &mut BytesMut) -> Result<(), Socks5Error> {
        out.put_slice(&[0, 0, 0]);
        self.addr.encode(out)?;
        out.put_slice(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr_strategy() -> impl Strategy<Value = Addr> {
        prop_oneof![
            any::<([u8; 4], u16)>()
                .prop_map(|(o, p)| Addr::Ip(SocketAddr::new(Ipv4Addr::from(o).into(), p))),
            any::<([u8; 16], u16)>()
                .prop_map(|(o, p)| Addr::Ip(SocketAddr::new(Ipv6Addr::from(o).into(), p))),
            ("[a-z0-9.-]{1,255}", any::<u16>()).prop_map(|(h, p)| Addr::Domain(h, p)),
        ]
    }

    proptest! {
        #[test]
        fn addr_round_trips(a in addr_strategy()) {
            let mut b = BytesMut::new();
            a.encode(&mut b).unwrap();
            let (d, n) = Addr::decode(&b).unwrap().unwrap();
            prop_assert_eq!(d, a);
            prop_assert_eq!(n, b.len());
            for cut in 0..b.len() {
                prop_assert!(Addr::decode(&b[..cut]).unwrap().is_none());
            }
        }

        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_greeting(&data);
            let _ = parse_request(&data);
            let _ = parse_reply(&data);
            let _ = UdpHeader::decode(&data);
        }
    }

    #[test]
    fn known_vectors() {
        assert_eq!(parse_greeting(&[5, 1, 0]).unwrap(), Some((true, 3)));
        assert_eq!(parse_greeting(&[5, 1, 2]).unwrap(), Some((false, 3)));
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::Version(4)));
        let req = [
            5, 1, 0, 3, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't', 0x1f, 0x90,
        ];
        assert_eq!(
            parse_request(&req).unwrap(),
            Some((
                Command::Connect,
                Addr::Domain("localhost".into(), 8080),
                req.len()
            ))
        );
        assert_eq!(parse_request(&[5, 9, 0, 1]), Err(Socks5Error::Command(9)));
        assert_eq!(Addr::decode(&[3, 0, 0, 80]), Err(Socks5Error::BadDomain));
        assert_eq!(Addr::decode(&[7]), Err(Socks5Error::AddrType(7)));
        let mut b = BytesMut::new();
        encode_reply(
            Reply::Succeeded,
            &Addr::Ip("127.0.0.1:1080".parse().unwrap()),
            &mut b,
        );
        assert_eq!(&b[..], &[5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38]);
        let dgram = [0, 0, 0, 1, 10, 0, 0, 1, 0, 53, b'h', b'i'];
        let (h, p) = UdpHeader::decode(&dgram).unwrap().unwrap();
        assert_eq!(h.addr, Addr::Ip("10.0.0.1:53".parse().unwrap()));
        assert_eq!(p, b"hi");
        assert_eq!(
            UdpHeader::decode(&[0, 0, 1, 1]),
            Err(Socks5Error::Fragment(1))
        );
    }
}
