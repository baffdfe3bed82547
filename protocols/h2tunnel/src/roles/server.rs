//! The tunnel server: accepts carriers (KCP sessions or TCP connections), runs one
//! server-side tunnel on each, and connects every stream to its target.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{ArqOptions, ArqServer};
use tunnelbed_netio::{Net, TcpConn, TcpListen, Trace};
use tunnelbed_socks5::handshake;
use tunnelbed_socks5::wire::{Addr, Command, Reply};

use super::{accept, splice, Carrier};
use crate::driver::{self, DriverConfig, Running, TunnelStream};
use crate::tunnel::Role;

/// What the server does with each stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Connect it to this TCP address.
    Forward(SocketAddr),
    /// Read a SOCKS5 request (no authentication, CONNECT) inside it and connect there.
    Socks5,
}

/// Everything the server needs besides the network.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where carriers arrive.
    pub listen: Carrier,
    /// Where streams go.
    pub target: Target,
    /// KCP settings for `udp://` (vproxy's server default is fast4, in stream mode).
    pub kcp: KcpConfig,
    /// KCP conversation id (vproxy uses 0).
    pub conv: u32,
    /// KCP session options (idle timeout, caps).
    pub arq: ArqOptions,
    /// Tunnel driver settings.
    pub driver: DriverConfig,
    /// How long connecting a stream's target may take before the stream is reset.
    pub dial_timeout: Duration,
    /// A stream with nothing moving either way for this long is reset (and its target
    /// connection with it).
    pub idle_timeout: Duration,
    /// How long bytes written to a target may stay unacknowledged before the connection
    /// fails (Linux `TCP_USER_TIMEOUT`): a target whose kernel lost the connection after
    /// an accept-queue overflow otherwise keeps a stream waiting for ~15 minutes.
    pub target_ack_timeout: Duration,
    /// Where transitions go (disabled by default).
    pub trace: Trace,
}

impl ServerConfig {
    /// vproxy's defaults: fast4 in stream mode, conv 0, a 10 s connect timeout.
    pub fn new(listen: Carrier, target: Target) -> Self {
        let mut kcp = KcpConfig::fast4();
        kcp.stream = true;
        Self {
            listen,
            target,
            kcp,
            conv: 0,
            arq: ArqOptions::default(),
            driver: DriverConfig::default(),
            dial_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            target_ack_timeout: Duration::from_secs(30),
            trace: Trace::disabled(),
        }
    }
}

/// A bound server, ready to [`run`](TunnelServer::run).
pub struct TunnelServer<N: Net> {
    net: N,
    cfg: ServerConfig,
    bound: Bound<N>,
    local: SocketAddr,
    live: Arc<AtomicUsize>,
}

enum Bound<N: Net> {
    Udp(ArqServer),
    Tcp(N::Listener),
}

impl<N: Net> TunnelServer<N> {
    /// Binds the carrier's socket; errors name the address.
    pub async fn bind(net: N, cfg: ServerConfig) -> io::Result<Self> {
        let addr = cfg.listen.addr();
        let named = |e: io::Error| io::Error::new(e.kind(), format!("binding {}: {e}", cfg.listen));
        let (bound, local) = match cfg.listen {
            Carrier::Udp(_) => {
                let (conv, kcp, trace) = (cfg.conv, cfg.kcp.clone(), cfg.trace.clone());
                let srv = ArqServer::bind(
                    &net,
                    addr,
                    move |peer, first: &[u8]| {
                        if !tunnelbed_kcp::wire::starts_session(first, conv) {
                            tracing::debug!(
                                "h2tunnel server: {peer}: not a session start, ignored"
                            );
                            return None;
                        }
                        tracing::info!("h2tunnel server: new KCP session from {peer}");
                        Some(Kcp::new(
                            conv,
                            &kcp,
                            trace.clone(),
                            format!("kcp[server<-{peer}]"),
                        ))
                    },
                    cfg.arq.clone(),
                )
                .await
                .map_err(named)?;
                let local = srv.local_addr();
                (Bound::Udp(srv), local)
            }
            Carrier::Tcp(_) => {
                let lsn = net.listen_tcp(addr).await.map_err(named)?;
                let local = lsn.local_addr()?;
                (Bound::Tcp(lsn), local)
            }
        };
        Ok(Self {
            net,
            cfg,
            bound,
            local,
            live: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The bound address (the port chosen when the configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A counter of the server's tunnels that have not ended, for leak checks.
    pub fn live_tunnels(&self) -> Arc<AtomicUsize> {
        self.live.clone()
    }

    /// Counts live tunnels into `live` instead (a caller that outlives this server, such
    /// as a scenario whose server host restarts, keeps one counter across servers).
    pub fn count_into(mut self, live: Arc<AtomicUsize>) -> Self {
        self.live = live;
        self
    }

    /// Serves until the carrier socket fails (a TCP listener keeps going through accept
    /// errors; a UDP socket that stops receiving ends the server with an error).
    pub async fn run(self) -> io::Result<()> {
        let Self {
            net,
            cfg,
            bound,
            local,
            live,
        } = self;
        match bound {
            Bound::Udp(mut srv) => {
                while let Some((carrier, peer)) = srv.accept().await {
                    serve_tunnel(&net, &cfg, &live, carrier, peer);
                }
                Err(io::Error::other(format!(
                    "udp {local}: the socket stopped receiving"
                )))
            }
            Bound::Tcp(lsn) => loop {
                let Some((s, peer)) = accept(&lsn, "h2tunnel server").await else {
                    continue;
                };
                serve_tunnel(&net, &cfg, &live, s, peer);
            },
        }
    }
}

/// One server-side tunnel over `carrier`, with a task per stream.
fn serve_tunnel<N, C>(
    net: &N,
    cfg: &ServerConfig,
    live: &Arc<AtomicUsize>,
    carrier: C,
    peer: SocketAddr,
) where
    N: Net,
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let Running {
        mut accepted, done, ..
    } = driver::spawn(
        carrier,
        Role::Server,
        cfg.driver.clone(),
        cfg.trace.clone(),
        format!("h2t[server<-{peer}]"),
    );
    live.fetch_add(1, Ordering::SeqCst);
    let live = live.clone();
    let (net, target) = (net.clone(), cfg.target);
    let timers = Timers {
        dial: cfg.dial_timeout,
        idle: cfg.idle_timeout,
        ack: cfg.target_ack_timeout,
    };
    tokio::spawn(async move {
        let streams = tokio::spawn(async move {
            while let Some(s) = accepted.recv().await {
                tokio::spawn(serve_stream(net.clone(), s, target, timers));
            }
        });
        match done.await {
            Ok(end) => tracing::info!("h2tunnel server: tunnel from {peer} ended: {end}"),
            Err(e) => tracing::warn!("h2tunnel server: tunnel from {peer}: {e}"),
        }
        streams.abort();
        live.fetch_sub(1, Ordering::SeqCst);
    });
}

/// The per-stream timers of [`ServerConfig`].
#[derive(Clone, Copy, Debug)]
struct Timers {
    dial: Duration,
    idle: Duration,
    ack: Duration,
}

/// Connects one stream to its target and splices them; a target that cannot be reached
/// resets the stream (or answers the SOCKS5 request with the failure).
async fn serve_stream<N: Net>(net: N, mut s: TunnelStream, target: Target, timers: Timers) {
    let sid = s.id();
    let dial_timeout = timers.dial;
    match target {
        Target::Forward(addr) => match tokio::time::timeout(dial_timeout, net.connect_tcp(addr))
            .await
        {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_unacked_timeout(timers.ack);
                splice(tcp, s, timers.idle).await
            }
            Ok(Err(e)) => {
                tracing::warn!("stream {sid}: connecting {addr}: {e}; resetting the stream");
                s.reset();
            }
            Err(_) => {
                tracing::warn!("stream {sid}: connecting {addr} timed out; resetting the stream");
                s.reset();
            }
        },
        Target::Socks5 => {
            // A stream that never sends its request would hold this task until the tunnel
            // ends: the idle timeout bounds the wait, as it bounds a spliced stream.
            let req = match tokio::time::timeout(timers.idle, handshake::accept(&mut s)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::info!("stream {sid}: SOCKS5: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(
                        "stream {sid}: no SOCKS5 request within {:?}; resetting",
                        timers.idle
                    );
                    s.reset();
                    return;
                }
            };
            if req.command != Command::Connect {
                let _ = handshake::reply(
                    &mut s,
                    Reply::CommandNotSupported,
                    &handshake::unspecified(),
                )
                .await;
                return;
            }
            let addrs: Vec<SocketAddr> = match &req.addr {
                Addr::Ip(a) => vec![*a],
                Addr::Domain(host, port) => net.resolve(host, *port).await.unwrap_or_default(),
            };
            let (connected, failure) = dial_any(&net, &addrs, dial_timeout, sid).await;
            let Some(mut tcp) = connected else {
                let _ = handshake::reply(&mut s, failure, &handshake::unspecified()).await;
                return;
            };
            let bound = match tcp.local_addr() {
                Ok(a) => Addr::Ip(a),
                Err(_) => handshake::unspecified(),
            };
            if handshake::reply(&mut s, Reply::Succeeded, &bound)
                .await
                .is_err()
            {
                tcp.abort();
                return;
            }
            if !req.early_data.is_empty() && tcp.write_all(&req.early_data).await.is_err() {
                tcp.abort();
                s.reset();
                return;
            }
            let _ = tcp.set_unacked_timeout(timers.ack);
            splice(tcp, s, timers.idle).await;
        }
    }
}

/// Tries every resolved address in turn (a name such as `localhost` may resolve to ::1
/// first while the target listens on 127.0.0.1 only); on failure, the SOCKS5 reply that
/// names the last error.
async fn dial_any<N: Net>(
    net: &N,
    addrs: &[SocketAddr],
    dial_timeout: Duration,
    sid: u32,
) -> (Option<N::Stream>, Reply) {
    let mut failure = Reply::HostUnreachable;
    for &addr in addrs {
        match tokio::time::timeout(dial_timeout, net.connect_tcp(addr)).await {
            Ok(Ok(t)) => return (Some(t), Reply::Succeeded),
            Ok(Err(e)) => {
                tracing::info!("stream {sid}: SOCKS5 CONNECT {addr}: {e}");
                failure = match e.kind() {
                    io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
                    _ => Reply::HostUnreachable,
                };
            }
            Err(_) => {
                tracing::info!("stream {sid}: SOCKS5 CONNECT {addr}: timed out");
                failure = Reply::TtlExpired;
            }
        }
    }
    (None, failure)
}
