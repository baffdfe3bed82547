//! vproxy's HTTP/2-framed stream tunnel (seed 000): many byte streams multiplexed over one
//! ordered byte stream (KCP in stream mode, or TCP). Sans-IO: the frame codec ([`wire`]),
//! the tunnel machine with the streams inside it ([`tunnel`], [`stream`]), and the async
//! [`driver`] that runs it over any carrier and hands out streams. The driver and the roles
//! are the `driver` feature (on by default); without it the crate builds with no tokio.

#[cfg(feature = "driver")]
pub mod driver;
pub mod fuzzing;
mod mux;
#[cfg(feature = "driver")]
pub mod roles;
pub mod stream;
pub mod tunnel;
pub mod wire;

#[cfg(feature = "driver")]
pub use driver::{DriverConfig, Opener, Running, TunnelEnd, TunnelStream};
pub use stream::{ResetCause, StreamState};
pub use tunnel::{Event, Recv, Role, StreamError, Tunnel, TunnelConfig, TunnelState};
pub use wire::{FrameError, Message, RawFrame};
