//! KCP, the ARQ protocol vproxy's tunnel runs on, wire- and behaviour-compatible with
//! the reference ikcp (skywind3000): a sans-IO machine ([`Kcp`]), its segment codec
//! ([`wire`]), the knob presets ([`KcpConfig`]), and the glue to the generic async driver
//! in `tunnelbed-netio` ([`arq`], the `driver` feature, on by default; without it the
//! crate builds with no tokio).

#[cfg(feature = "driver")]
pub mod arq;
pub mod config;
pub mod fuzzing;
pub mod kcp;
pub mod wire;

pub use config::KcpConfig;
pub use kcp::{Kcp, KcpStats, SendError};
pub use wire::{InputError, Segment};
