//! VLESS (seed 004): v0 as v2fly/Xray speak it, and the seed's v1 with full-cone UDP
//! through the CRUMFURS channel.
//!
//! [`wire`] is the codec; [`server`] and [`client`] are sans-IO machines for one carrier
//! connection each; [`cone`] is the server's full-cone socket table (sans-IO too);
//! [`fuzzing`] holds the fuzz bodies a stable `cargo test` replays. The async roles over
//! any `Net` are in [`serve`] (server) and [`socks`] (client with a SOCKS5 front).

pub mod client;
pub mod cone;
pub mod fuzzing;
#[cfg(feature = "driver")]
pub mod relay;
#[cfg(feature = "driver")]
pub mod serve;
pub mod server;
#[cfg(feature = "driver")]
pub mod socks;
pub mod wire;
