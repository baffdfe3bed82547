//! The client role over any [`Net`]: a SOCKS5 front (no authentication) whose CONNECT
//! requests become VLESS command-1 connections and whose UDP ASSOCIATE datagrams become
//! command-2 connections, one per destination. A v1 client first opens the CRUMFURS
//! channel for the association (and waits for its 0x14), so datagrams from sources the
//! application never contacted reach it too, each with its true source address in the
//! SOCKS5 UDP header; the application can answer such a source, and the server sends the
//! answer from the socket the source wrote to (full cone).
//!
//! The request header goes out at once with whatever the application sent; the client
//! never waits for the response header (it skips it when it comes).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::{BoxStream, CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, TcpConn, TcpListen, Trace, UdpSock};
use tunnelbed_socks5::handshake::{self, unspecified};
use tunnelbed_socks5::{Addr, Command as SocksCommand, Reply, UdpHeader};

use crate::client::{ClientSession, Event};
use crate::relay::{one_way, relay_carrier, send};
use crate::wire::{Address, Command, Request, Version};
use tunnelbed_netio::idle::{self, Activity};

/// Most destinations one UDP association may have (one connection each).
pub const MAX_UDP_DESTINATIONS: usize = 256;

/// Settings of a client.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's carrier URL.
    pub server: CarrierUrl,
    /// Our user id.
    pub uuid: [u8; 16],
    /// Version spoken (v1 adds CRUMFURS for UDP).
    pub version: Version,
    /// TLS settings for tls:// and wss://.
    pub tls: Arc<ClientTls>,
    /// How long opening a carrier (and, v1, the CRUMFURS answer) may take.
    pub connect_timeout: Duration,
    /// Datagrams queued toward one destination before more are dropped.
    pub queue: usize,
    /// A TCP relay that moved no byte either way this long is ended and the application
    /// reset (v2ray's `connIdle`, 300 s by default; see [`crate::idle`]).
    pub idle_timeout: Duration,
}

impl ClientConfig {
    /// Defaults for `server`, `uuid` and `version`.
    pub fn new(server: CarrierUrl, uuid: [u8; 16], version: Version) -> Self {
        Self {
            server,
            uuid,
            version,
            tls: Arc::new(ClientTls::insecure()),
            connect_timeout: Duration::from_secs(10),
            queue: 256,
            idle_timeout: idle::DEFAULT_IDLE,
        }
    }
}

/// A running client.
pub struct Client<N: Net> {
    net: N,
    cfg: ClientConfig,
    trace: Trace,
    origin: tokio::time::Instant,
    next: AtomicU64,
}

fn to_vless(a: &Addr) -> Address {
    match a {
        Addr::Ip(s) => Address::Ip(*s),
        Addr::Domain(h, p) => Address::Domain(h.clone(), *p),
    }
}

impl<N: Net> Client<N> {
    /// A client over `net`.
    pub fn new(net: N, cfg: ClientConfig, trace: Trace) -> Arc<Self> {
        Arc::new(Self {
            net,
            cfg,
            trace,
            origin: tokio::time::Instant::now(),
            next: AtomicU64::new(0),
        })
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Serves SOCKS5 clients on `listener` until it fails.
    pub async fn serve_socks(self: Arc<Self>, listener: N::Listener) -> io::Result<()> {
        loop {
            let (s, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("vless client: SOCKS5 accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.handle_client(s).await {
                    tracing::debug!("vless client: SOCKS5 client {peer}: {e}");
                }
            });
        }
    }

    /// Opens a carrier and a machine for `command` to `target`.
    async fn open(
        &self,
        command: Command,
        target: Option<Address>,
    ) -> io::Result<(BoxStream, ClientSession)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let req = Request {
            version: self.cfg.version,
            uuid: self.cfg.uuid,
            addons: Vec::new(),
            command,
            target,
        };
        let mut m = ClientSession::new(self.now(), &req, self.trace.clone(), format!("u{n}"))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let c = tokio::time::timeout(
            self.cfg.connect_timeout,
            tunnelbed_carrier::connect(&self.net, &self.cfg.server, &self.cfg.tls),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to the server"))
        .and_then(|r| r);
        match c {
            Ok(c) => Ok((c, m)),
            Err(e) => {
                // No carrier: the machine ends here (no response will ever come).
                m.handle_eof(self.now());
                Err(e)
            }
        }
    }

    /// Serves one SOCKS5 client connection.
    pub async fn handle_client(self: Arc<Self>, mut s: N::Stream) -> io::Result<()> {
        let req = handshake::accept(&mut s).await?;
        match req.command {
            SocksCommand::Connect => {
                let (carrier, mut m) =
                    match self.open(Command::Tcp, Some(to_vless(&req.addr))).await {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = handshake::reply(&mut s, Reply::GeneralFailure, &unspecified())
                                .await;
                            return Err(e);
                        }
                    };
                m.send(&req.early_data);
                handshake::reply(&mut s, Reply::Succeeded, &unspecified()).await?;
                self.relay(s, carrier, m).await
            }
            SocksCommand::UdpAssociate => self.udp_associate(s, req.addr).await,
            SocksCommand::Bind => {
                handshake::reply(&mut s, Reply::CommandNotSupported, &unspecified()).await?;
                Ok(())
            }
        }
    }

    async fn relay(
        &self,
        mut app: N::Stream,
        carrier: BoxStream,
        mut m: ClientSession,
    ) -> io::Result<()> {
        let activity = Activity::new();
        let r = idle::bounded(
            &activity,
            self.cfg.idle_timeout,
            self.relay_inner(&mut app, carrier, &mut m, &activity),
        )
        .await;
        // However the relay ended (it runs outside the machine once open), the machine
        // records the end in the trace.
        m.handle_eof(self.now());
        if r.is_err() {
            // A broken carrier (a reset, a crashed server) must not look like a clean
            // end to the application: it gets a reset.
            app.abort();
        }
        r
    }

    async fn relay_inner(
        &self,
        app: &mut N::Stream,
        carrier: BoxStream,
        m: &mut ClientSession,
        activity: &Activity,
    ) -> io::Result<()> {
        let (ard, mut awr) = tokio::io::split(activity.wrap(app));
        let (mut crd, mut cwr) = tokio::io::split(activity.wrap(carrier));
        if let Some(h) = m.poll_transmit() {
            send(&mut cwr, &h).await?;
        }
        // Skip the response header (VLESS never waits for it: the application's bytes
        // may go first, so the uplink runs meanwhile), then relay.
        let mut buf = vec![0u8; 16 * 1024];
        let mut ard = ard;
        let mut pending: Option<Vec<u8>> = None;
        let mut app_done = false;
        while !m.is_open() {
            tokio::select! {
                biased;
                r = crd.read(&mut buf) => {
                    let n = r?;
                    if n == 0 {
                        m.handle_eof(self.now());
                    } else {
                        m.handle_input(self.now(), &buf[..n]);
                    }
                    while let Some(e) = m.poll_event() {
                        match e {
                            Event::Data(d) => send(&mut awr, &d).await?,
                            Event::Failed(e) => {
                                return Err(io::Error::new(io::ErrorKind::InvalidData, e))
                            }
                            _ => {}
                        }
                    }
                }
                r = read_some(&mut ard), if pending.is_none() && !app_done => {
                    let b = r?;
                    if b.is_empty() {
                        app_done = true;
                    } else {
                        pending = Some(b);
                    }
                }
            }
            if let Some(b) = pending.take() {
                send(&mut cwr, &b).await?;
            }
        }
        let half_close = matches!(self.cfg.server.kind, CarrierKind::Tcp | CarrierKind::Tls);
        let r = if app_done {
            // The application already ended its side.
            if half_close {
                cwr.shutdown().await?;
            }
            let r = one_way(crd, awr).await.map(|_| ());
            if !half_close {
                let _ = cwr.shutdown().await;
            }
            r
        } else {
            relay_carrier(ard, awr, crd, cwr, half_close, None).await
        };
        r
    }

    async fn udp_associate(self: Arc<Self>, mut ctl: N::Stream, from: Addr) -> io::Result<()> {
        let local_ip = ctl.local_addr()?.ip();
        let sock = match self.net.bind_udp(SocketAddr::new(local_ip, 0)).await {
            Ok(u) => Arc::new(u),
            Err(e) => {
                let _ = handshake::reply(&mut ctl, Reply::GeneralFailure, &unspecified()).await;
                return Err(e);
            }
        };
        let (back_tx, mut back_rx) = mpsc::channel::<(Addr, Bytes)>(self.cfg.queue);
        // v1: the CRUMFURS channel first, established before the application may send.
        let crumfurs = if self.cfg.version == Version::V1 {
            match self.open_crumfurs().await {
                Ok((rd, wr, m)) => Some(tokio::spawn(read_crumfurs(
                    rd,
                    wr,
                    m,
                    back_tx.clone(),
                    self.origin,
                ))),
                Err(e) => {
                    tracing::warn!("vless client: CRUMFURS channel failed: {e}");
                    let _ = handshake::reply(&mut ctl, Reply::GeneralFailure, &unspecified()).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let bound = sock.local_addr()?;
        handshake::reply(&mut ctl, Reply::Succeeded, &Addr::Ip(bound)).await?;
        let mut client: Option<SocketAddr> = match from {
            Addr::Ip(a) if !a.ip().is_unspecified() && a.port() != 0 => Some(a),
            _ => None,
        };
        let mut senders: BTreeMap<Addr, mpsc::Sender<Bytes>> = BTreeMap::new();
        let mut buf = vec![0u8; 65_535];
        let mut ctl_buf = [0u8; 64];
        let r = loop {
            tokio::select! {
                biased;
                r = ctl.read(&mut ctl_buf) => match r {
                    Ok(0) | Err(_) => break Ok(()),
                    Ok(_) => {}
                },
                m = back_rx.recv() => {
                    let Some((src, b)) = m else { continue };
                    let Some(c) = client else { continue };
                    let mut out = BytesMut::with_capacity(b.len() + 32);
                    if (UdpHeader { addr: src }).encode(&b, &mut out).is_ok() {
                        let _ = sock.send_to(&out, c).await;
                    }
                },
                r = sock.recv_from(&mut buf) => {
                    let (n, src) = match r {
                        Ok(x) => x,
                        Err(e) => break Err(e),
                    };
                    if *client.get_or_insert(src) != src {
                        continue;
                    }
                    let Ok(Some((h, payload))) = UdpHeader::decode(&buf[..n]) else {
                        tracing::debug!("vless client: dropped a malformed or fragmented SOCKS5 datagram");
                        continue;
                    };
                    if !senders.contains_key(&h.addr) {
                        if senders.len() >= MAX_UDP_DESTINATIONS {
                            tracing::warn!("vless client: association over {MAX_UDP_DESTINATIONS} destinations; dropping");
                            continue;
                        }
                        let (tx, rx) = mpsc::channel::<Bytes>(self.cfg.queue);
                        tokio::spawn(self.clone().udp_flow(h.addr.clone(), rx, back_tx.clone()));
                        senders.insert(h.addr.clone(), tx);
                    }
                    let tx = &senders[&h.addr];
                    if tx.try_send(Bytes::copy_from_slice(payload)).is_err() {
                        tracing::debug!("vless client: flow to {} busy or gone; datagram dropped", h.addr);
                        if tx.is_closed() {
                            senders.remove(&h.addr);
                        }
                    }
                }
            }
        };
        if let Some(t) = crumfurs {
            t.abort();
        }
        r
    }

    #[allow(clippy::type_complexity)]
    async fn open_crumfurs(
        &self,
    ) -> io::Result<(
        tokio::io::ReadHalf<BoxStream>,
        tokio::io::WriteHalf<BoxStream>,
        ClientSession,
    )> {
        let (c, mut m) = self.open(Command::Crumfurs, None).await?;
        let (mut rd, mut wr) = tokio::io::split(c);
        if let Some(h) = m.poll_transmit() {
            send(&mut wr, &h).await?;
        }
        let mut b = [0u8; 1];
        let wait = async {
            while !m.is_open() {
                let n = rd.read(&mut b).await?;
                if n == 0 {
                    m.handle_eof(self.now());
                } else {
                    m.handle_input(self.now(), &b[..n]);
                }
                if let Some(Event::Failed(e)) = m.poll_event() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            Ok(())
        };
        tokio::time::timeout(self.cfg.connect_timeout, wait)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no CRUMFURS answer"))??;
        Ok((rd, wr, m))
    }

    /// One destination's command-2 connection.
    async fn udp_flow(
        self: Arc<Self>,
        dest: Addr,
        mut rx: mpsc::Receiver<Bytes>,
        back: mpsc::Sender<(Addr, Bytes)>,
    ) {
        let (c, mut m) = match self.open(Command::Udp, Some(to_vless(&dest))).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("vless client: udp flow to {dest}: {e}");
                return;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(c);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(b) = m.poll_transmit() {
                if send(&mut wr, &b).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                biased;
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => m.handle_eof(self.now()),
                    Ok(n) => m.handle_input(self.now(), &buf[..n]),
                },
                d = rx.recv() => match d {
                    Some(d) => {
                        if let Err(e) = m.send_datagram(&d) {
                            tracing::debug!("vless client: datagram to {dest} dropped: {e}");
                        }
                    }
                    None => return,
                },
            }
            while let Some(e) = m.poll_event() {
                match e {
                    Event::Datagram(d) => {
                        let sent = back.send((dest.clone(), d)).await;
                        if sent.is_err() {
                            return;
                        }
                    }
                    Event::Failed(e) => {
                        tracing::debug!("vless client: udp flow to {dest}: {e}");
                        return;
                    }
                    Event::Closed => return,
                    _ => {}
                }
            }
        }
    }
}

/// One read (an empty vector at the end of input).
async fn read_some<R: AsyncRead + Unpin>(rd: &mut R) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; 16 * 1024];
    let n = rd.read(&mut b).await?;
    b.truncate(n);
    Ok(b)
}

/// Reads UMFURS messages and hands each to the association with its source.
/// `_wr` is held so the channel stays open while it is read.
async fn read_crumfurs<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    _wr: W,
    mut m: ClientSession,
    back: mpsc::Sender<(Addr, Bytes)>,
    origin: tokio::time::Instant,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => m.handle_eof(origin.elapsed()),
            Ok(n) => m.handle_input(origin.elapsed(), &buf[..n]),
        }
        while let Some(e) = m.poll_event() {
            match e {
                Event::Umfurs { from, payload } => {
                    let sent = back.send((Addr::Ip(from), payload)).await;
                    if sent.is_err() {
                        return;
                    }
                }
                Event::Failed(e) => {
                    tracing::warn!("vless client: CRUMFURS channel: {e}");
                    return;
                }
                Event::Closed => {
                    tracing::warn!("vless client: the server closed the CRUMFURS channel");
                    return;
                }
                _ => {}
            }
        }
    }
}

/// Serves SOCKS5 on a listener the caller bound (and keeps) until accepting fails.
pub async fn serve_socks<N: Net>(
    net: N,
    listener: N::Listener,
    cfg: ClientConfig,
    trace: Trace,
) -> io::Result<()> {
    let _ = TcpListen::local_addr(&listener)?;
    Client::new(net, cfg, trace).serve_socks(listener).await
}
