//! What the h2tunnel scenarios share: the library's tunnel server (one tunnel per KCP
//! session, as vproxy keeps one KCP per remote address, or one per TCP connection; each
//! stream forwarded to a target host), the target host, and a client that connects one
//! tunnel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

pub use tunnelbed_h2tunnel::roles::Target;
use tunnelbed_h2tunnel::roles::{Carrier, ServerConfig, TunnelServer};
use tunnelbed_h2tunnel::{driver, DriverConfig, Role, Running};
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{self, ArqOptions};
use tunnelbed_netio::{Net, TcpListen, Trace};

use crate::simnet::any;

/// vproxy's tunnel runs KCP with conv 0.
pub const CONV: u32 = 0;

/// What carries the tunnel: vproxy's KCP over UDP, or a TCP connection (the simulator's
/// TCP: turmoil's reliable stream, or smoltcp under the link model with `--tcp real`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// KCP in stream mode over UDP.
    Kcp,
    /// One TCP connection per tunnel.
    Tcp,
}

impl Over {
    /// The carrier address of this kind at `addr` (the server's listen address, or the
    /// server a client dials).
    pub fn at(self, addr: SocketAddr) -> Carrier {
        match self {
            Over::Kcp => Carrier::Udp(addr),
            Over::Tcp => Carrier::Tcp(addr),
        }
    }
}

/// Driver options for the KCP sessions under a tunnel.
pub fn arq_options(idle: Duration) -> ArqOptions {
    ArqOptions {
        idle_timeout: idle,
        ..ArqOptions::default()
    }
}

/// Runs the tunnel server on `port` until the host stops: the library role that
/// `tunnelbed h2tunnel server --listen udp://..|tcp://..` runs, vproxy's `fast4` KCP
/// under one server-side tunnel per session (or one per TCP connection), every stream to `target` (forwarded by TCP, or a
/// SOCKS5 request inside it). A stream idle for `idle` is reset. `live` counts the
/// server's tunnels that have not ended.
pub async fn serve<N: Net>(
    net: N,
    listen: Carrier,
    target: Target,
    idle: Duration,
    trace: Trace,
    opts: ArqOptions,
    live: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut cfg = ServerConfig::new(listen, target);
    cfg.kcp = KcpConfig::fast4();
    cfg.conv = CONV;
    cfg.arq = opts;
    cfg.idle_timeout = idle;
    cfg.trace = trace;
    TunnelServer::bind(net, cfg)
        .await?
        .count_into(live)
        .run()
        .await
}

/// Runs the target behind the tunnel server on `port`: every TCP connection the server
/// forwards a stream to is handed to `handle`.
pub async fn serve_target<N, F, Fut>(net: N, port: u16, handle: F) -> std::io::Result<()>
where
    N: Net,
    F: Fn(N::Stream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let lsn = net.listen_tcp(any(port)).await?;
    loop {
        let (s, _) = lsn.accept().await?;
        tokio::spawn(handle(s));
    }
}

/// A client tunnel to `server` over a new KCP session (vproxy's `clientFast4`) or a new
/// TCP connection.
pub async fn connect<N: Net>(
    net: &N,
    server: Carrier,
    trace: Trace,
    opts: ArqOptions,
    name: String,
) -> std::io::Result<Running> {
    let cfg = DriverConfig::default();
    match server {
        Carrier::Udp(server) => {
            let kcp = Kcp::new(
                CONV,
                &KcpConfig::client_fast4(),
                trace.clone(),
                format!("kcp[{name}]"),
            );
            let (carrier, _session) = arq::connect(net, any(0), server, kcp, opts).await?;
            Ok(driver::spawn(carrier, Role::Client, cfg, trace, name))
        }
        Carrier::Tcp(server) => {
            let carrier = net.connect_tcp(server).await?;
            Ok(driver::spawn(carrier, Role::Client, cfg, trace, name))
        }
    }
}

/// Connects tunnels (a new KCP session or TCP connection each time, named `{name}#N`)
/// until one completes
/// its handshake, as vproxy's client reconnects after a failed tunnel: a burst of loss
/// longer than the 5 s handshake timer fails an attempt, not the client. Gives up after
/// `max_attempts`. Returns the tunnel and the attempt number.
pub async fn connect_ready<N: Net>(
    net: &N,
    server: Carrier,
    trace: Trace,
    opts: ArqOptions,
    name: &str,
    first_attempt: u32,
    max_attempts: u32,
) -> std::io::Result<(Running, u32)> {
    let mut attempt = first_attempt;
    loop {
        let mut t = connect(
            net,
            server,
            trace.clone(),
            opts.clone(),
            format!("{name}#{attempt}"),
        )
        .await?;
        match t.ready().await {
            Ok(()) => return Ok((t, attempt)),
            Err(state) if attempt + 1 - first_attempt >= max_attempts => {
                return Err(std::io::Error::other(format!(
                    "no tunnel after {max_attempts} attempts (last one {state})"
                )))
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
