//! The words the stack and its connections share: handles, states, why a connection
//! closed, events, errors, counters and the per-second challenge-ACK budget. Kept apart
//! from [`crate::stack`] so that connections and the stack both use them without the
//! modules importing each other.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use thiserror::Error;

use crate::seq::Seq;

/// Handle of a connection, given by [`Stack::accept`](crate::stack::Stack::accept) or [`Stack::connect`](crate::stack::Stack::connect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Handle of a listener, given by [`Stack::listen`](crate::stack::Stack::listen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerId(pub u64);

/// The states of seed 002's diagram (plus SYN_SENT for the optional active open).
/// There is no TIME_WAIT and no LAST_ACK: CLOSING covers "both sides sent FIN".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// No connection (the start and the end).
    Closed,
    /// A listener waiting for SYNs.
    Listen,
    /// Active open: SYN sent, waiting for SYN-ACK.
    SynSent,
    /// SYN received, SYN-ACK sent, waiting for the ACK.
    SynRcvd,
    /// Data flows both ways.
    Established,
    /// We sent FIN (shutdown), waiting for its ACK.
    FinWait1,
    /// Our FIN is acked; the peer may still send.
    FinWait2,
    /// The peer sent FIN; we may still send.
    CloseWait,
    /// Both sides sent FIN; waits for the application's close().
    Closing,
}

impl State {
    /// The name used in traces (as in the seed's diagram).
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN_SENT",
            State::SynRcvd => "SYN_RCVD",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN_WAIT_1",
            State::FinWait2 => "FIN_WAIT_2",
            State::CloseWait => "CLOSE_WAIT",
            State::Closing => "CLOSING",
        }
    }
}

/// Why a connection reached CLOSED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseReason {
    /// The application closed it.
    Closed,
    /// The peer reset it.
    Reset,
    /// Retransmissions ran out, or a half-open connection expired.
    TimedOut,
    /// The peer refused our SYN.
    Refused,
    /// Its listener was closed before it was accepted.
    ListenerClosed,
}

/// Something the application should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Event {
    /// A listener has a connection to accept.
    Acceptable(ListenerId),
    /// An active open completed.
    Connected(ConnId),
    /// Data, end of stream or an error can be read.
    Readable(ConnId),
    /// Send buffer space freed (or the connection ended).
    Writable(ConnId),
    /// The connection reached CLOSED.
    Closed(ConnId, CloseReason),
}

/// Errors of the application API.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum StackError {
    /// Nothing to read, or no buffer space, yet.
    #[error("would block")]
    WouldBlock,
    /// No such connection or listener handle.
    #[error("no such handle")]
    NoSuchHandle,
    /// The peer reset the connection.
    #[error("connection reset")]
    Reset,
    /// Retransmissions ran out.
    #[error("connection timed out")]
    TimedOut,
    /// The peer refused the connection.
    #[error("connection refused")]
    Refused,
    /// The connection was closed.
    #[error("connection closed")]
    Closed,
    /// Write after shutdown.
    #[error("write side shut down")]
    Shutdown,
    /// The call needs an established connection.
    #[error("not connected")]
    NotConnected,
    /// The address is already listened on or the 4-tuple is in use.
    #[error("address in use")]
    AddrInUse,
    /// The connection table is full.
    #[error("too many connections")]
    TooManyConnections,
}

impl From<CloseReason> for StackError {
    fn from(r: CloseReason) -> StackError {
        match r {
            CloseReason::Closed | CloseReason::ListenerClosed => StackError::Closed,
            CloseReason::Reset => StackError::Reset,
            CloseReason::TimedOut => StackError::TimedOut,
            CloseReason::Refused => StackError::Refused,
        }
    }
}

/// Counters, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets handed to [`Stack::handle_input`](crate::stack::Stack::handle_input).
    pub packets_in: u64,
    /// Packets that did not decode (bad checksum, truncated, bad options, fragment, not TCP).
    pub bad_packets: u64,
    /// Packets produced.
    pub packets_out: u64,
    /// RSTs produced.
    pub rst_sent: u64,
    /// RSTs received on a connection.
    pub rst_received: u64,
    /// Segments dropped by a connection (unacceptable, old, no ACK, out of window RST).
    pub dropped: u64,
    /// Out-of-order segments dropped (and answered with an ACK).
    pub out_of_order: u64,
    /// SYNs dropped because a backlog or the connection table was full.
    pub syn_dropped: u64,
    /// Handshakes completed by an ACK that came after the half-open entry expired
    /// (see [`Stack::handle_input`](crate::stack::Stack::handle_input)).
    pub late_handshakes: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Challenge ACKs not sent because this second's allowance was used up.
    pub challenge_acks_limited: u64,
    /// Retransmission timeouts that fired.
    pub retransmits: u64,
    /// Go-backs on three duplicate ACKs.
    pub fast_retransmits: u64,
    /// Data segments sent again.
    pub segments_resent: u64,
    /// SYN-ACKs sent again because the SYN came again.
    pub synack_resent: u64,
    /// Payload bytes accepted in order.
    pub bytes_received: u64,
}

/// A connection's state and sequence-space view (see [`Stack::info`](crate::stack::Stack::info)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// State.
    pub state: State,
    /// Oldest un-acked sequence number.
    pub snd_una: Seq,
    /// Next sequence number to send.
    pub snd_nxt: Seq,
    /// The peer's window in bytes (scaled).
    pub snd_wnd: u32,
    /// Next sequence number expected from the peer.
    pub rcv_nxt: Seq,
    /// The acknowledgment number we send (what the application has read).
    pub ack: Seq,
    /// Bytes buffered for reading.
    pub readable: usize,
    /// Bytes written and not yet acked.
    pub unacked: usize,
}

/// RFC 5961 section 7: challenge ACKs per second for the whole stack are limited, so
/// spoofed RSTs and SYNs cannot turn the stack into an ACK source.
#[derive(Default)]
pub(crate) struct ChallengeBudget {
    second: u64,
    used: u32,
}

impl ChallengeBudget {
    /// Takes one challenge ACK from this second's allowance.
    pub(crate) fn take(&mut self, now: Duration, per_second: u32) -> bool {
        let s = now.as_secs();
        if s != self.second {
            self.second = s;
            self.used = 0;
        }
        if self.used < per_second {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

/// The event queue: each event at most once until taken.
#[derive(Default)]
pub(crate) struct Events {
    q: VecDeque<Event>,
    set: BTreeSet<Event>,
}

impl Events {
    pub(crate) fn push(&mut self, e: Event) {
        if self.set.insert(e) {
            self.q.push_back(e);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        let e = self.q.pop_front()?;
        self.set.remove(&e);
        Some(e)
    }
}
