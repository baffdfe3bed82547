//! vproxy's HTTP/2-framed stream tunnel (seed 000): many byte streams multiplexed over one
//! ordered byte stream (KCP in stream mode, or TCP). This crate holds the frame codec
//! ([`wire`]); the tunnel and stream machines and the driver are the next steps of the
//! h2tunnel issue.

pub mod wire;

pub use wire::{FrameError, Message, RawFrame};
