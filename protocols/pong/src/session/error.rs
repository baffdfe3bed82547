//! Typed errors across the driver boundary: why the connection failed
//! ([`ProtocolError`]), why input is held ([`Blocked`]), why a call failed
//! ([`StreamError`]) and why a dial failed ([`DialError`]).

use std::io;

use thiserror::Error;

use super::config::{ConnState, Side};
use crate::stream::{ResetCause, StreamKind, StreamState};
use crate::wire::{FrameError, PayloadError, RstCode, RstInfo, MAX_PAYLOAD};

/// Why the machine gave up on the connection: the byte stream cannot be framed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A bad frame `len` or connection header.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The carrier ended inside a frame or the header (`have` bytes of it arrived).
    #[error("carrier closed inside a frame ({have} bytes of it received)")]
    Truncated {
        /// Bytes of the unfinished frame or header.
        have: usize,
    },
}

/// Why input is not being taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// A data frame for this stream does not fit its receive buffer.
    StreamFull(u32),
    /// Our queued output exceeds `max_output`: drain `poll_transmit` first.
    OutputFull,
    /// Remote: the client id awaits `accept_client`/`reject_client`.
    AwaitingApproval,
}

/// Why an application or driver call failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StreamError {
    /// The connection is not in a state that allows the call.
    #[error("connection is {0}")]
    Connection(ConnState),
    /// The id was never in use.
    #[error("no stream {0}")]
    Unknown(u32),
    /// The stream ended normally or so long ago that its reason is forgotten.
    #[error("stream {0} has ended")]
    Ended(u32),
    /// The stream was reset.
    #[error("stream {stream_id}: {cause}")]
    Reset {
        /// Stream id.
        stream_id: u32,
        /// Why.
        cause: ResetCause,
    },
    /// The stream's state forbids the call (e.g. send after finish).
    #[error("stream {stream_id} is {state}")]
    State {
        /// Stream id.
        stream_id: u32,
        /// Its state.
        state: StreamState,
    },
    /// Remote: the dial has not been reported yet, so nothing may be sent.
    #[error("stream {0} is still dialing")]
    Dialing(u32),
    /// Remote: the dial's outcome was already reported.
    #[error("stream {0} is not dialing")]
    NotDialing(u32),
    /// `send` on a relay stream or `send_datagram` on a connect stream.
    #[error("stream {stream_id} is {kind}")]
    WrongKind {
        /// Stream id.
        stream_id: u32,
        /// Its kind.
        kind: StreamKind,
    },
    /// The output queue is full: drain `poll_transmit` and retry.
    #[error("output queue full")]
    OutputFull,
    /// A datagram over 65500 bytes cannot be one frame.
    #[error("datagram of {0} bytes exceeds {MAX_PAYLOAD}")]
    DatagramTooLarge(usize),
    /// `max_streams` streams are tracked.
    #[error("too many streams")]
    TooManyStreams,
    /// No odd stream id is left.
    #[error("stream ids exhausted")]
    IdsExhausted,
    /// The call belongs to the other side (e.g. `open_connect` on a remote).
    #[error("{call} is not a {side}-side call")]
    WrongSide {
        /// The call that was made.
        call: &'static str,
        /// The side this session is.
        side: Side,
    },
    /// The destination cannot be encoded (domain empty or over 255 bytes).
    #[error("bad address: {0}")]
    BadAddress(PayloadError),
}

/// Why a dial failed, as the driver reports it; mapped to the seed's rst codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialError {
    /// Connection refused (rst 5).
    Refused,
    /// Host unreachable (rst 4), including names that do not resolve.
    HostUnreachable,
    /// Network unreachable (rst 3).
    NetworkUnreachable,
    /// The dial timed out (rst 10).
    Timeout,
    /// TTL expired (rst 6).
    TtlExpired,
    /// Our rules refuse the destination (rst 2).
    RuleRefused,
    /// The address type cannot be dialed (rst 8).
    AddressTypeNotSupported,
    /// Anything else (rst 1, with this text).
    Other(String),
}

impl DialError {
    /// The rst the remote sends for this failure.
    pub fn rst(&self) -> RstInfo {
        match self {
            DialError::Refused => RstInfo::new(RstCode::DstRefused),
            DialError::HostUnreachable => RstInfo::new(RstCode::HostUnreachable),
            DialError::NetworkUnreachable => RstInfo::new(RstCode::NetworkUnreachable),
            DialError::Timeout => RstInfo::new(RstCode::DialTimeout),
            DialError::TtlExpired => RstInfo::new(RstCode::TtlExpired),
            DialError::RuleRefused => RstInfo::new(RstCode::RuleRefused),
            DialError::AddressTypeNotSupported => RstInfo::new(RstCode::AddressTypeNotSupported),
            DialError::Other(s) => RstInfo::with_description(RstCode::General, s.clone()),
        }
    }

    /// Classifies an I/O error from a dial, so drivers map errors the same way.
    pub fn from_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => DialError::Refused,
            io::ErrorKind::HostUnreachable => DialError::HostUnreachable,
            io::ErrorKind::NetworkUnreachable => DialError::NetworkUnreachable,
            io::ErrorKind::TimedOut => DialError::Timeout,
            io::ErrorKind::AddrNotAvailable => DialError::HostUnreachable,
            _ => DialError::Other(e.to_string()),
        }
    }
}
