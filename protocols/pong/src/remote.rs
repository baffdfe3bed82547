//! The remote role over any [`Net`]: accepts carriers, checks the client id against the
//! allow list (unknown ids are closed without a byte written), dials each stream's
//! destination (TCP for connect, UDP for relay) and relays.
//!
//! Relay streams (tunnelbed's definition): each data frame is one UDP datagram to the
//! stream's address, and each datagram that comes back from that address is one data
//! frame; datagrams from other sources are dropped (the socket is per stream).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_carrier::http3::H3Listener;
use tunnelbed_carrier::tls::ServerTls;
use tunnelbed_carrier::{BoxStream, CarrierKind};
use tunnelbed_netio::idle::Activity;
use tunnelbed_netio::{Net, TcpConn, TcpListen, Trace, UdpSock};

use crate::driver::{
    spawn_remote, ConnEnd, DriverConfig, Incoming, Opened, PongDatagrams, PongStream,
};
use crate::pump::PumpBuf;
use crate::session::DialError;
use crate::wire::{Address, RstCode, RstInfo};

/// Settings of a remote.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// Driver and session caps.
    pub driver: DriverConfig,
    /// Client ids allowed to use this remote.
    pub allowed: Vec<[u8; 16]>,
    /// How long a dial may take before the stream is answered with rst 10.
    pub dial_timeout: Duration,
    /// How long the connection header may take before the carrier is dropped.
    pub header_timeout: Duration,
    /// A relay stream with no datagram either way for this long is closed.
    pub udp_idle: Duration,
    /// A connect stream with no byte either way for this long, while its carrier too
    /// delivered nothing, fails (rst 6 to the local, RST to the target): the last bound
    /// on a stream whose target went silent (v2ray's `connIdle` is 300 s).
    pub idle_timeout: Duration,
    /// How long bytes written to a target may stay unacknowledged by its TCP before the
    /// stream fails (`TCP_USER_TIMEOUT`, see [`TcpConn::set_unacked_timeout`]): a target
    /// whose kernel lost the connection (an accept-queue overflow) is found in seconds,
    /// not after the 15 minutes of TCP's retransmissions.
    pub target_ack_timeout: Duration,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            driver: DriverConfig::default(),
            allowed: Vec::new(),
            dial_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            udp_idle: Duration::from_secs(120),
            idle_timeout: tunnelbed_netio::idle::DEFAULT_IDLE,
            target_ack_timeout: Duration::from_secs(30),
        }
    }
}

/// Accepts carriers on `listener` until it fails; each runs in its own task. `tls` is
/// needed for `tls://` and `wss://`. Trace ids are `{name}/c{n}`.
pub async fn serve<N: Net>(
    net: N,
    listener: N::Listener,
    kind: CarrierKind,
    tls: Option<Arc<ServerTls>>,
    cfg: Arc<RemoteConfig>,
    trace: Trace,
    name: String,
) -> io::Result<()> {
    let next = AtomicU64::new(0);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // One failed accept (e.g. out of descriptors) must not end the server.
                tracing::warn!("pong remote: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let n = next.fetch_add(1, Ordering::Relaxed);
        let (net, tls, cfg, trace) = (net.clone(), tls.clone(), cfg.clone(), trace.clone());
        let id = format!("{name}/c{n}");
        tokio::spawn(async move {
            let carrier = match tokio::time::timeout(
                cfg.header_timeout,
                tunnelbed_carrier::accept(tcp, kind, tls.as_deref()),
            )
            .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::info!("pong remote {id}: carrier handshake from {peer} failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!("pong remote {id}: carrier handshake from {peer} timed out");
                    return;
                }
            };
            let end = handle_carrier(net, carrier, cfg, trace, id.clone()).await;
            tracing::info!("pong remote {id} ({peer}): {end}");
        });
    }
}

/// [`serve`] for `h3://`: accepts QUIC connections on `listener` (a UDP socket) until it
/// fails; each connection's one HTTP/3 request is a carrier, run in its own task. Trace
/// ids are `{name}/c{n}`.
pub async fn serve_h3<N: Net>(
    net: N,
    listener: H3Listener,
    cfg: Arc<RemoteConfig>,
    trace: Trace,
    name: String,
) -> io::Result<()> {
    let mut next = 0u64;
    loop {
        let incoming = listener.accept().await?;
        let peer = incoming.remote_addr();
        let (net, cfg, trace) = (net.clone(), cfg.clone(), trace.clone());
        let id = format!("{name}/c{next}");
        next += 1;
        tokio::spawn(async move {
            let carrier: BoxStream =
                match tokio::time::timeout(cfg.header_timeout, incoming.finish()).await {
                    Ok(Ok(c)) => Box::new(c),
                    Ok(Err(e)) => {
                        tracing::info!("pong remote {id}: h3 handshake from {peer} failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!("pong remote {id}: h3 handshake from {peer} timed out");
                        return;
                    }
                };
            let end = handle_carrier(net, carrier, cfg, trace, id.clone()).await;
            tracing::info!("pong remote {id} ({peer}): {end}");
        });
    }
}

/// Runs one carrier connection to its end.
pub async fn handle_carrier<N: Net>(
    net: N,
    carrier: BoxStream,
    cfg: Arc<RemoteConfig>,
    trace: Trace,
    id: String,
) -> ConnEnd {
    let mut conn = spawn_remote(carrier, cfg.driver.clone(), trace, id.clone());
    let hello = conn.hello.take().expect("a remote connection has a hello");
    match tokio::time::timeout(cfg.header_timeout, hello).await {
        Ok(Ok(client_id)) => {
            let ok = cfg.allowed.contains(&client_id);
            if !ok {
                tracing::warn!(
                    "pong remote {id}: client id {} not allowed; closing without a reply",
                    hex(&client_id)
                );
            }
            conn.approve(ok);
        }
        Ok(Err(_)) => {} // the connection ended before a header
        Err(_) => conn.shutdown("no connection header in time"),
    }
    loop {
        // biased: the same order every time, so simulated runs replay (otherwise tokio
        // tries a random branch first, from an RNG the simulation does not seed).
        tokio::select! {
            biased;
            inc = conn.incoming.recv() => match inc {
                Some(inc) => {
                    tokio::spawn(dial_and_relay(net.clone(), inc, cfg.clone()));
                }
                None => break,
            },
            _ = conn.state.changed() => {
                if conn.is_closed() {
                    break;
                }
            }
        }
    }
    match conn.done.await {
        Ok(end) => end,
        Err(e) => ConnEnd::Shutdown(format!("connection task failed: {e}")),
    }
}

fn hex(b: &[u8; 16]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn resolve<N: Net>(net: &N, addr: &Address) -> Result<Vec<SocketAddr>, DialError> {
    match addr {
        Address::Ip(a) => Ok(vec![*a]),
        Address::Domain(host, port) => match net.resolve(host, *port).await {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(DialError::HostUnreachable),
        },
    }
}

async fn dial_tcp<N: Net>(
    net: &N,
    addr: &Address,
    cfg: &RemoteConfig,
) -> Result<N::Stream, DialError> {
    let work = async {
        let mut last = DialError::HostUnreachable;
        for a in resolve(net, addr).await? {
            match net.connect_tcp(a).await {
                Ok(s) => {
                    if let Err(e) = s.set_unacked_timeout(cfg.target_ack_timeout) {
                        tracing::debug!("pong remote: {addr}: TCP_USER_TIMEOUT: {e}");
                    }
                    return Ok(s);
                }
                Err(e) => last = DialError::from_io(&e),
            }
        }
        Err(last)
    };
    tokio::time::timeout(cfg.dial_timeout, work)
        .await
        .unwrap_or(Err(DialError::Timeout))
}

async fn dial_and_relay<N: Net>(net: N, inc: Incoming, cfg: Arc<RemoteConfig>) {
    let sid = inc.stream_id;
    let addr = inc.addr.clone();
    match &inc.stream {
        Opened::Tcp(_) => match dial_tcp(&net, &addr, &cfg).await {
            Err(e) => {
                tracing::debug!("pong remote: stream {sid} to {addr}: dial failed: {e:?}");
                inc.dialed(Err(e));
            }
            Ok(target) => {
                inc.dialed(Ok(()));
                let Opened::Tcp(s) = inc.stream else {
                    unreachable!()
                };
                relay_tcp(s, target, cfg.idle_timeout).await;
            }
        },
        Opened::Udp(_) => {
            let target = match resolve(&net, &addr).await {
                Ok(v) => v[0],
                Err(e) => {
                    inc.dialed(Err(e));
                    return;
                }
            };
            let bind: SocketAddr = if target.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            match net.bind_udp(bind).await {
                Err(e) => inc.dialed(Err(DialError::from_io(&e))),
                Ok(sock) => {
                    inc.dialed(Ok(()));
                    let Opened::Udp(d) = inc.stream else {
                        unreachable!()
                    };
                    relay_udp(d, sock, target, cfg.udp_idle).await;
                }
            }
        }
    }
}

/// Which side of a relay failed first.
enum Failed {
    /// The pong stream: the local reset it, or the connection died.
    Local,
    /// The target's connection: it reset, or a read or write on it failed (including
    /// `TimedOut` when it left our bytes unacknowledged too long).
    Target(io::Error),
    /// No byte moved either way for the idle timeout.
    Idle,
}

/// Copies both ways with half closes: the local's finish becomes a TCP FIN to the
/// target, the target's FIN our finish. Whichever side fails first ends both at once,
/// even while the other direction is still open: a target that resets (or whose
/// connection fails on a write, or leaves our bytes unacknowledged past the target ack
/// timeout) is reported to the local with rst 11, and a stream the local resets (or
/// whose connection dies) aborts the target's connection (TCP RST). A stream on which
/// no byte moves either way for `idle` fails both ways (rst 6 to the local, RST to the
/// target): nothing waits without bound.
async fn relay_tcp<S: TcpConn>(stream: PongStream, target: S, idle: Duration) {
    // The stream is idle only while its carrier too delivered nothing: over a congested
    // carrier a stream's request can wait behind other streams' bytes in the local's
    // queue for longer than the bound (pong-streams --seed 149 --profile swarm --tcp
    // real: 17 s), as the local's own bound already allows for.
    let carrier = stream.carrier_activity();
    let (mut prd, mut pwr) = tokio::io::split(stream);
    let (mut trd, mut twr) = tokio::io::split(target);
    let activity = Activity::new();
    let failed = {
        let up = async {
            let mut buf = PumpBuf::new();
            loop {
                match prd.read(buf.space()).await {
                    Ok(0) => {
                        return twr.shutdown().await.map_err(Failed::Target);
                    }
                    Ok(n) => {
                        activity.touch();
                        twr.write_all(buf.filled(n)).await.map_err(Failed::Target)?;
                        activity.touch();
                        buf.used(n);
                    }
                    Err(_) => return Err(Failed::Local),
                }
            }
        };
        let down = async {
            let mut buf = PumpBuf::new();
            loop {
                match trd.read(buf.space()).await {
                    Ok(0) => {
                        // A finish cannot fail; a stream already ended shows up above.
                        let _ = pwr.shutdown().await;
                        return Ok(());
                    }
                    Ok(n) => {
                        activity.touch();
                        if pwr.write_all(buf.filled(n)).await.is_err() {
                            return Err(Failed::Local);
                        }
                        activity.touch();
                        buf.used(n);
                    }
                    Err(e) => return Err(Failed::Target(e)),
                }
            }
        };
        let watchdog = async {
            tunnelbed_netio::idle::until_all_idle(&[&activity, &carrier], idle).await;
            Err::<((), ()), Failed>(Failed::Idle)
        };
        // biased: the copies first, the watchdog last (fixed order, for replay).
        tokio::select! {
            biased;
            r = async { tokio::try_join!(up, down) } => r.err(),
            r = watchdog => r.err(),
        }
    };
    let stream = prd.unsplit(pwr);
    let target = trd.unsplit(twr);
    match failed {
        None => {}
        Some(Failed::Target(e)) => {
            tracing::debug!(
                "pong remote: stream {}: target connection failed: {e}",
                stream.id()
            );
            stream.reset(RstInfo::with_description(RstCode::DstReset, e.to_string()));
        }
        Some(Failed::Local) => target.abort(),
        Some(Failed::Idle) => {
            tracing::debug!(
                "pong remote: stream {}: nothing either way for {idle:?}; failing it",
                stream.id()
            );
            stream.reset(RstInfo::with_description(
                RstCode::TtlExpired,
                format!("no data either way for {} s", idle.as_secs()),
            ));
            target.abort();
        }
    }
}

/// What woke a relay stream's loop.
enum Relay {
    /// A datagram from the local for the target (or the stream's end).
    Out(io::Result<Option<Bytes>>),
    /// A datagram on our socket.
    In(io::Result<(usize, SocketAddr)>),
    /// Nothing either way for the idle time.
    Idle,
}

async fn relay_udp<U: UdpSock>(mut d: PongDatagrams, sock: U, target: SocketAddr, idle: Duration) {
    let mut buf = vec![0u8; 65_535];
    let mut answers_first = false;
    loop {
        // Branches in a fixed order (biased), so simulated runs replay (otherwise tokio
        // tries a random branch first, from an RNG the simulation does not seed); the two
        // directions take turns going first, so neither starves the other under load.
        answers_first = !answers_first;
        let ev = if answers_first {
            tokio::select! {
                biased;
                r = sock.recv_from(&mut buf) => Relay::In(r),
                r = d.recv() => Relay::Out(r),
                _ = tokio::time::sleep(idle) => Relay::Idle,
            }
        } else {
            tokio::select! {
                biased;
                r = d.recv() => Relay::Out(r),
                r = sock.recv_from(&mut buf) => Relay::In(r),
                _ = tokio::time::sleep(idle) => Relay::Idle,
            }
        };
        match ev {
            Relay::Out(Ok(Some(b))) => {
                if let Err(e) = sock.send_to(&b, target).await {
                    tracing::debug!("pong remote: udp to {target}: {e}");
                }
            }
            Relay::Out(_) => return,
            Relay::In(Ok((n, from))) if from == target => {
                if d.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
            Relay::In(Ok(_)) => {}
            Relay::In(Err(e)) => {
                tracing::debug!("pong remote: udp from {target}: {e}");
            }
            Relay::Idle => {
                tracing::debug!("pong remote: relay stream {} idle; closing", d.id());
                return;
            }
        }
    }
}
