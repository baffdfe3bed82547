//! The I/O seam of tunnelbed: the [`Net`] trait that drivers are generic over, its
//! tokio implementation, packet capture into pcapng, and the transition trace.
//!
//! Protocol cores never touch sockets; their drivers take an `N: Net`, so the same
//! code runs on real sockets and inside the simulator.

pub mod trace;

pub use trace::{Trace, Transition};
