//! The Candy messages (seed 003 plus Candy's ROUTE): one WebSocket binary message each,
//! integers big endian, IPv4 addresses as four bytes in network order.
//!
//! | type | message | layout |
//! |---|---|---|
//! | 0 | AUTH | ip\[4\] timestamp i64 hash\[32\] confusion |
//! | 1 | FORWARD | a raw IPv4 packet |
//! | 2 | DHCP | timestamp i64 cidr\[32\] (NUL-terminated text) hash\[32\] confusion |
//! | 3 | PEER INFO | src\[4\] dst\[4\] ip\[4\] port u16 |
//! | 4 | VMAC | vmac\[16\] timestamp i64 hash\[32\] confusion |
//! | 5 | DISCOVERY | src\[4\] dst\[4\] |
//! | 6 | ROUTE | count u8, reserved u16, count x (dst\[4\] mask\[4\] nexthop\[4\]) |
//! | 255 | GENERAL | subtype u8 extra u16 src\[4\] dst\[4\] data (subtype 0: LAN ip\[4\] port u16) |
//!
//! Hashes are SHA-256 with the password first (see [`auth_hash`], [`dhcp_hash`],
//! [`vmac_hash`]); timestamps are Unix seconds. Confusion is random padding that hides
//! the fixed lengths: we send a random amount ([`confusion`]) and accept any.

use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};
use rand::Rng;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Largest message the decoder looks at; longer input is refused before any parsing.
pub const MAX_MESSAGE: usize = 65_536;

/// Largest confusion padding we send (Candy's server reads messages of up to 1500 bytes).
pub const MAX_CONFUSION: usize = 64;

/// Length of the DHCP message's CIDR text field (NUL padded).
pub const CIDR_FIELD: usize = 32;

/// The IPv4 limited broadcast address, a destination meaning "every client".
pub const BROADCAST: Ipv4Addr = Ipv4Addr::BROADCAST;

/// Message type numbers.
pub mod kind {
    /// AUTH.
    pub const AUTH: u8 = 0;
    /// FORWARD.
    pub const FORWARD: u8 = 1;
    /// DHCP (dynamic address).
    pub const DHCP: u8 = 2;
    /// PEER INFO (public address exchange).
    pub const PEER_INFO: u8 = 3;
    /// VMAC.
    pub const VMAC: u8 = 4;
    /// DISCOVERY.
    pub const DISCOVERY: u8 = 5;
    /// ROUTE (Candy's system routes, sent by its server after AUTH).
    pub const ROUTE: u8 = 6;
    /// GENERAL.
    pub const GENERAL: u8 = 255;
}

/// GENERAL subtype of the LAN-address exchange.
pub const SUBTYPE_LAN_ADDRESS: u8 = 0;

/// Why bytes are not a Candy message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Zero bytes.
    #[error("empty message")]
    Empty,
    /// Longer than [`MAX_MESSAGE`].
    #[error("message of {0} bytes exceeds {MAX_MESSAGE}")]
    TooLong(usize),
    /// A type number no message has.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// Shorter than its fixed part.
    #[error("{kind} needs at least {need} bytes, got {have}")]
    TooShort {
        /// The message kind.
        kind: &'static str,
        /// Bytes its fixed part takes.
        need: usize,
        /// Bytes there were.
        have: usize,
    },
    /// A fixed-size message with a different length.
    #[error("{kind} is {want} bytes, got {have}")]
    WrongLength {
        /// The message kind.
        kind: &'static str,
        /// Its size.
        want: usize,
        /// Bytes there were.
        have: usize,
    },
    /// The DHCP CIDR field has no NUL or is not ASCII text.
    #[error("DHCP cidr field is not NUL-terminated ASCII text")]
    BadCidrText,
    /// The ROUTE count does not match the entries that follow.
    #[error("ROUTE says {count} entries but carries {bytes} bytes of entries")]
    RouteCount {
        /// The count byte.
        count: u8,
        /// Bytes after the header.
        bytes: usize,
    },
    /// A value cannot be encoded (CIDR text too long, too many routes).
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

/// AUTH: binds the sender's connection to a virtual address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// The virtual (TUN) address the client claims.
    pub ip: Ipv4Addr,
    /// Unix seconds when sent.
    pub timestamp: i64,
    /// [`auth_hash`] of the password, ip and timestamp.
    pub hash: [u8; 32],
    /// Random padding.
    pub confusion: Vec<u8>,
}

/// DHCP: a client asks for an address (cidr = the one it wants, or `0.0.0.0/0`); the
/// server answers with the same message carrying the grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcp {
    /// Unix seconds when sent.
    pub timestamp: i64,
    /// The address and prefix as text, at most 31 ASCII bytes (the field is NUL padded).
    pub cidr: String,
    /// [`dhcp_hash`] of the password and timestamp.
    pub hash: [u8; 32],
    /// Random padding.
    pub confusion: Vec<u8>,
}

/// PEER INFO: a client's public UDP address, relayed to the peer `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The sender's virtual address.
    pub src: Ipv4Addr,
    /// The peer's virtual address.
    pub dst: Ipv4Addr,
    /// Public address.
    pub ip: Ipv4Addr,
    /// Public port.
    pub port: u16,
}

/// VMAC: the client's random hardware-like id, so a reconnect keeps its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmac {
    /// 16 bytes (Candy: 16 lowercase hex characters).
    pub vmac: [u8; 16],
    /// Unix seconds when sent.
    pub timestamp: i64,
    /// [`vmac_hash`] of the password, vmac and timestamp.
    pub hash: [u8; 32],
    /// Random padding.
    pub confusion: Vec<u8>,
}

/// DISCOVERY: "try to reach me directly"; dst may be 255.255.255.255.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The sender's virtual address.
    pub src: Ipv4Addr,
    /// The peer's virtual address or broadcast.
    pub dst: Ipv4Addr,
}

/// One ROUTE entry: packets for `dst/mask` go via the client `nexthop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Its mask.
    pub mask: Ipv4Addr,
    /// The virtual address packets go through.
    pub nexthop: Ipv4Addr,
}

/// ROUTE: routes Candy's server pushes to a client after AUTH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The reserved field, kept so every message re-encodes to its bytes.
    pub reserved: u16,
    /// At most 255 entries.
    pub entries: Vec<RouteEntry>,
}

/// GENERAL: a relayed message the server need not understand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct General {
    /// Subtype ([`SUBTYPE_LAN_ADDRESS`] is the only one defined).
    pub subtype: u8,
    /// Subtype-specific.
    pub extra: u16,
    /// The sender's virtual address.
    pub src: Ipv4Addr,
    /// The peer's virtual address or broadcast.
    pub dst: Ipv4Addr,
    /// Subtype data.
    pub data: Vec<u8>,
}

impl General {
    /// The LAN-address exchange (subtype 0, extra 0, data = ip and port).
    pub fn lan_address(src: Ipv4Addr, dst: Ipv4Addr, ip: Ipv4Addr, port: u16) -> Self {
        let mut data = ip.octets().to_vec();
        data.extend_from_slice(&port.to_be_bytes());
        Self {
            subtype: SUBTYPE_LAN_ADDRESS,
            extra: 0,
            src,
            dst,
            data,
        }
    }

    /// The LAN ip and port when this is a well-formed LAN-address message.
    pub fn as_lan_address(&self) -> Option<(Ipv4Addr, u16)> {
        if self.subtype != SUBTYPE_LAN_ADDRESS || self.extra != 0 || self.data.len() != 6 {
            return None;
        }
        let ip = Ipv4Addr::new(self.data[0], self.data[1], self.data[2], self.data[3]);
        Some((ip, u16::from_be_bytes([self.data[4], self.data[5]])))
    }
}

/// Any Candy message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Type 0.
    Auth(Auth),
    /// Type 1: the raw IPv4 packet (at least 20 bytes; the form is checked by receivers).
    Forward(Vec<u8>),
    /// Type 2.
    Dhcp(Dhcp),
    /// Type 3.
    PeerInfo(PeerInfo),
    /// Type 4.
    Vmac(Vmac),
    /// Type 5.
    Discovery(Discovery),
    /// Type 6.
    Route(Route),
    /// Type 255.
    General(General),
}

/// SHA-256 of `password || ip || timestamp` (AUTH).
pub fn auth_hash(password: &[u8], ip: Ipv4Addr, timestamp: i64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(password);
    h.update(ip.octets());
    h.update(timestamp.to_be_bytes());
    h.finalize().into()
}

/// SHA-256 of `password || timestamp` (DHCP).
pub fn dhcp_hash(password: &[u8], timestamp: i64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(password);
    h.update(timestamp.to_be_bytes());
    h.finalize().into()
}

/// SHA-256 of `password || vmac || timestamp` (VMAC).
pub fn vmac_hash(password: &[u8], vmac: &[u8; 16], timestamp: i64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(password);
    h.update(vmac);
    h.update(timestamp.to_be_bytes());
    h.finalize().into()
}

/// Random confusion padding: 0..=[`MAX_CONFUSION`] random bytes.
pub fn confusion(rng: &mut impl Rng) -> Vec<u8> {
    let n = rng.gen_range(0..=MAX_CONFUSION);
    (0..n).map(|_| rng.gen()).collect()
}

/// Compares two hashes without an early exit.
fn hash_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// An AUTH for `ip` at `timestamp`, hashed with `password`.
    pub fn new(password: &[u8], ip: Ipv4Addr, timestamp: i64, confusion: Vec<u8>) -> Self {
        Self {
            ip,
            timestamp,
            hash: auth_hash(password, ip, timestamp),
            confusion,
        }
    }
    /// Whether the hash matches `password`.
    pub fn check(&self, password: &[u8]) -> bool {
        hash_eq(&self.hash, &auth_hash(password, self.ip, self.timestamp))
    }
}

impl Dhcp {
    /// A DHCP message carrying `cidr` at `timestamp`, hashed with `password`.
    pub fn new(password: &[u8], cidr: &str, timestamp: i64, confusion: Vec<u8>) -> Self {
        Self {
            timestamp,
            cidr: cidr.to_string(),
            hash: dhcp_hash(password, timestamp),
            confusion,
        }
    }
    /// Whether the hash matches `password`.
    pub fn check(&self, password: &[u8]) -> bool {
        hash_eq(&self.hash, &dhcp_hash(password, self.timestamp))
    }
}

impl Vmac {
    /// A VMAC message for `vmac` at `timestamp`, hashed with `password`.
    pub fn new(password: &[u8], vmac: [u8; 16], timestamp: i64, confusion: Vec<u8>) -> Self {
        Self {
            vmac,
            timestamp,
            hash: vmac_hash(password, &vmac, timestamp),
            confusion,
        }
    }
    /// Whether the hash matches `password`.
    pub fn check(&self, password: &[u8]) -> bool {
        hash_eq(&self.hash, &vmac_hash(password, &self.vmac, self.timestamp))
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn hash_at(b: &[u8], at: usize) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[at..at + 32]);
    a
}

fn need(kind: &'static str, b: &[u8], n: usize) -> Result<(), WireError> {
    if b.len() < n {
        return Err(WireError::TooShort {
            kind,
            need: n,
            have: b.len(),
        });
    }
    Ok(())
}

fn exact(kind: &'static str, b: &[u8], n: usize) -> Result<(), WireError> {
    if b.len() != n {
        return Err(WireError::WrongLength {
            kind,
            want: n,
            have: b.len(),
        });
    }
    Ok(())
}

/// Size of AUTH without confusion.
pub const AUTH_LEN: usize = 45;
/// Size of DHCP without confusion.
pub const DHCP_LEN: usize = 73;
/// Size of PEER INFO.
pub const PEER_INFO_LEN: usize = 15;
/// Size of VMAC without confusion.
pub const VMAC_LEN: usize = 57;
/// Size of DISCOVERY.
pub const DISCOVERY_LEN: usize = 9;
/// Size of the GENERAL header.
pub const GENERAL_LEN: usize = 12;
/// Size of the ROUTE header.
pub const ROUTE_LEN: usize = 4;
/// Smallest FORWARD: the type and an IPv4 header.
pub const FORWARD_MIN: usize = 21;

/// The message type name for logs and traces.
pub fn kind_name(t: u8) -> &'static str {
    match t {
        kind::AUTH => "AUTH",
        kind::FORWARD => "FORWARD",
        kind::DHCP => "DHCP",
        kind::PEER_INFO => "PEER-INFO",
        kind::VMAC => "VMAC",
        kind::DISCOVERY => "DISCOVERY",
        kind::ROUTE => "ROUTE",
        kind::GENERAL => "GENERAL",
        _ => "UNKNOWN",
    }
}

impl Message {
    /// Decodes one whole message (one WebSocket message's payload).
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        if b.len() > MAX_MESSAGE {
            return Err(WireError::TooLong(b.len()));
        }
        let Some(&t) = b.first() else {
            return Err(WireError::Empty);
        };
        Ok(match t {
            kind::AUTH => {
                need("AUTH", b, AUTH_LEN)?;
                Self::Auth(Auth {
                    ip: ip_at(b, 1),
                    timestamp: i64_at(b, 5),
                    hash: hash_at(b, 13),
                    confusion: b[AUTH_LEN..].to_vec(),
                })
            }
            kind::FORWARD => {
                need("FORWARD", b, FORWARD_MIN)?;
                Self::Forward(b[1..].to_vec())
            }
            kind::DHCP => {
                need("DHCP", b, DHCP_LEN)?;
                let field = &b[9..9 + CIDR_FIELD];
                let end = field
                    .iter()
                    .position(|&c| c == 0)
                    .ok_or(WireError::BadCidrText)?;
                if !field[..end].is_ascii() {
                    return Err(WireError::BadCidrText);
                }
                let cidr =
                    String::from_utf8(field[..end].to_vec()).map_err(|_| WireError::BadCidrText)?;
                Self::Dhcp(Dhcp {
                    timestamp: i64_at(b, 1),
                    cidr,
                    hash: hash_at(b, 41),
                    confusion: b[DHCP_LEN..].to_vec(),
                })
            }
            kind::PEER_INFO => {
                exact("PEER-INFO", b, PEER_INFO_LEN)?;
                Self::PeerInfo(PeerInfo {
                    src: ip_at(b, 1),
                    dst: ip_at(b, 5),
                    ip: ip_at(b, 9),
                    port: u16::from_be_bytes([b[13], b[14]]),
                })
            }
            kind::VMAC => {
                need("VMAC", b, VMAC_LEN)?;
                let mut vmac = [0u8; 16];
                vmac.copy_from_slice(&b[1..17]);
                Self::Vmac(Vmac {
                    vmac,
                    timestamp: i64_at(b, 17),
                    hash: hash_at(b, 25),
                    confusion: b[VMAC_LEN..].to_vec(),
                })
            }
            kind::DISCOVERY => {
                exact("DISCOVERY", b, DISCOVERY_LEN)?;
                Self::Discovery(Discovery {
                    src: ip_at(b, 1),
                    dst: ip_at(b, 5),
                })
            }
            kind::ROUTE => {
                need("ROUTE", b, ROUTE_LEN)?;
                let count = b[1];
                let rest = &b[ROUTE_LEN..];
                if rest.len() != usize::from(count) * 12 {
                    return Err(WireError::RouteCount {
                        count,
                        bytes: rest.len(),
                    });
                }
                let entries = rest
                    .chunks_exact(12)
                    .map(|e| RouteEntry {
                        dst: ip_at(e, 0),
                        mask: ip_at(e, 4),
                        nexthop: ip_at(e, 8),
                    })
                    .collect();
                Self::Route(Route {
                    reserved: u16::from_be_bytes([b[2], b[3]]),
                    entries,
                })
            }
            kind::GENERAL => {
                need("GENERAL", b, GENERAL_LEN)?;
                Self::General(General {
                    subtype: b[1],
                    extra: u16::from_be_bytes([b[2], b[3]]),
                    src: ip_at(b, 4),
                    dst: ip_at(b, 8),
                    data: b[GENERAL_LEN..].to_vec(),
                })
            }
            other => return Err(WireError::UnknownType(other)),
        })
    }

    /// The type number.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Auth(_) => kind::AUTH,
            Self::Forward(_) => kind::FORWARD,
            Self::Dhcp(_) => kind::DHCP,
            Self::PeerInfo(_) => kind::PEER_INFO,
            Self::Vmac(_) => kind::VMAC,
            Self::Discovery(_) => kind::DISCOVERY,
            Self::Route(_) => kind::ROUTE,
            Self::General(_) => kind::GENERAL,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), WireError> {
        let start = out.len();
        out.put_u8(self.kind());
        match self {
            Self::Auth(a) => {
                out.put_slice(&a.ip.octets());
                out.put_i64(a.timestamp);
                out.put_slice(&a.hash);
                out.put_slice(&a.confusion);
            }
            Self::Forward(p) => {
                if p.len() + 1 < FORWARD_MIN {
                    out.truncate(start);
                    return Err(WireError::Unencodable(
                        "FORWARD shorter than an IPv4 header",
                    ));
                }
                out.put_slice(p);
            }
            Self::Dhcp(d) => {
                if d.cidr.len() >= CIDR_FIELD || !d.cidr.is_ascii() || d.cidr.contains('\0') {
                    out.truncate(start);
                    return Err(WireError::Unencodable(
                        "cidr text over 31 bytes or not ASCII",
                    ));
                }
                out.put_i64(d.timestamp);
                out.put_slice(d.cidr.as_bytes());
                out.put_bytes(0, CIDR_FIELD - d.cidr.len());
                out.put_slice(&d.hash);
                out.put_slice(&d.confusion);
            }
            Self::PeerInfo(p) => {
                out.put_slice(&p.src.octets());
                out.put_slice(&p.dst.octets());
                out.put_slice(&p.ip.octets());
                out.put_u16(p.port);
            }
            Self::Vmac(v) => {
                out.put_slice(&v.vmac);
                out.put_i64(v.timestamp);
                out.put_slice(&v.hash);
                out.put_slice(&v.confusion);
            }
            Self::Discovery(d) => {
                out.put_slice(&d.src.octets());
                out.put_slice(&d.dst.octets());
            }
            Self::Route(r) => {
                let Ok(n) = u8::try_from(r.entries.len()) else {
                    out.truncate(start);
                    return Err(WireError::Unencodable("more than 255 routes"));
                };
                out.put_u8(n);
                out.put_u16(r.reserved);
                for e in &r.entries {
                    out.put_slice(&e.dst.octets());
                    out.put_slice(&e.mask.octets());
                    out.put_slice(&e.nexthop.octets());
                }
            }
            Self::General(g) => {
                out.put_u8(g.subtype);
                out.put_u16(g.extra);
                out.put_slice(&g.src.octets());
                out.put_slice(&g.dst.octets());
                out.put_slice(&g.data);
            }
        }
        if out.len() - start > MAX_MESSAGE {
            out.truncate(start);
            return Err(WireError::Unencodable("message over MAX_MESSAGE"));
        }
        Ok(())
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Result<BytesMut, WireError> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // AUTH for 10.0.0.1 at t=1 with password "pw": hash is SHA-256("pw" 0a000001 0..01).
        let a = Auth::new(b"pw", Ipv4Addr::new(10, 0, 0, 1), 1, vec![]);
        let b = Message::Auth(a.clone()).to_bytes().unwrap();
        assert_eq!(b.len(), AUTH_LEN);
        assert_eq!(&b[..13], &[0, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut pre = b"pw".to_vec();
        pre.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&b[13..45], Sha256::digest(&pre).as_slice());
        assert!(a.check(b"pw"));
        assert!(!a.check(b"px"));

        let d = Dhcp::new(b"", "10.0.0.5/24", 7, vec![9, 9]);
        let b = Message::Dhcp(d.clone()).to_bytes().unwrap();
        assert_eq!(b.len(), DHCP_LEN + 2);
        assert_eq!(&b[9..20], b"10.0.0.5/24");
        assert_eq!(b[20], 0);
        assert_eq!(Message::decode(&b).unwrap(), Message::Dhcp(d));

        let v = Vmac::new(b"pw", *b"0123456789abcdef", -1, vec![]);
        let b = Message::Vmac(v.clone()).to_bytes().unwrap();
        assert_eq!(b.len(), VMAC_LEN);
        assert_eq!(&b[1..17], b"0123456789abcdef");
        assert_eq!(&b[17..25], &[0xff; 8]);
        assert!(v.check(b"pw"));

        let g = General::lan_address(
            Ipv4Addr::new(10, 0, 0, 1),
            BROADCAST,
            Ipv4Addr::new(192, 168, 1, 2),
            0x1234,
        );
        let b = Message::General(g.clone()).to_bytes().unwrap();
        assert_eq!(b.len(), 18);
        assert_eq!(
            g.as_lan_address(),
            Some((Ipv4Addr::new(192, 168, 1, 2), 0x1234))
        );
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert_eq!(Message::decode(&[]), Err(WireError::Empty));
        assert_eq!(Message::decode(&[7]), Err(WireError::UnknownType(7)));
        assert!(matches!(
            Message::decode(&[0; 44]),
            Err(WireError::TooShort { need: 45, .. })
        ));
        assert!(matches!(
            Message::decode(&[5; 10]),
            Err(WireError::WrongLength { want: 9, .. })
        ));
        let mut d = vec![2u8; DHCP_LEN];
        assert_eq!(Message::decode(&d), Err(WireError::BadCidrText));
        d[9] = 0xc3;
        d[10] = 0;
        assert_eq!(Message::decode(&d), Err(WireError::BadCidrText));
        assert!(matches!(
            Message::decode(&[6, 2, 0, 0, 1]),
            Err(WireError::RouteCount { count: 2, .. })
        ));
        assert_eq!(
            Message::decode(&vec![1; MAX_MESSAGE + 1]),
            Err(WireError::TooLong(MAX_MESSAGE + 1))
        );
        assert!(Message::Forward(vec![0; 19]).to_bytes().is_err());
        assert!(Message::Dhcp(Dhcp::new(b"", &"1".repeat(32), 0, vec![]))
            .to_bytes()
            .is_err());
    }
}
