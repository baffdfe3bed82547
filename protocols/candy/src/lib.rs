//! Candy's WebSocket VPN (seed 003): clients send raw IPv4 packets to a server over one
//! WebSocket each, and the server routes them to the client that owns the destination.
//!
//! [`wire`] is the codec of every message (AUTH, FORWARD, DHCP, PEER INFO, VMAC,
//! DISCOVERY, ROUTE, GENERAL with its LAN-address subtype) and the hashes that
//! authenticate them; [`server`] and [`client`] are sans-IO machines; [`pool`] is the
//! server's address pool. The async roles over any `Net` (WebSocket over the Net's TCP
//! streams, [`ws`]) are in [`serve`] (server) and [`connect`] (client, with its IP link).

pub mod client;
#[cfg(feature = "driver")]
pub mod connect;
pub mod fuzzing;
pub mod pool;
#[cfg(feature = "driver")]
pub mod raw;
#[cfg(feature = "driver")]
pub mod serve;
pub mod server;
pub mod wire;
#[cfg(feature = "driver")]
pub mod ws;
