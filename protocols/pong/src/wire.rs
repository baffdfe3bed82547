//! pong on the wire (seed 001): the 17-byte connection header, the 7-byte frame header
//! and the payloads of connect/relay (a SOCKS5 address) and rst (code + description).
//!
//! Two layers of errors, because they have different consequences:
//! - [`FrameError`]: the framing itself is broken (`len` < 7 or over the limit, a bad
//!   connection header). The byte stream can no longer be split into frames, so the
//!   connection must end.
//! - [`PayloadError`]: one frame's payload is malformed (bad address, unknown type). The
//!   framing is intact, so only that stream is answered (rst), the connection goes on.
//!
//! Decoding never panics; every length is checked against what the input holds and the
//! seed's limit (payload 0..=65500 bytes, so `len` <= 65507).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Size of the frame header (`len` + stream id + type); `len` counts it too.
pub const FRAME_HEADER_LEN: usize = 7;
/// Largest payload the seed allows ("payload 是长度为[0,65500]的二进制数据").
pub const MAX_PAYLOAD: usize = 65500;
/// Largest `len` we accept: header plus the largest payload.
pub const MAX_FRAME_LEN: usize = FRAME_HEADER_LEN + MAX_PAYLOAD;
/// Size of the connection header (`ver` + 16-byte client id).
pub const CONN_HEADER_LEN: usize = 17;
/// The only connection-header version the seed defines.
pub const VERSION: u8 = 0;

/// Frame type bytes, named as in the seed; kept as constants so that unknown bytes can be
/// carried around (an unknown type is a stream error, not a decode failure).
pub mod frame_type {
    /// Data to relay.
    pub const DATA: u8 = 0x00;
    /// SOCKS5 connect: payload is an address.
    pub const CONNECT: u8 = 0x01;
    /// SOCKS5 bind (the seed leaves it undefined).
    pub const BIND: u8 = 0x02;
    /// SOCKS5 UDP associate (the seed leaves it undefined).
    pub const ASSOCIATE: u8 = 0x03;
    /// UDP relay: payload is an address, data frames carry datagrams.
    pub const RELAY: u8 = 0x05;
    /// Settings (reserved).
    pub const SET: u8 = 0x06;
    /// Half close: the sender sends no more data.
    pub const FINISH: u8 = 0x07;
    /// Normal end of the stream.
    pub const CLOSE: u8 = 0x08;
    /// Abnormal end of the stream, optionally with a code and description.
    pub const RST: u8 = 0x09;
}

/// The framing is broken: the connection cannot go on.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// `len` is smaller than the 7-byte header it includes.
    #[error("frame len {0} is shorter than the 7-byte header")]
    LenTooShort(u16),
    /// `len` exceeds the seed's limit (65500 bytes of payload).
    #[error("frame len {0} exceeds the limit of {MAX_FRAME_LEN}")]
    LenTooLong(u16),
    /// The connection header's version is not 0.
    #[error("unsupported connection header version {0}")]
    BadVersion(u8),
}

/// One frame's payload is malformed (or cannot be encoded): only its stream is affected.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    /// The frame type byte is not one the seed defines.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The address ends before its ATYP/addr/port are complete.
    #[error("address truncated ({0} bytes)")]
    AddressTruncated(usize),
    /// ATYP is not 1, 3 or 4.
    #[error("address type {0} not supported")]
    AddressType(u8),
    /// A domain of length 0 or over 255 bytes, or not UTF-8.
    #[error("bad domain name: {0}")]
    BadDomain(&'static str),
    /// Bytes follow the address in a connect/relay payload.
    #[error("{0} bytes after the address")]
    TrailingBytes(usize),
    /// An rst description that is not UTF-8.
    #[error("rst description is not UTF-8")]
    RstNotUtf8,
    /// A payload too long for one frame (encoding only).
    #[error("payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    TooLong(usize),
}

/// The connection header, sent once by local before any frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnHeader {
    /// Raw UUID bytes that the remote checks against its allow list.
    pub client_id: [u8; 16],
}

impl ConnHeader {
    /// Appends `ver (0) | client id`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(VERSION);
        out.put_slice(&self.client_id);
    }

    /// Decodes the header at the start of `b`: `Ok(None)` while fewer than 17 bytes are
    /// there, an error for a version other than 0 (checked as soon as the first byte is).
    pub fn decode(b: &[u8]) -> Result<Option<(ConnHeader, usize)>, FrameError> {
        match b.first() {
            None => return Ok(None),
            Some(&v) if v != VERSION => return Err(FrameError::BadVersion(v)),
            Some(_) => {}
        }
        let Some(id) = b.get(1..CONN_HEADER_LEN) else {
            return Ok(None);
        };
        let mut client_id = [0u8; 16];
        client_id.copy_from_slice(id);
        Ok(Some((ConnHeader { client_id }, CONN_HEADER_LEN)))
    }
}

/// A SOCKS5-style address (`ATYP | addr | port BE`), the payload of connect and relay.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// ATYP 1 (IPv4) or 4 (IPv6). Flow info and scope id are not on the wire.
    Ip(SocketAddr),
    /// ATYP 3: a name of 1..=255 bytes and a port.
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

impl Address {
    /// Bytes the encoding takes (domains are assumed valid).
    pub fn encoded_len(&self) -> usize {
        match self {
            Address::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
            Address::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
            Address::Domain(h, _) => 2 + h.len() + 2,
        }
    }

    /// Appends the address; a domain of 0 or over 255 bytes cannot be encoded.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), PayloadError> {
        match self {
            Address::Ip(SocketAddr::V4(a)) => {
                out.put_u8(1);
                out.put_slice(&a.ip().octets());
                out.put_u16(a.port());
            }
            Address::Ip(SocketAddr::V6(a)) => {
                out.put_u8(4);
                out.put_slice(&a.ip().octets());
                out.put_u16(a.port());
            }
            Address::Domain(h, p) => {
                if h.is_empty() {
                    return Err(PayloadError::BadDomain("empty"));
                }
                if h.len() > 255 {
                    return Err(PayloadError::BadDomain("longer than 255 bytes"));
                }
                out.put_u8(3);
                out.put_u8(h.len() as u8);
                out.put_slice(h.as_bytes());
                out.put_u16(*p);
            }
        }
        Ok(())
    }

    /// Decodes an address at the start of a complete payload; returns it and the bytes
    /// used. A short payload is an error here (the frame is already complete).
    pub fn decode(b: &[u8]) -> Result<(Address, usize), PayloadError> {
        let short = || PayloadError::AddressTruncated(b.len());
        let atyp = *b.first().ok_or_else(short)?;
        let port_at = |start: usize| -> Result<u16, PayloadError> {
            let p = b.get(start..start + 2).ok_or_else(short)?;
            Ok(u16::from_be_bytes([p[0], p[1]]))
        };
        match atyp {
            1 => {
                let o: [u8; 4] = b
                    .get(1..5)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(short)?;
                let port = port_at(5)?;
                Ok((
                    Address::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port)),
                    7,
                ))
            }
            4 => {
                let o: [u8; 16] = b
                    .get(1..17)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(short)?;
                let port = port_at(17)?;
                Ok((
                    Address::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port)),
                    19,
                ))
            }
            3 => {
                let n = *b.get(1).ok_or_else(short)? as usize;
                if n == 0 {
                    return Err(PayloadError::BadDomain("empty"));
                }
                let name = b.get(2..2 + n).ok_or_else(short)?;
                let port = port_at(2 + n)?;
                let name =
                    std::str::from_utf8(name).map_err(|_| PayloadError::BadDomain("not UTF-8"))?;
                Ok((Address::Domain(name.to_string(), port), 2 + n + 2))
            }
            t => Err(PayloadError::AddressType(t)),
        }
    }

    /// Decodes a payload that must hold exactly one address (connect, relay).
    pub fn decode_exact(b: &[u8]) -> Result<Address, PayloadError> {
        let (a, used) = Address::decode(b)?;
        if used != b.len() {
            return Err(PayloadError::TrailingBytes(b.len() - used));
        }
        Ok(a)
    }
}

/// An rst error code: the seed's 1..=12, and any other byte kept as it came (pong-go uses
/// other numbers; decoding them must not fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RstCode {
    /// 1 ERR: proxy server error.
    General,
    /// 2 ERR_RULE: proxy server rule refuse.
    RuleRefused,
    /// 3 ERR_NET: network unreachable.
    NetworkUnreachable,
    /// 4 ERR_DST: host unreachable.
    HostUnreachable,
    /// 5 ERR_DST_REFUSE: refused by dst.
    DstRefused,
    /// 6 ERR_TTL_EXPIRED.
    TtlExpired,
    /// 7 ERR_COMMAND_UNKNOWN: command not supported.
    CommandNotSupported,
    /// 8 ERR_ADDR_TYPE: address type not supported.
    AddressTypeNotSupported,
    /// 9 ERR_REPEAT_ID: repeat stream id (pong extension).
    RepeatedStreamId,
    /// 10 ERR_DIAL_TIMEOUT: dial dst i/o timeout.
    DialTimeout,
    /// 11 ERR_DST_RESET: reset by peer.
    DstReset,
    /// 12 ERR_CONN_TIMEOUT: forcibly closed by the remote host.
    ConnTimeout,
    /// A code the seed does not define.
    Other(u8),
}

impl RstCode {
    /// The byte on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            RstCode::General => 1,
            RstCode::RuleRefused => 2,
            RstCode::NetworkUnreachable => 3,
            RstCode::HostUnreachable => 4,
            RstCode::DstRefused => 5,
            RstCode::TtlExpired => 6,
            RstCode::CommandNotSupported => 7,
            RstCode::AddressTypeNotSupported => 8,
            RstCode::RepeatedStreamId => 9,
            RstCode::DialTimeout => 10,
            RstCode::DstReset => 11,
            RstCode::ConnTimeout => 12,
            RstCode::Other(c) => c,
        }
    }

    /// The code for a byte; never fails (unknown bytes become [`RstCode::Other`]).
    pub fn from_u8(c: u8) -> RstCode {
        match c {
            1 => RstCode::General,
            2 => RstCode::RuleRefused,
            3 => RstCode::NetworkUnreachable,
            4 => RstCode::HostUnreachable,
            5 => RstCode::DstRefused,
            6 => RstCode::TtlExpired,
            7 => RstCode::CommandNotSupported,
            8 => RstCode::AddressTypeNotSupported,
            9 => RstCode::RepeatedStreamId,
            10 => RstCode::DialTimeout,
            11 => RstCode::DstReset,
            12 => RstCode::ConnTimeout,
            c => RstCode::Other(c),
        }
    }

    /// The seed's description text for the code (what we send when we have no better).
    pub fn description(self) -> &'static str {
        match self {
            RstCode::General => "proxy server error",
            RstCode::RuleRefused => "proxy server rule refuse",
            RstCode::NetworkUnreachable => "network unreachable",
            RstCode::HostUnreachable => "host unreachable",
            RstCode::DstRefused => "refused by dst",
            RstCode::TtlExpired => "TTL expired",
            RstCode::CommandNotSupported => "command not supported",
            RstCode::AddressTypeNotSupported => "address type not supported",
            RstCode::RepeatedStreamId => "repeat stream id",
            RstCode::DialTimeout => "dial dst i/o timeout",
            RstCode::DstReset => "reset by peer",
            RstCode::ConnTimeout => "forcibly closed by the remote host",
            RstCode::Other(_) => "unknown error",
        }
    }
}

impl fmt::Display for RstCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_u8(), self.description())
    }
}

/// An rst payload when present: a code and a UTF-8 description (may be empty).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RstInfo {
    /// Error code.
    pub code: RstCode,
    /// Free text; the seed's text for the code when we have nothing better.
    pub description: String,
}

impl RstInfo {
    /// An rst with the seed's description for `code`.
    pub fn new(code: RstCode) -> Self {
        Self {
            code,
            description: code.description().to_string(),
        }
    }

    /// An rst with `code` and our own description.
    pub fn with_description(code: RstCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

impl fmt::Display for RstInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {} {:?}", self.code.to_u8(), self.description)
    }
}

/// A frame as split off the byte stream: type kept as a byte, payload unparsed. This is
/// what framing (and its errors) is about; [`Frame::parse`] interprets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// Stream id.
    pub stream_id: u32,
    /// Frame type byte (may be unknown).
    pub kind: u8,
    /// Payload, 0..=65500 bytes.
    pub payload: Bytes,
}

/// Reads the `len` field of a frame starting at `b`, checked against the limits:
/// `Ok(None)` while fewer than 2 bytes are there.
pub fn peek_frame_len(b: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(l) = b.get(..2) else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([l[0], l[1]]);
    if (len as usize) < FRAME_HEADER_LEN {
        return Err(FrameError::LenTooShort(len));
    }
    if len as usize > MAX_FRAME_LEN {
        return Err(FrameError::LenTooLong(len));
    }
    Ok(Some(len as usize))
}

impl RawFrame {
    /// Splits one frame off the start of `b`: `Ok(None)` if more bytes are needed, else
    /// the frame and the bytes it took. A bad `len` is reported as soon as its two bytes
    /// are there.
    pub fn decode(b: &[u8]) -> Result<Option<(RawFrame, usize)>, FrameError> {
        let Some(len) = peek_frame_len(b)? else {
            return Ok(None);
        };
        let Some(f) = b.get(..len) else {
            return Ok(None);
        };
        Ok(Some((
            RawFrame {
                stream_id: u32::from_be_bytes([f[2], f[3], f[4], f[5]]),
                kind: f[6],
                payload: Bytes::copy_from_slice(&f[FRAME_HEADER_LEN..]),
            },
            len,
        )))
    }

    /// Appends the frame; a payload over 65500 bytes cannot be encoded.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), PayloadError> {
        encode_raw(out, self.stream_id, self.kind, &self.payload)
    }
}

/// Appends one frame with header; the single place that writes frame headers.
pub fn encode_raw(
    out: &mut BytesMut,
    stream_id: u32,
    kind: u8,
    payload: &[u8],
) -> Result<(), PayloadError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PayloadError::TooLong(payload.len()));
    }
    out.reserve(FRAME_HEADER_LEN + payload.len());
    encode_header(out, stream_id, kind, payload.len());
    out.put_slice(payload);
    Ok(())
}

/// Appends the 7-byte header of a frame whose `payload_len`-byte payload the caller
/// sends right after it (`payload_len` at most [`MAX_PAYLOAD`]; callers check).
pub fn encode_header(out: &mut BytesMut, stream_id: u32, kind: u8, payload_len: usize) {
    debug_assert!(payload_len <= MAX_PAYLOAD);
    out.put_u16((FRAME_HEADER_LEN + payload_len) as u16);
    out.put_u32(stream_id);
    out.put_u8(kind);
}

/// What a frame says, by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Bytes to relay (on a relay stream: exactly one datagram).
    Data(Bytes),
    /// Open a TCP stream to the address.
    Connect(Address),
    /// SOCKS5 bind; the seed leaves its payload undefined, so it is kept raw.
    Bind(Bytes),
    /// SOCKS5 UDP associate; undefined payload, kept raw.
    Associate(Bytes),
    /// Open a UDP relay stream to the address.
    Relay(Address),
    /// Settings (reserved), payload kept raw.
    Set(Bytes),
    /// Half close; the seed allows custom payloads (kept raw, usually empty).
    Finish(Bytes),
    /// Normal end; custom payload kept raw (usually empty).
    Close(Bytes),
    /// Abnormal end; `None` when the payload is empty.
    Rst(Option<RstInfo>),
}

impl Body {
    /// The frame type byte.
    pub fn kind(&self) -> u8 {
        use frame_type::*;
        match self {
            Body::Data(_) => DATA,
            Body::Connect(_) => CONNECT,
            Body::Bind(_) => BIND,
            Body::Associate(_) => ASSOCIATE,
            Body::Relay(_) => RELAY,
            Body::Set(_) => SET,
            Body::Finish(_) => FINISH,
            Body::Close(_) => CLOSE,
            Body::Rst(_) => RST,
        }
    }

    /// The name used in traces and logs.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind())
    }
}

/// Name of a frame type byte (`type 0x0a` style for unknown ones is up to the caller).
pub fn kind_name(kind: u8) -> &'static str {
    use frame_type::*;
    match kind {
        DATA => "data",
        CONNECT => "connect",
        BIND => "bind",
        ASSOCIATE => "associate",
        RELAY => "relay",
        SET => "set",
        FINISH => "finish",
        CLOSE => "close",
        RST => "rst",
        _ => "unknown",
    }
}

/// A parsed frame: stream id and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Stream id (odd: opened by local).
    pub stream_id: u32,
    /// What it says.
    pub body: Body,
}

/// Why [`Frame::decode`] failed: framing (fatal) or one payload (stream-level).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The connection cannot go on.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Frame `stream_id` (of `len` bytes) has a bad payload; the stream can be answered.
    #[error("stream {stream_id}: {error}")]
    Payload {
        /// The frame's stream.
        stream_id: u32,
        /// The frame's type byte.
        kind: u8,
        /// Bytes the frame took (so a caller can skip it).
        len: usize,
        /// What is wrong.
        error: PayloadError,
    },
}

impl Frame {
    /// A frame from its parts.
    pub fn new(stream_id: u32, body: Body) -> Self {
        Self { stream_id, body }
    }

    /// Interprets a raw frame's type and payload.
    pub fn parse(raw: &RawFrame) -> Result<Frame, PayloadError> {
        use frame_type::*;
        let p = raw.payload.clone();
        let body = match raw.kind {
            DATA => Body::Data(p),
            CONNECT => Body::Connect(Address::decode_exact(&p)?),
            BIND => Body::Bind(p),
            ASSOCIATE => Body::Associate(p),
            RELAY => Body::Relay(Address::decode_exact(&p)?),
            SET => Body::Set(p),
            FINISH => Body::Finish(p),
            CLOSE => Body::Close(p),
            RST => Body::Rst(decode_rst(&p)?),
            k => return Err(PayloadError::UnknownType(k)),
        };
        Ok(Frame {
            stream_id: raw.stream_id,
            body,
        })
    }

    /// Splits and parses one frame at the start of `b` (`Ok(None)`: more bytes needed).
    pub fn decode(b: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some((raw, len)) = RawFrame::decode(b)? else {
            return Ok(None);
        };
        match Frame::parse(&raw) {
            Ok(f) => Ok(Some((f, len))),
            Err(error) => Err(DecodeError::Payload {
                stream_id: raw.stream_id,
                kind: raw.kind,
                len,
                error,
            }),
        }
    }

    /// Appends the frame. Fails (appending nothing) if the payload would exceed 65500
    /// bytes or an address cannot be encoded.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), PayloadError> {
        let mut p = BytesMut::new();
        let payload: &[u8] = match &self.body {
            Body::Data(b)
            | Body::Bind(b)
            | Body::Associate(b)
            | Body::Set(b)
            | Body::Finish(b)
            | Body::Close(b) => b,
            Body::Connect(a) | Body::Relay(a) => {
                a.encode(&mut p)?;
                &p
            }
            Body::Rst(info) => {
                if let Some(i) = info {
                    p.put_u8(i.code.to_u8());
                    p.put_slice(i.description.as_bytes());
                }
                &p
            }
        };
        encode_raw(out, self.stream_id, self.body.kind(), payload)
    }

    /// The encoding as bytes (convenience for tests and tools).
    pub fn to_bytes(&self) -> Result<Bytes, PayloadError> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        Ok(b.freeze())
    }
}

/// Parses an rst payload: empty, or `code | UTF-8 description`.
pub fn decode_rst(p: &[u8]) -> Result<Option<RstInfo>, PayloadError> {
    let Some((&code, desc)) = p.split_first() else {
        return Ok(None);
    };
    let description = std::str::from_utf8(desc).map_err(|_| PayloadError::RstNotUtf8)?;
    Ok(Some(RstInfo {
        code: RstCode::from_u8(code),
        description: description.to_string(),
    }))
}

impl fmt::Display for Frame {
    /// One-line form used in snapshots: `s3 connect example.com:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{} {}", self.stream_id, self.body.name())?;
        match &self.body {
            Body::Data(b) => write!(f, " {}B {:?}", b.len(), preview(b)),
            Body::Connect(a) | Body::Relay(a) => write!(f, " {a}"),
            Body::Rst(None) => Ok(()),
            Body::Rst(Some(i)) => write!(f, " {i}"),
            Body::Bind(b)
            | Body::Associate(b)
            | Body::Set(b)
            | Body::Finish(b)
            | Body::Close(b) => {
                if b.is_empty() {
                    Ok(())
                } else {
                    write!(f, " {}B", b.len())
                }
            }
        }
    }
}

/// The first bytes of a payload as lossy text, for logs.
fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(24)]).into_owned();
    if b.len() > 24 {
        s + "..."
    } else {
        s
    }
}

/// Parses a client id in the UUID's canonical text form (`8-4-4-4-12` hex digits, either
/// case) into the 16 bytes the connection header carries, in network order (RFC 9562),
/// so that every command line and tool reads ids the same way. Nothing else is taken:
/// no braces, no missing dashes, no sign.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let bad = || format!("{s:?}: expected a UUID such as 123e4567-e89b-12d3-a456-426614174000");
    let groups: Vec<&str> = s.split('-').collect();
    if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return Err(bad());
    }
    let hex = groups.concat();
    // Only ASCII hex digits (from_str_radix alone would take a leading '+', and slicing
    // needs single-byte characters).
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(f: &Frame) -> Vec<u8> {
        f.to_bytes().expect("encodable").to_vec()
    }

    #[test]
    fn uuids_in_canonical_form_only() {
        assert_eq!(
            parse_uuid("00112233-4455-6677-8899-AaBbCcDdEeFf").unwrap(),
            [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        let u = parse_uuid("123E4567-e89b-12d3-a456-426614174000").unwrap();
        assert_eq!(u[0], 0x12);
        assert_eq!(u[15], 0x00);
        for bad in [
            "",
            "00112233445566778899aabbccddeeff",
            "123e4567e89b12d3a456426614174000",
            "00112233-4455-6677-8899-aabbccddeef",
            "00112233-4455-6677-8899-aabbccddeeffa",
            "0011223g-4455-6677-8899-aabbccddeeff",
            "+0112233-4455-6677-8899-aabbccddeeff",
            "+23e4567-e89b-12d3-a456-426614174000",
            "{00112233-4455-6677-8899-aabbccddeeff}",
            "0011-2233-4455-6677-8899aabbccddeeff",
            "00112233-4455-6677-8899-aabbccddeeé",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn known_vectors() {
        // connect s1 to 127.0.0.1:8080
        let f = Frame::new(
            1,
            Body::Connect(Address::Ip("127.0.0.1:8080".parse().unwrap())),
        );
        assert_eq!(enc(&f), [0, 14, 0, 0, 0, 1, 1, 1, 127, 0, 0, 1, 0x1f, 0x90]);
        // connect s3 to domain "ab":443
        let f = Frame::new(3, Body::Connect(Address::Domain("ab".into(), 443)));
        assert_eq!(enc(&f), [0, 13, 0, 0, 0, 3, 1, 3, 2, b'a', b'b', 1, 0xbb]);
        // relay s5 to [::1]:53
        let f = Frame::new(5, Body::Relay(Address::Ip("[::1]:53".parse().unwrap())));
        let mut want = vec![0, 26, 0, 0, 0, 5, 5, 4];
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(&[1, 0, 53]);
        assert_eq!(enc(&f), want);
        // data s1 "hi"
        let f = Frame::new(1, Body::Data(Bytes::from_static(b"hi")));
        assert_eq!(enc(&f), [0, 9, 0, 0, 0, 1, 0, b'h', b'i']);
        // finish / close with no payload: header only
        assert_eq!(
            enc(&Frame::new(0x0102_0304, Body::Finish(Bytes::new()))),
            [0, 7, 1, 2, 3, 4, 7]
        );
        assert_eq!(
            enc(&Frame::new(7, Body::Close(Bytes::new()))),
            [0, 7, 0, 0, 0, 7, 8]
        );
        // rst without payload, and rst 9 "x"
        assert_eq!(enc(&Frame::new(1, Body::Rst(None))), [0, 7, 0, 0, 0, 1, 9]);
        let f = Frame::new(
            1,
            Body::Rst(Some(RstInfo::with_description(
                RstCode::RepeatedStreamId,
                "x",
            ))),
        );
        assert_eq!(enc(&f), [0, 9, 0, 0, 0, 1, 9, 9, b'x']);
        // connection header
        let mut b = BytesMut::new();
        ConnHeader {
            client_id: [0xab; 16],
        }
        .encode(&mut b);
        let mut want = vec![0];
        want.extend_from_slice(&[0xab; 16]);
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn decode_known_vectors() {
        let (f, n) = Frame::decode(&[0, 13, 0, 0, 0, 3, 1, 3, 2, b'a', b'b', 1, 0xbb, 0xff])
            .unwrap()
            .unwrap();
        assert_eq!(n, 13);
        assert_eq!(
            f,
            Frame::new(3, Body::Connect(Address::Domain("ab".into(), 443)))
        );
        // rst with an unknown code decodes.
        let (f, _) = Frame::decode(&[0, 10, 0, 0, 0, 1, 9, 42, b'o', b'k'])
            .unwrap()
            .unwrap();
        assert_eq!(
            f.body,
            Body::Rst(Some(RstInfo::with_description(RstCode::Other(42), "ok")))
        );
        // rst with just a code
        let (f, _) = Frame::decode(&[0, 8, 0, 0, 0, 1, 9, 5]).unwrap().unwrap();
        assert_eq!(
            f.body,
            Body::Rst(Some(RstInfo::with_description(RstCode::DstRefused, "")))
        );
    }

    #[test]
    fn bad_lengths_are_frame_errors() {
        for len in 0..7u16 {
            let b = len.to_be_bytes();
            assert_eq!(RawFrame::decode(&b), Err(FrameError::LenTooShort(len)));
        }
        assert_eq!(
            RawFrame::decode(&65508u16.to_be_bytes()),
            Err(FrameError::LenTooLong(65508))
        );
        assert_eq!(
            RawFrame::decode(&u16::MAX.to_be_bytes()),
            Err(FrameError::LenTooLong(u16::MAX))
        );
        // exactly the limit is fine, just incomplete
        assert_eq!(RawFrame::decode(&65507u16.to_be_bytes()), Ok(None));
        assert_eq!(RawFrame::decode(&[0]), Ok(None));
        assert_eq!(RawFrame::decode(&[]), Ok(None));
    }

    #[test]
    fn largest_frame_round_trips_and_one_more_byte_is_refused() {
        let f = Frame::new(1, Body::Data(Bytes::from(vec![7u8; MAX_PAYLOAD])));
        let b = enc(&f);
        assert_eq!(b.len(), MAX_FRAME_LEN);
        assert_eq!(Frame::decode(&b).unwrap(), Some((f, MAX_FRAME_LEN)));
        let big = Frame::new(1, Body::Data(Bytes::from(vec![7u8; MAX_PAYLOAD + 1])));
        let mut out = BytesMut::new();
        assert_eq!(
            big.encode(&mut out),
            Err(PayloadError::TooLong(MAX_PAYLOAD + 1))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn payload_errors_name_the_stream() {
        // unknown type 4
        assert_eq!(
            Frame::decode(&[0, 7, 0, 0, 0, 9, 4]),
            Err(DecodeError::Payload {
                stream_id: 9,
                kind: 4,
                len: 7,
                error: PayloadError::UnknownType(4)
            })
        );
        // address type 2
        let e = Frame::decode(&[0, 10, 0, 0, 0, 1, 1, 2, 0, 0]).unwrap_err();
        assert!(matches!(
            e,
            DecodeError::Payload {
                error: PayloadError::AddressType(2),
                ..
            }
        ));
        // truncated v4, empty domain, trailing bytes, bad utf-8 rst
        let cases: [(&[u8], PayloadError); 4] = [
            (&[1, 1, 2, 3], PayloadError::AddressTruncated(4)),
            (&[3, 0, 0, 80], PayloadError::BadDomain("empty")),
            (&[1, 1, 2, 3, 4, 0, 80, 9], PayloadError::TrailingBytes(1)),
            (&[3, 3, b'a', b'b'], PayloadError::AddressTruncated(4)),
        ];
        for (p, want) in cases {
            assert_eq!(Address::decode_exact(p), Err(want), "{p:?}");
        }
        assert_eq!(decode_rst(&[1, 0xff]), Err(PayloadError::RstNotUtf8));
        let mut o = BytesMut::new();
        assert!(Address::Domain("x".repeat(256), 1).encode(&mut o).is_err());
        assert!(Address::Domain(String::new(), 1).encode(&mut o).is_err());
        assert!(o.is_empty());
    }

    #[test]
    fn conn_header() {
        let mut b = vec![0u8];
        b.extend_from_slice(&[1; 16]);
        for n in 0..17 {
            assert_eq!(ConnHeader::decode(&b[..n]), Ok(None));
        }
        assert_eq!(
            ConnHeader::decode(&b),
            Ok(Some((ConnHeader { client_id: [1; 16] }, 17)))
        );
        assert_eq!(ConnHeader::decode(&[1]), Err(FrameError::BadVersion(1)));
    }

    #[test]
    fn rst_codes_round_trip() {
        for c in 0..=255u8 {
            assert_eq!(RstCode::from_u8(c).to_u8(), c);
        }
        assert_eq!(RstCode::from_u8(9), RstCode::RepeatedStreamId);
        assert_eq!(RstCode::from_u8(13), RstCode::Other(13));
        assert_eq!(RstCode::from_u8(0), RstCode::Other(0));
    }

    fn arb_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(o, p)| Address::Ip(SocketAddr::new(Ipv4Addr::from(o).into(), p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(o, p)| Address::Ip(SocketAddr::new(Ipv6Addr::from(o).into(), p))),
            ("[a-z0-9.-]{1,255}", any::<u16>()).prop_map(|(h, p)| Address::Domain(h, p)),
            // multi-byte UTF-8 names, cut to at most 255 bytes on a char boundary
            ("\\PC{1,120}", any::<u16>()).prop_map(|(h, p)| {
                let mut h: String = h;
                while h.len() > 255 {
                    h.pop();
                }
                Address::Domain(h, p)
            }),
        ]
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        prop_oneof![
            arb_bytes(300).prop_map(Body::Data),
            arb_address().prop_map(Body::Connect),
            arb_bytes(40).prop_map(Body::Bind),
            arb_bytes(40).prop_map(Body::Associate),
            arb_address().prop_map(Body::Relay),
            arb_bytes(40).prop_map(Body::Set),
            arb_bytes(8).prop_map(Body::Finish),
            arb_bytes(8).prop_map(Body::Close),
            Just(Body::Rst(None)),
            (any::<u8>(), "\\PC{0,40}").prop_map(|(c, d)| Body::Rst(Some(
                RstInfo::with_description(RstCode::from_u8(c), d)
            ))),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (any::<u32>(), arb_body()).prop_map(|(s, b)| Frame::new(s, b))
    }

    proptest! {
        #[test]
        fn round_trip(f in arb_frame()) {
            let b = enc(&f);
            prop_assert_eq!(Frame::decode(&b), Ok(Some((f.clone(), b.len()))));
            // every strict prefix needs more bytes
            for n in 0..b.len() {
                prop_assert_eq!(Frame::decode(&b[..n]), Ok(None));
            }
        }

        #[test]
        fn split_anywhere(frames in proptest::collection::vec(arb_frame(), 1..8),
                          cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            // Stream the concatenation through a buffer fed in pieces cut at random
            // points; the frames must come out as they went in.
            let mut all = Vec::new();
            for f in &frames {
                all.extend_from_slice(&enc(f));
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (all.len() + 1)).collect();
            cuts.push(all.len());
            cuts.sort_unstable();
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts {
                buf.extend_from_slice(&all[at..c]);
                at = c;
                while let Some((f, n)) = Frame::decode(&buf).expect("valid stream") {
                    got.push(f);
                    buf.drain(..n);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            match Frame::decode(&b) {
                Ok(Some((f, n))) => {
                    prop_assert!((FRAME_HEADER_LEN..=b.len()).contains(&n));
                    // what decodes re-encodes to the same bytes
                    prop_assert_eq!(&enc(&f)[..], &b[..n]);
                }
                Ok(None) => prop_assert!(b.len() < 2 || b.len() < peek_frame_len(&b).unwrap().unwrap()),
                Err(_) => {}
            }
            let _ = ConnHeader::decode(&b);
            let _ = Address::decode(&b);
            let _ = decode_rst(&b);
        }
    }
}
