//! What the session tells its driver and application ([`Event`]), in order, through
//! `poll_event`.

use super::error::ProtocolError;
use crate::stream::{ResetCause, StreamKind};
use crate::wire::Address;

/// Something the driver or application should act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Remote: the connection header arrived; call `accept_client` or `reject_client`.
    ClientHello {
        /// Raw UUID bytes to check against the allow list.
        client_id: [u8; 16],
    },
    /// Remote: the peer opened a stream; dial `addr` and report with `dial_succeeded` or
    /// `dial_failed`. Data may already be buffered for it.
    Dial {
        /// Stream id.
        stream_id: u32,
        /// TCP (connect) or UDP (relay).
        kind: StreamKind,
        /// Destination.
        addr: Address,
    },
    /// The stream has data or an end of input to `recv`.
    Readable(u32),
    /// The stream ended normally (close received); read what is left, then `Eof`.
    Closed(u32),
    /// The stream was reset by the peer or by the machine (not by an application call).
    Reset {
        /// Stream id.
        stream_id: u32,
        /// Why.
        cause: ResetCause,
    },
    /// The connection is over; `error` is set when the peer broke the framing. Last event.
    ConnectionClosed {
        /// The framing violation, if that is why.
        error: Option<ProtocolError>,
    },
}
