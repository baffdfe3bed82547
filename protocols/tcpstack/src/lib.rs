//! vproxy's passive user-space TCP stack (seed 002), sans-IO over raw IPv4 packets.
//!
//! [`wire`] decodes and encodes IPv4/TCP packets with their checksums; [`Stack`] is the
//! machine: it takes packets with [`Stack::handle_input`], gives packets with
//! [`Stack::poll_transmit`], takes the time as a parameter, and reports every state
//! change to a [`tunnelbed_netio::Trace`]. Anything that carries IPv4 packets (a TUN
//! device, the simulator's link) can drive it.

pub mod config;
mod conn;
mod expired;
pub mod fuzzing;
pub mod seq;
#[cfg(feature = "driver")]
pub mod serve;
#[cfg(feature = "driver")]
pub mod socket;
pub mod stack;
mod types;
pub mod wire;

pub use config::StackConfig;
pub use seq::Seq;
pub use stack::{
    CloseReason, ConnId, ConnInfo, Event, ListenerId, Stack, StackError, State, Stats,
};
pub use wire::{DecodeError, EncodeError, Ipv4Header, Packet, TcpFlags, TcpHeader, TcpOptions};
