//! KCP segments on the wire: a 24-byte little-endian header and `len` bytes of data.
//! Several segments are packed into one datagram. Decoding never panics and checks every
//! length against what the datagram holds.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// Header size.
pub const OVERHEAD: usize = 24;
/// Data segment.
pub const CMD_PUSH: u8 = 81;
/// Acknowledgement.
pub const CMD_ACK: u8 = 82;
/// Window probe (ask).
pub const CMD_WASK: u8 = 83;
/// Window size (tell).
pub const CMD_WINS: u8 = 84;

/// Why a datagram was rejected. Mirrors ikcp_input's return codes (-1, -2, -3).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum InputError {
    /// Shorter than one header (ikcp: -1).
    #[error("datagram of {0} bytes is shorter than a 24-byte KCP header")]
    Short(usize),
    /// A segment's conversation id is not ours (ikcp: -1).
    #[error("conversation id {got} does not match ours ({want})")]
    ConvMismatch {
        /// Ours.
        want: u32,
        /// In the segment.
        got: u32,
    },
    /// A segment claims more data than the datagram holds (ikcp: -2).
    #[error("segment length {len} exceeds the {remaining} bytes left in the datagram")]
    BadLength {
        /// Claimed length.
        len: u32,
        /// Bytes left after the header.
        remaining: usize,
    },
    /// Unknown command byte (ikcp: -3).
    #[error("unknown command {0}")]
    UnknownCommand(u8),
}

/// A decoded segment header plus its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Conversation id.
    pub conv: u32,
    /// Command (81..=84).
    pub cmd: u8,
    /// Fragments left in the message (message mode).
    pub frg: u8,
    /// Sender's free receive window, in segments.
    pub wnd: u16,
    /// Send timestamp (ms).
    pub ts: u32,
    /// Sequence number.
    pub sn: u32,
    /// Sender's next expected sequence number.
    pub una: u32,
    /// Payload.
    pub data: Vec<u8>,
}

impl Segment {
    /// Appends header and data.
    pub fn encode(&self, out: &mut BytesMut) {
        encode_header(
            out,
            self.conv,
            self.cmd,
            self.frg,
            self.wnd,
            self.ts,
            self.sn,
            self.una,
            self.data.len() as u32,
        );
        out.put_slice(&self.data);
    }

    /// Decodes one segment at the start of `b`; returns it and the bytes used.
    /// `expect_conv` rejects other conversations, as ikcp does.
    pub fn decode(b: &[u8], expect_conv: Option<u32>) -> Result<(Segment, usize), InputError> {
        let h = decode_header(b)?;
        if let Some(want) = expect_conv {
            if h.conv != want {
                return Err(InputError::ConvMismatch { want, got: h.conv });
            }
        }
        let remaining = b.len() - OVERHEAD;
        if h.len as usize > remaining || (h.len as i32) < 0 {
            return Err(InputError::BadLength {
                len: h.len,
                remaining,
            });
        }
        if !(CMD_PUSH..=CMD_WINS).contains(&h.cmd) {
            return Err(InputError::UnknownCommand(h.cmd));
        }
        let end = OVERHEAD + h.len as usize;
        Ok((
            Segment {
                conv: h.conv,
                cmd: h.cmd,
                frg: h.frg,
                wnd: h.wnd,
                ts: h.ts,
                sn: h.sn,
                una: h.una,
                data: b[OVERHEAD..end].to_vec(),
            },
            end,
        ))
    }

    /// Decodes every segment in a datagram (for tools such as replay).
    pub fn decode_all(b: &[u8]) -> Result<Vec<Segment>, InputError> {
        if b.len() < OVERHEAD {
            return Err(InputError::Short(b.len()));
        }
        let mut out = Vec::new();
        let mut rest = b;
        while rest.len() >= OVERHEAD {
            let (s, n) = Segment::decode(rest, None)?;
            out.push(s);
            rest = &rest[n..];
        }
        Ok(out)
    }
}

/// The fixed header fields, without data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Conversation id.
    pub conv: u32,
    /// Command.
    pub cmd: u8,
    /// Fragment count.
    pub frg: u8,
    /// Window.
    pub wnd: u16,
    /// Timestamp.
    pub ts: u32,
    /// Sequence number.
    pub sn: u32,
    /// Unacknowledged.
    pub una: u32,
    /// Data length claimed.
    pub len: u32,
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a header (needs 24 bytes).
pub fn decode_header(b: &[u8]) -> Result<Header, InputError> {
    if b.len() < OVERHEAD {
        return Err(InputError::Short(b.len()));
    }
    Ok(Header {
        conv: u32le(b, 0),
        cmd: b[4],
        frg: b[5],
        wnd: u16::from_le_bytes([b[6], b[7]]),
        ts: u32le(b, 8),
        sn: u32le(b, 12),
        una: u32le(b, 16),
        len: u32le(b, 20),
    })
}

/// Appends a header.
#[allow(clippy::too_many_arguments)]
pub fn encode_header(
    out: &mut BytesMut,
    conv: u32,
    cmd: u8,
    frg: u8,
    wnd: u16,
    ts: u32,
    sn: u32,
    una: u32,
    len: u32,
) {
    out.put_u32_le(conv);
    out.put_u8(cmd);
    out.put_u8(frg);
    out.put_u16_le(wnd);
    out.put_u32_le(ts);
    out.put_u32_le(sn);
    out.put_u32_le(una);
    out.put_u32_le(len);
}

/// Whether a datagram from an unknown address can start a session with conversation
/// `conv`: it carries the session's first data segment (PUSH, sn 0). A server that keeps
/// one session per address (as vproxy does) uses this so that late retransmissions and
/// acknowledgements of a session it already ended do not start a new one.
pub fn starts_session(datagram: &[u8], conv: u32) -> bool {
    Segment::decode_all(datagram).is_ok_and(|segs| {
        segs.iter()
            .any(|s| s.conv == conv && s.cmd == CMD_PUSH && s.sn == 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg() -> impl Strategy<Value = Segment> {
        (
            any::<u32>(),
            CMD_PUSH..=CMD_WINS,
            any::<u8>(),
            any::<u16>(),
            any::<(u32, u32, u32)>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(conv, cmd, frg, wnd, (ts, sn, una), data)| Segment {
                conv,
                cmd,
                frg,
                wnd,
                ts,
                sn,
                una,
                data,
            })
    }

    proptest! {
        #[test]
        fn round_trip(s in seg()) {
            let mut b = BytesMut::new();
            s.encode(&mut b);
            prop_assert_eq!(b.len(), OVERHEAD + s.data.len());
            let (d, n) = Segment::decode(&b, Some(s.conv)).unwrap();
            prop_assert_eq!(n, b.len());
            prop_assert_eq!(d, s);
        }

        #[test]
        fn packed_round_trip(v in proptest::collection::vec(seg(), 1..6)) {
            let mut b = BytesMut::new();
            for s in &v { s.encode(&mut b); }
            prop_assert_eq!(Segment::decode_all(&b).unwrap(), v);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Segment::decode_all(&data);
            let _ = Segment::decode(&data, Some(1));
        }
    }

    #[test]
    fn known_bytes() {
        let s = Segment {
            conv: 0x0102_0304,
            cmd: CMD_PUSH,
            frg: 2,
            wnd: 0x0506,
            ts: 7,
            sn: 8,
            una: 9,
            data: b"hi".to_vec(),
        };
        let mut b = BytesMut::new();
        s.encode(&mut b);
        assert_eq!(
            &b[..],
            &[4, 3, 2, 1, 81, 2, 6, 5, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, b'h', b'i']
        );
    }

    #[test]
    fn typed_errors() {
        assert_eq!(Segment::decode(&[0; 23], None), Err(InputError::Short(23)));
        let mut b = BytesMut::new();
        encode_header(&mut b, 5, CMD_ACK, 0, 0, 0, 0, 0, 10);
        assert_eq!(
            Segment::decode(&b, Some(5)),
            Err(InputError::BadLength {
                len: 10,
                remaining: 0
            })
        );
        assert_eq!(
            Segment::decode(&b, Some(6)),
            Err(InputError::ConvMismatch { want: 6, got: 5 })
        );
        let mut b = BytesMut::new();
        encode_header(&mut b, 5, 99, 0, 0, 0, 0, 0, 0);
        assert_eq!(
            Segment::decode(&b, None),
            Err(InputError::UnknownCommand(99))
        );
    }
}
