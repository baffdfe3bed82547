//! [`SimNet`]: the [`Net`] that scenarios hand to drivers. Datagrams (and the raw IP
//! packets of [`crate::iplink`]'s links) pass through the [`LinkModel`] before turmoil carries them; TCP uses turmoil's streams (reliable, with
//! latency, holds, partitions and crashes). Every socket can record into the run's capture.
//!
//! Beyond turmoil: [`TcpConn::abort`] is modelled with reset marks (the peer reads
//! `ConnectionReset` where it would have read the end of stream), a crashed host's
//! streams are closed in a fixed order (see [`SimWorld::crash_guard`]), and binding the
//! host's own address works as on a one-interface machine (turmoil binds only the
//! unspecified and loopback addresses).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tunnelbed_netio::{
    Capture, CaptureNet, DataFault, Net, ResetRecorded, TcpConn, TcpListen, Trace, UdpSock,
};

use tunnelbed_netio::iplink::{IpLinkConfig, IpLinkError, IpNet};

use crate::clock::now;
use crate::iplink::{IpRoutes, SimIpLink};
use crate::link::LinkModel;
use crate::realtcp::resets::ResetLog;
use crate::realtcp::stack::HostStack;
use crate::realtcp::stream::{RealListener, RealStream};
use crate::realtcp::TcpMode;

/// Shared state of one simulation run: link model, capture, trace and host names.
#[derive(Clone)]
pub struct SimWorld {
    /// The datagram link model.
    pub link: LinkModel,
    /// The run's capture, when one was asked for.
    pub capture: Option<Capture>,
    /// The run's transition trace.
    pub trace: Trace,
    /// Which IP link receives which address (see [`crate::iplink`]).
    pub ip_routes: IpRoutes,
    hosts: Arc<Mutex<BTreeSet<String>>>,
    resets: Resets,
    crashes: Crashes,
    /// The data-path sabotage's fault, when the run has one (see [`SimWorld::set_data_fault`]).
    data_fault: Option<Arc<DataFault>>,
    /// Which TCP the hosts use (see [`crate::realtcp`]).
    tcp_mode: TcpMode,
    /// The hosts' TCP stacks in real-TCP mode.
    stacks: Stacks,
    /// Resets the real-TCP stacks sent and took in (see [`SimWorld::tcp_resets`]).
    tcp_resets: ResetLog,
    /// Where QUIC endpoints get their seeds (see [`SimWorld::set_quic_seed`]).
    quic_seeds: Arc<Mutex<Option<ChaCha20Rng>>>,
}

/// The real-TCP stacks of a run, one per host incarnation, created on a host's first
/// TCP use (inside its runtime, so a crash takes the stack down with the host).
#[derive(Clone, Default)]
struct Stacks(Arc<tokio::sync::Mutex<StacksInner>>);

#[derive(Default)]
struct StacksInner {
    /// Seed of the run (ISNs and ephemeral ports).
    seed: u64,
    /// Host -> (incarnations so far, its current stack).
    hosts: BTreeMap<String, (u64, std::sync::Weak<HostStack>)>,
}

/// The IP MTU of the hosts' stacks: the link's, so full segments fit (no PMTU discovery).
const STACK_MTU_MAX: usize = 1500;

impl Stacks {
    /// The live stack of `host`, started when it has none (first use, or after a crash).
    async fn stack(&self, world: &SimWorld, host: &str) -> io::Result<Arc<HostStack>> {
        let mut g = self.0.lock().await;
        if let Some((_, w)) = g.hosts.get(host) {
            if let Some(s) = w.upgrade().filter(|s| !s.is_dead()) {
                return Ok(s);
            }
        }
        let IpAddr::V4(ip) = host_ip(host) else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "real TCP in the simulator is IPv4 only",
            ));
        };
        let incarnation = g.hosts.get(host).map_or(0, |(n, _)| n + 1);
        // The profile's MTU (overrides per host pair are not seen here).
        let mtu = world
            .link
            .params(IpAddr::V4(ip), IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            .mtu
            .clamp(576, STACK_MTU_MAX);
        let mut cfg = tunnelbed_netio::iplink::IpLinkConfig::new(
            &format!("{host}-tcp"),
            Some(tunnelbed_netio::iplink::Ipv4Cidr {
                addr: ip,
                prefix: 32,
            }),
        );
        cfg.mtu = mtu;
        let link = crate::iplink::SimIpLink::open(
            IpAddr::V4(ip),
            world.link.clone(),
            world.ip_routes.clone(),
            cfg,
        )
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
        let seed = stack_seed(g.seed, host, incarnation);
        let capture = world.capture.as_ref().map(|c| c.interface(host));
        let stack = HostStack::start(ip, link, seed, mtu, capture, world.tcp_resets.clone());
        g.hosts
            .insert(host.to_string(), (incarnation, Arc::downgrade(&stack)));
        Ok(stack)
    }
}

/// A stack's seed from the run's, the host and its incarnation (FNV-1a).
fn stack_seed(seed: u64, host: &str, incarnation: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in host.bytes().chain(incarnation.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Closing a crashed host's streams in a fixed order.
///
/// turmoil crashes a host by dropping its tokio runtime: the tasks are dropped in an
/// order that follows tokio's task ids, which come from a process-wide counter, so it
/// changes when other simulations run in the same process (parallel tests, sweeps).
/// Each dropped stream sends its FIN (drawing its latency from the simulation's RNG)
/// and records it in the capture, so that order would leak into the run. Instead, while
/// a host crashes ([`SimWorld::begin_crash`]), its [`SimStream`]s are set aside as they
/// are dropped, and its [`CrashGuard`] (held by the host's top-level future, which
/// turmoil drops after the runtime's tasks) closes them sorted by socket pair; the
/// capture holds the packets of the crash and writes them sorted.
#[derive(Clone, Default)]
struct Crashes(Arc<Mutex<CrashState>>);

/// A stream set aside while its host crashes, with its (local, peer) pair.
type Dead = ((SocketAddr, SocketAddr), turmoil::net::TcpStream);

#[derive(Default)]
struct CrashState {
    /// The host being crashed.
    host: Option<String>,
    /// Its streams, dropped while it crashes, not yet closed.
    graveyard: Vec<Dead>,
}

impl Crashes {
    fn lock(&self) -> std::sync::MutexGuard<'_, CrashState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the set-aside streams of `host` (any host when `None`), sorted by pair.
    fn close(&self, host: Option<&str>) -> usize {
        let mut dead = {
            let mut c = self.lock();
            if host.is_some() && c.host.as_deref() != host {
                return 0;
            }
            std::mem::take(&mut c.graveyard)
        };
        dead.sort_by_key(|(pair, _)| *pair);
        let n = dead.len();
        for (_, s) in dead {
            drop(s);
        }
        n
    }
}

/// Held by the top-level future of a host that may crash (see [`SimWorld::crash_guard`]).
pub struct CrashGuard {
    host: String,
    crashes: Crashes,
}

impl Drop for CrashGuard {
    fn drop(&mut self) {
        let n = self.crashes.close(Some(&self.host));
        if n > 0 {
            tracing::debug!("crash of {}: closed {n} TCP streams in order", self.host);
        }
    }
}

/// Reset marks for modelling TCP aborts (see [`SimStream`]): per live stream, keyed by
/// its (local, peer) socket pair, a flag its peer sets when it aborts.
///
/// turmoil 0.7 has no public way to reset a stream (it sends a real RST only when a
/// socket is dropped with unread input), so [`TcpConn::abort`] on a [`SimStream`] sets
/// the peer's mark and then drops the turmoil stream, which sends a FIN. The peer reads
/// whatever arrived before, then, where it would have read the end of stream, gets
/// `ConnectionReset` (and keeps getting it). turmoil itself answers the peer's later
/// writes with its own RST, since our socket is gone, so they fail as after a real RST.
/// The mark is keyed by the socket pair; a newer stream with the same pair (turmoil may
/// reuse a port once a reset removed the old socket) replaces it, and a stream removes its
/// own mark when dropped, so a mark never outlives its stream. Everything here happens
/// in the simulation's single thread, in simulation order: deterministic.
#[derive(Clone, Default)]
struct Resets(Arc<Mutex<ResetMarks>>);

/// (local, peer) of a live stream -> its reset mark.
type ResetMarks = BTreeMap<(SocketAddr, SocketAddr), Arc<AtomicBool>>;

impl Resets {
    fn lock(&self) -> std::sync::MutexGuard<'_, ResetMarks> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SimWorld {
    /// A world with the given link model; capture only when `capture` is true.
    pub fn new(link: LinkModel, capture: bool) -> Self {
        let capture =
            capture.then(|| Capture::new(Arc::new(|| turmoil::sim_elapsed().unwrap_or_default())));
        Self {
            link,
            capture,
            // One timeline for every machine: simulated time, not each driver's origin.
            trace: Trace::with_clock(Arc::new(|| turmoil::sim_elapsed().unwrap_or_default())),
            ip_routes: IpRoutes::default(),
            hosts: Arc::new(Mutex::new(BTreeSet::new())),
            resets: Resets::default(),
            crashes: Crashes::default(),
            data_fault: None,
            tcp_mode: TcpMode::Ideal,
            stacks: Stacks::default(),
            tcp_resets: ResetLog::default(),
            quic_seeds: Arc::default(),
        }
    }

    /// Seeds the QUIC endpoints the hosts open (`h3://` carriers): each gets the next 32
    /// bytes of a ChaCha20 stream from `seed`, in simulation order, so a run replays.
    /// Without it an endpoint draws from the OS (and the run does not replay).
    pub fn set_quic_seed(&self, seed: u64) {
        *self.quic_seeds.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(ChaCha20Rng::seed_from_u64(seed ^ 0x5155_4943_5345_4544));
    }

    /// The next QUIC endpoint seed (see [`SimWorld::set_quic_seed`]).
    fn next_quic_seed(&self) -> Option<[u8; 32]> {
        let mut g = self.quic_seeds.lock().unwrap_or_else(|e| e.into_inner());
        let rng = g.as_mut()?;
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Some(b)
    }

    /// Chooses the hosts' TCP (call before the hosts take their [`SimWorld::net`]); `seed`
    /// drives the real stacks' initial sequence numbers and ports.
    pub fn set_tcp_mode(&mut self, mode: TcpMode, seed: u64) {
        self.tcp_mode = mode;
        if let Ok(mut g) = self.stacks.0.try_lock() {
            g.seed = seed;
        }
    }

    /// Which TCP the hosts use.
    pub fn tcp_mode(&self) -> TcpMode {
        self.tcp_mode
    }

    /// The resets the real-TCP stacks sent and took in, per connection and direction
    /// (empty with ideal TCP, whose modelled resets are never lost).
    pub fn tcp_resets(&self) -> &ResetLog {
        &self.tcp_resets
    }

    /// Arms the data-path sabotage: one chunk written to a TCP stream (by any host) and
    /// one chunk an ARQ driver would deliver is dropped once `after` bytes went through.
    /// Call before the hosts take their [`SimWorld::net`].
    pub fn set_data_fault(&mut self, after: u64) {
        self.data_fault = Some(Arc::new(DataFault::new(after)));
    }

    /// A guard for host `name`'s top-level future (make it its first local, so that it
    /// is dropped last): when the host crashes, it closes the host's TCP streams in a
    /// fixed order (see the notes on crashes in this module). A host that may crash and
    /// holds TCP streams must hold one; without it, its streams are closed after the
    /// crash outside the simulation's context, so turmoil sends no FIN for them.
    pub fn crash_guard(&self, name: &str) -> CrashGuard {
        CrashGuard {
            host: name.to_string(),
            crashes: self.crashes.clone(),
        }
    }

    /// Call right before crashing (or bouncing) host `name` in turmoil.
    pub fn begin_crash(&self, name: &str) {
        self.crashes.lock().host = Some(name.to_string());
        if let Some(c) = &self.capture {
            c.begin_unordered();
        }
    }

    /// Call right after the crash (or bounce) begun by [`SimWorld::begin_crash`].
    pub fn end_crash(&self) {
        let left = self.crashes.close(None);
        if left > 0 {
            tracing::warn!(
                "{left} TCP streams of a crashed host were closed without its crash guard \
                 (no FIN sent): hold SimWorld::crash_guard in the host's future"
            );
        }
        self.crashes.lock().host = None;
        if let Some(c) = &self.capture {
            c.end_unordered();
        }
    }

    /// Registers a host name so that resolving it succeeds (unknown names fail as NXDOMAIN would).
    pub fn register_host(&self, name: &str) {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
    }

    /// The network as seen from host `name` (call inside that host's closure).
    pub fn net(&self, name: &str) -> HostNet {
        self.register_host(name);
        let iface = self.capture.as_ref().map(|c| c.interface(name));
        let net = CaptureNet::maybe(
            SimNet {
                host: Arc::from(name),
                world: self.clone(),
            },
            iface,
        );
        match self.tcp_mode {
            TcpMode::Ideal => net,
            // The host's stack records the real segments itself.
            TcpMode::Real => net.without_tcp_records(),
        }
    }

    fn knows(&self, name: &str) -> bool {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }
}

/// What scenario hosts use: the simulated network, recording when the run captures.
pub type HostNet = CaptureNet<SimNet>;

/// The simulated network of one host.
#[derive(Clone)]
pub struct SimNet {
    pub(crate) host: Arc<str>,
    pub(crate) world: SimWorld,
}

fn host_ip(host: &str) -> IpAddr {
    turmoil::lookup(host)
}

fn resolve_local(addr: SocketAddr, host: &str) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(host_ip(host), addr.port())
    } else {
        addr
    }
}

/// A UDP socket whose datagrams go through the link model.
pub struct SimUdp {
    sock: Arc<turmoil::net::UdpSocket>,
    local: SocketAddr,
    link: LinkModel,
}

impl UdpSock for SimUdp {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        if buf.len() > 65_507 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram larger than 65507 bytes",
            ));
        }
        let deliveries = self.link.transmit(now(), self.local.ip(), target.ip(), buf);
        for d in deliveries {
            if d.extra_delay.is_zero() {
                // A partitioned or unknown destination loses the datagram, as UDP does.
                let _ = self.sock.send_to(&d.payload, target).await;
            } else {
                let sock = self.sock.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d.extra_delay).await;
                    let _ = sock.send_to(&d.payload, target).await;
                });
            }
        }
        Ok(buf.len())
    }
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf).await
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A turmoil TCP stream (reliable; stalls under holds and partitions). Aborting it is
/// modelled with a reset mark its peer reads as `ConnectionReset` (see [`SimWorld`]'s
/// reset marks).
pub struct IdealStream {
    /// Taken only when the stream is dropped.
    inner: Option<turmoil::net::TcpStream>,
    /// (local, peer).
    pair: (SocketAddr, SocketAddr),
    /// Set when the peer aborted.
    reset: Arc<AtomicBool>,
    resets: Resets,
    host: Arc<str>,
    crashes: Crashes,
    data_fault: Option<Arc<DataFault>>,
}

impl IdealStream {
    fn new(inner: turmoil::net::TcpStream, host: &Arc<str>, world: &SimWorld) -> io::Result<Self> {
        let pair = (inner.local_addr()?, inner.peer_addr()?);
        // A mark may be there already: the peer accepted and aborted before our connect
        // returned (a target that refuses at once), and left the reset for us.
        let reset = world
            .resets
            .lock()
            .entry(pair)
            .or_insert_with(|| Arc::new(AtomicBool::new(false)))
            .clone();
        Ok(Self {
            inner: Some(inner),
            pair,
            reset,
            resets: world.resets.clone(),
            host: host.clone(),
            crashes: world.crashes.clone(),
            data_fault: world.data_fault.clone(),
        })
    }

    fn io(&mut self) -> &mut turmoil::net::TcpStream {
        self.inner
            .as_mut()
            .expect("a SimStream has its stream until dropped")
    }

    fn get(&self) -> &turmoil::net::TcpStream {
        self.inner
            .as_ref()
            .expect("a SimStream has its stream until dropped")
    }

    fn reset_error() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, ResetRecorded)
    }
}

impl Drop for IdealStream {
    fn drop(&mut self) {
        {
            let mut m = self.resets.lock();
            if m.get(&self.pair)
                .is_some_and(|r| Arc::ptr_eq(r, &self.reset))
            {
                m.remove(&self.pair);
            }
        }
        let Some(s) = self.inner.take() else { return };
        let mut c = self.crashes.lock();
        if c.host.as_deref() == Some(&*self.host) {
            // Our host is crashing: closed later, in a fixed order.
            c.graveyard.push((self.pair, s));
        } else {
            drop(c);
            drop(s);
        }
    }
}

impl AsyncRead for IdealStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(this.io()).poll_read(cx, buf);
        if !this.reset.load(Ordering::SeqCst) {
            return r;
        }
        match r {
            // The FIN of an aborted peer: it was a reset.
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                Poll::Ready(Err(Self::reset_error()))
            }
            // turmoil's own RST, sent when our later data reached the aborted peer's
            // closed socket: the same reset, already recorded by the peer.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                Poll::Ready(Err(Self::reset_error()))
            }
            r => r,
        }
    }
}

impl AsyncWrite for IdealStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this
            .data_fault
            .as_ref()
            .is_some_and(|f| f.drop_chunk(b.len()))
        {
            // The data-path sabotage: these bytes are reported written and never sent.
            return Poll::Ready(Ok(b.len()));
        }
        Pin::new(this.io()).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_shutdown(cx)
    }
}

impl IdealStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get().local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get().peer_addr()
    }
    fn abort(self) {
        let (local, peer) = self.pair;
        // The peer's stream may not exist yet (its connect has not returned): leave the
        // mark for it to find.
        self.resets
            .lock()
            .entry((peer, local))
            .or_insert_with(|| Arc::new(AtomicBool::new(false)))
            .store(true, Ordering::SeqCst);
        // Dropping sends the FIN the peer will read as the reset (or turmoil's own RST,
        // when input is left unread).
        drop(self);
    }
}

/// A turmoil TCP listener.
pub struct IdealListener {
    inner: turmoil::net::TcpListener,
    host: Arc<str>,
    world: SimWorld,
}

/// A TCP stream of the simulated network: turmoil's (`--tcp ideal`) or a host stack's
/// real TCP connection (`--tcp real`, see [`crate::realtcp`]).
pub enum SimStream {
    /// turmoil's reliable stream.
    Ideal(IdealStream),
    /// smoltcp over the link model.
    Real(RealStream),
}

/// A TCP listener of the simulated network (see [`SimStream`]).
pub enum SimListener {
    /// turmoil's listener.
    Ideal(IdealListener),
    /// A host stack's listening port.
    Real(RealListener),
}

impl TcpListen for SimListener {
    type Stream = SimStream;
    async fn accept(&self) -> io::Result<(SimStream, SocketAddr)> {
        match self {
            SimListener::Ideal(l) => {
                let (s, a) = l.inner.accept().await?;
                Ok((SimStream::Ideal(IdealStream::new(s, &l.host, &l.world)?), a))
            }
            SimListener::Real(l) => {
                let (s, a) = l.accept().await?;
                Ok((SimStream::Real(s), a))
            }
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            SimListener::Ideal(l) => Ok(resolve_local(l.inner.local_addr()?, &l.host)),
            SimListener::Real(l) => Ok(l.local_addr()),
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SimStream::Ideal(s) => Pin::new(s).poll_read(cx, buf),
            SimStream::Real(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SimStream::Ideal(s) => Pin::new(s).poll_write(cx, b),
            SimStream::Real(s) => Pin::new(s).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SimStream::Ideal(s) => Pin::new(s).poll_flush(cx),
            SimStream::Real(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SimStream::Ideal(s) => Pin::new(s).poll_shutdown(cx),
            SimStream::Real(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl TcpConn for SimStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            SimStream::Ideal(s) => s.local_addr(),
            SimStream::Real(s) => Ok(s.local_addr()),
        }
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            SimStream::Ideal(s) => s.peer_addr(),
            SimStream::Real(s) => Ok(s.peer_addr()),
        }
    }
    fn abort(self) {
        match self {
            SimStream::Ideal(s) => s.abort(),
            SimStream::Real(s) => s.abort(),
        }
    }
    fn set_unacked_timeout(&self, timeout: Duration) -> io::Result<()> {
        if let SimStream::Real(s) = self {
            s.set_unacked_timeout(timeout);
        }
        Ok(())
    }
}

impl SimNet {
    /// What to ask turmoil to bind for `addr`. turmoil binds only the unspecified or the
    /// loopback address; a simulated host has exactly one other address, its own, so
    /// binding that is binding the unspecified address (the port is then the host's,
    /// as it would be on a one-interface machine). Any other address is not ours:
    /// `AddrNotAvailable`, as the OS answers.
    fn bind_addr(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let ip = addr.ip();
        if ip.is_unspecified() || ip.is_loopback() {
            return Ok(addr);
        }
        if ip == host_ip(&self.host) {
            let any = match ip {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            return Ok(SocketAddr::new(any, addr.port()));
        }
        Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{ip} is not an address of host {}", self.host),
        ))
    }
}

/// The simulator's IP-packet links: raw IPv4 packets between hosts over the link model
/// (see [`crate::iplink`]).
impl IpNet for SimNet {
    type Link = SimIpLink;

    async fn open_ip_link(&self, cfg: IpLinkConfig) -> Result<SimIpLink, IpLinkError> {
        SimIpLink::open(
            turmoil::lookup(&*self.host),
            self.world.link.clone(),
            self.world.ip_routes.clone(),
            cfg,
        )
        .await
    }
}

impl Net for SimNet {
    type Udp = SimUdp;
    type Stream = SimStream;
    type Listener = SimListener;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<SimUdp> {
        let sock = turmoil::net::UdpSocket::bind(self.bind_addr(addr)?).await?;
        let local = resolve_local(sock.local_addr()?, &self.host);
        Ok(SimUdp {
            sock: Arc::new(sock),
            local,
            link: self.world.link.clone(),
        })
    }
    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<SimStream> {
        if self.world.tcp_mode == TcpMode::Real {
            let SocketAddr::V4(v4) = addr else {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "real TCP in the simulator is IPv4 only",
                ));
            };
            let stack = self.world.stacks.stack(&self.world, &self.host).await?;
            let s = RealStream::connect(stack, v4, self.world.data_fault.clone()).await?;
            return Ok(SimStream::Real(s));
        }
        let s = turmoil::net::TcpStream::connect(addr).await?;
        Ok(SimStream::Ideal(IdealStream::new(
            s,
            &self.host,
            &self.world,
        )?))
    }
    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<SimListener> {
        if self.world.tcp_mode == TcpMode::Real {
            // Checks the address as for turmoil (ours, unspecified or loopback).
            self.bind_addr(addr)?;
            let stack = self.world.stacks.stack(&self.world, &self.host).await?;
            let l = RealListener::bind(stack, addr.port(), self.world.data_fault.clone())?;
            return Ok(SimListener::Real(l));
        }
        Ok(SimListener::Ideal(IdealListener {
            inner: turmoil::net::TcpListener::bind(self.bind_addr(addr)?).await?,
            host: self.host.clone(),
            world: self.world.clone(),
        }))
    }
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if !self.world.knows(host) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: no such host in the simulation"),
            ));
        }
        Ok(vec![SocketAddr::new(host_ip(host), port)])
    }
    fn data_fault(&self) -> Option<Arc<DataFault>> {
        self.world.data_fault.clone()
    }
    fn quic_seed(&self) -> Option<[u8; 32]> {
        self.world.next_quic_seed()
    }
}

/// The unspecified IPv4 address with `port`: what servers bind to in scenarios.
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}
