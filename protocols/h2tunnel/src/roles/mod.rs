//! The tunnel's roles over any [`Net`](tunnelbed_netio::Net): the server (each stream to
//! a fixed target, or SOCKS5 inside the stream) and the client (each accepted TCP
//! connection becomes a stream). `tunnelbed h2tunnel` runs them over real sockets and
//! the simulator runs the very same code over simulated hosts.

mod carrier;
pub mod client;
pub mod server;
mod splice;

pub use carrier::{Carrier, CarrierError};
pub use client::{ClientConfig, TunnelClient};
pub use server::{ServerConfig, Target, TunnelServer};
pub use splice::splice;

use std::time::Duration;

use tunnelbed_netio::TcpListen;

/// Accepts one connection. An accept error (a connection aborted before it was taken,
/// or out of file descriptors) is logged and `None` returned after a short pause, so one
/// bad moment does not end a long-running listener.
async fn accept<L: TcpListen>(lsn: &L, who: &str) -> Option<(L::Stream, std::net::SocketAddr)> {
    match lsn.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("{who}: accept: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}
