//! `tunnelbed h2tunnel`: vproxy's KCP tunnel (seed 000) on real sockets.
//!
//! The client accepts TCP connections and carries each as a stream of one tunnel to the
//! server; the server connects each stream to a fixed target, or serves SOCKS5 inside it.
//! The carrier is KCP over UDP (`udp://`, one KCP session per client address, as vproxy)
//! or plain TCP (`tcp://`). The client keeps one tunnel and reconnects with a new carrier
//! after it fails. Half-closes cross the tunnel (TCP FIN <-> tunnel FIN); a reset on
//! either side resets the other (TCP RST <-> tunnel RST).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tunnelbed_h2tunnel::{DriverConfig, Opener, Role, TunnelStream};
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{self, ArqOptions, ArqServer};
use tunnelbed_netio::{TokioNet, Trace};
use tunnelbed_socks5::handshake;
use tunnelbed_socks5::wire::{Addr, Command, Reply};

use super::EXIT_USAGE;

/// h2tunnel roles on real sockets.
#[derive(Subcommand, Debug)]
pub enum H2tunnelCmd {
    /// The tunnel server: each stream goes to `--forward`, or is a SOCKS5 request.
    /// Prints `listening ADDR` on stdout once bound.
    Server(ServerArgs),
    /// The tunnel client: each TCP connection to `--listen` becomes a stream. Prints
    /// `listening ADDR` on stdout once bound.
    Client(ClientArgs),
}

/// `h2tunnel server` arguments.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Carrier to listen on: `udp://ADDR` (KCP) or `tcp://ADDR`.
    #[arg(long)]
    pub listen: String,
    /// Connect every stream to this TCP address.
    #[arg(long, conflicts_with = "socks5", required_unless_present = "socks5")]
    pub forward: Option<SocketAddr>,
    /// Serve SOCKS5 (no authentication, CONNECT) inside every stream.
    #[arg(long)]
    pub socks5: bool,
    /// KCP preset for `udp://` (vproxy's server default is fast4).
    #[arg(long, default_value = "fast4")]
    pub profile: String,
    /// KCP conversation id (vproxy uses 0).
    #[arg(long, default_value_t = 0)]
    pub conv: u32,
}

/// `h2tunnel client` arguments.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Where applications connect: `tcp://ADDR`.
    #[arg(long)]
    pub listen: String,
    /// The tunnel server: `udp://ADDR` (KCP) or `tcp://ADDR`.
    #[arg(long)]
    pub server: String,
    /// KCP preset for `udp://` (vproxy's client default is clientFast4).
    #[arg(long, default_value = "clientFast4")]
    pub profile: String,
    /// KCP conversation id (vproxy uses 0).
    #[arg(long, default_value_t = 0)]
    pub conv: u32,
    /// How long a new connection waits for a tunnel (while reconnecting) before it is
    /// refused, in seconds.
    #[arg(long, default_value_t = 15)]
    pub wait_secs: u64,
}

/// A carrier address.
#[derive(Clone, Copy, Debug)]
enum Carrier {
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

fn parse_carrier(s: &str, what: &str) -> Result<Carrier, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("{what} {s:?}: expected udp://HOST:PORT or tcp://HOST:PORT"))?;
    let addr: SocketAddr = rest
        .parse()
        .map_err(|e| format!("{what} {s:?}: bad address: {e}"))?;
    match scheme {
        "udp" => Ok(Carrier::Udp(addr)),
        "tcp" => Ok(Carrier::Tcp(addr)),
        other => Err(format!(
            "{what} {s:?}: unknown scheme {other:?} (udp or tcp)"
        )),
    }
}

fn kcp_config(name: &str) -> Result<KcpConfig, String> {
    let mut c = KcpConfig::preset(name).ok_or_else(|| {
        format!(
            "unknown KCP profile {name:?} (known: {})",
            KcpConfig::PRESETS.join(", ")
        )
    })?;
    c.stream = true; // the tunnel is a byte stream
    Ok(c)
}

fn usage(e: String) -> anyhow::Result<ExitCode> {
    eprintln!("error: {e}");
    Ok(ExitCode::from(EXIT_USAGE))
}

/// Runs an `h2tunnel` subcommand.
pub fn run(cmd: H2tunnelCmd) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    match cmd {
        H2tunnelCmd::Server(a) => {
            let listen = match parse_carrier(&a.listen, "--listen") {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            let kcp = match kcp_config(&a.profile) {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            rt.block_on(server(a, listen, kcp))
        }
        H2tunnelCmd::Client(a) => {
            let listen = match parse_carrier(&a.listen, "--listen") {
                Ok(Carrier::Tcp(addr)) => addr,
                Ok(Carrier::Udp(_)) => return usage("--listen must be tcp://ADDR".into()),
                Err(e) => return usage(e),
            };
            let server = match parse_carrier(&a.server, "--server") {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            let kcp = match kcp_config(&a.profile) {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            rt.block_on(client(a, listen, server, kcp))
        }
    }
}

/// What the server does with each stream.
#[derive(Clone, Copy, Debug)]
enum Target {
    Forward(SocketAddr),
    Socks5,
}

async fn server(a: ServerArgs, listen: Carrier, kcp: KcpConfig) -> anyhow::Result<ExitCode> {
    let target = match a.forward {
        Some(f) => Target::Forward(f),
        None => Target::Socks5,
    };
    match listen {
        Carrier::Udp(addr) => {
            let conv = a.conv;
            let mut srv = ArqServer::bind(
                &TokioNet,
                addr,
                move |peer, first: &[u8]| {
                    if !tunnelbed_kcp::wire::starts_session(first, conv) {
                        tracing::debug!("h2tunnel server: {peer}: not a session start, ignored");
                        return None;
                    }
                    tracing::info!("h2tunnel server: new KCP session from {peer}");
                    Some(Kcp::new(
                        conv,
                        &kcp,
                        Trace::disabled(),
                        format!("kcp[{peer}]"),
                    ))
                },
                ArqOptions::default(),
            )
            .await
            .with_context(|| format!("binding udp {addr}"))?;
            println!("listening {}", srv.local_addr());
            while let Some((carrier, peer)) = srv.accept().await {
                serve_tunnel(carrier, peer, target);
            }
            // The receive task only stops when the UDP socket fails.
            anyhow::bail!("udp {addr}: the socket stopped receiving");
        }
        Carrier::Tcp(addr) => {
            let lsn = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding tcp {addr}"))?;
            println!("listening {}", lsn.local_addr()?);
            loop {
                let Some((s, peer)) = accept(&lsn, "h2tunnel server").await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                serve_tunnel(s, peer, target);
            }
        }
    }
}

/// One server-side tunnel over `carrier`.
fn serve_tunnel<C>(carrier: C, peer: SocketAddr, target: Target)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let running = tunnelbed_h2tunnel::driver::spawn(
        carrier,
        Role::Server,
        DriverConfig::default(),
        Trace::disabled(),
        format!("h2t[{peer}]"),
    );
    let mut accepted = running.accepted;
    let done = running.done;
    tokio::spawn(async move {
        let streams = tokio::spawn(async move {
            while let Some(s) = accepted.recv().await {
                tokio::spawn(serve_stream(s, target));
            }
        });
        match done.await {
            Ok(end) => tracing::info!("h2tunnel server: tunnel from {peer} ended: {end}"),
            Err(e) => tracing::warn!("h2tunnel server: tunnel from {peer}: {e}"),
        }
        streams.abort();
    });
}

async fn serve_stream(mut s: TunnelStream, target: Target) {
    let sid = s.id();
    let dial = |a: SocketAddr| tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(a));
    match target {
        Target::Forward(addr) => match dial(addr).await {
            Ok(Ok(tcp)) => splice(tcp, s).await,
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
            let req = match handshake::accept(&mut s).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!("stream {sid}: SOCKS5: {e}");
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
                Addr::Domain(host, port) => {
                    match tokio::net::lookup_host((host.as_str(), *port)).await {
                        Ok(it) => it.collect(),
                        Err(_) => Vec::new(),
                    }
                }
            };
            // Every resolved address in turn (a name such as `localhost` may resolve to
            // ::1 first while the target listens on 127.0.0.1 only); the reply names the
            // last failure.
            let mut failure = Reply::HostUnreachable;
            let mut connected = None;
            for addr in addrs {
                match dial(addr).await {
                    Ok(Ok(t)) => {
                        connected = Some(t);
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::info!("stream {sid}: SOCKS5 CONNECT {addr}: {e}");
                        failure = match e.kind() {
                            std::io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
                            _ => Reply::HostUnreachable,
                        };
                    }
                    Err(_) => {
                        tracing::info!("stream {sid}: SOCKS5 CONNECT {addr}: timed out");
                        failure = Reply::TtlExpired;
                    }
                }
            }
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
                return;
            }
            if !req.early_data.is_empty() && tcp.write_all(&req.early_data).await.is_err() {
                s.reset();
                return;
            }
            splice(tcp, s).await;
        }
    }
}

/// Copies both ways with half-closes; an error on either side resets both (RST on the
/// TCP connection via linger 0, RST on the stream).
async fn splice(tcp: TcpStream, s: TunnelStream) {
    let _ = tcp.set_nodelay(true);
    let (mut tr, mut tw) = tcp.into_split();
    let (mut sr, mut sw) = tokio::io::split(s);
    let failed = {
        let up = async {
            tokio::io::copy(&mut tr, &mut sw).await?;
            sw.shutdown().await
        };
        let down = async {
            tokio::io::copy(&mut sr, &mut tw).await?;
            tw.shutdown().await
        };
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(e) => break Some(e),
                },
                r = &mut down, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(e) => break Some(e),
                },
            }
            if up_done && down_done {
                break None;
            }
        }
    };
    if let Some(e) = failed {
        tracing::debug!("splice: {e}; resetting both sides");
        if let Ok(tcp) = tr.reunite(tw) {
            abort(&tcp);
        }
        sr.unsplit(sw).reset();
    }
}

/// Accepts one connection. An accept error (a connection aborted before it was taken,
/// or out of file descriptors) is logged and `None` returned after a short pause, so one
/// bad moment does not end a long-running listener.
async fn accept(lsn: &TcpListener, who: &str) -> Option<(TcpStream, SocketAddr)> {
    match lsn.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("{who}: accept: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Makes dropping `tcp` send RST instead of FIN (SO_LINGER 0). A zero linger does not
/// block on close, which is what tokio's deprecation warns about.
#[allow(deprecated)]
fn abort(tcp: &TcpStream) {
    let _ = tcp.set_linger(Some(Duration::ZERO));
}

async fn client(
    a: ClientArgs,
    listen: SocketAddr,
    server: Carrier,
    kcp: KcpConfig,
) -> anyhow::Result<ExitCode> {
    let lsn = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding tcp {listen}"))?;
    let (tx, current) = watch::channel(None);
    let conv = a.conv;
    tokio::spawn(keep_tunnel(server, kcp, conv, tx));
    println!("listening {}", lsn.local_addr()?);
    let wait = Duration::from_secs(a.wait_secs.max(1));
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
                abort(&tcp);
                return;
            };
            match opener.open().await {
                Ok(s) => splice(tcp, s).await,
                Err(e) => {
                    tracing::warn!("client {peer}: opening a stream: {e}");
                    abort(&tcp);
                }
            }
        });
    }
}

/// Keeps one tunnel up: connects, publishes its opener once the handshake completes,
/// and after the tunnel ends reconnects with a new carrier (backoff 0.5 s doubling to 8 s,
/// reset after a tunnel that worked).
async fn keep_tunnel(
    server: Carrier,
    kcp: KcpConfig,
    conv: u32,
    tx: watch::Sender<Option<Opener>>,
) {
    let mut backoff = Duration::from_millis(500);
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let running = match server {
            Carrier::Udp(addr) => {
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .expect("literal address");
                let m = Kcp::new(
                    conv,
                    &kcp,
                    Trace::disabled(),
                    format!("kcp[client#{attempt}]"),
                );
                arq::connect(&TokioNet, bind, addr, m, ArqOptions::default())
                    .await
                    .map(|(carrier, _session)| {
                        tunnelbed_h2tunnel::driver::spawn(
                            carrier,
                            Role::Client,
                            DriverConfig::default(),
                            Trace::disabled(),
                            format!("h2t[client#{attempt}]"),
                        )
                    })
            }
            Carrier::Tcp(addr) => TcpStream::connect(addr).await.map(|s| {
                let _ = s.set_nodelay(true);
                tunnelbed_h2tunnel::driver::spawn(
                    s,
                    Role::Client,
                    DriverConfig::default(),
                    Trace::disabled(),
                    format!("h2t[client#{attempt}]"),
                )
            }),
        };
        match running {
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
