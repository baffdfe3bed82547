//! What the pong scenarios share: the remote and local hosts (pong's own `serve`, `Pool`
//! and SOCKS5 front), a target host whose behaviour each stream chooses in its first
//! bytes, a SOCKS5 application client, socket gauges that prove nothing is left open,
//! and a check of the transition trace for streams that never ended.
//!
//! Topology: `app` -> SOCKS5 -> `local` (front + pool) -> tcp carrier -> `remote` ->
//! `target` (TCP on [`TARGET_PORT`], UDP echo on [`ECHO_PORT`]; nothing listens on
//! [`CLOSED_PORT`]).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tunnelbed_carrier::http3::{H3Listener, QuicSeed};
use tunnelbed_carrier::tls::{ClientTls, ServerTls};
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, TcpConn, TcpListen, Trace, Transition, UdpSock};
use tunnelbed_pong::pool::{Pool, PoolConfig, PoolStats};
use tunnelbed_pong::remote::RemoteConfig;
use tunnelbed_socks5::handshake;
use tunnelbed_socks5::{Addr, UdpHeader};

use crate::clock::now;
use crate::ledger::FlowLedger;
use crate::scenarios::fixture::settle;
use crate::simnet::{any, SimWorld};

/// The client id the local sends and the remote allows.
pub const CLIENT_ID: [u8; 16] = *b"tunnelbed-sim-01";
/// Where the remote listens for carriers.
pub const REMOTE_PORT: u16 = 7001;
/// Where the local's SOCKS5 front listens.
pub const SOCKS_PORT: u16 = 1080;
/// The target's TCP service.
pub const TARGET_PORT: u16 = 8000;
/// The target's UDP echo.
pub const ECHO_PORT: u16 = 8001;
/// A port nothing listens on (dials fail with "connection refused").
pub const CLOSED_PORT: u16 = 8002;
/// A name the simulation does not know (dials fail with "host unreachable").
pub const UNKNOWN_HOST: &str = "nowhere.invalid";

pub use crate::ledger::payload;

// ---- socket gauges ------------------------------------------------------------------

/// Live sockets of one host, counted by a [`Gauged`] net: each count goes up when the
/// socket is made and down when it is dropped (a crash drops them too).
#[derive(Clone, Default, Debug)]
pub struct Gauges {
    /// TCP connections accepted (carriers, at the remote).
    pub accepted: Arc<AtomicI64>,
    /// TCP connections dialed (targets, at the remote).
    pub dialed: Arc<AtomicI64>,
    /// UDP sockets bound (relay streams, at the remote).
    pub udp: Arc<AtomicI64>,
}

impl Gauges {
    /// (accepted, dialed, udp) now.
    pub fn get(&self) -> (i64, i64, i64) {
        (
            self.accepted.load(Ordering::SeqCst),
            self.dialed.load(Ordering::SeqCst),
            self.udp.load(Ordering::SeqCst),
        )
    }
}

struct Gauge(Arc<AtomicI64>);

impl Gauge {
    fn new(g: &Arc<AtomicI64>) -> Self {
        g.fetch_add(1, Ordering::SeqCst);
        Self(g.clone())
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A [`Net`] that counts the sockets it hands out in [`Gauges`].
#[derive(Clone)]
pub struct Gauged<N> {
    inner: N,
    gauges: Gauges,
}

impl<N> Gauged<N> {
    /// Wraps `inner`.
    pub fn new(inner: N, gauges: Gauges) -> Self {
        Self { inner, gauges }
    }
}

/// A counted TCP stream.
pub struct GaugedStream<S> {
    inner: S,
    _g: Gauge,
}

impl<S: AsyncRead + Unpin> AsyncRead for GaugedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GaugedStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: TcpConn> TcpConn for GaugedStream<S> {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
    fn abort(self) {
        self.inner.abort();
    }
    fn set_unacked_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.inner.set_unacked_timeout(timeout)
    }
}

/// A listener whose accepted streams are counted.
pub struct GaugedListener<L> {
    inner: L,
    gauge: Arc<AtomicI64>,
}

impl<L: TcpListen> TcpListen for GaugedListener<L> {
    type Stream = GaugedStream<L::Stream>;
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, a) = self.inner.accept().await?;
        Ok((
            GaugedStream {
                inner: s,
                _g: Gauge::new(&self.gauge),
            },
            a,
        ))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A counted UDP socket.
pub struct GaugedUdp<U> {
    inner: U,
    _g: Gauge,
}

impl<U: UdpSock> UdpSock for GaugedUdp<U> {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.inner.send_to(buf, target).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl<N: Net> Net for Gauged<N> {
    type Udp = GaugedUdp<N::Udp>;
    type Stream = GaugedStream<N::Stream>;
    type Listener = GaugedListener<N::Listener>;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::Udp> {
        let u = self.inner.bind_udp(addr).await?;
        Ok(GaugedUdp {
            inner: u,
            _g: Gauge::new(&self.gauges.udp),
        })
    }
    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let s = self.inner.connect_tcp(addr).await?;
        Ok(GaugedStream {
            inner: s,
            _g: Gauge::new(&self.gauges.dialed),
        })
    }
    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        let l = self.inner.listen_tcp(addr).await?;
        Ok(GaugedListener {
            inner: l,
            gauge: self.gauges.accepted.clone(),
        })
    }
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.inner.resolve(host, port).await
    }
    fn data_fault(&self) -> Option<Arc<tunnelbed_netio::DataFault>> {
        self.inner.data_fault()
    }
    fn quic_seed(&self) -> Option<[u8; 32]> {
        self.inner.quic_seed()
    }
}

// ---- remote and local -----------------------------------------------------------------

/// The remote's settings in the scenarios.
pub fn remote_config() -> RemoteConfig {
    RemoteConfig {
        allowed: vec![CLIENT_ID],
        dial_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(5),
        udp_idle: Duration::from_secs(30),
        idle_timeout: REMOTE_IDLE,
        ..RemoteConfig::default()
    }
}

/// The remote's idle timeout in the scenarios: a stream whose target never answers (a
/// connection the target lost, see [`Overflow::Lose`]) fails after this long.
pub const REMOTE_IDLE: Duration = Duration::from_secs(20);

/// The local's idle timeout in the scenarios: a SOCKS5 stream silent this long fails
/// from the local's side. Later than [`REMOTE_IDLE`], so a live remote's bound (rst 6)
/// comes first; this one ends only streams whose remote cannot send anything (its host
/// crashed and, over real TCP, nothing resets the carrier), well inside the
/// applications' own 60 s bound.
pub const LOCAL_IDLE: Duration = Duration::from_secs(30);

/// Runs pong's remote on host `host` (call inside the host closure), its sockets counted
/// in `gauges`; trace ids are `{name}/c{n}`.
pub async fn run_remote(
    world: SimWorld,
    host: &str,
    name: String,
    gauges: Gauges,
) -> Result<(), Box<dyn std::error::Error>> {
    // First, so it is dropped last when the remote crashes: its streams then close in
    // a fixed order (the run stays deterministic).
    let _crash = world.crash_guard(host);
    let net = Gauged::new(world.net(host), gauges);
    let listener = net.listen_tcp(any(REMOTE_PORT)).await?;
    tunnelbed_pong::remote::serve(
        net,
        listener,
        CarrierKind::Tcp,
        None,
        Arc::new(remote_config()),
        world.trace.clone(),
        name,
    )
    .await?;
    Ok(())
}

/// Runs pong's remote over `h3://` on host `host`: a QUIC endpoint on UDP
/// [`REMOTE_PORT`] with a certificate and TLS randomness from `seed`, QUIC's from the
/// world's QUIC seed (see `SimWorld::set_quic_seed`), so runs replay. Each carrier (QUIC
/// connection) counts in `gauges.accepted` until its pong connection ended, as a TCP
/// carrier does; the QUIC socket itself is not counted (it lives as long as the remote).
pub async fn run_remote_h3(
    world: SimWorld,
    host: &str,
    name: String,
    gauges: Gauges,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let _crash = world.crash_guard(host);
    let plain = world.net(host);
    let tls = ServerTls::seeded(&[host.to_string()], seed32(seed, 1))?;
    let quic = QuicSeed(plain.quic_seed());
    let listener = H3Listener::bind(&plain, any(REMOTE_PORT), &tls, &quic).await?;
    let accepted = gauges.accepted.clone();
    let net = Gauged::new(plain, gauges);
    let cfg = Arc::new(RemoteConfig {
        header_timeout: H3_HANDSHAKE,
        ..remote_config()
    });
    // `tunnelbed_pong::remote::serve_h3`'s loop, with the carrier gauge.
    for n in 0u64.. {
        let incoming = listener.accept().await?;
        let gauge = Gauge::new(&accepted);
        let (net, cfg, trace) = (net.clone(), cfg.clone(), world.trace.clone());
        let id = format!("{name}/c{n}");
        tokio::spawn(async move {
            let _gauge = gauge;
            let Ok(Ok(carrier)) = tokio::time::timeout(cfg.header_timeout, incoming.finish()).await
            else {
                return;
            };
            tunnelbed_pong::remote::handle_carrier(net, Box::new(carrier), cfg, trace, id).await;
        });
    }
    Ok(())
}

/// 32 seed bytes for purpose `n` of a run with `seed`.
pub fn seed32(seed: u64, n: u64) -> [u8; 32] {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ n.rotate_left(32));
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b
}

/// The local's TLS for `h3://` runs: trusts anything (the remote's certificate is made
/// per run), its randomness from `seed`.
pub fn client_tls_h3(seed: u64) -> Arc<ClientTls> {
    Arc::new(ClientTls::insecure_seeded(seed32(seed, 2)).expect("ring supports TLS 1.3"))
}

/// How long an `h3://` carrier may take to come up (the local's connect timeout, the
/// remote's header timeout): QUIC's handshake crosses the lossy link itself (an ideal TCP
/// connect does not), and each lost handshake packet costs a probe timeout that doubles
/// (1 s, 2 s, 4 s, ...).
pub const H3_HANDSHAKE: Duration = Duration::from_secs(15);

/// [`pool_config`] over `h3://remote:REMOTE_PORT/`, with [`H3_HANDSHAKE`] to connect.
pub fn pool_config_h3(max_streams: usize, idle: Duration) -> PoolConfig {
    let mut cfg = pool_config(max_streams, idle);
    cfg.connect_timeout = H3_HANDSHAKE;
    cfg.remote = format!("h3://remote:{REMOTE_PORT}/")
        .parse()
        .expect("a valid carrier url");
    cfg
}

/// Where the local's pool is published for the checks (set when the local starts).
pub type PoolSlot<N> = Arc<Mutex<Option<Arc<Pool<N>>>>>;

/// The net the local host uses.
pub type LocalNet = crate::simnet::HostNet;

/// The local's pool settings: `max_streams` per carrier, idle carriers closed after `idle`.
pub fn pool_config(max_streams: usize, idle: Duration) -> PoolConfig {
    let url: CarrierUrl = format!("tcp://remote:{REMOTE_PORT}")
        .parse()
        .expect("a valid carrier url");
    let mut cfg = PoolConfig::new(url, CLIENT_ID);
    cfg.max_streams_per_conn = max_streams;
    cfg.idle_close = idle;
    cfg.idle_timeout = LOCAL_IDLE;
    cfg.connect_timeout = Duration::from_secs(3);
    cfg
}

/// Runs pong's local on host `host`: the pool (with its maintenance) and the SOCKS5 front
/// on [`SOCKS_PORT`]. The pool is published in `slot`.
pub async fn run_local(
    world: SimWorld,
    host: &str,
    cfg: PoolConfig,
    slot: PoolSlot<LocalNet>,
) -> Result<(), Box<dyn std::error::Error>> {
    run_local_with(world, host, cfg, slot, Arc::new(ClientTls::insecure())).await
}

/// [`run_local`] with the carrier's client TLS settings `tls`.
pub async fn run_local_with(
    world: SimWorld,
    host: &str,
    cfg: PoolConfig,
    slot: PoolSlot<LocalNet>,
    tls: Arc<ClientTls>,
) -> Result<(), Box<dyn std::error::Error>> {
    let net = world.net(host);
    let pool = Arc::new(Pool::new(
        net.clone(),
        cfg,
        tls,
        world.trace.clone(),
        "local".into(),
    ));
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(pool.clone());
    tokio::spawn(pool.clone().run_maintenance());
    let listener = net.listen_tcp(any(SOCKS_PORT)).await?;
    tunnelbed_pong::local::serve_socks(net, listener, pool).await?;
    Ok(())
}

/// The pool in `slot` (panics before the local started: scenarios start it first).
pub fn pool_of<N: Net>(slot: &PoolSlot<N>) -> Option<Arc<Pool<N>>> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Waits (at most `limit`, see [`settle`]) until the pool has no live stream and no
/// carrier and the remote's `gauges` are all zero. Returns what the last look saw of
/// the pool and of the remote, and how long it took.
pub async fn drained<N: Net>(
    pool: &Pool<N>,
    remote: &Gauges,
    limit: Duration,
) -> (PoolStats, (i64, i64, i64), Duration) {
    let ((st, g), took) = settle(limit, || async {
        let st = pool.stats().await;
        let g = remote.get();
        let done = st.live_streams == 0 && st.connections == 0 && g == (0, 0, 0);
        (done, (st, g))
    })
    .await;
    (st, g, took)
}

// ---- the target -----------------------------------------------------------------------

/// What a stream asks of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetMode {
    /// Read the request, answer, finish (in the order of [`Order`]), after a think time
    /// of the header's `pace_ms`.
    Serve(Order),
    /// Reset the connection right after the header (it leaves request bytes unread).
    Reset,
    /// Send the answer at once and read the request until it breaks off (the application
    /// aborts).
    Abortee,
    /// Read the request, then send the answer in 2 KiB pieces every `pace_ms` (a long
    /// download), and finish.
    Trickle,
    /// HTTP/1.0 style: read exactly the header and the request (not waiting for the
    /// application's finish), answer after the think time `pace_ms`, and close the
    /// connection right after the answer.
    Http10,
}

/// In which order the target reads the request and writes the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Read the whole request (to the application's finish), then answer and finish.
    RequestFirst,
    /// Answer and finish first (a half close towards the application), then read.
    AnswerFirst,
    /// Both at once.
    Both,
}

impl TargetMode {
    fn code(self) -> u8 {
        match self {
            TargetMode::Serve(Order::RequestFirst) => 0,
            TargetMode::Serve(Order::AnswerFirst) => 1,
            TargetMode::Serve(Order::Both) => 2,
            TargetMode::Reset => 3,
            TargetMode::Abortee => 4,
            TargetMode::Trickle => 5,
            TargetMode::Http10 => 6,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => TargetMode::Serve(Order::RequestFirst),
            1 => TargetMode::Serve(Order::AnswerFirst),
            2 => TargetMode::Serve(Order::Both),
            3 => TargetMode::Reset,
            4 => TargetMode::Abortee,
            5 => TargetMode::Trickle,
            6 => TargetMode::Http10,
            _ => return None,
        })
    }
}

/// Bytes every stream starts with.
pub const HEADER: usize = 16;

/// The header a stream starts with: its tag, request and answer lengths, what the target
/// does, whether the target reads slowly, and its pace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Names the stream's flows (`s{tag}-req`, `s{tag}-resp`).
    pub tag: u32,
    /// Request bytes after the header.
    pub req: u32,
    /// Answer bytes.
    pub resp: u32,
    /// Target behaviour.
    pub mode: TargetMode,
    /// The target reads in small pieces with pauses.
    pub slow_target: bool,
    /// The target keeps this stream's bytes out of the ledger (a stream expected to
    /// fail, or whose outcome may go either way).
    pub untracked: bool,
    /// Think time before answering ([`TargetMode::Serve`]) or the pause between pieces
    /// ([`TargetMode::Trickle`]), in milliseconds.
    pub pace_ms: u16,
}

impl Header {
    /// Wire form.
    pub fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&self.tag.to_be_bytes());
        h[4..8].copy_from_slice(&self.req.to_be_bytes());
        h[8..12].copy_from_slice(&self.resp.to_be_bytes());
        h[12] = self.mode.code();
        h[13] = u8::from(self.slow_target) | (u8::from(self.untracked) << 1);
        h[14..].copy_from_slice(&self.pace_ms.to_be_bytes());
        h
    }

    fn decode(h: &[u8; HEADER]) -> Option<Self> {
        Some(Self {
            tag: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
            req: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            resp: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            mode: TargetMode::from_code(h[12])?,
            slow_target: h[13] & 1 != 0,
            untracked: h[13] & 2 != 0,
            pace_ms: u16::from_be_bytes([h[14], h[15]]),
        })
    }
}

/// The request flow of stream `tag`.
pub fn req_flow(tag: u32) -> String {
    format!("s{tag:03}-req")
}

/// The answer flow of stream `tag`.
pub fn resp_flow(tag: u32) -> String {
    format!("s{tag:03}-resp")
}

/// Request bytes of stream `tag` (the header is not part of them).
pub fn request_body(seed: u64, tag: u32, len: usize) -> Vec<u8> {
    payload(seed, u64::from(tag), len)
}

/// Answer bytes of stream `tag`.
pub fn answer_body(seed: u64, tag: u32, len: usize) -> Vec<u8> {
    payload(seed, 1_000_000 + u64::from(tag), len)
}

/// How the target saw a stream's request end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSaw {
    /// The whole request, then the application's finish.
    Complete,
    /// The application's finish before the whole request (`got` bytes).
    Short(usize),
    /// A read error after `got` bytes.
    Error(usize, String),
    /// The target reset the stream as asked.
    ResetSent,
    /// Still waiting on the request when the run ended, on the connection from `peer` (the
    /// dialer: a proxy's remote end) to `me`: a verdict can ask the run's reset log
    /// whether the dialer reset it and the link lost every copy (see
    /// `proxy_streams::target_resets_lost`).
    Waiting {
        /// The dialer's address.
        peer: SocketAddr,
        /// The target's address.
        me: SocketAddr,
    },
}

/// What the target saw, per stream tag.
pub type TargetLog = Arc<Mutex<BTreeMap<u32, TargetSaw>>>;

/// Reads up to `want` bytes to the end of input, in small pieces with pauses when `slow`.
/// Returns the bytes and whether input ended cleanly (`Err` keeps what arrived).
async fn read_all<R: AsyncRead + Unpin>(
    rd: &mut R,
    slow: bool,
    pause: Duration,
) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; if slow { 2048 } else { 32 * 1024 }];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
        if slow {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Adds the host `target` running [`run_target`] to `sim`.
pub fn host_target(
    sim: &mut turmoil::Sim<'_>,
    world: &SimWorld,
    seed: u64,
    ledger: &FlowLedger,
    log: &TargetLog,
) {
    let (world, ledger, log) = (world.clone(), ledger.clone(), log.clone());
    sim.host("target", move || {
        run_target(world.clone(), "target", seed, ledger.clone(), log.clone())
    });
}

/// Runs the target on host `host`: TCP on [`TARGET_PORT`], UDP echo on [`ECHO_PORT`].
/// Request bytes go to `ledger` (flow `s{tag}-req`, closed when complete); answers are
/// recorded as sent before they are written.
pub async fn run_target(
    world: SimWorld,
    host: &str,
    seed: u64,
    ledger: FlowLedger,
    log: TargetLog,
) -> Result<(), Box<dyn std::error::Error>> {
    let net = world.net(host);
    let udp = net.bind_udp(any(ECHO_PORT)).await?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&buf[..n], from).await;
        }
    });
    let listener = net.listen_tcp(any(TARGET_PORT)).await?;
    loop {
        let (s, _) = listener.accept().await?;
        let ledger = ledger.clone();
        let log = log.clone();
        tokio::spawn(async move {
            serve_target(s, seed, ledger, log).await;
        });
    }
}

async fn serve_target<S: TcpConn>(mut s: S, seed: u64, ledger: FlowLedger, log: TargetLog) {
    let mut h = [0u8; HEADER];
    if s.read_exact(&mut h).await.is_err() {
        return;
    }
    let Some(h) = Header::decode(&h) else {
        return;
    };
    let record = |saw: TargetSaw| {
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h.tag, saw);
    };
    let pause = Duration::from_millis(3 + u64::from(h.tag % 7));
    let pace = Duration::from_millis(u64::from(h.pace_ms));
    let answer = || answer_body(seed, h.tag, h.resp as usize);
    if h.mode != TargetMode::Reset {
        if let (Ok(peer), Ok(me)) = (s.peer_addr(), s.local_addr()) {
            // Replaced by how the request ended; left if the run ends first.
            record(TargetSaw::Waiting { peer, me });
        }
    }
    let judge = |got: &[u8], r: io::Result<()>| match r {
        Ok(()) if got.len() == h.req as usize => TargetSaw::Complete,
        Ok(()) => TargetSaw::Short(got.len()),
        Err(e) => TargetSaw::Error(got.len(), e.to_string()),
    };
    match h.mode {
        TargetMode::Reset => {
            // The request's first bytes arrived with the header and are unread: dropping
            // the socket resets it.
            record(TargetSaw::ResetSent);
            drop(s);
        }
        TargetMode::Abortee => {
            let (mut rd, mut wr) = tokio::io::split(s);
            let body = answer();
            let send = async {
                let _ = wr.write_all(&body).await;
                let _ = wr.shutdown().await;
            };
            let recv = read_all(&mut rd, false, pause);
            let ((), (got, r)) = tokio::join!(send, recv);
            record(judge(&got, r));
        }
        TargetMode::Http10 => {
            let mut got = vec![0u8; h.req as usize];
            let saw = match s.read_exact(&mut got).await {
                Ok(_) => TargetSaw::Complete,
                Err(e) => TargetSaw::Error(0, e.to_string()),
            };
            let complete = saw == TargetSaw::Complete;
            if !h.untracked {
                let flow = req_flow(h.tag);
                ledger.received(&flow, if complete { &got[..] } else { &[] });
                if complete {
                    ledger.close(&flow);
                }
            }
            record(saw);
            if !complete {
                return;
            }
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            let body = answer();
            if !h.untracked {
                ledger.sent(&resp_flow(h.tag), &body);
            }
            if s.write_all(&body).await.is_ok() {
                let _ = s.shutdown().await;
            }
            // Closed right after the answer (the socket is dropped here).
        }
        TargetMode::Serve(_) | TargetMode::Trickle => {
            let flow = req_flow(h.tag);
            let (mut rd, mut wr) = tokio::io::split(s);
            let trickle = h.mode == TargetMode::Trickle;
            let send = async {
                let body = answer();
                if !h.untracked {
                    ledger.sent(&resp_flow(h.tag), &body);
                }
                if trickle {
                    for piece in body.chunks(2048) {
                        if wr.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(pace).await;
                    }
                } else {
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                    if wr.write_all(&body).await.is_err() {
                        return;
                    }
                }
                let _ = wr.shutdown().await;
            };
            let recv = async {
                let (got, r) = read_all(&mut rd, h.slow_target, pause).await;
                let saw = judge(&got, r);
                if !h.untracked {
                    ledger.received(&flow, &got);
                    if saw == TargetSaw::Complete {
                        ledger.close(&flow);
                    }
                }
                saw
            };
            let order = match h.mode {
                TargetMode::Serve(o) => o,
                _ => Order::RequestFirst,
            };
            let saw = match order {
                Order::RequestFirst => {
                    let saw = recv.await;
                    send.await;
                    saw
                }
                Order::AnswerFirst => {
                    send.await;
                    recv.await
                }
                Order::Both => tokio::join!(send, recv).1,
            };
            record(saw);
        }
    }
}

// ---- a target that accepts slowly ----------------------------------------------------

/// What a slow target's "kernel" does with a connection while its accept backlog is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Leave it waiting: the dialer's connect completes only when there is room (a
    /// connect that takes seconds, or longer than the dialer waits).
    Wait,
    /// Refuse it: the connection is reset at once (Linux with `tcp_abort_on_overflow`).
    Refuse,
    /// Lose it: the dialer's connect succeeds, but nobody ever reads or answers (Linux
    /// after an accept-queue overflow with SYN cookies: the client holds an established
    /// connection the server never got; seen with `python3 -m http.server`, backlog 5).
    Lose,
}

/// A target that accepts slowly: a bounded accept backlog, emptied by an application
/// that takes one connection every `accept_every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowAccept {
    /// Connections the "kernel" holds for the application (Python's http.server: 5).
    pub backlog: usize,
    /// The application takes one queued connection this often.
    pub accept_every: Duration,
    /// What happens to connections beyond the backlog.
    pub overflow: Overflow,
}

impl SlowAccept {
    /// Drawn from the seed: backlog 1 to 5, one accept every 20 to 400 ms, any overflow.
    pub fn draw(rng: &mut impl rand::Rng) -> Self {
        Self {
            backlog: rng.gen_range(1..=5),
            accept_every: Duration::from_millis(rng.gen_range(20..=400)),
            overflow: match rng.gen_range(0..3) {
                0 => Overflow::Wait,
                1 => Overflow::Refuse,
                _ => Overflow::Lose,
            },
        }
    }
}

/// One stream to a slow target: when it starts, its request and answer sizes, the
/// target's think time. Shared by every scenario with a slow-accepting target.
#[derive(Clone, Copy, Debug)]
pub struct SlowStream {
    /// When the application opens it.
    pub start: Duration,
    /// Request bytes after the header.
    pub req: usize,
    /// Answer bytes.
    pub resp: usize,
    /// The target's think time before answering, in milliseconds.
    pub think_ms: u16,
}

impl SlowStream {
    /// The header of this stream (tag `tag`): HTTP/1.0 style, kept out of the target's
    /// ledger (whether it is served depends on the backlog).
    pub fn header(&self, tag: u32) -> Header {
        Header {
            tag,
            req: self.req as u32,
            resp: self.resp as u32,
            mode: TargetMode::Http10,
            slow_target: false,
            untracked: true,
            pace_ms: self.think_ms,
        }
    }
}

/// A slow target drawn from the seed and `n` streams to it, starting within
/// `start_ms` (milliseconds) with answers of `size` bytes.
pub fn slow_plan<R: rand::Rng>(
    rng: &mut R,
    n: usize,
    start_ms: std::ops::Range<u64>,
    size: impl Fn(&mut R) -> usize,
) -> (SlowAccept, Vec<SlowStream>) {
    let cfg = SlowAccept::draw(rng);
    let streams = (0..n)
        .map(|_| SlowStream {
            start: Duration::from_millis(rng.gen_range(start_ms.clone())),
            req: rng.gen_range(16..2048),
            resp: size(rng),
            think_ms: rng.gen_range(0..100),
        })
        .collect();
    (cfg, streams)
}

/// Counts of a slow target's connections, for the checks.
#[derive(Clone, Default, Debug)]
pub struct SlowLog {
    /// Connections the application took from the backlog.
    pub served: Arc<AtomicI64>,
    /// Connections refused ([`Overflow::Refuse`]).
    pub refused: Arc<AtomicI64>,
    /// Connections lost ([`Overflow::Lose`]).
    pub lost: Arc<AtomicI64>,
}

/// Runs a slow-accepting target on host `host`, [`TARGET_PORT`]: connections are taken
/// from the network into a backlog of `cfg.backlog` (what the kernel does), and the
/// application serves one every `cfg.accept_every` as [`run_target`] does (the stream's
/// header says how). A reusable target role for any scenario that dials targets.
pub async fn run_slow_target(
    world: SimWorld,
    host: &str,
    seed: u64,
    ledger: FlowLedger,
    log: TargetLog,
    cfg: SlowAccept,
    counts: SlowLog,
) -> Result<(), Box<dyn std::error::Error>> {
    let net = world.net(host);
    let listener = net.listen_tcp(any(TARGET_PORT)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(cfg.backlog.max(1));
    let served = counts.served.clone();
    tokio::spawn(async move {
        // The application: one accept every `accept_every`.
        loop {
            tokio::time::sleep(cfg.accept_every).await;
            let Some(s) = rx.recv().await else { return };
            served.fetch_add(1, Ordering::SeqCst);
            let (ledger, log) = (ledger.clone(), log.clone());
            tokio::spawn(async move { serve_target(s, seed, ledger, log).await });
        }
    });
    loop {
        // The kernel.
        let (permit, s) = if cfg.overflow == Overflow::Wait {
            // No room, no accept: the dialer's connect waits.
            let p = tx.clone().reserve_owned().await?;
            (Some(p), listener.accept().await?.0)
        } else {
            let s = listener.accept().await?.0;
            (tx.clone().try_reserve_owned().ok(), s)
        };
        match (permit, cfg.overflow) {
            (Some(p), _) => {
                p.send(s);
            }
            (None, Overflow::Refuse) => {
                counts.refused.fetch_add(1, Ordering::SeqCst);
                s.abort();
            }
            (None, _) => {
                counts.lost.fetch_add(1, Ordering::SeqCst);
                // Held and never answered; what arrives is read and dropped, so the
                // socket goes away when the dialer gives up on it.
                tokio::spawn(async move {
                    let mut s = s;
                    let mut sink = vec![0u8; 16 * 1024];
                    while let Ok(n) = s.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        }
    }
}

// ---- the application side -------------------------------------------------------------

/// Opens a SOCKS5 CONNECT to `target` through the front at `front`.
pub async fn socks_connect<N: Net>(
    net: &N,
    front: SocketAddr,
    target: &Addr,
) -> io::Result<N::Stream> {
    socks_connect_noted(net, front, target, |_| {}).await
}

/// [`socks_connect`], handing `noted` the connection's (own, front's) addresses as soon
/// as it is up, before the SOCKS5 exchange (which can wait for good when the front's
/// reset is lost): a check can then look the connection up in the run's
/// [`crate::realtcp::resets::ResetLog`].
pub async fn socks_connect_noted<N: Net>(
    net: &N,
    front: SocketAddr,
    target: &Addr,
    noted: impl FnOnce((SocketAddr, SocketAddr)),
) -> io::Result<N::Stream> {
    let mut s = net.connect_tcp(front).await?;
    if let (Ok(me), Ok(peer)) = (s.local_addr(), s.peer_addr()) {
        noted((me, peer));
    }
    let (code, _) = handshake::connect(&mut s, target).await?;
    if code != 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("SOCKS5 reply {code}"),
        ));
    }
    Ok(s)
}

/// How a stream ended at the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppSaw {
    /// Both directions ended cleanly; `got` answer bytes.
    Clean(usize),
    /// A read or write failed (what and after how many answer bytes).
    Error(String),
    /// The application aborted it (as planned).
    Aborted,
    /// Nothing ended it in time.
    Hung,
}

/// A short name for what the application saw, for failure summaries.
pub fn saw_kind(s: Option<&AppSaw>) -> &'static str {
    match s {
        None => "nothing",
        Some(AppSaw::Clean(0)) => "clean end with no answer",
        Some(AppSaw::Clean(_)) => "clean end",
        Some(AppSaw::Error(_)) => "error",
        Some(AppSaw::Aborted) => "aborted",
        Some(AppSaw::Hung) => "hung",
    }
}

/// Reads the answer (slowly, if asked) and writes `chunks` of `body` after `head`, then
/// finishes (when `finish`). Returns the answer and how each direction ended.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    head: &[u8],
    body: &[u8],
    chunks: &[(usize, Duration)],
    finish: bool,
    slow_reader: Option<Duration>,
) -> (Vec<u8>, io::Result<()>, io::Result<()>) {
    let (mut rd, mut wr) = tokio::io::split(s);
    let send = async {
        wr.write_all(head).await?;
        let mut off = 0;
        for &(n, pause) in chunks {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            wr.write_all(&body[off..off + n]).await?;
            off += n;
        }
        if finish {
            wr.shutdown().await?;
        }
        Ok(())
    };
    let recv = read_all(
        &mut rd,
        slow_reader.is_some(),
        slow_reader.unwrap_or_default(),
    );
    let (sent, (got, r)) = tokio::join!(send, recv);
    (got, sent, r)
}

/// Splits `len` bytes into writes: the first `first` bytes at once, the rest in random
/// pieces with short pauses.
pub fn write_plan(
    rng: &mut impl rand::Rng,
    len: usize,
    max_pause_ms: u64,
) -> Vec<(usize, Duration)> {
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        let c = rng.gen_range(1..=left.min(24 * 1024));
        let pause = if max_pause_ms == 0 || rng.gen_bool(0.6) {
            Duration::ZERO
        } else {
            Duration::from_millis(rng.gen_range(1..=max_pause_ms))
        };
        out.push((c, pause));
        left -= c;
    }
    out
}

/// A stream opened on the pool directly (an application inside the local process): the
/// header and `body` go out, then finish; the answer is read (slowly, if asked). Returns
/// the answer and how each direction ended.
pub async fn direct_exchange<N: Net>(
    pool: &Pool<N>,
    dest: tunnelbed_pong::Address,
    head: &[u8],
    body: &[u8],
    slow_reader: Option<Duration>,
) -> (Vec<u8>, io::Result<()>, io::Result<()>) {
    direct_exchange_noted(pool, dest, head, body, slow_reader, &Mutex::new(None)).await
}

/// [`direct_exchange`], noting in `up` when the pool's stream opened (its carrier was up).
pub async fn direct_exchange_noted<N: Net>(
    pool: &Pool<N>,
    dest: tunnelbed_pong::Address,
    head: &[u8],
    body: &[u8],
    slow_reader: Option<Duration>,
    up: &Mutex<Option<Duration>>,
) -> (Vec<u8>, io::Result<()>, io::Result<()>) {
    match pool.open_connect(dest).await {
        Ok(s) => {
            *up.lock().unwrap() = Some(now());
            exchange(
                s,
                head,
                body,
                &[(body.len(), Duration::ZERO)],
                true,
                slow_reader,
            )
            .await
        }
        Err(e) => {
            let e2 = io::Error::new(e.kind(), e.to_string());
            (Vec::new(), Err(e), Err(e2))
        }
    }
}

// ---- UDP ASSOCIATE --------------------------------------------------------------------

/// One UDP association through the front: `datagrams` datagrams to the echo, each resent
/// until its echo arrives (the link may lose datagrams). Returns per datagram whether an
/// echo came back, and how many echoes differed from what was sent.
pub async fn udp_exchange<N: Net>(
    net: &N,
    front: SocketAddr,
    echo: Addr,
    datagrams: &[Vec<u8>],
    ledger: &FlowLedger,
    flow_prefix: &str,
    tries: u32,
) -> io::Result<(Vec<bool>, usize)> {
    let mut ctl = net.connect_tcp(front).await?;
    let (code, bound) = handshake::udp_associate(&mut ctl, &handshake::unspecified()).await?;
    if code != 0 {
        return Err(io::Error::other(format!("UDP ASSOCIATE reply {code}")));
    }
    let Addr::Ip(bound) = bound else {
        return Err(io::Error::other(format!("relay address {bound:?}")));
    };
    let relay = SocketAddr::new(front.ip(), bound.port());
    let sock = net.bind_udp(any(0)).await?;
    let mut answered = vec![false; datagrams.len()];
    let mut corrupt = 0usize;
    let mut buf = vec![0u8; 65_535];
    for (k, d) in datagrams.iter().enumerate() {
        let flow = format!("{flow_prefix}d{k}");
        ledger.sent(&flow, d);
        let mut out = BytesMut::new();
        UdpHeader { addr: echo.clone() }
            .encode(d, &mut out)
            .map_err(io::Error::other)?;
        'tries: for _ in 0..tries {
            sock.send_to(&out, relay).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
            loop {
                let r = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
                let Ok(r) = r else { break };
                let (n, _) = r?;
                let Ok(Some((h, got))) = UdpHeader::decode(&buf[..n]) else {
                    corrupt += 1;
                    continue;
                };
                if h.addr != echo {
                    corrupt += 1;
                    continue;
                }
                // Echoes of earlier datagrams (resent or duplicated) may still arrive.
                match datagrams.iter().position(|x| x[..] == *got) {
                    Some(j) if j == k => {
                        ledger.received(&flow, got);
                        ledger.close(&flow);
                        answered[k] = true;
                        break 'tries;
                    }
                    Some(_) => {}
                    None => corrupt += 1,
                }
            }
        }
    }
    drop(ctl); // ends the association: its relay streams close
    Ok((answered, corrupt))
}

/// A UDP datagram of `len` bytes for association `a`, datagram `k` (starts with its
/// numbers so that every one is distinct).
pub fn datagram(seed: u64, a: u32, k: u32, len: usize) -> Vec<u8> {
    let mut d = payload(
        seed,
        5_000_000 + u64::from(a) * 1000 + u64::from(k),
        len.max(8),
    );
    d[..4].copy_from_slice(&a.to_be_bytes());
    d[4..8].copy_from_slice(&k.to_be_bytes());
    d
}

// ---- checks ---------------------------------------------------------------------------

/// Pong streams in the trace whose last state is not an end (closed or reset), for
/// connection ids starting with one of `prefixes`; and connections (same filter) whose
/// last state is not `closed`. Returns (streams, connections).
pub fn unended(trace: &Trace, prefixes: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for t in trace.snapshot() {
        let Transition { machine, to, .. } = t;
        if prefixes.iter().any(|p| machine.starts_with(p)) {
            last.insert(machine.into_owned(), to.into_owned());
        }
    }
    let mut streams = Vec::new();
    let mut conns = Vec::new();
    for (m, state) in last {
        let is_stream = m.rsplit('/').next().is_some_and(|s| s.starts_with('s'));
        if is_stream {
            if state != "closed" && state != "reset" {
                streams.push(format!("{m} ({state})"));
            }
        } else if state != "closed" {
            conns.push(format!("{m} ({state})"));
        }
    }
    (streams, conns)
}

/// Records `what` at the current simulated time in `trace` under machine `machine`.
pub fn note(trace: &Trace, machine: &str, from: &'static str, to: &'static str, why: String) {
    trace.transition(now(), machine.to_string(), from, to, why);
}
