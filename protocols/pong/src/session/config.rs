//! A session's limits ([`SessionConfig`]), which end it is ([`Side`]) and the connection
//! states it moves through ([`ConnState`]).

use std::fmt;

/// Limits of one session. Defaults suit a proxy with many streams per connection.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Most bytes buffered per stream for the application (accounting includes
    /// [`crate::stream::DATAGRAM_OVERHEAD`] per datagram). A single frame larger than
    /// this is still accepted into an empty buffer, so the true bound is
    /// `max(stream_rx_cap, MAX_PAYLOAD + DATAGRAM_OVERHEAD)`.
    pub stream_rx_cap: usize,
    /// Most bytes queued towards the carrier: `send` accepts only what fits, input stops
    /// while it is exceeded.
    pub max_output: usize,
    /// Most streams tracked at once; a connect beyond it is answered with rst 1, and
    /// `open_*` fails.
    pub max_streams: usize,
    /// How many ended stream ids are remembered exactly; older ones are folded into a
    /// floor (every id at or below it that is not live counts as ended), so memory stays
    /// bounded on a long connection while late frames are still ignored.
    pub ended_memory: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            stream_rx_cap: 256 * 1024,
            max_output: 1 << 20,
            max_streams: 1024,
            ended_memory: 4096,
        }
    }
}

/// Which end of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Sends the connection header, opens streams (odd ids).
    Local,
    /// Checks the header, accepts streams and dials their destinations.
    Remote,
}

impl Side {
    /// The name used in errors and traces.
    pub fn name(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The connection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Remote: waiting for the 17-byte connection header.
    AwaitHeader,
    /// Remote: the header arrived; the driver must accept or reject the client id.
    AwaitApproval,
    /// Frames flow.
    Open,
    /// Over: the carrier should be (or was) closed; input is discarded.
    Closed,
}

impl ConnState {
    /// The name used in traces.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::AwaitHeader => "await-header",
            ConnState::AwaitApproval => "await-approval",
            ConnState::Open => "open",
            ConnState::Closed => "closed",
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
