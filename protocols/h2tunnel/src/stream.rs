//! One stream inside the tunnel: its state (seed 000's list) and its receive buffer.

use std::collections::VecDeque;
use std::fmt;

use bytes::Bytes;

/// A stream's state, named as in seed 000 (`fin_sent`/`fin_recv` are the half-closed
/// states the seed's flow step 6 calls SYN_SENT/SYN_RECV; vproxy's code and we use these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Created, nothing sent.
    None,
    /// The client sent SYN and waits for SYN-ACK (data may already follow).
    SynSent,
    /// Both directions open.
    Established,
    /// We sent FIN: we send no more; the peer still may.
    FinSent,
    /// The peer sent FIN: it sends no more; we still may.
    FinRecv,
    /// Both directions closed, or reset; the application has not closed it yet.
    Dead,
    /// The application closed it; the id is forgotten.
    RealClosed,
}

impl StreamState {
    /// The name used in traces and snapshots.
    pub fn name(self) -> &'static str {
        match self {
            StreamState::None => "none",
            StreamState::SynSent => "syn_sent",
            StreamState::Established => "established",
            StreamState::FinSent => "fin_sent",
            StreamState::FinRecv => "fin_recv",
            StreamState::Dead => "dead",
            StreamState::RealClosed => "real_closed",
        }
    }

    /// Whether the peer may still send us data (we deliver it).
    pub fn peer_may_send(self) -> bool {
        !matches!(self, StreamState::Dead | StreamState::RealClosed)
    }

    /// Whether we may still send data.
    pub fn may_send(self) -> bool {
        matches!(
            self,
            StreamState::SynSent | StreamState::Established | StreamState::FinRecv
        )
    }
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stream ended abnormally, as reads and writes report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// The peer sent RST.
    ByPeer,
    /// We reset it (the application asked, or a rule did).
    Local(String),
    /// The tunnel failed or was shut down.
    TunnelEnded(String),
    /// The application did not read and the stream's receive buffer filled.
    Overflow,
}

impl fmt::Display for ResetCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetCause::ByPeer => write!(f, "reset by peer"),
            ResetCause::Local(why) => write!(f, "reset locally: {why}"),
            ResetCause::TunnelEnded(why) => write!(f, "tunnel ended: {why}"),
            ResetCause::Overflow => {
                write!(f, "receive buffer overflow: the application did not read")
            }
        }
    }
}

/// A stream's bookkeeping inside the tunnel machine.
#[derive(Debug)]
pub(crate) struct Stream {
    pub state: StreamState,
    /// Received bytes the application has not taken, in order.
    pub rx: VecDeque<Bytes>,
    pub rx_len: usize,
    /// The peer's FIN arrived (delivered after `rx` drains).
    pub peer_fin: bool,
    /// Set when the stream was reset; reads and writes fail with it.
    pub reset: Option<ResetCause>,
}

impl Stream {
    pub(crate) fn new(state: StreamState) -> Self {
        Self {
            state,
            rx: VecDeque::new(),
            rx_len: 0,
            peer_fin: false,
            reset: None,
        }
    }
}
