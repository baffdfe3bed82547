//! The IPv4 header: decoded from a raw packet (options skipped, total length and header
//! checksum checked, fragments refused) and encoded without options.

use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};

use super::checksum;
use super::{DecodeError, EncodeError};

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;

/// The fields of an IPv4 header that the stack reads or writes. Options are skipped on
/// decode and never written; the header checksum is computed on encode and verified on
/// decode, so it is not a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Upper-layer protocol number (6 for TCP).
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// The DSCP/ECN byte, carried as is.
    pub tos: u8,
    /// Identification field.
    pub ident: u16,
    /// The don't-fragment flag.
    pub dont_fragment: bool,
}

impl Ipv4Header {
    /// Decodes the header at the start of `buf` and returns it with the payload (the bytes
    /// up to the total length; bytes beyond it are ignored).
    ///
    /// Fragments (more-fragments flag or a non-zero offset) are refused with
    /// [`DecodeError::Fragment`]: the stack never reassembles, it drops them.
    pub fn decode(buf: &[u8]) -> Result<(Ipv4Header, &[u8]), DecodeError> {
        if buf.len() < IPV4_HEADER_LEN {
            return Err(DecodeError::Truncated {
                what: "ipv4 header",
                need: IPV4_HEADER_LEN,
                have: buf.len(),
            });
        }
        let version = buf[0] >> 4;
        if version != 4 {
            return Err(DecodeError::Version(version));
        }
        let header_len = usize::from(buf[0] & 0x0f) * 4;
        if header_len < IPV4_HEADER_LEN {
            return Err(DecodeError::Ipv4HeaderLength(header_len));
        }
        if buf.len() < header_len {
            return Err(DecodeError::Truncated {
                what: "ipv4 options",
                need: header_len,
                have: buf.len(),
            });
        }
        let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if total < header_len || total > buf.len() {
            return Err(DecodeError::TotalLength {
                total,
                header: header_len,
                have: buf.len(),
            });
        }
        if checksum::fold(checksum::add(0, &buf[..header_len])) != 0 {
            return Err(DecodeError::Ipv4Checksum);
        }
        let flags_frag = u16::from_be_bytes([buf[6], buf[7]]);
        let more_fragments = flags_frag & 0x2000 != 0;
        let offset = flags_frag & 0x1fff;
        if more_fragments || offset != 0 {
            return Err(DecodeError::Fragment);
        }
        let h = Ipv4Header {
            tos: buf[1],
            ident: u16::from_be_bytes([buf[4], buf[5]]),
            dont_fragment: flags_frag & 0x4000 != 0,
            ttl: buf[8],
            protocol: buf[9],
            src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
            dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
        };
        Ok((h, &buf[header_len..total]))
    }

    /// Writes a 20-byte header (no options) for a payload of `payload_len` bytes, with
    /// its checksum.
    pub fn encode(&self, payload_len: usize, out: &mut BytesMut) -> Result<(), EncodeError> {
        let total = IPV4_HEADER_LEN + payload_len;
        let total = u16::try_from(total).map_err(|_| EncodeError::TooLong(total))?;
        let start = out.len();
        out.reserve(IPV4_HEADER_LEN);
        out.put_u8(0x45);
        out.put_u8(self.tos);
        out.put_u16(total);
        out.put_u16(self.ident);
        out.put_u16(if self.dont_fragment { 0x4000 } else { 0 });
        out.put_u8(self.ttl);
        out.put_u8(self.protocol);
        out.put_u16(0);
        out.put_slice(&self.src.octets());
        out.put_slice(&self.dst.octets());
        let sum = checksum::fold(checksum::add(0, &out[start..start + IPV4_HEADER_LEN]));
        out[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
        Ok(())
    }
}
