//! The IP-packet link: a seam, alongside [`crate::Net`], through which a driver sends and
//! receives whole raw IPv4 packets (any protocol inside: TCP, UDP, ICMP, ...). A user-space
//! TCP stack sits on one, and a VPN client's virtual interface is one.
//!
//! Implementations: a Linux TUN device ([`crate::tun::TunLink`], from [`crate::TokioNet`]),
//! the simulator's link (`tunnelbed-sim`'s `SimIpLink`, where packets cross the link
//! model between simulated hosts), and an in-memory pair ([`mem::ip_link_pair`]) for a
//! stack and the endpoint behind it in one process. Wrapping the network in
//! [`crate::CaptureNet`] records every packet into the pcapng capture as it is.

#[cfg(feature = "runtime")]
pub mod captured;
pub mod checksum;
pub mod echo;
#[cfg(feature = "runtime")]
pub mod mem;
#[cfg(feature = "smoltcp")]
pub mod smol;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::str::FromStr;

use thiserror::Error;

#[cfg(feature = "runtime")]
pub use captured::CapturedIpLink;

/// The largest IPv4 packet there is (the total-length field is 16 bits).
pub const MAX_IPV4_PACKET: usize = 65_535;

/// The smallest MTU an IPv4 link may have (RFC 791: every host takes 68-byte packets).
pub const MIN_MTU: usize = 68;

/// The MTU links get unless told otherwise (Ethernet's).
pub const DEFAULT_MTU: usize = 1500;

/// Why an IP-link operation failed.
#[derive(Debug, Error)]
pub enum IpLinkError {
    /// The packet is longer than the link's MTU; nothing was sent.
    #[error("packet of {len} bytes exceeds the link MTU of {mtu}")]
    TooLarge {
        /// The packet's length.
        len: usize,
        /// The link's MTU.
        mtu: usize,
    },
    /// The bytes are not a well-formed IPv4 packet (see [`check_ipv4`]); nothing was sent.
    #[error("not a well-formed IPv4 packet: {0}")]
    NotIpv4(&'static str),
    /// The receive buffer could not hold a packet of the link's MTU.
    #[error("receive buffer of {have} bytes is smaller than the link MTU of {mtu}")]
    BufferTooSmall {
        /// The buffer's length.
        have: usize,
        /// The link's MTU.
        mtu: usize,
    },
    /// The link was closed (its other end, or the simulated host, went away).
    #[error("the IP link is closed")]
    Closed,
    /// Another link already receives the packets for this address (simulator).
    #[error("address {0} is already routed to another link")]
    AddrInUse(Ipv4Addr),
    /// The configuration cannot be used by this implementation.
    #[error("invalid IP link configuration: {0}")]
    InvalidConfig(&'static str),
    /// A system call failed (TUN device).
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// For drivers whose errors are `io::Error`: the kind follows the cause, and the typed
/// error stays inside (`get_ref()` and downcast to [`IpLinkError`]).
impl From<IpLinkError> for io::Error {
    fn from(e: IpLinkError) -> Self {
        let kind = match &e {
            IpLinkError::TooLarge { .. }
            | IpLinkError::NotIpv4(_)
            | IpLinkError::BufferTooSmall { .. }
            | IpLinkError::InvalidConfig(_) => io::ErrorKind::InvalidInput,
            IpLinkError::Closed => io::ErrorKind::NotConnected,
            IpLinkError::AddrInUse(_) => io::ErrorKind::AddrInUse,
            IpLinkError::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// An IPv4 address with a prefix length, e.g. `10.0.0.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// `addr/prefix`; `None` when the prefix is longer than 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { addr, prefix })
    }

    /// The netmask, e.g. 255.255.255.0 for /24.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        Ipv4Addr::from(bits)
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask());
        u32::from(ip) & m == u32::from(self.addr) & m
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a CIDR string did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("not an IPv4 address with a prefix (like 10.0.0.1/24): {0:?}")]
pub struct BadCidr(pub String);

impl FromStr for Ipv4Cidr {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(s.chars().take(64).collect());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr = a.parse().map_err(|_| bad())?;
        let prefix = p.parse().map_err(|_| bad())?;
        Self::new(addr, prefix).ok_or_else(bad)
    }
}

/// How to open an IP link; one type for every implementation so drivers stay generic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpLinkConfig {
    /// The interface name: the TUN device to attach to (created when missing; at most 15
    /// bytes); in the simulator a label for logs.
    pub name: String,
    /// The interface address and the prefix routed through the link.
    ///
    /// TUN: the address the kernel's side of the device gets; the kernel then routes the
    /// prefix into the device and the link is brought up (`None`: the device is left as
    /// it is, e.g. configured by the operator).
    /// Simulator: the packets for this prefix are delivered to this link (longest prefix
    /// wins; `/32` for one address). Required there.
    pub addr: Option<Ipv4Cidr>,
    /// The largest packet the link carries, [`MIN_MTU`]..=[`MAX_IPV4_PACKET`].
    pub mtu: usize,
}

impl IpLinkConfig {
    /// A link called `name` with address `addr` and the default MTU.
    pub fn new(name: &str, addr: Option<Ipv4Cidr>) -> Self {
        Self {
            name: name.to_string(),
            addr,
            mtu: DEFAULT_MTU,
        }
    }

    /// Checks the fields every implementation needs.
    pub fn validate(&self) -> Result<(), IpLinkError> {
        if !(MIN_MTU..=MAX_IPV4_PACKET).contains(&self.mtu) {
            return Err(IpLinkError::InvalidConfig("mtu outside 68..=65535"));
        }
        if self.name.is_empty() || self.name.len() > 15 {
            return Err(IpLinkError::InvalidConfig("name must be 1..=15 bytes"));
        }
        if !self
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(IpLinkError::InvalidConfig(
                "name may hold only ASCII letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(())
    }
}

/// A link that carries raw IPv4 packets, one whole packet per call. Methods take `&self`
/// so one task can receive while another sends (share the link in an `Arc`).
pub trait IpLink: Send + Sync + 'static {
    /// Sends one IPv4 packet. It must be well formed ([`check_ipv4`]) and at most
    /// [`IpLink::mtu`] bytes, else nothing is sent and the error says why. Success means
    /// the link took the packet, not that it arrives (IP is unreliable).
    fn send(&self, packet: &[u8]) -> impl Future<Output = Result<(), IpLinkError>> + Send;
    /// Waits for the next IPv4 packet and copies it into `buf`, which must hold at least
    /// [`IpLink::mtu`] bytes; returns its length. Packets other than IPv4 are skipped.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = Result<usize, IpLinkError>> + Send;
    /// Takes the next packet only if one is already waiting (`Ok(None)` otherwise),
    /// without waiting or registering interest. A driver that sends a burst calls it
    /// between packets: a peer that answers at once (the kernel behind a TUN device
    /// answers inside our write) would otherwise overflow the device's queue with
    /// answers nobody reads during the burst. The default has nothing waiting (links
    /// whose peers answer later, like the simulator's).
    fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>, IpLinkError> {
        let _ = buf;
        Ok(None)
    }
    /// The largest packet the link carries.
    fn mtu(&self) -> usize;
    /// The interface name.
    fn name(&self) -> &str;
    /// Whether the sender of every packet this link receives recorded it in the same
    /// capture already (true in the simulator, where each packet is recorded once, on
    /// the sending host's interface). A capturing wrapper records received packets only
    /// when this is false (a real TUN, whose kernel side is not captured).
    fn sender_records(&self) -> bool {
        false
    }
}

/// A network that can open IP links: implemented by [`crate::TokioNet`] (TUN devices),
/// [`crate::CaptureNet`] (recording) and the simulator's `SimNet`.
pub trait IpNet: Clone + Send + Sync + 'static {
    /// The link type.
    type Link: IpLink;
    /// Opens (creating where needed) the link `cfg` describes.
    fn open_ip_link(
        &self,
        cfg: IpLinkConfig,
    ) -> impl Future<Output = Result<Self::Link, IpLinkError>> + Send;
}

/// Checks that `packet` is a well-formed IPv4 packet: version 4, a header length of at
/// least 20 bytes that fits, and a total-length field equal to the packet's length.
/// Checksums and contents are not checked, so hostile contents still pass.
pub fn check_ipv4(packet: &[u8]) -> Result<(), IpLinkError> {
    if packet.len() < 20 {
        return Err(IpLinkError::NotIpv4("shorter than an IPv4 header"));
    }
    if packet[0] >> 4 != 4 {
        return Err(IpLinkError::NotIpv4("version is not 4"));
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || ihl > packet.len() {
        return Err(IpLinkError::NotIpv4("bad header length"));
    }
    if usize::from(u16::from_be_bytes([packet[2], packet[3]])) != packet.len() {
        return Err(IpLinkError::NotIpv4(
            "total length differs from the packet's length",
        ));
    }
    Ok(())
}

/// The source and destination of a packet that passed [`check_ipv4`].
pub fn ipv4_addrs(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let s: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    let d: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    Some((Ipv4Addr::from(s), Ipv4Addr::from(d)))
}

/// The checks every `send` makes: MTU, then IPv4 form.
pub fn check_send(packet: &[u8], mtu: usize) -> Result<(), IpLinkError> {
    if packet.len() > mtu {
        return Err(IpLinkError::TooLarge {
            len: packet.len(),
            mtu,
        });
    }
    check_ipv4(packet)
}

/// The check every `recv` makes on its buffer.
pub fn check_recv_buf(buf: &[u8], mtu: usize) -> Result<(), IpLinkError> {
    if buf.len() < mtu {
        return Err(IpLinkError::BufferTooSmall {
            have: buf.len(),
            mtu,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_masks() {
        let c: Ipv4Cidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(c.contains(Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 1, 3, 1)));
        assert_eq!(c.to_string(), "10.1.2.3/24");
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        for bad in ["10.0.0.1", "10.0.0.1/33", "x/8", "10.0.0.1/", "/8", ""] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv4_checks() {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[3] = 28;
        assert!(check_ipv4(&p).is_ok());
        assert!(matches!(
            check_send(&p, 27),
            Err(IpLinkError::TooLarge { len: 28, mtu: 27 })
        ));
        p[3] = 29;
        assert!(check_ipv4(&p).is_err());
        p[3] = 28;
        p[0] = 0x65;
        assert!(check_ipv4(&p).is_err());
        p[0] = 0x44;
        assert!(check_ipv4(&p).is_err());
        p[0] = 0x4f; // 60-byte header in a 28-byte packet
        assert!(check_ipv4(&p).is_err());
        assert!(check_ipv4(&p[..10]).is_err());
    }

    #[test]
    fn converts_to_io_error_keeping_the_cause() {
        let e: io::Error = IpLinkError::TooLarge { len: 2, mtu: 1 }.into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<IpLinkError>());
        assert!(matches!(
            inner,
            Some(IpLinkError::TooLarge { len: 2, mtu: 1 })
        ));
        let e: io::Error = IpLinkError::Io {
            op: "x",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        }
        .into();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn config_validation() {
        let mut c = IpLinkConfig::new("tb0", None);
        assert!(c.validate().is_ok());
        c.mtu = 67;
        assert!(c.validate().is_err());
        c.mtu = 1500;
        c.name = "a-very-long-name-x".into();
        assert!(c.validate().is_err());
        c.name = "bad/name".into();
        assert!(c.validate().is_err());
    }
}
