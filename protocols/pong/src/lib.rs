//! The pong multiplexed proxy protocol (seed 001): the wire codec ([`wire`]), the sans-IO
//! session machine for both ends ([`Session`], its [`Side`]) with their streams
//! ([`stream`]), and the fuzz bodies ([`fuzzing`]) that a stable `cargo test` replays.
//!
//! [`driver`] runs a machine over any carrier byte stream with tokio; the machines
//! themselves do no I/O and read no clock. The driver and the roles are the `driver` feature
//! (on by default); without it the crate builds with no tokio.

#[cfg(feature = "driver")]
pub mod driver;
pub mod fuzzing;
#[cfg(feature = "driver")]
pub mod local;
#[cfg(feature = "driver")]
pub mod pool;
pub mod pump;
#[cfg(feature = "driver")]
pub mod remote;
pub mod session;
pub mod stream;
pub mod wire;

pub use session::{
    Blocked, ConnState, DialError, Event, ProtocolError, Session, SessionConfig, Side, StreamError,
};
pub use stream::{End, Recv, ResetCause, StreamKind, StreamState};
pub use wire::{
    Address, Body, ConnHeader, DecodeError, Frame, FrameError, PayloadError, RawFrame, RstCode,
    RstInfo,
};
