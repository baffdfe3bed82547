//! The wire codec: IPv4 ([`Ipv4Header`]) and TCP ([`TcpHeader`], [`TcpOptions`]) with
//! their checksums. Decoding takes `&[u8]` and returns a typed [`DecodeError`] for any
//! bad input (never a panic); encoding writes into a `BytesMut`.

pub mod checksum;
pub mod ipv4;
pub mod options;
pub mod tcp;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

pub use ipv4::{Ipv4Header, IPV4_HEADER_LEN};
pub use options::{TcpOptions, MAX_OPTIONS_LEN};
pub use tcp::{TcpFlags, TcpHeader, TCP_HEADER_LEN};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

/// Why bytes did not decode as an IPv4/TCP packet.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header needs.
    #[error("{what} truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Which header.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// Not IPv4.
    #[error("ip version {0}, not 4")]
    Version(u8),
    /// IHL below 5 words.
    #[error("ipv4 header length {0} is invalid")]
    Ipv4HeaderLength(usize),
    /// Total length below the header length or beyond the bytes present.
    #[error("ipv4 total length {total} invalid (header {header}, have {have})")]
    TotalLength {
        /// Total length field.
        total: usize,
        /// Header length.
        header: usize,
        /// Bytes present.
        have: usize,
    },
    /// The IPv4 header checksum does not verify.
    #[error("ipv4 header checksum mismatch")]
    Ipv4Checksum,
    /// A fragment: the stack does not reassemble and drops fragments.
    #[error("ipv4 fragment (not reassembled)")]
    Fragment,
    /// Not TCP.
    #[error("ip protocol {0}, not tcp")]
    NotTcp(u8),
    /// TCP data offset below 5 words or past the segment.
    #[error("tcp data offset {offset} invalid (segment {have} bytes)")]
    DataOffset {
        /// Offset in bytes.
        offset: usize,
        /// Segment length.
        have: usize,
    },
    /// The TCP checksum over the pseudo header does not verify.
    #[error("tcp checksum mismatch")]
    TcpChecksum,
    /// An option whose length byte is missing, below 2, past the option space, or wrong
    /// for its kind.
    #[error("tcp option kind {kind} has a bad length {len:?}")]
    OptionLength {
        /// Option kind.
        kind: u8,
        /// Its length byte, if present.
        len: Option<u8>,
    },
}

/// Why a packet could not be encoded.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    /// The packet would exceed 65535 bytes.
    #[error("packet of {0} bytes exceeds 65535")]
    TooLong(usize),
    /// More than 40 bytes of options.
    #[error("{0} bytes of tcp options exceed 40")]
    OptionsTooLong(usize),
}

/// A decoded IPv4/TCP packet borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The IPv4 header.
    pub ip: Ipv4Header,
    /// The TCP header.
    pub tcp: TcpHeader,
    /// The TCP payload.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Decodes a raw IPv4 packet that must carry TCP, checking both checksums.
    pub fn decode(buf: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let (ip, seg) = Ipv4Header::decode(buf)?;
        if ip.protocol != PROTO_TCP {
            return Err(DecodeError::NotTcp(ip.protocol));
        }
        let (tcp, payload) = TcpHeader::decode(seg, ip.src, ip.dst)?;
        Ok(Packet { ip, tcp, payload })
    }

    /// Encodes the packet (the IPv4 protocol is written as TCP whatever `ip.protocol`
    /// says) into `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let tcp_len = self.tcp.encoded_len() + self.payload.len();
        let ip = Ipv4Header {
            protocol: PROTO_TCP,
            ..self.ip
        };
        ip.encode(tcp_len, out)?;
        self.tcp.encode(ip.src, ip.dst, self.payload, out)
    }

    /// [`Packet::encode`] into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut b =
            BytesMut::with_capacity(IPV4_HEADER_LEN + self.tcp.encoded_len() + self.payload.len());
        self.encode(&mut b)?;
        Ok(b.freeze())
    }
}
