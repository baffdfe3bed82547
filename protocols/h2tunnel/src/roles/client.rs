//! The tunnel client: keeps one tunnel to the server up (reconnecting with a new carrier
//! after it fails) and carries each accepted TCP connection as a stream of it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::watch;
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{self, ArqOptions};
use tunnelbed_netio::{Net, TcpConn, TcpListen, Trace};

use super::{accept, splice, Carrier};
use crate::driver::{self, DriverConfig, Opener, Running};
use crate::tunnel::Role;

/// Everything the client needs besides the network.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where applications connect.
    pub listen: SocketAddr,
    /// The tunnel server.
    pub server: Carrier,
    /// KCP settings for `udp://` (vproxy's client default is clientFast4, stream mode).
    pub kcp: KcpConfig,
    /// KCP conversation id (vproxy uses 0).
    pub conv: u32,
    /// KCP session options.
    pub arq: ArqOptions,
    /// Tunnel driver settings.
    pub driver: DriverConfig,
    /// How long a new connection waits for a tunnel (while reconnecting) before it is
    /// refused with a reset.
    pub wait: Duration,
    /// A connection with nothing moving either way for this long is reset (and its
    /// stream with it).
    pub idle_timeout: Duration,
    /// Where transitions go (disabled by default).
    pub trace: Trace,
}

impl ClientConfig {
    /// vproxy's defaults: clientFast4 in stream mode, conv 0; connections wait 15 s.
    pub fn new(listen: SocketAddr, server: Carrier) -> Self {
        let mut kcp = KcpConfig::client_fast4();
        kcp.stream = true;
        Self {
            listen,
            server,
            kcp,
            conv: 0,
            arq: ArqOptions::default(),
            driver: DriverConfig::default(),
            wait: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(300),
            trace: Trace::disabled(),
        }
    }
}

/// A bound client, ready to [`run`](TunnelClient::run).
pub struct TunnelClient<N: Net> {
    net: N,
    cfg: ClientConfig,
    lsn: N::Listener,
    local: SocketAddr,
}

impl<N: Net> TunnelClient<N> {
    /// Binds the listener applications connect to.
    pub async fn bind(net: N, cfg: ClientConfig) -> io::Result<Self> {
        let lsn = net
            .listen_tcp(cfg.listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("binding tcp {}: {e}", cfg.listen)))?;
        let local = lsn.local_addr()?;
        Ok(Self {
            net,
            cfg,
            lsn,
            local,
        })
    }

    /// The bound address of the application listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves forever: the tunnel is kept up in the background and each connection is
    /// spliced onto a new stream, or reset when no tunnel comes within the wait.
    pub async fn run(self) -> io::Result<()> {
        let Self { net, cfg, lsn, .. } = self;
        let (tx, current) = watch::channel(None);
        let keeper = tokio::spawn(keep_tunnel(net, cfg.clone(), tx));
        let wait = cfg.wait.max(Duration::from_millis(1));
        let idle = cfg.idle_timeout;
        let _keeper = AbortOnDrop(keeper);
        loop {
            let Some((tcp, peer)) = accept(&lsn, "h2tunnel client").await else {
                continue;
            };
            let mut current = current.clone();
            tokio::spawn(async move {
                // The watch guard must not live across an await: clone inside a block.
                let opener: Option<Opener> = {
                    match tokio::time::timeout(wait, current.wait_for(|o| o.is_some())).await {
                        Ok(Ok(o)) => o.clone(),
                        _ => None,
                    }
                };
                let Some(opener) = opener else {
                    tracing::warn!("client {peer}: no tunnel within {wait:?}; refusing");
                    tcp.abort();
                    return;
                };
                match opener.open().await {
                    Ok(s) => splice(tcp, s, idle).await,
                    Err(e) => {
                        tracing::warn!("client {peer}: opening a stream: {e}");
                        tcp.abort();
                    }
                }
            });
        }
    }
}

/// Ends the tunnel keeper when the client stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects one tunnel over a new carrier.
async fn connect<N: Net>(net: &N, cfg: &ClientConfig, name: &str) -> io::Result<Running> {
    match cfg.server {
        Carrier::Udp(addr) => {
            let bind = SocketAddr::new(
                if addr.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                },
                0,
            );
            let m = Kcp::new(
                cfg.conv,
                &cfg.kcp,
                cfg.trace.clone(),
                format!("kcp[{name}]"),
            );
            let (carrier, _session) = arq::connect(net, bind, addr, m, cfg.arq.clone()).await?;
            Ok(driver::spawn(
                carrier,
                Role::Client,
                cfg.driver.clone(),
                cfg.trace.clone(),
                format!("h2t[{name}]"),
            ))
        }
        Carrier::Tcp(addr) => {
            let s = net.connect_tcp(addr).await?;
            Ok(driver::spawn(
                s,
                Role::Client,
                cfg.driver.clone(),
                cfg.trace.clone(),
                format!("h2t[{name}]"),
            ))
        }
    }
}

/// Keeps one tunnel up: connects, publishes its opener once the handshake completes,
/// and after the tunnel ends reconnects with a new carrier (backoff 0.5 s doubling to 8 s,
/// reset after a tunnel that worked).
async fn keep_tunnel<N: Net>(net: N, cfg: ClientConfig, tx: watch::Sender<Option<Opener>>) {
    let mut backoff = Duration::from_millis(500);
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match connect(&net, &cfg, &format!("client#{attempt}")).await {
            Err(e) => tracing::warn!("h2tunnel client: connecting (attempt {attempt}): {e}"),
            Ok(mut t) => match t.ready().await {
                Err(state) => {
                    tracing::warn!("h2tunnel client: handshake failed (attempt {attempt}): {state}")
                }
                Ok(()) => {
                    tracing::info!("h2tunnel client: tunnel up (attempt {attempt})");
                    backoff = Duration::from_millis(500);
                    let _ = tx.send(Some(t.opener.clone()));
                    let end = t.done.await;
                    let _ = tx.send(None);
                    match end {
                        Ok(end) => {
                            tracing::warn!("h2tunnel client: tunnel ended: {end}; reconnecting")
                        }
                        Err(e) => tracing::warn!("h2tunnel client: tunnel task: {e}; reconnecting"),
                    }
                }
            },
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(8));
    }
}
