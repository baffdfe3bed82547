//! vproxy's HTTP/2-framed stream tunnel (seed 000): many byte streams multiplexed over one
//! ordered byte stream (KCP in stream mode, or TCP). Sans-IO: the frame codec ([`wire`]),
//! the tunnel machine with the streams inside it ([`tunnel`], [`stream`]); the async
//! driver, CLI roles and scenarios are the next steps of the h2tunnel issue.

pub mod stream;
pub mod tunnel;
pub mod wire;

pub use stream::{ResetCause, StreamState};
pub use tunnel::{Event, Recv, Role, StreamError, Tunnel, TunnelConfig, TunnelState};
pub use wire::{FrameError, Message, RawFrame};
