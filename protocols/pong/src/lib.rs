//! The pong multiplexed proxy protocol (seed 001): the wire codec ([`wire`]), the sans-IO
//! session machines for both ends ([`Local`], [`Remote`]) with their streams
//! ([`stream`]), and the fuzz bodies ([`fuzzing`]) that a stable `cargo test` replays.
//!
//! The async driver (carrier sockets, dialing, the SOCKS5 front) is built on top of these
//! machines and lives elsewhere; nothing here does I/O or reads a clock.

pub mod fuzzing;
pub mod session;
pub mod stream;
pub mod wire;

pub use session::{
    Blocked, ConnState, DialError, Event, Local, ProtocolError, Remote, SessionConfig, Side,
    StreamError,
};
pub use stream::{End, Recv, ResetCause, StreamKind, StreamState};
pub use wire::{
    Address, Body, ConnHeader, DecodeError, Frame, FrameError, PayloadError, RawFrame, RstCode,
    RstInfo,
};
