//! What the KCP scenarios share: the server side, one KCP session per peer address over
//! the datagram ARQ driver, every session on the same conversation and preset.

use std::net::SocketAddr;

use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{ArqOptions, ArqServer};
use tunnelbed_netio::{Net, Trace};

use crate::simnet::any;

/// Binds a KCP server on `port`: every new peer gets a session with conversation `conv`
/// and preset `config`, traced as `kcp[server<-PEER]`.
pub async fn bind_server<N: Net>(
    net: &N,
    port: u16,
    conv: u32,
    config: KcpConfig,
    trace: Trace,
    opts: ArqOptions,
) -> std::io::Result<ArqServer> {
    ArqServer::bind(
        net,
        any(port),
        move |peer: SocketAddr, _first: &[u8]| {
            Some(Kcp::new(
                conv,
                &config,
                trace.clone(),
                format!("kcp[server<-{peer}]"),
            ))
        },
        opts,
    )
    .await
}
