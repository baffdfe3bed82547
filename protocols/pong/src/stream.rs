//! One stream inside a pong connection: its state, its kind and its receive buffer.

use std::collections::VecDeque;
use std::fmt;

use bytes::Bytes;

use crate::wire::RstInfo;

/// Accounting cost added to every buffered datagram of a relay stream, so that a flood of
/// empty datagrams still fills the buffer (they cost memory even with no payload).
pub const DATAGRAM_OVERHEAD: usize = 32;

/// A stream's state (the brief's five; "idle" in traces means the id was not in use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Both directions carry data.
    Open,
    /// We sent finish: we send no more, the peer still may.
    HalfClosedLocal,
    /// The peer sent finish: it sends no more, we still may.
    HalfClosedRemote,
    /// Ended normally (close either way, or finish both ways); unread data stays readable.
    Closed,
    /// Ended abnormally (rst either way, or the connection died); unread data is dropped.
    Reset,
}

impl StreamState {
    /// The name used in traces and snapshots.
    pub fn name(self) -> &'static str {
        match self {
            StreamState::Open => "open",
            StreamState::HalfClosedLocal => "half-closed-local",
            StreamState::HalfClosedRemote => "half-closed-remote",
            StreamState::Closed => "closed",
            StreamState::Reset => "reset",
        }
    }

    /// Whether the stream has ended (frames for it are ignored from now on).
    pub fn is_terminal(self) -> bool {
        matches!(self, StreamState::Closed | StreamState::Reset)
    }

    /// Whether the peer may still send data on it.
    pub fn peer_may_send(self) -> bool {
        matches!(self, StreamState::Open | StreamState::HalfClosedLocal)
    }

    /// Whether we may still send data on it.
    pub fn may_send(self) -> bool {
        matches!(self, StreamState::Open | StreamState::HalfClosedRemote)
    }
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a stream carries, fixed by the frame that opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Opened by connect: an ordered byte stream (data frame boundaries mean nothing).
    Tcp,
    /// Opened by relay: each data frame is exactly one UDP datagram to the stream's
    /// address (tunnelbed's definition; the seed only says relay is "like connect").
    Udp,
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamKind::Tcp => "tcp",
            StreamKind::Udp => "udp",
        })
    }
}

/// Why a stream was reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// The peer sent rst (with its code and description, if any).
    Peer(Option<RstInfo>),
    /// We sent rst (the machine, on a protocol rule, or the application).
    Sent(RstInfo),
    /// The connection ended (carrier closed, protocol error, shutdown) with this reason.
    Connection(String),
}

impl fmt::Display for ResetCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetCause::Peer(None) => write!(f, "reset by peer (no code)"),
            ResetCause::Peer(Some(i)) => write!(f, "reset by peer, {i}"),
            ResetCause::Sent(i) => write!(f, "reset by us, {i}"),
            ResetCause::Connection(r) => write!(f, "connection ended: {r}"),
        }
    }
}

/// What a read gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recv {
    /// Bytes in order (TCP) or exactly one datagram (UDP).
    Data(Bytes),
    /// Nothing yet.
    Pending,
    /// The peer sent everything it will (finish or close) and all of it was read.
    Eof,
}

/// How a stream that is no longer tracked ended (kept so late frames are ignored and
/// late application calls get a precise answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Ended normally.
    Closed,
    /// Ended by rst or by the connection.
    Reset(ResetCause),
    /// Ended so long ago that only "ended" is remembered (the id is at or below the
    /// forgotten-ids floor).
    Forgotten,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => f.write_str("closed"),
            End::Reset(c) => write!(f, "reset ({c})"),
            End::Forgotten => f.write_str("ended (forgotten)"),
        }
    }
}

/// A tracked stream.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) kind: StreamKind,
    pub(crate) state: StreamState,
    /// Remote: the driver has not reported the dial's outcome yet.
    pub(crate) dialing: bool,
    pub(crate) rx: VecDeque<Bytes>,
    /// Accounted size of `rx` (payload bytes, plus [`DATAGRAM_OVERHEAD`] per datagram).
    pub(crate) rx_len: usize,
}

impl Stream {
    pub(crate) fn new(kind: StreamKind, dialing: bool) -> Self {
        Self {
            kind,
            state: StreamState::Open,
            dialing,
            rx: VecDeque::new(),
            rx_len: 0,
        }
    }

    /// Accounting cost of a received payload of `len` bytes.
    pub(crate) fn cost(&self, len: usize) -> usize {
        match self.kind {
            StreamKind::Tcp => len,
            StreamKind::Udp => len + DATAGRAM_OVERHEAD,
        }
    }
}
