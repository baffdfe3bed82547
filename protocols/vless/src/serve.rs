//! The server role over any [`Net`]: accepts carriers, runs a [`ServerSession`] on each
//! until it decides, then relays TCP (command 1), UDP (command 2) or serves the user's
//! CRUMFURS channel (command 4, v1).
//!
//! UDP: a v0 request gets a socket of its own, and only datagrams from its target come
//! back (what v2ray does, minus its mislabelling). A v1 request goes through the user's
//! full-cone table ([`ConeTable`]): the socket is chosen by the seed's rules 1 and 2,
//! else by the table's [`MappingRule`](crate::cone::MappingRule) (by default the user's
//! socket: full cone), every source that sends to one of the user's sockets is learned,
//! datagrams from a request's own target come back on that request's connection and all
//! others go to the user's CRUMFURS channel as UMFURS messages, with their true source.
//!
//! A rejected connection is closed with nothing written and nothing dialed (or its
//! unread bytes are handed to the fallback address), and a log line names the reason.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tunnelbed_carrier::tls::ServerTls;
use tunnelbed_carrier::{BoxStream, CarrierKind};
use tunnelbed_netio::{Net, TcpListen, Trace, UdpSock};

use crate::cone::{ConeConfig, ConeTable, Learn, Route, SockId};
use crate::relay::{copy_both, relay_carrier, send};
use crate::server::{Decision, Event, ServerSession, ServerSessionConfig};
use crate::wire::{uuid_text, Address, Umfurs, Version};
use tunnelbed_netio::idle::{self, Activity};

/// Settings of a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Users, version, limits of the header machine.
    pub session: ServerSessionConfig,
    /// The full-cone table's timer and limits (per user).
    pub cone: ConeConfig,
    /// How long dialing a TCP target may take.
    pub dial_timeout: Duration,
    /// Where rejected connections go (with the bytes read so far), instead of closing.
    pub fallback: Option<SocketAddr>,
    /// Datagrams queued toward one connection before more are dropped.
    pub queue: usize,
    /// A v0 UDP connection with no datagram either way for this long is closed.
    pub udp_idle: Duration,
    /// A TCP relay that moved no byte either way this long is closed (v2ray's
    /// `connIdle`, 300 s by default; see [`crate::idle`]).
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            session: ServerSessionConfig::default(),
            cone: ConeConfig::default(),
            dial_timeout: Duration::from_secs(10),
            fallback: None,
            queue: 256,
            udp_idle: Duration::from_secs(120),
            idle_timeout: idle::DEFAULT_IDLE,
        }
    }
}

/// A running server: its config, the per-user UDP state, the clock origin.
pub struct Server<N: Net> {
    net: N,
    cfg: Arc<ServerConfig>,
    trace: Trace,
    origin: tokio::time::Instant,
    users: Mutex<BTreeMap<[u8; 16], Arc<UserUdp<N>>>>,
    next_conn: AtomicU64,
}

impl<N: Net> Server<N> {
    /// A server over `net`; trace records use `now` since this call.
    pub fn new(net: N, cfg: ServerConfig, trace: Trace) -> Arc<Self> {
        Arc::new(Self {
            net,
            cfg: Arc::new(cfg),
            trace,
            origin: tokio::time::Instant::now(),
            users: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(0),
        })
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Accepts carriers on `listener` until it fails; each runs in its own task.
    pub async fn serve(
        self: Arc<Self>,
        listener: N::Listener,
        kind: CarrierKind,
        tls: Option<Arc<ServerTls>>,
        name: String,
    ) -> io::Result<()> {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("vless server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let id = format!("{name}/c{n}");
            let (me, tls) = (self.clone(), tls.clone());
            tokio::spawn(async move {
                let hs = me.cfg.session.header_timeout;
                let carrier = match tokio::time::timeout(
                    hs,
                    tunnelbed_carrier::accept(tcp, kind, tls.as_deref()),
                )
                .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::info!("vless server {id}: carrier from {peer} failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!("vless server {id}: carrier from {peer} timed out");
                        return;
                    }
                };
                me.handle(carrier, kind, id, n).await;
            });
        }
    }

    /// Runs one carrier connection to its end.
    pub async fn handle(
        self: Arc<Self>,
        carrier: BoxStream,
        kind: CarrierKind,
        id: String,
        conn: u64,
    ) {
        let mut m = ServerSession::new(
            self.now(),
            self.cfg.session.clone(),
            self.trace.clone(),
            id.clone(),
        );
        let (mut rd, wr) = tokio::io::split(carrier);
        let mut buf = vec![0u8; 16 * 1024];
        let decided = loop {
            if let Some(e) = m.poll_event() {
                break e;
            }
            let deadline = m
                .poll_timeout()
                .map(|d| self.origin + d)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => m.handle_eof(self.now()),
                    Ok(n) => m.handle_input(self.now(), &buf[..n]),
                },
                _ = tokio::time::sleep_until(deadline) => m.handle_timeout(self.now()),
            }
        };
        let (version, user, decision, early) = match decided {
            Event::Accepted {
                version,
                user,
                decision,
                early,
            } => (version, user, decision, early),
            Event::Rejected { reason, unread } => {
                match self.cfg.fallback {
                    None => tracing::warn!(
                        "vless server {id}: rejected ({reason}); closing with nothing written"
                    ),
                    Some(fb) => {
                        tracing::warn!(
                            "vless server {id}: rejected ({reason}); handing {} bytes to fallback {fb}",
                            unread.len()
                        );
                        self.fallback(fb, rd.unsplit(wr), unread).await;
                    }
                }
                return;
            }
            // Only a decision ends the loop above.
            _ => return,
        };
        tracing::debug!(
            "vless server {id}: {version} user {} {decision}",
            uuid_text(&user)
        );
        match decision {
            Decision::Relay(target) => {
                let answer = m.poll_transmit().unwrap_or_default();
                let half_close = matches!(kind, CarrierKind::Tcp | CarrierKind::Tls);
                self.relay_tcp(id, rd, wr, target, answer, early, half_close)
                    .await;
                // The relay ran outside the machine: record its end in the trace.
                m.handle_eof(self.now());
            }
            Decision::Udp(target) => {
                self.udp(id, conn, m, rd, wr, version, user, target).await;
            }
            Decision::Crumfurs => self.crumfurs(id, conn, m, rd, wr, user).await,
        }
    }

    async fn fallback(&self, fb: SocketAddr, carrier: BoxStream, unread: Bytes) {
        let Ok(Ok(mut t)) =
            tokio::time::timeout(self.cfg.dial_timeout, self.net.connect_tcp(fb)).await
        else {
            tracing::warn!("vless server: fallback {fb} unreachable");
            return;
        };
        if send(&mut t, &unread).await.is_err() {
            return;
        }
        let (crd, cwr) = tokio::io::split(carrier);
        let (trd, twr) = tokio::io::split(t);
        let _ = copy_both(crd, cwr, trd, twr).await;
    }

    async fn resolve(&self, a: &Address) -> Option<SocketAddr> {
        match a {
            Address::Ip(s) => Some(*s),
            Address::Domain(h, p) => self
                .net
                .resolve(h, *p)
                .await
                .ok()
                .and_then(|v| v.into_iter().next()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn relay_tcp<R, W>(
        &self,
        id: String,
        rd: R,
        mut wr: W,
        target: Address,
        answer: Bytes,
        early: Bytes,
        half_close: bool,
    ) where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let dial = async {
            let addrs = match &target {
                Address::Ip(s) => vec![*s],
                Address::Domain(h, p) => self.net.resolve(h, *p).await?,
            };
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for a in addrs {
                match self.net.connect_tcp(a).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let mut t = match tokio::time::timeout(self.cfg.dial_timeout, dial).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::info!("vless server {id}: dial {target} failed: {e}");
                return;
            }
            Err(_) => {
                tracing::info!("vless server {id}: dial {target} timed out");
                return;
            }
        };
        if send(&mut wr, &answer).await.is_err()
            || (!early.is_empty() && send(&mut t, &early).await.is_err())
        {
            return;
        }
        let (trd, twr) = tokio::io::split(t);
        let linger = Some(Duration::from_secs(2));
        let activity = Activity::new();
        let relay = relay_carrier(
            activity.wrap(trd),
            twr,
            activity.wrap(rd),
            wr,
            half_close,
            linger,
        );
        if let Err(e) = idle::bounded(&activity, self.cfg.idle_timeout, relay).await {
            tracing::debug!("vless server {id}: relay to {target} ended: {e}");
        }
    }

    async fn user(self: &Arc<Self>, user: [u8; 16]) -> Arc<UserUdp<N>> {
        let mut users = self.users.lock().await;
        if let Some(u) = users.get(&user) {
            return u.clone();
        }
        let u = Arc::new(UserUdp {
            net: self.net.clone(),
            origin: self.origin,
            inner: Mutex::new(UserInner {
                table: ConeTable::new(
                    self.cfg.cone.clone(),
                    self.trace.clone(),
                    uuid_text(&user)[..8].to_string(),
                ),
                socks: BTreeMap::new(),
                conns: BTreeMap::new(),
                crumfurs: None,
            }),
        });
        tokio::spawn(janitor(Arc::downgrade(&u)));
        users.insert(user, u.clone());
        u
    }

    #[allow(clippy::too_many_arguments)]
    async fn udp<R, W>(
        self: &Arc<Self>,
        id: String,
        conn: u64,
        mut m: ServerSession,
        mut rd: R,
        mut wr: W,
        version: Version,
        user: [u8; 16],
        target: Address,
    ) where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let Some(dest) = self.resolve(&target).await else {
            tracing::info!("vless server {id}: cannot resolve {target}");
            return;
        };
        let (tx, mut down) = mpsc::channel::<Bytes>(self.cfg.queue);
        // v0: a socket of this connection's own; v1: the user's full-cone table.
        let mut own: Option<(Arc<N::Udp>, JoinHandle<()>)> = None;
        let mut cone = None;
        if version == Version::V0 {
            let sock = match self.net.bind_udp(unspecified_for(dest)).await {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::warn!("vless server {id}: udp bind failed: {e}");
                    return;
                }
            };
            let task = tokio::spawn(recv_from_target(sock.clone(), dest, tx));
            own = Some((sock, task));
        } else {
            let u = self.user(user).await;
            u.inner.lock().await.conns.insert(dest, (conn, tx));
            cone = Some(u);
        }
        if let Some(b) = m.poll_transmit() {
            if send(&mut wr, &b).await.is_err() {
                return;
            }
        }
        let mut buf = vec![0u8; 16 * 1024];
        let idle = self.cfg.udp_idle;
        loop {
            // Datagrams that came with the header are already in the machine's queue,
            // so events are drained before waiting.
            let mut up = Vec::new();
            while let Some(e) = m.poll_event() {
                if let Event::Datagram(d) = e {
                    up.push(d);
                }
            }
            for d in up {
                if let Some((sock, _)) = &own {
                    if let Err(e) = sock.send_to(&d, dest).await {
                        tracing::debug!("vless server {id}: udp to {dest}: {e}");
                    }
                } else if let Some(u) = &cone {
                    u.send(&id, dest, &d).await;
                }
            }
            if let Some(b) = m.poll_transmit() {
                if send(&mut wr, &b).await.is_err() {
                    break;
                }
            }
            if m.is_done() {
                break;
            }
            tokio::select! {
                biased;
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => m.handle_eof(self.now()),
                    Ok(n) => m.handle_input(self.now(), &buf[..n]),
                },
                d = down.recv() => match d {
                    Some(d) => {
                        if let Err(e) = m.send_datagram(&d) {
                            tracing::debug!("vless server {id}: downlink datagram dropped: {e}");
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep(idle), if own.is_some() => {
                    tracing::debug!("vless server {id}: udp idle; closing");
                    break;
                }
            }
        }
        if let Some((_, task)) = own {
            task.abort();
        }
        if let Some(u) = cone {
            let mut g = u.inner.lock().await;
            if g.conns.get(&dest).is_some_and(|(c, _)| *c == conn) {
                g.conns.remove(&dest);
            }
        }
    }

    async fn crumfurs<R, W>(
        self: &Arc<Self>,
        id: String,
        conn: u64,
        mut m: ServerSession,
        mut rd: R,
        mut wr: W,
        user: [u8; 16],
    ) where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let u = self.user(user).await;
        let (tx, mut rx) = mpsc::channel::<Umfurs>(self.cfg.queue);
        u.inner.lock().await.crumfurs = Some((conn, tx));
        tracing::info!(
            "vless server {id}: CRUMFURS channel of user {} open",
            uuid_text(&user)
        );
        if let Some(b) = m.poll_transmit() {
            if send(&mut wr, &b).await.is_err() {
                return;
            }
        }
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                biased;
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => {
                        m.handle_eof(self.now());
                        break;
                    }
                    Ok(_) => {} // nothing is expected uplink
                },
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        if let Err(e) = m.send_umfurs(&msg) {
                            tracing::debug!("vless server {id}: UMFURS dropped: {e}");
                        }
                    }
                    None => break,
                },
            }
            if let Some(b) = m.poll_transmit() {
                if send(&mut wr, &b).await.is_err() {
                    break;
                }
            }
        }
        let mut g = u.inner.lock().await;
        if g.crumfurs.as_ref().is_some_and(|(c, _)| *c == conn) {
            g.crumfurs = None;
        }
    }
}

fn unspecified_for(dest: SocketAddr) -> SocketAddr {
    if dest.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// v0: datagrams from the target only, to the connection.
async fn recv_from_target<U: UdpSock>(sock: Arc<U>, target: SocketAddr, tx: mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) if from == target => {
                if tx.try_send(Bytes::copy_from_slice(&buf[..n])).is_err() && tx.is_closed() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("vless server: udp recv: {e}"),
        }
    }
}

/// One user's full-cone UDP state (v1).
struct UserUdp<N: Net> {
    net: N,
    origin: tokio::time::Instant,
    inner: Mutex<UserInner<N>>,
}

struct UserInner<N: Net> {
    table: ConeTable,
    socks: BTreeMap<SockId, (Arc<N::Udp>, JoinHandle<()>)>,
    /// Command-2 connections by their target: where that target's datagrams go.
    conns: BTreeMap<SocketAddr, (u64, mpsc::Sender<Bytes>)>,
    /// The user's CRUMFURS channel: where every other source's datagrams go.
    crumfurs: Option<(u64, mpsc::Sender<Umfurs>)>,
}

impl<N: Net> UserUdp<N> {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Sends one datagram to `dest` from the socket the table picks.
    async fn send(self: &Arc<Self>, id: &str, dest: SocketAddr, d: &[u8]) {
        let sock = {
            let mut g = self.inner.lock().await;
            let now = self.now();
            match g.table.route(now, dest) {
                Route::Existing(s) => g.socks.get(&s).map(|(u, _)| u.clone()),
                Route::Dial(s) => match self.net.bind_udp(unspecified_for(dest)).await {
                    Ok(u) => {
                        let u = Arc::new(u);
                        let task = tokio::spawn(cone_recv(Arc::downgrade(self), s, u.clone()));
                        g.socks.insert(s, (u.clone(), task));
                        Some(u)
                    }
                    Err(e) => {
                        tracing::warn!("vless server {id}: udp bind failed: {e}");
                        g.table.dial_failed(now, s);
                        None
                    }
                },
                Route::Full => {
                    tracing::warn!(
                        "vless server {id}: user's UDP table full; datagram to {dest} dropped"
                    );
                    None
                }
            }
        };
        if let Some(u) = sock {
            if let Err(e) = u.send_to(d, dest).await {
                tracing::debug!("vless server {id}: udp to {dest}: {e}");
            }
        }
    }
}

/// Reads one table socket: learns every source, and hands each datagram to the
/// connection for its source or, failing that, to the CRUMFURS channel.
async fn cone_recv<N: Net>(user: Weak<UserUdp<N>>, id: SockId, sock: Arc<N::Udp>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("vless server: udp recv: {e}");
                continue;
            }
        };
        let Some(u) = user.upgrade() else { return };
        let mut g = u.inner.lock().await;
        let now = u.now();
        if g.table.learn(now, id, from) == Learn::Full {
            tracing::debug!("vless server: UDP table full; {from} not mapped");
        }
        let payload = Bytes::copy_from_slice(&buf[..n]);
        if let Some((_, tx)) = g.conns.get(&from) {
            if tx.try_send(payload).is_err() {
                tracing::debug!("vless server: connection for {from} busy; datagram dropped");
            }
        } else if let Some((_, tx)) = &g.crumfurs {
            if payload.is_empty() {
                continue; // UMFURS cannot carry an empty datagram
            }
            if tx.try_send(Umfurs { from, payload }).is_err() {
                tracing::debug!("vless server: CRUMFURS busy; datagram from {from} dropped");
            }
        } else {
            tracing::debug!("vless server: no CRUMFURS channel; datagram from {from} dropped");
        }
    }
}

/// Expires the user's mappings and closes sockets no mapping uses.
async fn janitor<N: Net>(user: Weak<UserUdp<N>>) {
    loop {
        let next = {
            let Some(u) = user.upgrade() else { return };
            let mut g = u.inner.lock().await;
            let now = u.now();
            for s in g.table.handle_timeout(now) {
                if let Some((_, task)) = g.socks.remove(&s) {
                    task.abort();
                }
            }
            let wait = g
                .table
                .poll_timeout()
                .map(|t| t.saturating_sub(now))
                .unwrap_or(Duration::from_secs(1));
            wait.clamp(Duration::from_millis(10), Duration::from_secs(1))
        };
        tokio::time::sleep(next).await;
    }
}

/// Serves VLESS on a listener the caller bound (and keeps) until accepting fails.
pub async fn serve<N: Net>(
    net: N,
    listener: N::Listener,
    kind: CarrierKind,
    tls: Option<Arc<ServerTls>>,
    cfg: ServerConfig,
    trace: Trace,
    name: String,
) -> io::Result<()> {
    let _ = TcpListen::local_addr(&listener)?;
    Server::new(net, cfg, trace)
        .serve(listener, kind, tls, name)
        .await
}
