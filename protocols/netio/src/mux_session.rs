//! The sans-IO side of a stream multiplexer (pong, h2tunnel) as one generic driver sees
//! it: [`MuxSession`], a small trait over the calls both sessions already share
//! (`handle_input_bytes` answering the bytes taken, `input_blocked`,
//! `poll_transmit_chunks`, timers, and `now` on every stream call), and [`MuxEvent`], the
//! stream-level events every multiplexer has, with the protocol's own events (pong's
//! client hello and dial requests, h2tunnel's handshake, failure and GOAWAY) passed
//! through as [`MuxEvent::Ext`] for the driver's extension hook.
//!
//! It lives outside `mux` (which is the `runtime` feature) so that the protocol cores,
//! built without tokio, implement it themselves.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

/// What reading one stream gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxRecv {
    /// Bytes, in order.
    Data(Bytes),
    /// Nothing yet.
    Pending,
    /// The peer finished sending and everything was read.
    Eof,
}

/// A session's event: the stream-level ones every multiplexer has, or the protocol's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxEvent<C, X> {
    /// The stream has data or an end of input to `recv`.
    Readable(u32),
    /// The peer opened this stream and it needs no more than a handle (h2tunnel's SYN);
    /// openings that carry more (pong's dial requests) come as [`MuxEvent::Ext`].
    Accepted(u32),
    /// The stream ended normally on the peer's word: read what is left, then `Eof`.
    Closed(u32),
    /// The stream was reset, by the peer or by a protocol rule, with this cause.
    Reset(u32, C),
    /// Anything else, in the protocol's own words.
    Ext(X),
}

/// The calls a generic stream-multiplexer driver makes on a sans-IO session. Every call
/// that changes state takes `now` (a `Duration` since the driver's origin), which stamps
/// the trace; none of them blocks or does I/O.
pub trait MuxSession {
    /// Why a stream was reset, as its handle reports it (`Display` is the error text).
    type ResetCause: Clone + fmt::Display + Send + Sync + 'static;
    /// What an application's reset says on the wire (pong: an rst code; h2tunnel: nothing).
    type ResetInfo: Send + 'static;
    /// Why a stream call failed.
    type Error: fmt::Display;
    /// The protocol's own events.
    type Ext;

    /// Feeds carrier bytes the driver holds as `Bytes`; returns how many were taken (the
    /// rest must be fed again once [`MuxSession::input_blocked`] clears).
    fn handle_input_bytes(&mut self, now: Duration, data: &Bytes) -> usize;
    /// [`MuxSession::handle_input_bytes`] for bytes the driver kept from an earlier read.
    fn handle_input(&mut self, now: Duration, data: &[u8]) -> usize;
    /// Whether input is held (the driver stops reading the carrier).
    fn input_blocked(&self) -> bool;
    /// Runs the timers due at `now`.
    fn handle_timeout(&mut self, now: Duration);
    /// When [`MuxSession::handle_timeout`] must run next, if ever.
    fn poll_timeout(&self) -> Option<Duration>;
    /// Appends what is queued for the carrier, as pieces in order; returns the bytes.
    fn poll_transmit_chunks(&mut self, into: &mut Vec<Bytes>) -> usize;
    /// The next event.
    fn poll_event(&mut self) -> Option<MuxEvent<Self::ResetCause, Self::Ext>>;
    /// Bytes queued towards the carrier.
    fn pending_output(&self) -> usize;
    /// The output cap (the driver takes application writes only below half of it).
    fn max_output(&self) -> usize;
    /// Whether the connection is over (the driver drops the carrier).
    fn is_closed(&self) -> bool;
    /// Whether stream `sid` is tracked and not ended (reset or closed both ways).
    fn stream_live(&self, sid: u32) -> bool;
    /// Queues application bytes on `sid`; returns how many were taken.
    fn send_bytes(&mut self, now: Duration, sid: u32, data: &Bytes) -> Result<usize, Self::Error>;
    /// Takes received bytes from `sid`.
    fn recv(&mut self, now: Duration, sid: u32) -> Result<MuxRecv, Self::Error>;
    /// Half-closes our direction of `sid`.
    fn finish(&mut self, now: Duration, sid: u32) -> Result<(), Self::Error>;
    /// The application is done with `sid` both ways: end it normally and forget it.
    fn close(&mut self, now: Duration, sid: u32) -> Result<(), Self::Error>;
    /// Aborts `sid` with `info`.
    fn reset(&mut self, now: Duration, sid: u32, info: Self::ResetInfo) -> Result<(), Self::Error>;
    /// The driver forgot `sid`, which had already ended (reset, or closed both ways):
    /// drop any record kept of it (h2tunnel keeps dead streams until then; pong forgets
    /// them itself).
    fn release(&mut self, _now: Duration, _sid: u32) {}
    /// Shuts the whole connection down with `reason`.
    fn shutdown(&mut self, now: Duration, reason: &str);
}

/// Helpers for tests that drive two sessions against each other through [`MuxSession`]
/// alone, so every multiplexer's trait test moves bytes and reads events the same way.
pub mod testing {
    use super::{MuxEvent, MuxSession};
    use std::time::Duration;

    /// Moves output both ways between `a` and `b` (eight rounds), asserting that each
    /// piece is taken whole: a trait test's sessions never hold input.
    pub fn exchange<S: MuxSession>(now: Duration, a: &mut S, b: &mut S) {
        for _ in 0..8 {
            let mut v = Vec::new();
            a.poll_transmit_chunks(&mut v);
            for p in v {
                assert_eq!(b.handle_input_bytes(now, &p), p.len());
            }
            let mut v = Vec::new();
            b.poll_transmit_chunks(&mut v);
            for p in v {
                assert_eq!(a.handle_input_bytes(now, &p), p.len());
            }
        }
    }

    /// Every event `s` has queued, in order.
    pub fn drain_events<S: MuxSession>(s: &mut S) -> Vec<MuxEvent<S::ResetCause, S::Ext>> {
        std::iter::from_fn(|| MuxSession::poll_event(s)).collect()
    }
}
