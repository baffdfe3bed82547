//! The tunnel's frames: HTTP/2 frame headers (9 bytes, big endian) carrying vproxy's
//! messages (seed 000 and `shared/protocols/h2tunnel.md`).
//!
//! Two layers, so the tunnel machine can apply the handshake rule (compare raw bytes)
//! and the post-handshake rules (typed messages) separately:
//! [`RawFrame::parse`] splits one frame off a byte stream without interpreting it, and
//! [`Message::from_frame`] applies the receive rules. Nothing here panics on any input,
//! every length is checked against [`MAX_PAYLOAD`], and gunzipped data is capped at
//! [`MAX_GUNZIPPED`].

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use thiserror::Error;

/// Length of a frame header.
pub const HEADER_LEN: usize = 9;
/// Largest payload we send or accept in one frame (HTTP/2's default maximum frame size).
/// vproxy does not cap frames; we do, so a peer cannot make us buffer without bound.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Largest payload a gzip DATA frame may expand to; more is a protocol error (gzip bomb).
pub const MAX_GUNZIPPED: usize = 256 * 1024;
/// DATA payloads above this size are gzipped when that makes them smaller (vproxy's rule).
pub const GZIP_THRESHOLD: usize = 1024;

/// Frame type DATA.
pub const TYPE_DATA: u8 = 0;
/// Frame type HEADERS.
pub const TYPE_HEADERS: u8 = 1;
/// Frame type SETTINGS.
pub const TYPE_SETTINGS: u8 = 4;
/// Frame type PING.
pub const TYPE_PING: u8 = 6;
/// Frame type GOAWAY.
pub const TYPE_GOAWAY: u8 = 7;
/// END_STREAM on DATA/HEADERS, ACK on PING.
pub const FLAG_END_OR_ACK: u8 = 0x01;
/// On DATA: the payload is gzip (RFC 1952).
pub const FLAG_GZIP: u8 = 0x04;

/// The handshake, both ways: an empty SETTINGS frame on stream 0, byte for byte.
pub const HANDSHAKE: [u8; HEADER_LEN] = [0, 0, 0, TYPE_SETTINGS, 0, 0, 0, 0, 0];

/// Why received bytes break the protocol. Each one fails the tunnel with a GOAWAY
/// carrying [`FrameError::reason`].
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field exceeds [`MAX_PAYLOAD`].
    #[error("frame of type {typ} has payload length {len}, over the {max}-byte limit")]
    TooLarge {
        /// Frame type.
        typ: u8,
        /// Declared payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A type that is not valid after the handshake (SETTINGS, or unknown types).
    #[error("unexpected frame type {0} after the handshake")]
    UnexpectedType(u8),
    /// HEADERS (SYN, SYN-ACK, RST) must be empty.
    #[error("HEADERS frame on stream {sid} has non-empty payload ({len} bytes)")]
    NonEmptyHeaders {
        /// Stream id.
        sid: u32,
        /// Payload length.
        len: usize,
    },
    /// A DATA frame flagged gzip that does not gunzip (or expands past the cap).
    #[error("gzip DATA on stream {sid} is invalid: {why}")]
    BadGzip {
        /// Stream id.
        sid: u32,
        /// What went wrong.
        why: String,
    },
}

impl FrameError {
    /// The reason sent in the GOAWAY that fails the tunnel.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// One frame split off a byte stream, not yet interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// Frame type.
    pub typ: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id with the reserved top bit cleared (RFC 9113 says receivers ignore it).
    pub sid: u32,
    /// The 9 header bytes as received (the handshake check compares them exactly).
    pub header: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// Splits the first frame off `buf`: `Ok(None)` when more bytes are needed,
    /// `Ok(Some((frame, consumed)))` otherwise. Rejects oversized frames as soon as
    /// their header arrives, before buffering the payload.
    pub fn parse(buf: &'a [u8]) -> Result<Option<(RawFrame<'a>, usize)>, FrameError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let typ = header[3];
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge {
                typ,
                len,
                max: MAX_PAYLOAD,
            });
        }
        let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let sid = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        Ok(Some((
            RawFrame {
                typ,
                flags: header[4],
                sid,
                header,
                payload,
            },
            HEADER_LEN + len,
        )))
    }

    /// Whether this is the handshake, byte for byte.
    pub fn is_handshake(&self) -> bool {
        self.header == HANDSHAKE && self.payload.is_empty()
    }
}

/// A tunnel message, as the machines see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Handshake (empty SETTINGS); valid only as the first frame each way.
    Handshake,
    /// Keepalive: a PING the peer must echo with the ACK flag.
    Keepalive {
        /// The keepalive's id.
        id: i64,
    },
    /// Keepalive ack: the PING echoed with the ACK flag.
    KeepaliveAck {
        /// The id of the keepalive it answers.
        id: i64,
    },
    /// SYN (client to server) or SYN-ACK (server to client): identical on the wire.
    Syn {
        /// Stream id.
        sid: u32,
    },
    /// RST: the stream ends abnormally.
    Rst {
        /// Stream id.
        sid: u32,
    },
    /// PSH (data), FIN (empty, `fin`), or PSH-FIN (data then FIN).
    Data {
        /// Stream id.
        sid: u32,
        /// The payload, already gunzipped.
        payload: Bytes,
        /// END_STREAM: the sender will send no more on this stream.
        fin: bool,
    },
    /// Shutdown (GOAWAY): the tunnel and every stream in it end.
    Shutdown {
        /// Why, as sent.
        reason: String,
    },
    /// A frame the rules say to ignore (a PING shorter than 8 bytes).
    Ignored,
}

impl Message {
    /// Applies the post-handshake receive rules to `f`.
    pub fn from_frame(f: &RawFrame<'_>) -> Result<Message, FrameError> {
        let end = f.flags & FLAG_END_OR_ACK != 0;
        match f.typ {
            TYPE_DATA => {
                let payload = if f.flags & FLAG_GZIP != 0 {
                    gunzip(f.payload).map_err(|why| FrameError::BadGzip { sid: f.sid, why })?
                } else {
                    Bytes::copy_from_slice(f.payload)
                };
                Ok(Message::Data {
                    sid: f.sid,
                    payload,
                    fin: end,
                })
            }
            TYPE_HEADERS if !f.payload.is_empty() => Err(FrameError::NonEmptyHeaders {
                sid: f.sid,
                len: f.payload.len(),
            }),
            TYPE_HEADERS if end => Ok(Message::Rst { sid: f.sid }),
            TYPE_HEADERS => Ok(Message::Syn { sid: f.sid }),
            TYPE_PING => {
                let Some(id) = f.payload.get(..8) else {
                    return Ok(Message::Ignored);
                };
                let id = i64::from_be_bytes(id.try_into().unwrap_or([0; 8]));
                Ok(if end {
                    Message::KeepaliveAck { id }
                } else {
                    Message::Keepalive { id }
                })
            }
            TYPE_GOAWAY => {
                let reason = match f.payload.get(8..) {
                    Some(r) => String::from_utf8_lossy(r).into_owned(),
                    None => "GOAWAY".to_string(),
                };
                Ok(Message::Shutdown { reason })
            }
            other => Err(FrameError::UnexpectedType(other)),
        }
    }

    /// Appends this message's frames to `out`. DATA larger than [`MAX_PAYLOAD`] becomes
    /// several frames (END_STREAM only on the last); DATA above [`GZIP_THRESHOLD`] is
    /// gzipped when that is smaller and `gzip` is true. A shutdown reason is cut to fit
    /// one frame. [`Message::Ignored`] encodes to nothing.
    pub fn encode(&self, out: &mut BytesMut, gzip: bool) {
        match self {
            Message::Handshake => out.put_slice(&HANDSHAKE),
            Message::Keepalive { id } => put_frame(out, TYPE_PING, 0, 0, &id.to_be_bytes()),
            Message::KeepaliveAck { id } => {
                put_frame(out, TYPE_PING, FLAG_END_OR_ACK, 0, &id.to_be_bytes())
            }
            Message::Syn { sid } => put_frame(out, TYPE_HEADERS, 0, *sid, &[]),
            Message::Rst { sid } => put_frame(out, TYPE_HEADERS, FLAG_END_OR_ACK, *sid, &[]),
            Message::Data { sid, payload, fin } => encode_data(out, *sid, payload, *fin, gzip),
            Message::Shutdown { reason } => {
                let mut p = Vec::with_capacity(8 + reason.len());
                p.extend_from_slice(&[0xff; 8]);
                let mut cut = reason.len().min(MAX_PAYLOAD - 8);
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                p.extend_from_slice(&reason.as_bytes()[..cut]);
                put_frame(out, TYPE_GOAWAY, 0, 0, &p);
            }
            Message::Ignored => {}
        }
    }

    /// The encoded bytes (convenience for tests and tools).
    pub fn to_bytes(&self, gzip: bool) -> Vec<u8> {
        let mut b = BytesMut::new();
        self.encode(&mut b, gzip);
        b.to_vec()
    }
}

fn put_frame(out: &mut BytesMut, typ: u8, flags: u8, sid: u32, payload: &[u8]) {
    out.reserve(HEADER_LEN + payload.len());
    put_header(out, typ, flags, sid, payload.len());
    out.put_slice(payload);
}

fn put_header(out: &mut BytesMut, typ: u8, flags: u8, sid: u32, len: usize) {
    debug_assert!(len <= MAX_PAYLOAD);
    out.put_slice(&(len as u32).to_be_bytes()[1..]);
    out.put_u8(typ);
    out.put_u8(flags);
    out.put_u32(sid & 0x7fff_ffff);
}

fn encode_data(out: &mut BytesMut, sid: u32, payload: &[u8], fin: bool, gzip: bool) {
    if payload.is_empty() {
        put_frame(
            out,
            TYPE_DATA,
            if fin { FLAG_END_OR_ACK } else { 0 },
            sid,
            &[],
        );
        return;
    }
    let mut chunks = payload.chunks(MAX_PAYLOAD).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let end = if fin && last { FLAG_END_OR_ACK } else { 0 };
        match gzip.then(|| gzip_smaller(chunk)).flatten() {
            Some(z) => put_frame(out, TYPE_DATA, end | FLAG_GZIP, sid, &z),
            None => put_frame(out, TYPE_DATA, end, sid, chunk),
        }
    }
}

/// Appends one non-final DATA frame for `piece` (at most [`MAX_PAYLOAD`] bytes) as
/// [`Message::encode`] would. When the payload goes out as it is (not gzipped) and is at
/// least `uncopied_min` bytes, only the header is written to `out` and the payload is
/// returned, to be sent right after it without a copy; otherwise the whole frame is in
/// `out` and `None` comes back. The bytes on the wire are the same either way.
pub fn encode_data_piece(
    out: &mut BytesMut,
    sid: u32,
    piece: &Bytes,
    gzip: bool,
    uncopied_min: usize,
) -> Option<Bytes> {
    debug_assert!(!piece.is_empty() && piece.len() <= MAX_PAYLOAD);
    if let Some(z) = gzip.then(|| gzip_smaller(piece)).flatten() {
        put_frame(out, TYPE_DATA, FLAG_GZIP, sid, &z);
        return None;
    }
    if piece.len() < uncopied_min {
        put_frame(out, TYPE_DATA, 0, sid, piece);
        return None;
    }
    put_header(out, TYPE_DATA, 0, sid, piece.len());
    Some(piece.clone())
}

/// The gzip of `data` when `data` is over the threshold and gzip makes it smaller.
fn gzip_smaller(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() <= GZIP_THRESHOLD {
        return None;
    }
    let mut e = GzEncoder::new(Vec::with_capacity(data.len() / 2), Compression::fast());
    e.write_all(data).ok()?;
    let z = e.finish().ok()?;
    (z.len() < data.len()).then_some(z)
}

fn gunzip(data: &[u8]) -> Result<Bytes, String> {
    let mut out = Vec::new();
    let mut d = GzDecoder::new(data).take(MAX_GUNZIPPED as u64 + 1);
    d.read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() > MAX_GUNZIPPED {
        return Err(format!("expands past {MAX_GUNZIPPED} bytes"));
    }
    Ok(Bytes::from(out))
}

/// Splits every complete frame off the front of `buf` and interprets it with
/// [`Message::from_frame`]; what remains is an incomplete frame. For tools (replay) and
/// tests; the machines use [`RawFrame::parse`] directly to treat the handshake apart.
pub fn decode_all(buf: &[u8]) -> (Vec<Result<Message, FrameError>>, usize) {
    let mut msgs = Vec::new();
    let mut off = 0;
    loop {
        match RawFrame::parse(&buf[off..]) {
            Ok(Some((f, n))) => {
                off += n;
                msgs.push(if f.is_handshake() {
                    Ok(Message::Handshake)
                } else {
                    Message::from_frame(&f)
                });
            }
            Ok(None) => return (msgs, off),
            Err(e) => {
                msgs.push(Err(e));
                return (msgs, off);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(bytes: &[u8]) -> Result<Message, FrameError> {
        let (f, n) = RawFrame::parse(bytes).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        Message::from_frame(&f)
    }

    #[test]
    fn known_bytes() {
        assert_eq!(Message::Handshake.to_bytes(false), HANDSHAKE);
        assert_eq!(
            Message::Keepalive { id: 1 }.to_bytes(false),
            [0, 0, 8, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            Message::KeepaliveAck { id: 1 }.to_bytes(false),
            [0, 0, 8, 6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            Message::Syn { sid: 3 }.to_bytes(false),
            [0, 0, 0, 1, 0, 0, 0, 0, 3]
        );
        assert_eq!(
            Message::Rst { sid: 3 }.to_bytes(false),
            [0, 0, 0, 1, 1, 0, 0, 0, 3]
        );
        let fin = Message::Data {
            sid: 5,
            payload: Bytes::new(),
            fin: true,
        };
        assert_eq!(fin.to_bytes(false), [0, 0, 0, 0, 1, 0, 0, 0, 5]);
        let bye = Message::Shutdown {
            reason: "bye".into(),
        }
        .to_bytes(false);
        assert_eq!(
            bye,
            [
                0, 0, 11, 7, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, b'b', b'y',
                b'e'
            ]
        );
    }

    #[test]
    fn receive_rules() {
        // PING shorter than 8 is ignored; extra bytes are ignored.
        assert_eq!(
            one(&[0, 0, 2, 6, 0, 0, 0, 0, 0, 1, 2]),
            Ok(Message::Ignored)
        );
        assert_eq!(
            one(&[0, 0, 9, 6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 99]),
            Ok(Message::KeepaliveAck { id: 7 })
        );
        // GOAWAY shorter than 8 reads as "GOAWAY".
        assert_eq!(
            one(&[0, 0, 3, 7, 0, 0, 0, 0, 0, 1, 2, 3]),
            Ok(Message::Shutdown {
                reason: "GOAWAY".into()
            })
        );
        // HEADERS with a payload, SETTINGS after the handshake, unknown types: errors.
        assert!(matches!(
            one(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 0]),
            Err(FrameError::NonEmptyHeaders { sid: 1, len: 1 })
        ));
        assert_eq!(one(&HANDSHAKE), Err(FrameError::UnexpectedType(4)));
        assert_eq!(
            one(&[0, 0, 0, 3, 0, 0, 0, 0, 1]),
            Err(FrameError::UnexpectedType(3))
        );
        // Unknown flags are ignored; the reserved stream-id bit is ignored.
        assert_eq!(
            one(&[0, 0, 0, 1, 0xf0, 0x80, 0, 0, 9]),
            Ok(Message::Syn { sid: 9 })
        );
        // A bad gzip fails.
        assert!(matches!(
            one(&[0, 0, 2, 0, FLAG_GZIP, 0, 0, 0, 1, 1, 2]),
            Err(FrameError::BadGzip { sid: 1, .. })
        ));
    }

    #[test]
    fn oversized_frames_are_rejected_from_the_header() {
        let h = [0x00, 0x40, 0x01, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            RawFrame::parse(&h),
            Err(FrameError::TooLarge {
                typ: 0,
                len: MAX_PAYLOAD + 1,
                max: MAX_PAYLOAD
            })
        );
        assert_eq!(RawFrame::parse(&h[..8]), Ok(None));
    }

    #[test]
    fn gzip_bombs_are_capped() {
        let zeros = vec![0u8; MAX_GUNZIPPED + 1];
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(&zeros).unwrap();
        let z = e.finish().unwrap();
        assert!(z.len() <= MAX_PAYLOAD);
        let mut f = BytesMut::new();
        put_frame(&mut f, TYPE_DATA, FLAG_GZIP, 1, &z);
        assert!(matches!(one(&f), Err(FrameError::BadGzip { .. })));
    }

    #[test]
    fn large_compressible_data_is_gzipped_and_split() {
        let payload = Bytes::from(vec![b'a'; 3 * MAX_PAYLOAD + 5]);
        let m = Message::Data {
            sid: 1,
            payload: payload.clone(),
            fin: true,
        };
        let b = m.to_bytes(true);
        let (msgs, used) = decode_all(&b);
        assert_eq!(used, b.len());
        assert_eq!(msgs.len(), 4);
        let mut got = Vec::new();
        for (i, r) in msgs.into_iter().enumerate() {
            let Ok(Message::Data { payload, fin, .. }) = r else {
                panic!("not data: {r:?}")
            };
            assert_eq!(fin, i == 3);
            got.extend_from_slice(&payload);
        }
        assert_eq!(got, payload);
        // The first frame really was compressed.
        assert_ne!(b[4] & FLAG_GZIP, 0);
    }

    fn message() -> impl Strategy<Value = Message> {
        let sid = 0u32..0x7fff_ffff;
        prop_oneof![
            any::<i64>().prop_map(|id| Message::Keepalive { id }),
            any::<i64>().prop_map(|id| Message::KeepaliveAck { id }),
            sid.clone().prop_map(|sid| Message::Syn { sid }),
            sid.clone().prop_map(|sid| Message::Rst { sid }),
            (
                sid,
                proptest::collection::vec(any::<u8>(), 0..MAX_PAYLOAD),
                any::<bool>()
            )
                .prop_map(|(sid, p, fin)| Message::Data {
                    sid,
                    payload: Bytes::from(p),
                    fin
                }),
            "[a-z ]{0,40}".prop_map(|reason| Message::Shutdown { reason }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(m in message(), gzip in any::<bool>()) {
            let b = m.to_bytes(gzip);
            let (msgs, used) = decode_all(&b);
            prop_assert_eq!(used, b.len());
            prop_assert_eq!(msgs, vec![Ok(m)]);
        }

        #[test]
        fn split_anywhere_gives_the_same_messages(
            ms in proptest::collection::vec(message(), 1..5), cut in any::<prop::sample::Index>()
        ) {
            let mut b = BytesMut::new();
            for m in &ms { m.encode(&mut b, true); }
            let cut = cut.index(b.len() + 1);
            let (mut first, used) = decode_all(&b[..cut]);
            let (rest, used2) = decode_all(&b[used..]);
            first.extend(rest);
            prop_assert_eq!(used + used2, b.len());
            prop_assert_eq!(first, ms.into_iter().map(Ok).collect::<Vec<_>>());
        }

        #[test]
        fn decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_all(&data);
        }
    }
}
