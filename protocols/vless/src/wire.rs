//! VLESS messages: the request header (v0 and v1), the response header, the UDP length
//! framing of command 2, the CRUMFURS answer byte and UMFURS messages (v1).
//!
//! Decoders take `&[u8]`, return `Ok(None)` when more bytes are needed and a typed
//! [`DecodeError`] when the bytes can never become a valid message. They never panic and
//! every length is bounded by the field that carries it (addons: u8, domain: u8, UDP
//! frame: u16, further capped by the caller's limit).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The one byte a v1 server answers a CRUMFURS request with (verysimple's value, 20).
pub const CRUMFURS_ESTABLISHED: u8 = 0x14;
/// Largest request header: ver, uuid, M, 255 addon bytes, cmd, port, atyp, len, 255.
pub const MAX_REQUEST_LEN: usize = 1 + 16 + 1 + 255 + 1 + 2 + 1 + 1 + 255;
/// Largest UDP payload a frame may carry by default (the IPv4 UDP payload limit).
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// Largest UMFURS header: atyp, IPv6, port, length.
pub const MAX_UMFURS_HEADER: usize = 1 + 16 + 2 + 2;

/// Protocol version of a request or response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// VLESS as v2fly and Xray speak it.
    V0,
    /// The seed's v1: v0 plus the CRUMFURS command for full-cone UDP.
    V1,
}

impl Version {
    /// The version byte.
    pub fn byte(self) -> u8 {
        match self {
            Version::V0 => 0,
            Version::V1 => 1,
        }
    }

    /// The version for a byte, if we speak it.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Version::V0),
            1 => Some(Version::V1),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.byte())
    }
}

/// A request's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Command {
    /// 1: a TCP stream to the target.
    Tcp,
    /// 2: UDP to the target, datagrams framed by a u16 length both ways.
    Udp,
    /// 3: v2ray's mux.cool (no address follows; we parse it but do not serve it).
    Mux,
    /// 4 (v1 only): open the user's channel for UDP messages from unknown sources.
    Crumfurs,
}

impl Command {
    /// The command byte.
    pub fn byte(self) -> u8 {
        match self {
            Command::Tcp => 1,
            Command::Udp => 2,
            Command::Mux => 3,
            Command::Crumfurs => 4,
        }
    }

    /// Whether an address follows the command byte.
    pub fn has_address(self) -> bool {
        matches!(self, Command::Tcp | Command::Udp)
    }
}

/// A target address: VLESS puts the port first, then `atyp` (1 IPv4, 2 domain, 3 IPv6).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// atyp 1 or 3.
    Ip(SocketAddr),
    /// atyp 2: a name of 1..=255 bytes and a port.
    Domain(String, u16),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(a) => write!(f, "{a}"),
            Address::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// Why bytes are not a valid VLESS message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A version byte we do not speak.
    #[error("unknown version {0}")]
    Version(u8),
    /// A command byte that is not 1..=4.
    #[error("unknown command {0}")]
    Command(u8),
    /// CRUMFURS (4) in a v0 request.
    #[error("command 4 (CRUMFURS) in a v0 request")]
    CrumfursInV0,
    /// An address type that is not 1, 2 or 3 (UMFURS: not 1 or 3).
    #[error("unknown address type {0}")]
    AddrType(u8),
    /// A domain of zero bytes or not UTF-8.
    #[error("bad domain name")]
    BadDomain,
    /// The addons are not the protobuf message VLESS defines.
    #[error("malformed addons")]
    Addons,
    /// A UDP frame or UMFURS message longer than the limit.
    #[error("UDP frame of {len} bytes over the limit of {max}")]
    Oversize {
        /// Length the frame announced.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A response's version differs from the request's.
    #[error("response version {got}, request was {want}")]
    ResponseVersion {
        /// Version byte received.
        got: u8,
        /// Version byte sent.
        want: u8,
    },
    /// The CRUMFURS answer was not 0x14.
    #[error("CRUMFURS answer {0:#04x}, expected 0x14")]
    CrumfursAnswer(u8),
    /// An empty UMFURS payload (the seed requires at least one byte).
    #[error("empty UMFURS message")]
    EmptyUmfurs,
}

/// The addons of a request or response: protobuf `{ 1: flow string, 2: seed bytes }`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addons {
    /// XTLS flow name; empty when none is asked for.
    pub flow: String,
    /// Other fields (seed and unknown ones), kept raw so they round-trip.
    pub rest: Vec<u8>,
}

impl Addons {
    /// Parses the addon bytes (at most 255). Unknown fields are kept in `rest`; wire
    /// types other than varint and length-delimited are an error.
    pub fn parse(b: &[u8]) -> Result<Self, DecodeError> {
        let mut out = Addons::default();
        let mut at = 0;
        while at < b.len() {
            let start = at;
            let (key, n) = varint(&b[at..]).ok_or(DecodeError::Addons)?;
            at += n;
            match key & 7 {
                0 => {
                    let (_, n) = varint(&b[at..]).ok_or(DecodeError::Addons)?;
                    at += n;
                }
                2 => {
                    let (len, n) = varint(&b[at..]).ok_or(DecodeError::Addons)?;
                    at += n;
                    let len = usize::try_from(len).map_err(|_| DecodeError::Addons)?;
                    let end = at.checked_add(len).ok_or(DecodeError::Addons)?;
                    let field = b.get(at..end).ok_or(DecodeError::Addons)?;
                    at = end;
                    if key >> 3 == 1 {
                        out.flow = std::str::from_utf8(field)
                            .map_err(|_| DecodeError::Addons)?
                            .to_string();
                        continue;
                    }
                }
                _ => return Err(DecodeError::Addons),
            }
            out.rest.extend_from_slice(&b[start..at]);
        }
        Ok(out)
    }

    /// Encodes the addons (flow first, then the raw rest).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        if !self.flow.is_empty() {
            v.push(0x0a);
            put_varint(&mut v, self.flow.len() as u64);
            v.extend_from_slice(self.flow.as_bytes());
        }
        v.extend_from_slice(&self.rest);
        v
    }
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A request header as the client sends it, before its first payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Version.
    pub version: Version,
    /// The user's id.
    pub uuid: [u8; 16],
    /// The raw addon bytes (at most 255; parse with [`Addons::parse`]).
    pub addons: Vec<u8>,
    /// Command.
    pub command: Command,
    /// Target (for commands 1 and 2; `None` for mux and CRUMFURS).
    pub target: Option<Address>,
}

/// Why a request cannot be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// More than 255 addon bytes.
    #[error("addons of {0} bytes (at most 255)")]
    AddonsTooLong(usize),
    /// A domain of 0 or more than 255 bytes.
    #[error("domain of {0} bytes (1..=255)")]
    BadDomain(usize),
    /// Target present for a command without one, or missing for one with one.
    #[error("command {0:?} with a wrong target")]
    Target(Command),
    /// CRUMFURS in a v0 request.
    #[error("CRUMFURS needs v1")]
    CrumfursInV0,
    /// A UDP payload over the u16 length field or the limit.
    #[error("UDP payload of {0} bytes over the frame limit")]
    Oversize(usize),
}

impl Address {
    /// Appends `port | atyp | addr`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Address::Ip(SocketAddr::V4(a)) => {
                out.put_u16(a.port());
                out.put_u8(1);
                out.put_slice(&a.ip().octets());
            }
            Address::Ip(SocketAddr::V6(a)) => {
                out.put_u16(a.port());
                out.put_u8(3);
                out.put_slice(&a.ip().octets());
            }
            Address::Domain(h, p) => {
                if h.is_empty() || h.len() > 255 {
                    return Err(EncodeError::BadDomain(h.len()));
                }
                out.put_u16(*p);
                out.put_u8(2);
                out.put_u8(h.len() as u8);
                out.put_slice(h.as_bytes());
            }
        }
        Ok(())
    }

    /// Parses `port | atyp | addr` at the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Option<(Address, usize)>, DecodeError> {
        let (Some(&p0), Some(&p1), Some(&atyp)) = (b.first(), b.get(1), b.get(2)) else {
            return Ok(None);
        };
        let port = u16::from_be_bytes([p0, p1]);
        match atyp {
            1 => Ok(b.get(3..7).map(|o| {
                let o: [u8; 4] = [o[0], o[1], o[2], o[3]];
                (
                    Address::Ip(SocketAddr::new(Ipv4Addr::from(o).into(), port)),
                    7,
                )
            })),
            3 => Ok(b.get(3..19).map(|o| {
                let mut a = [0u8; 16];
                a.copy_from_slice(o);
                (
                    Address::Ip(SocketAddr::new(Ipv6Addr::from(a).into(), port)),
                    19,
                )
            })),
            2 => {
                let Some(&n) = b.get(3) else { return Ok(None) };
                if n == 0 {
                    return Err(DecodeError::BadDomain);
                }
                let end = 4 + n as usize;
                let Some(name) = b.get(4..end) else {
                    return Ok(None);
                };
                let name = std::str::from_utf8(name).map_err(|_| DecodeError::BadDomain)?;
                Ok(Some((Address::Domain(name.to_string(), port), end)))
            }
            t => Err(DecodeError::AddrType(t)),
        }
    }
}

impl Request {
    /// Appends the header.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.addons.len() > 255 {
            return Err(EncodeError::AddonsTooLong(self.addons.len()));
        }
        if self.command == Command::Crumfurs && self.version == Version::V0 {
            return Err(EncodeError::CrumfursInV0);
        }
        if self.command.has_address() != self.target.is_some() {
            return Err(EncodeError::Target(self.command));
        }
        let mut b = BytesMut::with_capacity(64);
        b.put_u8(self.version.byte());
        b.put_slice(&self.uuid);
        b.put_u8(self.addons.len() as u8);
        b.put_slice(&self.addons);
        b.put_u8(self.command.byte());
        if let Some(t) = &self.target {
            t.encode(&mut b)?;
        }
        out.put_slice(&b);
        Ok(())
    }

    /// The encoded header.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        Ok(b.freeze())
    }

    /// Parses a header at the start of `b`; returns it and its length.
    pub fn decode(b: &[u8]) -> Result<Option<(Request, usize)>, DecodeError> {
        let Some(&ver) = b.first() else {
            return Ok(None);
        };
        let version = Version::from_byte(ver).ok_or(DecodeError::Version(ver))?;
        let Some(id) = b.get(1..17) else {
            return Ok(None);
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(id);
        let Some(&m) = b.get(17) else { return Ok(None) };
        let cmd_at = 18 + m as usize;
        let Some(addons) = b.get(18..cmd_at) else {
            return Ok(None);
        };
        let Some(&cmd) = b.get(cmd_at) else {
            return Ok(None);
        };
        let command = match cmd {
            1 => Command::Tcp,
            2 => Command::Udp,
            3 => Command::Mux,
            4 if version == Version::V1 => Command::Crumfurs,
            4 => return Err(DecodeError::CrumfursInV0),
            c => return Err(DecodeError::Command(c)),
        };
        let req = |target| Request {
            version,
            uuid,
            addons: addons.to_vec(),
            command,
            target,
        };
        if !command.has_address() {
            return Ok(Some((req(None), cmd_at + 1)));
        }
        Ok(Address::decode(&b[cmd_at + 1..])?.map(|(a, n)| (req(Some(a)), cmd_at + 1 + n)))
    }
}

/// The response header: `ver | M | addons`, sent before the first downlink bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Version (the request's).
    pub version: Version,
    /// Raw addon bytes (at most 255).
    pub addons: Vec<u8>,
}

impl Response {
    /// Appends the header.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.addons.len() > 255 {
            return Err(EncodeError::AddonsTooLong(self.addons.len()));
        }
        out.put_u8(self.version.byte());
        out.put_u8(self.addons.len() as u8);
        out.put_slice(&self.addons);
        Ok(())
    }

    /// Parses a response header that must carry version `want`.
    pub fn decode(b: &[u8], want: Version) -> Result<Option<(Response, usize)>, DecodeError> {
        let Some(&ver) = b.first() else {
            return Ok(None);
        };
        if ver != want.byte() {
            return Err(DecodeError::ResponseVersion {
                got: ver,
                want: want.byte(),
            });
        }
        let Some(&m) = b.get(1) else { return Ok(None) };
        let end = 2 + m as usize;
        Ok(b.get(2..end).map(|a| {
            (
                Response {
                    version: want,
                    addons: a.to_vec(),
                },
                end,
            )
        }))
    }
}

/// Appends one command-2 frame: `len u16 BE | payload`.
pub fn encode_udp_frame(payload: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
    let len = u16::try_from(payload.len()).map_err(|_| EncodeError::Oversize(payload.len()))?;
    out.put_u16(len);
    out.put_slice(payload);
    Ok(())
}

/// Parses one command-2 frame; a length over `max` is an error (the connection closes).
/// Returns the payload and the frame's length.
pub fn decode_udp_frame(b: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, DecodeError> {
    let (Some(&l0), Some(&l1)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([l0, l1]) as usize;
    if len > max {
        return Err(DecodeError::Oversize { len, max });
    }
    Ok(b.get(2..2 + len).map(|p| (p, 2 + len)))
}

/// A UMFURS message: a datagram from a source the client never contacted, sent on the
/// user's CRUMFURS channel as `atyp (1 v4, 3 v6) | ip | port | len u16 | payload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Umfurs {
    /// Who sent the datagram.
    pub from: SocketAddr,
    /// The datagram (at least one byte).
    pub payload: Bytes,
}

impl Umfurs {
    /// Appends the message.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.payload.is_empty() || self.payload.len() > u16::MAX as usize {
            return Err(EncodeError::Oversize(self.payload.len()));
        }
        match self.from.ip() {
            IpAddr::V4(ip) => {
                out.put_u8(1);
                out.put_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.put_u8(3);
                out.put_slice(&ip.octets());
            }
        }
        out.put_u16(self.from.port());
        out.put_u16(self.payload.len() as u16);
        out.put_slice(&self.payload);
        Ok(())
    }

    /// Parses one message; a length over `max` or of zero is an error.
    pub fn decode(b: &[u8], max: usize) -> Result<Option<(Umfurs, usize)>, DecodeError> {
        let Some(&atyp) = b.first() else {
            return Ok(None);
        };
        let ip_len = match atyp {
            1 => 4,
            3 => 16,
            t => return Err(DecodeError::AddrType(t)),
        };
        let Some(h) = b.get(1..1 + ip_len + 4) else {
            return Ok(None);
        };
        let ip: IpAddr = if ip_len == 4 {
            Ipv4Addr::new(h[0], h[1], h[2], h[3]).into()
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&h[..16]);
            Ipv6Addr::from(a).into()
        };
        let port = u16::from_be_bytes([h[ip_len], h[ip_len + 1]]);
        let len = u16::from_be_bytes([h[ip_len + 2], h[ip_len + 3]]) as usize;
        if len == 0 {
            return Err(DecodeError::EmptyUmfurs);
        }
        if len > max {
            return Err(DecodeError::Oversize { len, max });
        }
        let start = 1 + ip_len + 4;
        Ok(b.get(start..start + len).map(|p| {
            (
                Umfurs {
                    from: SocketAddr::new(ip, port),
                    payload: Bytes::copy_from_slice(p),
                },
                start + len,
            )
        }))
    }
}

/// Writes a user id as 8-4-4-4-12 hex digits, the form v2ray configs and logs use.
pub fn uuid_text(id: &[u8; 16]) -> String {
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: [u8; 16] = [
        0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40,
        0x00,
    ];

    fn addr_strategy() -> impl Strategy<Value = Address> {
        prop_oneof![
            any::<([u8; 4], u16)>()
                .prop_map(|(o, p)| Address::Ip(SocketAddr::new(Ipv4Addr::from(o).into(), p))),
            any::<([u8; 16], u16)>()
                .prop_map(|(o, p)| Address::Ip(SocketAddr::new(Ipv6Addr::from(o).into(), p))),
            ("[a-z0-9.-]{1,255}", any::<u16>()).prop_map(|(h, p)| Address::Domain(h, p)),
        ]
    }

    fn request_strategy() -> impl Strategy<Value = Request> {
        (
            any::<bool>(),
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u8>(), 0..=255),
            0u8..4,
            addr_strategy(),
        )
            .prop_map(|(v1, uuid, addons, c, a)| {
                let version = if v1 { Version::V1 } else { Version::V0 };
                let command = match c {
                    0 => Command::Tcp,
                    1 => Command::Udp,
                    2 => Command::Mux,
                    _ if v1 => Command::Crumfurs,
                    _ => Command::Tcp,
                };
                let target = command.has_address().then_some(a);
                Request {
                    version,
                    uuid,
                    addons,
                    command,
                    target,
                }
            })
    }

    proptest! {
        #[test]
        fn request_round_trips(r in request_strategy(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let b = r.to_bytes().unwrap();
            let mut with_tail = b.to_vec();
            with_tail.extend_from_slice(&tail);
            let (d, n) = Request::decode(&with_tail).unwrap().unwrap();
            prop_assert_eq!(&d, &r);
            prop_assert_eq!(n, b.len());
            prop_assert!(n <= MAX_REQUEST_LEN);
            for cut in 0..b.len() {
                prop_assert!(Request::decode(&b[..cut]).unwrap().is_none());
            }
        }

        #[test]
        fn addons_round_trip(flow in "[a-z-]{0,40}", seed in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut rest = vec![0x12];
            put_varint(&mut rest, seed.len() as u64);
            rest.extend_from_slice(&seed);
            let a = Addons { flow, rest };
            prop_assert_eq!(Addons::parse(&a.to_bytes()).unwrap(), a);
        }

        #[test]
        fn udp_frame_round_trips(p in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut b = BytesMut::new();
            encode_udp_frame(&p, &mut b).unwrap();
            let (d, n) = decode_udp_frame(&b, MAX_UDP_PAYLOAD).unwrap().unwrap();
            prop_assert_eq!(d, &p[..]);
            prop_assert_eq!(n, b.len());
            prop_assert!(decode_udp_frame(&b[..b.len() - 1], MAX_UDP_PAYLOAD).unwrap().is_none());
        }

        #[test]
        fn umfurs_round_trips(ip in any::<[u8; 16]>(), v4 in any::<bool>(), port in any::<u16>(),
                              p in proptest::collection::vec(any::<u8>(), 1..2000)) {
            let ip: IpAddr = if v4 { Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).into() } else { Ipv6Addr::from(ip).into() };
            let m = Umfurs { from: SocketAddr::new(ip, port), payload: Bytes::from(p) };
            let mut b = BytesMut::new();
            m.encode(&mut b).unwrap();
            let (d, n) = Umfurs::decode(&b, MAX_UDP_PAYLOAD).unwrap().unwrap();
            prop_assert_eq!(d, m);
            prop_assert_eq!(n, b.len());
            for cut in 0..b.len() {
                prop_assert!(Umfurs::decode(&b[..cut], MAX_UDP_PAYLOAD).unwrap().is_none());
            }
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Request::decode(&data);
            let _ = Response::decode(&data, Version::V0);
            let _ = Addons::parse(&data);
            let _ = decode_udp_frame(&data, 100);
            let _ = Umfurs::decode(&data, 100);
        }
    }

    /// A v0 TCP request to 127.0.0.1:8080 with no addons, byte by byte as the VLESS
    /// layout puts it (port before atyp).
    #[test]
    fn known_request_vectors() {
        let r = Request {
            version: Version::V0,
            uuid: ID,
            addons: vec![],
            command: Command::Tcp,
            target: Some(Address::Ip("127.0.0.1:8080".parse().unwrap())),
        };
        let mut want = vec![0u8];
        want.extend_from_slice(&ID);
        want.extend_from_slice(&[0, 1, 0x1f, 0x90, 1, 127, 0, 0, 1]);
        assert_eq!(&r.to_bytes().unwrap()[..], &want[..]);

        let r = Request {
            version: Version::V0,
            uuid: ID,
            addons: vec![],
            command: Command::Udp,
            target: Some(Address::Domain("example.com".into(), 53)),
        };
        let mut want = vec![0u8];
        want.extend_from_slice(&ID);
        want.extend_from_slice(&[0, 2, 0, 53, 2, 11]);
        want.extend_from_slice(b"example.com");
        assert_eq!(&r.to_bytes().unwrap()[..], &want[..]);

        let r = Request {
            version: Version::V1,
            uuid: ID,
            addons: vec![],
            command: Command::Crumfurs,
            target: None,
        };
        let mut want = vec![1u8];
        want.extend_from_slice(&ID);
        want.extend_from_slice(&[0, 4]);
        assert_eq!(&r.to_bytes().unwrap()[..], &want[..]);

        let r = Request {
            version: Version::V0,
            uuid: ID,
            addons: vec![],
            command: Command::Tcp,
            target: Some(Address::Ip("[::1]:443".parse().unwrap())),
        };
        let b = r.to_bytes().unwrap();
        assert_eq!(&b[18..22], &[1, 0x01, 0xbb, 3]);
        assert_eq!(b.len(), 22 + 16);
    }

    #[test]
    fn bad_requests_are_typed() {
        let mut b = vec![0u8];
        b.extend_from_slice(&ID);
        b.extend_from_slice(&[0, 9]);
        assert_eq!(Request::decode(&b), Err(DecodeError::Command(9)));
        b[18] = 4;
        assert_eq!(Request::decode(&b), Err(DecodeError::CrumfursInV0));
        assert_eq!(Request::decode(&[7]), Err(DecodeError::Version(7)));
        let mut b = vec![0u8];
        b.extend_from_slice(&ID);
        b.extend_from_slice(&[0, 1, 0, 80, 9]);
        assert_eq!(Request::decode(&b), Err(DecodeError::AddrType(9)));
        let mut b = vec![0u8];
        b.extend_from_slice(&ID);
        b.extend_from_slice(&[0, 1, 0, 80, 2, 0]);
        assert_eq!(Request::decode(&b), Err(DecodeError::BadDomain));
        // Mux: no address follows.
        let mut b = vec![0u8];
        b.extend_from_slice(&ID);
        b.extend_from_slice(&[0, 3, 0xaa]);
        let (r, n) = Request::decode(&b).unwrap().unwrap();
        assert_eq!((r.command, r.target, n), (Command::Mux, None, 19));
    }

    #[test]
    fn flow_addon_is_read() {
        // v2ray's Addons{Flow: "xtls-rprx-direct"}.
        let mut a = vec![0x0a, 16];
        a.extend_from_slice(b"xtls-rprx-direct");
        assert_eq!(Addons::parse(&a).unwrap().flow, "xtls-rprx-direct");
        assert_eq!(Addons::parse(&[0x0a, 5, b'x']), Err(DecodeError::Addons));
        assert_eq!(Addons::parse(&[0x0b]), Err(DecodeError::Addons));
        assert_eq!(Addons::parse(&[]).unwrap(), Addons::default());
    }

    #[test]
    fn response_and_frames() {
        assert_eq!(
            Response::decode(&[0, 2, 9, 9, b'x'], Version::V0).unwrap(),
            Some((
                Response {
                    version: Version::V0,
                    addons: vec![9, 9]
                },
                4
            ))
        );
        assert_eq!(Response::decode(&[0, 2, 9], Version::V0).unwrap(), None);
        assert_eq!(
            Response::decode(&[1, 0], Version::V0),
            Err(DecodeError::ResponseVersion { got: 1, want: 0 })
        );
        assert_eq!(
            decode_udp_frame(&[0xff, 0xff], MAX_UDP_PAYLOAD),
            Err(DecodeError::Oversize {
                len: 65535,
                max: MAX_UDP_PAYLOAD
            })
        );
        assert_eq!(
            decode_udp_frame(&[0, 2, b'h', b'i', 0], 10).unwrap(),
            Some((&b"hi"[..], 4))
        );
        let m = Umfurs {
            from: "10.0.0.2:5000".parse().unwrap(),
            payload: Bytes::from_static(b"x"),
        };
        let mut b = BytesMut::new();
        m.encode(&mut b).unwrap();
        assert_eq!(&b[..], &[1, 10, 0, 0, 2, 0x13, 0x88, 0, 1, b'x']);
        assert_eq!(
            Umfurs::decode(&[2], 10),
            Err(DecodeError::AddrType(2)),
            "UMFURS never carries a domain"
        );
        assert_eq!(
            Umfurs::decode(&[1, 1, 2, 3, 4, 0, 1, 0, 0], 10),
            Err(DecodeError::EmptyUmfurs)
        );
        assert_eq!(uuid_text(&ID), "123e4567-e89b-12d3-a456-426614174000");
    }
}
