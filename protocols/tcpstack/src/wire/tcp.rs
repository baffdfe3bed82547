//! The TCP header: ports, sequence and acknowledgment numbers, flags, window, checksum
//! over the IPv4 pseudo header, and options ([`TcpOptions`]).

use std::fmt;
use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};

use super::checksum;
use super::options::{TcpOptions, MAX_OPTIONS_LEN};
use super::{DecodeError, EncodeError, PROTO_TCP};

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;

/// The flag byte of a TCP header.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from the sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// The acknowledgment field is valid.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer valid.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// True when every bit of `other` is set.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TcpFlags {
    /// Names joined by `|` (e.g. `SYN|ACK`), `-` for none: the form used in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u8, &str); 8] = [
            (0x02, "SYN"),
            (0x04, "RST"),
            (0x01, "FIN"),
            (0x08, "PSH"),
            (0x10, "ACK"),
            (0x20, "URG"),
            (0x40, "ECE"),
            (0x80, "CWR"),
        ];
        let mut first = true;
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// A TCP header. The checksum is computed on encode and verified on decode, the data
/// offset follows from the options, and the reserved bits are written as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with ACK).
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Window, unscaled as on the wire.
    pub window: u16,
    /// Urgent pointer (carried, never acted on).
    pub urgent: u16,
    /// Options.
    pub options: TcpOptions,
}

impl TcpHeader {
    /// Decodes a TCP segment carried from `src` to `dst` and returns the header and the
    /// payload; the checksum over the pseudo header and the whole segment must verify.
    pub fn decode(
        seg: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<(TcpHeader, &[u8]), DecodeError> {
        if seg.len() < TCP_HEADER_LEN {
            return Err(DecodeError::Truncated {
                what: "tcp header",
                need: TCP_HEADER_LEN,
                have: seg.len(),
            });
        }
        let offset = usize::from(seg[12] >> 4) * 4;
        if offset < TCP_HEADER_LEN || offset > seg.len() {
            return Err(DecodeError::DataOffset {
                offset,
                have: seg.len(),
            });
        }
        let len = u16::try_from(seg.len()).map_err(|_| DecodeError::Ipv4HeaderLength(seg.len()))?;
        let sum = checksum::add(checksum::pseudo_header(src, dst, PROTO_TCP, len), seg);
        if checksum::fold(sum) != 0 {
            return Err(DecodeError::TcpChecksum);
        }
        let options = TcpOptions::decode(&seg[TCP_HEADER_LEN..offset])?;
        let h = TcpHeader {
            src_port: u16::from_be_bytes([seg[0], seg[1]]),
            dst_port: u16::from_be_bytes([seg[2], seg[3]]),
            seq: u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]),
            ack: u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]),
            flags: TcpFlags(seg[13]),
            window: u16::from_be_bytes([seg[14], seg[15]]),
            urgent: u16::from_be_bytes([seg[18], seg[19]]),
            options,
        };
        Ok((h, &seg[offset..]))
    }

    /// Header length this header encodes to.
    pub fn encoded_len(&self) -> usize {
        TCP_HEADER_LEN + self.options.encoded_len()
    }

    /// Writes the header and `payload` for a segment from `src` to `dst`, with its
    /// checksum.
    pub fn encode(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let opt_len = self.options.encoded_len();
        if opt_len > MAX_OPTIONS_LEN {
            return Err(EncodeError::OptionsTooLong(opt_len));
        }
        let hlen = TCP_HEADER_LEN + opt_len;
        let total = hlen + payload.len();
        let total16 = u16::try_from(total).map_err(|_| EncodeError::TooLong(total))?;
        let start = out.len();
        out.reserve(total);
        out.put_u16(self.src_port);
        out.put_u16(self.dst_port);
        out.put_u32(self.seq);
        out.put_u32(self.ack);
        out.put_u8(((hlen / 4) as u8) << 4);
        out.put_u8(self.flags.0);
        out.put_u16(self.window);
        out.put_u16(0);
        out.put_u16(self.urgent);
        self.options.encode(out);
        out.put_slice(payload);
        let sum = checksum::add(
            checksum::pseudo_header(src, dst, PROTO_TCP, total16),
            &out[start..],
        );
        let sum = checksum::fold(sum);
        out[start + 16..start + 18].copy_from_slice(&sum.to_be_bytes());
        Ok(())
    }
}
