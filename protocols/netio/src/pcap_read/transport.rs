//! The IP/UDP/TCP inside a captured packet, as far as replay cares: addresses, ports,
//! TCP sequence number and flags, payload. Link layers and IP/UDP/TCP headers are
//! sliced by etherparse; this module only picks the link layer and keeps what replay uses.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use super::CapturedPacket;

/// What an IP packet carries, as far as replay cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram.
    Udp {
        /// Source.
        src: SocketAddr,
        /// Destination.
        dst: SocketAddr,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A TCP segment.
    Tcp {
        /// Source.
        src: SocketAddr,
        /// Destination.
        dst: SocketAddr,
        /// Sequence number.
        seq: u32,
        /// Acknowledgement number, when the ACK flag is set (time-sequence graphs plot it).
        ack: Option<u32>,
        /// SYN flag.
        syn: bool,
        /// FIN flag.
        fin: bool,
        /// RST flag.
        rst: bool,
        /// Payload.
        payload: Vec<u8>,
    },
    /// Something else (other protocol, fragment, non-IP frame).
    Other,
}

/// Why a captured packet's headers could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TransportError {
    /// A link type replay does not decode.
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u16),
    /// The link-layer header is cut short.
    #[error("{0} header truncated")]
    LinkTruncated(&'static str),
    /// etherparse rejected the IP, UDP or TCP headers.
    #[error("{0}")]
    Headers(String),
}

/// Link-layer header lengths for the encapsulations that only prefix an IP packet.
const LINUX_COOKED_HEADER: usize = 16;
const LOOPBACK_HEADER: usize = 4;

/// Decodes the IP/UDP/TCP inside a captured packet according to its link type.
pub fn decode_transport(p: &CapturedPacket) -> Result<Transport, TransportError> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let headers = |e: &dyn std::fmt::Display| TransportError::Headers(e.to_string());
    let after = |len: usize, what: &'static str| {
        p.data.get(len..).ok_or(TransportError::LinkTruncated(what))
    };
    let sliced = match p.linktype {
        101 | 228 | 229 => SlicedPacket::from_ip(&p.data).map_err(|e| headers(&e))?,
        1 => SlicedPacket::from_ethernet(&p.data).map_err(|e| headers(&e))?,
        113 => SlicedPacket::from_ip(after(LINUX_COOKED_HEADER, "Linux cooked")?)
            .map_err(|e| headers(&e))?,
        0 | 108 => {
            SlicedPacket::from_ip(after(LOOPBACK_HEADER, "loopback")?).map_err(|e| headers(&e))?
        }
        other => return Err(TransportError::UnsupportedLinkType(other)),
    };
    let (sip, dip): (IpAddr, IpAddr) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        Some(NetSlice::Ipv6(v6)) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return Ok(Transport::Other),
    };
    Ok(match &sliced.transport {
        Some(TransportSlice::Udp(u)) => Transport::Udp {
            src: SocketAddr::new(sip, u.source_port()),
            dst: SocketAddr::new(dip, u.destination_port()),
            payload: u.payload().to_vec(),
        },
        Some(TransportSlice::Tcp(t)) => Transport::Tcp {
            src: SocketAddr::new(sip, t.source_port()),
            dst: SocketAddr::new(dip, t.destination_port()),
            seq: t.sequence_number(),
            ack: t.ack().then(|| t.acknowledgment_number()),
            syn: t.syn(),
            fin: t.fin(),
            rst: t.rst(),
            payload: t.payload().to_vec(),
        },
        _ => Transport::Other,
    })
}
