//! [`HostStack`]: one simulated host's smoltcp interface and TCP sockets, pumped by a
//! driver task over the host's [`SimIpLink`] (see the module notes in [`super`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Packet, TcpPacket};
use tokio::sync::Notify;
use tunnelbed_netio::iplink::smol::QueueDevice;
use tunnelbed_netio::iplink::IpLink;
use tunnelbed_netio::CaptureIface;

use super::conns::{ConnId, Conns, Tuple};
use super::resets::{rst_tuple, AbandonedDial, ResetLog};
use super::rst_seq::SendEdge;
use super::stall::StallWatch;
use crate::clock::now;
use crate::iplink::SimIpLink;

/// Bytes of each connection's receive and send buffers: the largest window a TCP without
/// window scaling offers. Not 64 KiB: a 65 536-byte buffer makes smoltcp scale its window
/// by 1 bit, and rounding the free space down to even bytes moves the advertised right
/// edge back by one byte whenever an odd-sized segment arrives (an MSS of 1261 or 1225 on
/// swarm's MTUs). The peer's next segment, sent under the older edge, then ends one byte
/// past the newer one; smoltcp 0.12 accepts it (it bounds a segment by its buffer, not by
/// what it advertised) and then panics computing its last window ("subtract sequence
/// numbers with underflow" in `window_to_update`, called from `dispatch`): swarm seeds
/// 3, 4, 9, 10 and 11 of pong-streams. smoltcp 0.13 rejects such bytes (its PR #1079).
pub const BUFFER: usize = 65_535;
// A larger buffer turns window scaling on (see above): refuse to build.
const _: () = assert!(
    BUFFER <= 65_535,
    "a buffer over 65 535 bytes turns on window scaling"
);
/// Connections a listener holds in its accept queue; SYNs beyond it are dropped, as
/// Linux drops them when the accept queue is full (the client retries).
pub const BACKLOG: usize = 128;
/// How long a connect waits for the handshake before it fails with `TimedOut`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A stream the application dropped lingers until its close completes, for at most this
/// long after the drop (then it is reset), so a peer gone silent cannot hold it forever.
/// Counted by us from the drop, not by smoltcp's socket timeout: that one counts from
/// the last segment the peer sent, so a connection idle for longer (a half-closed
/// application waiting for a slow answer) was reset at once instead of sending its FIN
/// (`pong-streams --seed 26 --profile swarm --tcp real`, s225).
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(60);
/// Packets waiting for the driver beyond this are dropped (a full NIC ring).
const RX_QUEUE_LIMIT: usize = 8192;
/// How long the driver sleeps when smoltcp has no timer (it wakes on any event anyway).
const IDLE: Duration = Duration::from_secs(3600);
/// The shortest sleep between two pumps, so a stack that always wants to act at once
/// cannot stop virtual time.
const MIN_DELAY: Duration = Duration::from_micros(100);
/// Egress rounds per pump (each sends at most one segment per connection).
const MAX_EGRESS_ROUNDS: usize = 512;

fn from_smol(t: SmolInstant) -> Duration {
    Duration::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
}

fn smol_now(now: Duration) -> SmolInstant {
    SmolInstant::from_micros(i64::try_from(now.as_micros()).unwrap_or(i64::MAX))
}

/// A listening port: connections in SYN-RECEIVED, and connections ready to accept.
#[derive(Default)]
struct Listener {
    pending: Vec<ConnId>,
    ready: VecDeque<ConnId>,
    waker: Option<Waker>,
}

/// The state behind a [`HostStack`]'s lock.
pub struct StackInner {
    iface: Interface,
    /// The connections, one socket set each.
    conns: Conns,
    /// An empty set for packets no connection takes: smoltcp answers them with a reset.
    nobody: SocketSet<'static>,
    dev: QueueDevice,
    rx: VecDeque<Vec<u8>>,
    listeners: BTreeMap<u16, Listener>,
    /// Streams the application dropped, closing (or resetting) in the background.
    orphans: BTreeSet<ConnId>,
    /// When each closing orphan is reset if its close has not completed by then
    /// (see [`ORPHAN_TIMEOUT`]).
    orphan_deadlines: BTreeSet<(Duration, ConnId)>,
    next_port: u16,
    ip: Ipv4Addr,
    /// Gets smoltcp out of its retransmission stalls.
    watch: StallWatch,
    /// Sequence numbers for resets (see [`SendEdge`]).
    edge: SendEdge,
    /// What a connection had received but not yet handed to the application when smoltcp
    /// was about to throw it away (a reset arrived, or TIME-WAIT ran out): read before
    /// the end is reported, as a kernel does.
    leftover: BTreeMap<ConnId, Kept>,
    /// The host crashed: its driver is gone.
    dead: bool,
    /// The run's ledger of resets sent and taken in.
    resets: ResetLog,
}

/// Received bytes kept for the application after smoltcp let go of its connection.
#[derive(Debug, Default)]
pub struct Kept {
    /// Bytes not read yet, in order.
    pub data: VecDeque<u8>,
    /// The connection ended cleanly (both FINs, then TIME-WAIT ran out): once `data` is
    /// read the application sees the end of the stream, not a reset.
    pub clean_end: bool,
}

/// One host's TCP stack (see the module notes).
pub struct HostStack {
    inner: Mutex<StackInner>,
    wake: Notify,
}

/// Marks the stack dead when the host's driver task is dropped (a crash).
struct DeadOnDrop(Arc<HostStack>);

impl Drop for DeadOnDrop {
    fn drop(&mut self) {
        self.0.lock().dead = true;
    }
}

fn new_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; BUFFER]),
        tcp::SocketBuffer::new(vec![0; BUFFER]),
    );
    s.set_congestion_control(tcp::CongestionControl::Reno);
    s
}

impl HostStack {
    /// Starts the stack of a host at `ip` over `link` (inside the host's runtime: its
    /// driver tasks are the host's and die with it). `seed` drives smoltcp's initial
    /// sequence numbers and our ephemeral ports; `mtu` is the IP MTU of the link; resets
    /// sent and taken in are counted in `resets`.
    pub(crate) fn start(
        ip: Ipv4Addr,
        link: SimIpLink,
        seed: u64,
        mtu: usize,
        capture: Option<CaptureIface>,
        resets: ResetLog,
    ) -> Arc<HostStack> {
        let mut dev = QueueDevice::new(mtu);
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, smol_now(now()));
        iface.update_ip_addrs(|a| {
            // Every other host is on-link: a medium-IP interface needs no neighbours.
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), 0));
        });
        let span = 65_535 - 49_152;
        let stack = Arc::new(HostStack {
            inner: Mutex::new(StackInner {
                iface,
                conns: Conns::default(),
                nobody: SocketSet::new(Vec::new()),
                dev,
                rx: VecDeque::new(),
                listeners: BTreeMap::new(),
                orphans: BTreeSet::new(),
                orphan_deadlines: BTreeSet::new(),
                next_port: 49_152 + (seed % span) as u16,
                ip,
                watch: StallWatch::default(),
                edge: SendEdge::default(),
                leftover: BTreeMap::new(),
                dead: false,
                resets: resets.clone(),
            }),
            wake: Notify::new(),
        });
        let link = Arc::new(link);
        tokio::spawn(receive(stack.clone(), link.clone()));
        tokio::spawn(drive(stack.clone(), link, capture, resets));
        stack
    }

    /// The stack's state.
    pub fn lock(&self) -> MutexGuard<'_, StackInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the driver to pump soon (after the application read, wrote or closed).
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Whether the host crashed (its driver is gone).
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }
}

async fn receive(stack: Arc<HostStack>, link: Arc<SimIpLink>) {
    let mut buf = vec![0u8; 65_535];
    while let Ok(n) = link.recv(&mut buf).await {
        {
            let mut g = stack.lock();
            if g.rx.len() >= RX_QUEUE_LIMIT {
                continue;
            }
            g.rx.push_back(buf[..n].to_vec());
        }
        stack.kick();
    }
}

async fn drive(
    stack: Arc<HostStack>,
    link: Arc<SimIpLink>,
    capture: Option<CaptureIface>,
    resets: ResetLog,
) {
    let _dead = DeadOnDrop(stack.clone());
    loop {
        let (out, delay) = stack.lock().pump(now());
        for p in out {
            // A reset goes out RST_COPIES times: smoltcp sends one and forgets the
            // connection, and a lost reset leaves a peer that only reads hanging forever.
            let rst = rst_tuple(&p).is_some();
            let copies = if rst { RST_COPIES } else { 1 };
            for _ in 0..copies {
                // A packet the link refuses (larger than its MTU) is lost, as with DF set.
                if link.send(&p).await.is_ok() {
                    if rst {
                        resets.note_sent(&p);
                    }
                    if let Some(c) = &capture {
                        c.raw_ip(&p);
                    }
                }
            }
        }
        tokio::select! {
            biased;
            _ = stack.wake.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// How many times each reset is sent (see `drive`).
const RST_COPIES: usize = 3;

fn closed_io(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, what.to_string())
}

impl StackInner {
    /// The TCP socket of connection `id` (marked for an egress at the next pump).
    pub fn tcp(&mut self, id: ConnId) -> &mut tcp::Socket<'static> {
        self.conns.tcp(id)
    }

    /// Whether the host crashed.
    pub fn dead(&self) -> bool {
        self.dead
    }

    /// Our address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    fn port_taken(&self, port: u16) -> bool {
        self.listeners.contains_key(&port) || self.conns.port_in_use(port)
    }

    fn ephemeral_port(&mut self) -> io::Result<u16> {
        for _ in 0..(65_536 - 49_152) {
            let p = self.next_port;
            self.next_port = if p == 65_535 { 49_152 } else { p + 1 };
            if !self.port_taken(p) {
                return Ok(p);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no free ephemeral port",
        ))
    }

    /// Opens a connection to `remote`; returns its id and our address.
    pub fn connect(&mut self, remote: SocketAddrV4) -> io::Result<(ConnId, SocketAddr)> {
        if self.dead {
            return Err(closed_io("the host's TCP stack is gone"));
        }
        let port = self.ephemeral_port()?;
        let mut s = new_socket();
        s.set_timeout(Some(smoltcp::time::Duration::from_micros(
            CONNECT_TIMEOUT.as_micros() as u64,
        )));
        let cx = self.iface.context();
        s.connect(cx, (IpAddress::Ipv4(*remote.ip()), remote.port()), port)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let id = self.conns.add(s, Some((port, *remote.ip(), remote.port())));
        Ok((id, SocketAddr::V4(SocketAddrV4::new(self.ip, port))))
    }

    /// Starts listening on `port` (0: an ephemeral one); returns the port.
    pub fn listen(&mut self, port: u16) -> io::Result<u16> {
        if self.dead {
            return Err(closed_io("the host's TCP stack is gone"));
        }
        let port = if port == 0 {
            self.ephemeral_port()?
        } else {
            port
        };
        if self.listeners.contains_key(&port) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("TCP port {port} is already listening"),
            ));
        }
        self.listeners.insert(port, Listener::default());
        Ok(port)
    }

    /// Stops listening on `port`: connections not yet accepted are reset.
    pub fn unlisten(&mut self, port: u16) {
        let Some(l) = self.listeners.remove(&port) else {
            return;
        };
        for id in l.pending.into_iter().chain(l.ready) {
            self.conns.tcp(id).abort();
            self.orphans.insert(id);
        }
    }

    /// The next connection accepted on `port`, or `Pending` (waking `waker` later).
    pub fn poll_accept(&mut self, port: u16, waker: &Waker) -> Poll<io::Result<ConnId>> {
        if self.dead {
            return Poll::Ready(Err(closed_io("the host's TCP stack is gone")));
        }
        let Some(l) = self.listeners.get_mut(&port) else {
            return Poll::Ready(Err(closed_io("the listener is closed")));
        };
        match l.ready.pop_front() {
            Some(id) => Poll::Ready(Ok(id)),
            None => {
                l.waker = Some(waker.clone());
                Poll::Pending
            }
        }
    }

    /// The four-tuple `id` was routed by, if it had one.
    pub fn tuple(&self, id: ConnId) -> Option<Tuple> {
        self.conns.tuple(id)
    }

    /// Bounds how long `id`'s written bytes may stay unacknowledged (see
    /// [`Conns::set_user_timeout`]).
    pub fn set_user_timeout(&mut self, id: ConnId, timeout: Duration) {
        self.conns.set_user_timeout(id, timeout);
    }

    /// The application dropped (or aborted) the stream on `id`: close or reset it, and
    /// free the socket once it is done.
    pub fn release(&mut self, id: ConnId, abort: bool) {
        self.leftover.remove(&id);
        let s = self.conns.tcp(id);
        if s.state() == tcp::State::SynSent {
            // The application's connect timeout ran out (see `AbandonedDial`).
            if let (Some(from), Some(to)) = (
                s.local_endpoint().and_then(v4),
                s.remote_endpoint().and_then(v4),
            ) {
                self.resets.note_abandoned_dial(AbandonedDial {
                    from,
                    to,
                    at: now(),
                });
            }
        }
        let s = self.conns.tcp(id);
        // A kernel resets a connection closed with unread input (the peer still reads
        // what reached it first: see `save_before_reset`).
        if abort || s.recv_queue() > 0 {
            s.abort();
        } else {
            s.close();
            self.orphan_deadlines.insert((now() + ORPHAN_TIMEOUT, id));
        }
        self.orphans.insert(id);
    }

    /// Where packet `p` goes: `None` drops it, `Some(None)` hands it to no connection
    /// (smoltcp answers with a reset), `Some(Some(id))` to connection `id`. Does what a
    /// kernel's listener does around smoltcp: a repeated SYN of a connection that exists
    /// is dropped, a SYN to a full accept queue is dropped, and every other new SYN to a
    /// listening port gets a new connection in LISTEN.
    fn admit(&mut self, p: &[u8]) -> Option<Option<ConnId>> {
        let Ok(ip) = Ipv4Packet::new_checked(p) else {
            return Some(None);
        };
        if ip.next_header() != IpProtocol::Tcp {
            return Some(None);
        }
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
            return Some(None);
        };
        let tuple: Tuple = (tcp.dst_port(), ip.src_addr(), tcp.src_port());
        let known = self.conns.find(&tuple);
        if tcp.rst() {
            self.resets.note_arrived(p);
            self.save_before_reset(known);
            return Some(known);
        }
        if !tcp.syn() || tcp.ack() {
            return Some(known);
        }
        let port = tcp.dst_port();
        let Some(l) = self.listeners.get(&port) else {
            return Some(known);
        };
        let live = known.is_some_and(|id| {
            !matches!(
                self.conns.peek(id).state(),
                tcp::State::TimeWait | tcp::State::Closed
            )
        });
        if live || l.ready.len() >= BACKLOG {
            return None;
        }
        let mut s = new_socket();
        s.listen(port).ok()?;
        let id = self.conns.add(s, Some(tuple));
        if let Some(l) = self.listeners.get_mut(&port) {
            l.pending.push(id);
        }
        Some(Some(id))
    }

    /// A reset for connection `id` is about to reach smoltcp, which would throw away
    /// what the connection received and the application has not read yet: keep it.
    fn save_before_reset(&mut self, id: Option<ConnId>) {
        let Some(id) = id else { return };
        if self.orphans.contains(&id) || self.conns.peek(id).recv_queue() == 0 {
            return;
        }
        let keep = self.leftover.entry(id).or_default();
        take_received(self.conns.tcp(id), &mut keep.data);
    }

    /// smoltcp ends TIME-WAIT with a reset of the socket that clears what the
    /// application has not read yet, and its reads then fail as after a reset. A kernel
    /// keeps that data and reports the end of the stream after it, however long the
    /// application takes: a relay still writing the answer elsewhere reads the rest of
    /// its target's connection later. So before a due connection in TIME-WAIT is polled
    /// (its timer may run out), what it holds moves here, marked as a clean end.
    fn save_before_time_wait_ends(&mut self, due: &[ConnId]) {
        for &id in due {
            if self.orphans.contains(&id) || self.conns.peek(id).state() != tcp::State::TimeWait {
                continue;
            }
            let keep = self.leftover.entry(id).or_default();
            keep.clean_end = true;
            take_received(self.conns.tcp(id), &mut keep.data);
        }
    }

    /// What was kept for `id` (see [`Self::save_before_reset`] and
    /// [`Self::save_before_time_wait_ends`]).
    pub fn leftover(&mut self, id: ConnId) -> Option<&mut Kept> {
        self.leftover.get_mut(&id)
    }

    /// Moves handshaken connections to their accept queues, drops failed ones.
    fn tend_listeners(&mut self) {
        let mut dropped = Vec::new();
        for l in self.listeners.values_mut() {
            let mut woke = false;
            l.pending.retain(|id| match self.conns.peek(*id).state() {
                tcp::State::SynReceived => true,
                // Back in LISTEN after a reset, or failed: the SYN's connection is over.
                tcp::State::Listen | tcp::State::Closed | tcp::State::TimeWait => {
                    dropped.push(*id);
                    false
                }
                _ => {
                    l.ready.push_back(*id);
                    woke = true;
                    false
                }
            });
            if woke {
                if let Some(w) = l.waker.take() {
                    w.wake();
                }
            }
        }
        for id in dropped {
            self.conns.remove(id);
        }
    }

    /// Discards what the dropped streams among `ids` still receive (so their window stays
    /// open).
    fn drain_orphans(&mut self, ids: &[ConnId]) {
        for id in ids {
            if !self.orphans.contains(id) {
                continue;
            }
            let Some(c) = self.conns.conn_mut(*id) else {
                continue;
            };
            let s = c.tcp();
            while s.can_recv() {
                if s.recv(|b| (b.len(), ())).is_err() {
                    break;
                }
            }
        }
    }

    /// Resets the orphans whose close did not complete within [`ORPHAN_TIMEOUT`] (a kernel
    /// gives up on an orphaned connection the same way); they get an egress to send it.
    fn expire_orphans(&mut self, now: Duration) {
        while let Some(&(at, id)) = self.orphan_deadlines.first() {
            if at > now {
                break;
            }
            self.orphan_deadlines.pop_first();
            if self.orphans.contains(&id) && self.conns.contains(id) {
                self.conns.tcp(id).abort();
                self.conns.mark(id);
            }
        }
    }

    /// Frees the sockets of the dropped streams among `ids` whose connection is over.
    fn reap_orphans(&mut self, ids: &[ConnId]) {
        for id in ids {
            if self.orphans.contains(id) && self.conns.peek(*id).state() == tcp::State::Closed {
                self.orphans.remove(id);
                self.conns.remove(*id);
            }
        }
    }

    /// Feeds received packets to smoltcp, sends what the touched and timed-out
    /// connections have, tends the listeners; returns the packets to send and how long
    /// until a connection next needs a pump.
    fn pump(&mut self, now: Duration) -> (Vec<Vec<u8>>, Duration) {
        let ts = smol_now(now);
        let watched = self.watch.watch(now, &mut self.conns, &self.orphans);
        let (inject, stall_check) = (watched.inject, watched.next);
        self.dev.tx.extend(watched.send);
        for p in inject.into_iter().rev() {
            self.rx.push_front(p);
        }
        while let Some(p) = self.rx.pop_front() {
            let Some(to) = self.admit(&p) else {
                continue;
            };
            self.watch.note_rx(&p);
            self.edge.incoming(&p);
            self.dev.rx.push_back(p);
            let set = match to.and_then(|id| {
                self.conns.mark(id);
                self.conns.set_mut(id)
            }) {
                Some(set) => set,
                None => &mut self.nobody,
            };
            self.iface.poll_ingress_single(ts, &mut self.dev, set);
            self.dev.rx.clear();
        }
        self.watch.end_persist(&mut self.conns);
        self.expire_orphans(now);
        // Only connections a packet, the application or a timer touched can have changed:
        // the orphans' upkeep looks at those alone.
        let mut due = self.conns.take_due(now);
        for &id in &due {
            self.conns.arm_user_timeout(id);
        }
        self.drain_orphans(&due);
        self.save_before_time_wait_ends(&due);
        // Round robin over the due connections, one segment each per round, as smoltcp
        // does over a set.
        let mut done = Vec::new();
        for _ in 0..MAX_EGRESS_ROUNDS {
            due.retain(|id| {
                let Some(set) = self.conns.set_mut(*id) else {
                    return false;
                };
                let before = self.dev.tx.len();
                self.iface.poll_egress(ts, &mut self.dev, set);
                if self.dev.tx.len() == before {
                    done.push(*id);
                    return false;
                }
                true
            });
            if due.is_empty() {
                break;
            }
        }
        done.append(&mut due);
        done.sort_unstable();
        for &id in &done {
            self.conns.arm_user_timeout(id);
            let at = self
                .conns
                .set_mut(id)
                .and_then(|set| self.iface.poll_at(ts, set))
                .map(from_smol);
            self.conns.schedule(id, at);
        }
        for p in self.dev.tx.iter_mut() {
            // A reset's sequence number where the peer surely takes it (see `rst_seq`).
            self.edge.outgoing(p);
            self.watch.note_tx(p);
        }
        self.tend_listeners();
        self.reap_orphans(&done);
        let delay = self
            .conns
            .next_due(now)
            .map_or(IDLE, |d| d.saturating_sub(now));
        let delay = stall_check.map_or(delay, |d| delay.min(d));
        // Whatever this pump changed, the stall watch looks at it next (see
        // `StallWatch::owe_walk`).
        if !done.is_empty() {
            self.watch.owe_walk();
        }
        let delay = self.watch.next_walk_in(now).map_or(delay, |d| delay.min(d));
        let delay = self
            .orphan_deadlines
            .first()
            .map_or(delay, |(at, _)| delay.min(at.saturating_sub(now)));
        (
            Vec::from(std::mem::take(&mut self.dev.tx)),
            delay.max(MIN_DELAY),
        )
    }
}

/// Moves everything `t` received and the application has not read into `into`.
fn take_received(t: &mut tcp::Socket<'_>, into: &mut VecDeque<u8>) {
    while t.can_recv() {
        let taken = t.recv(|b| {
            into.extend(b.iter());
            (b.len(), b.len())
        });
        if !matches!(taken, Ok(n) if n > 0) {
            break;
        }
    }
}

/// An IPv4 endpoint as a socket address (our stacks are IPv4 only).
fn v4(e: smoltcp::wire::IpEndpoint) -> Option<SocketAddrV4> {
    match e.addr {
        IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, e.port)),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}
