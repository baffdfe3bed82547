//! SOCKS5 (RFC 1928, no authentication): the front that pong's local side and the
//! h2tunnel server's `--socks5` mode speak to applications. A sans-IO codec (`wire`) and
//! small async helpers for the handshake over any byte stream.

pub mod handshake;
pub mod wire;

pub use wire::{Addr, Command, Reply, Socks5Error, UdpHeader};
