//! TCP options: MSS, window scale, SACK-permitted and timestamps are kept; NOP and EOL
//! are understood; every other kind is skipped by its length. A length byte that is
//! missing, below 2, past the end of the option space, or wrong for a known kind is a
//! typed error (never a panic).

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// Option kinds the codec knows.
pub mod kind {
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks (skipped: the stack does not do SACK).
    pub const SACK: u8 = 5;
    /// Timestamps.
    pub const TIMESTAMPS: u8 = 8;
}

/// Most bytes of options a TCP header can hold (data offset 15 words minus 5).
pub const MAX_OPTIONS_LEN: usize = 40;

/// The options of one segment that the stack reads or offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// Maximum segment size.
    pub mss: Option<u16>,
    /// Window scale shift count, as sent (the stack clamps it to 14).
    pub window_scale: Option<u8>,
    /// SACK permitted (read and re-encoded; the stack never offers it).
    pub sack_permitted: bool,
    /// Timestamps value and echo reply (read and re-encoded; the stack never offers them).
    pub timestamps: Option<(u32, u32)>,
}

impl TcpOptions {
    /// Parses the option bytes of a header (everything between the fixed header and the
    /// data offset). A later copy of an option overrides an earlier one.
    pub fn decode(mut b: &[u8]) -> Result<TcpOptions, DecodeError> {
        let mut o = TcpOptions::default();
        while let Some(&k) = b.first() {
            match k {
                kind::EOL => break,
                kind::NOP => {
                    b = &b[1..];
                    continue;
                }
                _ => {}
            }
            let Some(&len) = b.get(1) else {
                return Err(DecodeError::OptionLength { kind: k, len: None });
            };
            let len_us = usize::from(len);
            if len_us < 2 || len_us > b.len() {
                return Err(DecodeError::OptionLength {
                    kind: k,
                    len: Some(len),
                });
            }
            let body = &b[2..len_us];
            let expect = match k {
                kind::MSS => Some(4),
                kind::WINDOW_SCALE => Some(3),
                kind::SACK_PERMITTED => Some(2),
                kind::TIMESTAMPS => Some(10),
                _ => None,
            };
            if let Some(e) = expect {
                if len_us != e {
                    return Err(DecodeError::OptionLength {
                        kind: k,
                        len: Some(len),
                    });
                }
            }
            match k {
                kind::MSS => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                kind::WINDOW_SCALE => o.window_scale = Some(body[0]),
                kind::SACK_PERMITTED => o.sack_permitted = true,
                kind::TIMESTAMPS => {
                    let v = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let e = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    o.timestamps = Some((v, e));
                }
                _ => {}
            }
            b = &b[len_us..];
        }
        Ok(o)
    }

    /// Bytes [`TcpOptions::encode`] writes (a multiple of 4).
    pub fn encoded_len(&self) -> usize {
        let mut n: usize = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.sack_permitted {
            n += 2;
        }
        if self.timestamps.is_some() {
            n += 10;
        }
        if self.window_scale.is_some() {
            n += 4; // NOP + 3
        }
        n.div_ceil(4) * 4
    }

    /// Writes the options in the order Linux uses (MSS, SACK-permitted, timestamps, NOP,
    /// window scale), padded with EOL to a multiple of 4 bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        if let Some(m) = self.mss {
            out.put_u8(kind::MSS);
            out.put_u8(4);
            out.put_u16(m);
        }
        if self.sack_permitted {
            out.put_u8(kind::SACK_PERMITTED);
            out.put_u8(2);
        }
        if let Some((v, e)) = self.timestamps {
            out.put_u8(kind::TIMESTAMPS);
            out.put_u8(10);
            out.put_u32(v);
            out.put_u32(e);
        }
        if let Some(ws) = self.window_scale {
            out.put_u8(kind::NOP);
            out.put_u8(kind::WINDOW_SCALE);
            out.put_u8(3);
            out.put_u8(ws);
        }
        while (out.len() - start) & 3 != 0 {
            out.put_u8(kind::EOL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_are_skipped_by_length() {
        // kind 30 (MPTCP) len 4, then MSS.
        let o = TcpOptions::decode(&[30, 4, 0xaa, 0xbb, 2, 4, 0x05, 0xb4]).unwrap();
        assert_eq!(o.mss, Some(1460));
    }

    #[test]
    fn bad_lengths_are_errors() {
        for b in [
            &[2u8][..],    // no length byte
            &[2, 1],       // length below 2
            &[2, 0],       // length 0 would loop forever
            &[2, 8, 0, 0], // past the end
            &[2, 3, 5],    // wrong length for MSS
            &[3, 4, 7, 0], // wrong length for window scale
            &[8, 9, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(TcpOptions::decode(b).is_err(), "{b:?}");
        }
    }

    #[test]
    fn eol_ends_parsing() {
        let o = TcpOptions::decode(&[0, 2, 1]).unwrap();
        assert_eq!(o, TcpOptions::default());
    }
}
