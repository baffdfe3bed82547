//! The local role's SOCKS5 front (no authentication) over any [`Net`]: CONNECT becomes
//! a connect stream, UDP ASSOCIATE a set of relay streams (one per destination), all
//! carried by the [`Pool`].
//!
//! CONNECT is answered with success as soon as the stream is open on a carrier, before
//! the remote has dialed (pong's "0 open time", as pong-go); a failed dial (the remote's
//! rst) then resets the application's connection ([`TcpConn::abort`], a TCP RST), as
//! does a target that resets or a carrier that dies: the application never mistakes a
//! failure for a clean end. If no carrier can be opened, the answer is SOCKS5 "general
//! failure".
//!
//! UDP ASSOCIATE: the front binds a UDP socket on the address the client reached it at
//! and replies with it. Datagrams from the client (the first sender, or the address
//! given in the request when it is not unspecified) with FRAG 0 are sent on the relay
//! stream for their destination; answers come back with that destination in the SOCKS5
//! UDP header. The association ends when its TCP connection closes. Fragmented
//! datagrams (FRAG != 0) are dropped, as RFC 1928 allows.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tunnelbed_netio::idle::{self, Activity};
use tunnelbed_netio::{Net, TcpConn, TcpListen, UdpSock};
use tunnelbed_socks5::handshake::{self, unspecified};
use tunnelbed_socks5::{Addr, Command, Reply, UdpHeader};

use crate::pool::Pool;
use crate::pump::PumpBuf;
use crate::wire::{Address, RstCode, RstInfo};

/// Most relay streams one UDP association may open (one per destination).
pub const MAX_UDP_DESTINATIONS: usize = 256;

fn to_pong(a: &Addr) -> Address {
    match a {
        Addr::Ip(s) => Address::Ip(*s),
        Addr::Domain(h, p) => Address::Domain(h.clone(), *p),
    }
}

fn to_socks(a: &Address) -> Addr {
    match a {
        Address::Ip(s) => Addr::Ip(*s),
        Address::Domain(h, p) => Addr::Domain(h.clone(), *p),
    }
}

/// Serves SOCKS5 clients on `listener` until it fails.
pub async fn serve_socks<N: Net>(
    net: N,
    listener: N::Listener,
    pool: Arc<Pool<N>>,
) -> io::Result<()> {
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("pong local: SOCKS5 accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (net, pool) = (net.clone(), pool.clone());
        tokio::spawn(async move {
            if let Err(e) = handle_client(net, s, pool).await {
                tracing::debug!("pong local: SOCKS5 client {peer}: {e}");
            }
        });
    }
}

/// Serves one SOCKS5 client connection.
pub async fn handle_client<N: Net>(net: N, mut s: N::Stream, pool: Arc<Pool<N>>) -> io::Result<()> {
    let req = handshake::accept(&mut s).await?;
    match req.command {
        Command::Connect => {
            let stream = match pool.open_connect(to_pong(&req.addr)).await {
                Ok(st) => st,
                Err(e) => {
                    let _ = handshake::reply(&mut s, Reply::GeneralFailure, &unspecified()).await;
                    return Err(e);
                }
            };
            handshake::reply(&mut s, Reply::Succeeded, &unspecified()).await?;
            relay(s, stream, req.early_data, pool.config().idle_timeout).await
        }
        Command::UdpAssociate => udp_associate(net, s, pool, req.addr).await,
        _ => {
            handshake::reply(&mut s, Reply::CommandNotSupported, &unspecified()).await?;
            Ok(())
        }
    }
}

/// Which side of a relay failed first.
enum Failed {
    /// The application's connection (a read or write on it failed).
    App(io::Error),
    /// The pong stream: reset by the remote (a failed dial, a target that reset), closed
    /// under us, or its connection died.
    Pong(io::Error),
    /// No byte moved either way for the idle timeout.
    Idle,
}

/// Copies `rd` to `wr` until `rd` ends; errors are tagged with the side they came from.
async fn pump<R, W>(
    rd: &mut R,
    wr: &mut W,
    read_failed: fn(io::Error) -> Failed,
    write_failed: fn(io::Error) -> Failed,
) -> Result<(), Failed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = PumpBuf::new();
    loop {
        let n = rd.read(buf.space()).await.map_err(read_failed)?;
        if n == 0 {
            return Ok(());
        }
        wr.write_all(buf.filled(n)).await.map_err(write_failed)?;
        buf.used(n);
    }
}

/// Copies both ways with half closes (an end of input becomes finish one way and a FIN
/// the other). A failure on one side is passed on as a failure, never as a clean end:
/// when the pong stream fails (the remote's dial failed after we had already answered
/// success, the target reset, the carrier died) the application's connection is aborted
/// (TCP RST); when the application's connection fails (it reset) the pong stream is
/// reset (rst 12). A relay on which no byte is read either way for `idle`, while its
/// carrier too delivered nothing (a busy carrier may hold the stream's bytes behind
/// others'), fails both ways (rst 6 to the remote, RST to the application).
async fn relay<S: TcpConn>(
    app: S,
    stream: crate::driver::PongStream,
    early: Vec<u8>,
    idle: Duration,
) -> io::Result<()> {
    let activity = Activity::new();
    let carrier = stream.carrier_activity();
    let (mut ard, mut awr) = tokio::io::split(activity.wrap(app));
    let mut reset = stream.reset_watch();
    let (mut prd, mut pwr) = tokio::io::split(activity.wrap(stream));
    // Set once the answer has gone to the application in full: from then on only `up`
    // runs, blocked on the application, and would not see the stream's reset.
    let down_done = AtomicBool::new(false);
    let r = {
        let up = async {
            let copy = async {
                if !early.is_empty() {
                    pwr.write_all(&early).await.map_err(Failed::Pong)?;
                }
                pump(&mut ard, &mut pwr, Failed::App, Failed::Pong).await?;
                pwr.shutdown().await.map_err(Failed::Pong)
            };
            // A reset after the answer ended (the remote's idle timeout, the carrier
            // dying) fails the relay even while the application sends nothing: an
            // application whose own reset was lost on its way here would otherwise hold
            // the stream and its carrier for good. (No wake of our own: while the answer
            // still flows, `down` sees the reset and ends the relay itself.)
            let watch = async {
                let e = reset.reset().await;
                if down_done.load(Ordering::Acquire) {
                    return Err(Failed::Pong(e));
                }
                std::future::pending().await
            };
            tokio::select! {
                biased;
                r = copy => r,
                r = watch => r,
            }
        };
        let down = async {
            pump(&mut prd, &mut awr, Failed::Pong, Failed::App).await?;
            awr.shutdown().await.map_err(Failed::App)?;
            down_done.store(true, Ordering::Release);
            Ok(())
        };
        let watched = [&activity, &carrier];
        // biased: the copies first, the idle watchdog last (fixed order, for replay).
        tokio::select! {
            biased;
            r = async { tokio::try_join!(up, down) } => r.map(|_| ()),
            () = idle::until_all_idle(&watched, idle) => Err(Failed::Idle),
        }
    };
    let app = ard.unsplit(awr).into_inner();
    let stream = prd.unsplit(pwr).into_inner();
    match r {
        Ok(()) => Ok(()),
        Err(Failed::Pong(e)) => {
            app.abort();
            Err(e)
        }
        Err(Failed::App(e)) => {
            stream.reset(RstInfo::with_description(
                RstCode::ConnTimeout,
                format!("application connection failed: {e}"),
            ));
            Err(e)
        }
        Err(Failed::Idle) => {
            let why = format!("no data either way for {} s", idle.as_secs_f64());
            tracing::debug!("pong local: stream {}: {why}; failing it", stream.id());
            stream.reset(RstInfo::with_description(RstCode::TtlExpired, why.clone()));
            app.abort();
            Err(io::Error::new(io::ErrorKind::TimedOut, why))
        }
    }
}

async fn udp_associate<N: Net>(
    net: N,
    mut ctl: N::Stream,
    pool: Arc<Pool<N>>,
    from: Addr,
) -> io::Result<()> {
    let local_ip = ctl.local_addr()?.ip();
    let sock = match net.bind_udp(SocketAddr::new(local_ip, 0)).await {
        Ok(u) => Arc::new(u),
        Err(e) => {
            let _ = handshake::reply(&mut ctl, Reply::GeneralFailure, &unspecified()).await;
            return Err(e);
        }
    };
    let bound = sock.local_addr()?;
    handshake::reply(&mut ctl, Reply::Succeeded, &Addr::Ip(bound)).await?;
    // The client is whoever the request named, or the first sender.
    let mut client: Option<SocketAddr> = match from {
        Addr::Ip(a) if !a.ip().is_unspecified() && a.port() != 0 => Some(a),
        _ => None,
    };
    let (back_tx, mut back_rx) = mpsc::channel::<(Address, Bytes)>(256);
    let mut senders: BTreeMap<Address, mpsc::Sender<Bytes>> = BTreeMap::new();
    let mut buf = vec![0u8; 65_535];
    let mut ctl_buf = [0u8; 64];
    let mut answers_first = false;
    loop {
        // Branches in a fixed order (biased), so simulated runs replay (otherwise tokio
        // tries a random branch first, from an RNG the simulation does not seed); the two
        // directions take turns going first, so neither starves the other under load.
        answers_first = !answers_first;
        let ev = if answers_first {
            tokio::select! {
                biased;
                r = ctl.read(&mut ctl_buf) => Assoc::Ctl(r),
                m = back_rx.recv() => Assoc::Answer(m),
                r = sock.recv_from(&mut buf) => Assoc::Datagram(r),
            }
        } else {
            tokio::select! {
                biased;
                r = ctl.read(&mut ctl_buf) => Assoc::Ctl(r),
                r = sock.recv_from(&mut buf) => Assoc::Datagram(r),
                m = back_rx.recv() => Assoc::Answer(m),
            }
        };
        match ev {
            Assoc::Ctl(Ok(0) | Err(_)) => return Ok(()),
            Assoc::Ctl(Ok(_)) => {} // nothing is expected on the control connection
            Assoc::Datagram(r) => {
                let (n, src) = r?;
                if *client.get_or_insert(src) != src {
                    continue; // not our client
                }
                let Ok(Some((h, payload))) = UdpHeader::decode(&buf[..n]) else {
                    tracing::debug!(
                        "pong local: dropped a malformed or fragmented SOCKS5 datagram"
                    );
                    continue;
                };
                let dest = to_pong(&h.addr);
                if !senders.contains_key(&dest) {
                    if senders.len() >= MAX_UDP_DESTINATIONS {
                        tracing::warn!("pong local: UDP association over {MAX_UDP_DESTINATIONS} destinations; dropping");
                        continue;
                    }
                    let d = match pool.open_relay(dest.clone()).await {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!("pong local: relay stream to {dest}: {e}");
                            continue;
                        }
                    };
                    let (tx, rx) = mpsc::channel::<Bytes>(256);
                    tokio::spawn(pump_relay(d, rx, dest.clone(), back_tx.clone()));
                    senders.insert(dest.clone(), tx);
                }
                let tx = &senders[&dest];
                if tx.try_send(Bytes::copy_from_slice(payload)).is_err() {
                    tracing::debug!(
                        "pong local: relay stream to {dest} is busy or gone; datagram dropped"
                    );
                    if tx.is_closed() {
                        senders.remove(&dest);
                    }
                }
            }
            // Never `None`: we hold a sender.
            Assoc::Answer(None) => {}
            Assoc::Answer(Some((dest, b))) => {
                let Some(c) = client else { continue };
                let mut out = BytesMut::with_capacity(b.len() + 32);
                let h = UdpHeader {
                    addr: to_socks(&dest),
                };
                if h.encode(&b, &mut out).is_ok() {
                    let _ = sock.send_to(&out, c).await;
                }
            }
        }
    }
}

/// What woke a UDP association.
enum Assoc {
    /// The control connection (its end ends the association).
    Ctl(io::Result<usize>),
    /// A datagram from the client.
    Datagram(io::Result<(usize, SocketAddr)>),
    /// An answer from a relay stream, for the client.
    Answer(Option<(Address, Bytes)>),
}

/// One relay stream: datagrams from the client go out, answers come back tagged with
/// their destination.
async fn pump_relay(
    mut d: crate::driver::PongDatagrams,
    mut rx: mpsc::Receiver<Bytes>,
    dest: Address,
    back: mpsc::Sender<(Address, Bytes)>,
) {
    let mut answers_first = false;
    loop {
        // Fixed order (biased) for replay, the directions taking turns going first (as
        // in the association's loop).
        answers_first = !answers_first;
        let ev = if answers_first {
            tokio::select! {
                biased;
                r = d.recv() => Pump::Answer(r),
                m = rx.recv() => Pump::Out(m),
            }
        } else {
            tokio::select! {
                biased;
                m = rx.recv() => Pump::Out(m),
                r = d.recv() => Pump::Answer(r),
            }
        };
        match ev {
            Pump::Out(Some(b)) => {
                if d.send(b).await.is_err() {
                    return;
                }
            }
            Pump::Out(None) => return,
            Pump::Answer(Ok(Some(b))) => {
                if back.send((dest.clone(), b)).await.is_err() {
                    return;
                }
            }
            Pump::Answer(Ok(None)) => return,
            Pump::Answer(Err(e)) => {
                tracing::debug!("pong local: relay stream to {dest}: {e}");
                return;
            }
        }
    }
}

/// What woke a relay pump.
enum Pump {
    /// A datagram from the client to send (`None`: the association ended).
    Out(Option<Bytes>),
    /// What the relay stream gave.
    Answer(io::Result<Option<Bytes>>),
}
