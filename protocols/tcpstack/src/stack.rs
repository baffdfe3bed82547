//! The stack: listeners and their backlogs, demultiplexing of packets to connections,
//! RSTs for strays, the application API on connection handles, and the sans-IO polling
//! surface (`handle_input`, `handle_timeout`, `poll_transmit`, `poll_timeout`,
//! `poll_event`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tunnelbed_netio::Trace;

use crate::config::StackConfig;
use crate::conn::{emit_raw, Conn, Ctx};
use crate::expired::ExpiredHalfOpen;
use crate::seq::Seq;
use crate::types::{ChallengeBudget, Events};
pub use crate::types::{
    CloseReason, ConnId, ConnInfo, Event, ListenerId, StackError, State, Stats,
};
use crate::wire::{DecodeError, Packet, TcpFlags, TcpHeader};

struct Listener {
    addr: SocketAddrV4,
    backlog: usize,
    /// SYN_RCVD connections.
    half_open: BTreeSet<ConnId>,
    /// Established, not yet accepted.
    queue: VecDeque<ConnId>,
}

/// The connection context over the stack's own fields, borrowed field by field (a
/// method would borrow the whole stack and keep the caller from its connection table).
macro_rules! ctx {
    ($stack:expr, $now:expr) => {
        Ctx {
            now: $now,
            cfg: &$stack.cfg,
            trace: &$stack.trace,
            out: &mut $stack.out,
            events: &mut $stack.events,
            stats: &mut $stack.stats,
            budget: &mut $stack.budget,
        }
    };
}

/// The sans-IO TCP stack. Feed it raw IPv4 packets and the time; take packets, events
/// and the next deadline from it; call the application API on its handles.
pub struct Stack {
    cfg: StackConfig,
    trace: Trace,
    rng: ChaCha8Rng,
    next_id: u64,
    listeners: BTreeMap<ListenerId, Listener>,
    by_addr: BTreeMap<SocketAddrV4, ListenerId>,
    conns: BTreeMap<ConnId, Conn>,
    tuples: BTreeMap<(SocketAddrV4, SocketAddrV4), ConnId>,
    /// Half-open connections that expired, kept (bounded) so a late handshake ACK still
    /// completes them.
    expired: ExpiredHalfOpen,
    out: VecDeque<Bytes>,
    events: Events,
    stats: Stats,
    budget: ChallengeBudget,
}

fn usable_peer(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

impl Stack {
    /// A stack with `cfg`, reporting transitions to `trace`.
    pub fn new(cfg: StackConfig, trace: Trace) -> Stack {
        Stack {
            rng: ChaCha8Rng::seed_from_u64(cfg.isn_seed),
            cfg,
            trace,
            next_id: 1,
            listeners: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            conns: BTreeMap::new(),
            tuples: BTreeMap::new(),
            expired: ExpiredHalfOpen::default(),
            out: VecDeque::new(),
            events: Events::default(),
            stats: Stats::default(),
            budget: ChallengeBudget::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &StackConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn isn(&mut self) -> Seq {
        Seq(self.cfg.fixed_isn.unwrap_or_else(|| self.rng.next_u32()))
    }

    /// Listens on `addr` (IP 0.0.0.0 for any address) with an accept queue of `backlog`
    /// connections; half-open connections are capped by [`StackConfig::syn_backlog`].
    pub fn listen(
        &mut self,
        now: Duration,
        addr: SocketAddrV4,
        backlog: usize,
    ) -> Result<ListenerId, StackError> {
        if self.by_addr.contains_key(&addr) {
            return Err(StackError::AddrInUse);
        }
        let id = ListenerId(self.alloc_id());
        self.listeners.insert(
            id,
            Listener {
                addr,
                backlog: backlog.max(1),
                half_open: BTreeSet::new(),
                queue: VecDeque::new(),
            },
        );
        self.by_addr.insert(addr, id);
        self.trace.transition(
            now,
            format!("tcp-listen[{addr}]"),
            "CLOSED",
            "LISTEN",
            "appl: listen",
        );
        Ok(id)
    }

    /// Closes a listener: its half-open and not-yet-accepted connections are reset.
    pub fn close_listener(&mut self, now: Duration, id: ListenerId) -> Result<(), StackError> {
        let l = self.listeners.remove(&id).ok_or(StackError::NoSuchHandle)?;
        self.by_addr.remove(&l.addr);
        self.trace.transition(
            now,
            format!("tcp-listen[{}]", l.addr),
            "LISTEN",
            "CLOSED",
            "appl: close(lsn_fd)",
        );
        for cid in l
            .half_open
            .iter()
            .chain(l.queue.iter())
            .copied()
            .collect::<Vec<_>>()
        {
            self.with_conn(now, cid, |c, ctx| {
                c.abort(ctx, "appl: close(lsn_fd), send RST")
            });
        }
        Ok(())
    }

    /// Takes the next established connection of a listener.
    pub fn accept(&mut self, id: ListenerId) -> Option<ConnId> {
        let l = self.listeners.get_mut(&id)?;
        while let Some(cid) = l.queue.pop_front() {
            if let Some(c) = self.conns.get_mut(&cid) {
                c.accepted = true;
                if c.readable() > 0 || c.fin_received() {
                    self.events.push(Event::Readable(cid));
                }
                self.events.push(Event::Writable(cid));
                return Some(cid);
            }
        }
        None
    }

    /// Active open from `local` to `remote` (an addition to vproxy, which is passive
    /// only: used by tests and tools).
    pub fn connect(
        &mut self,
        now: Duration,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<ConnId, StackError> {
        if self.tuples.contains_key(&(local, remote)) {
            return Err(StackError::AddrInUse);
        }
        if self.conns.len() >= self.cfg.max_connections {
            return Err(StackError::TooManyConnections);
        }
        let id = ConnId(self.alloc_id());
        let iss = self.isn();
        let mut ctx = ctx!(self, now);
        let c = Conn::active(&mut ctx, id, local, remote, iss);
        self.conns.insert(id, c);
        self.tuples.insert((local, remote), id);
        Ok(id)
    }

    fn with_conn<R>(
        &mut self,
        now: Duration,
        id: ConnId,
        f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let c = self.conns.get_mut(&id)?;
        let mut ctx = ctx!(self, now);
        let r = f(c, &mut ctx);
        self.after(id);
        Some(r)
    }

    /// Bookkeeping after a connection ran: listener queues, demux entry, removal.
    fn after(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some((lid, l)) = c
            .listener
            .and_then(|lid| self.listeners.get_mut(&lid).map(|l| (lid, l)))
        {
            if c.state != State::SynRcvd {
                l.half_open.remove(&id);
            }
            if c.just_established {
                l.queue.push_back(id);
                self.events.push(Event::Acceptable(lid));
            }
            if c.state == State::Closed {
                l.queue.retain(|&q| q != id);
            }
        }
        c.just_established = false;
        if let Some(h) = c.expired_half_open() {
            self.expired.insert(h);
        }
        if c.state == State::Closed || c.reset_sent {
            self.tuples.remove(&(c.local, c.remote));
        }
        if c.state == State::Closed && (c.released || !c.accepted) {
            self.conns.remove(&id);
        }
    }

    /// Handles one raw IPv4 packet. Packets that do not decode are counted and returned
    /// as errors; they change no connection.
    pub fn handle_input(&mut self, now: Duration, packet: &[u8]) -> Result<(), DecodeError> {
        self.stats.packets_in += 1;
        let p = match Packet::decode(packet) {
            Ok(p) => p,
            Err(e) => {
                self.stats.bad_packets += 1;
                return Err(e);
            }
        };
        let local = SocketAddrV4::new(p.ip.dst, p.tcp.dst_port);
        let remote = SocketAddrV4::new(p.ip.src, p.tcp.src_port);
        if !usable_peer(p.ip.src)
            || !usable_peer(p.ip.dst)
            || local.port() == 0
            || remote.port() == 0
        {
            self.stats.dropped += 1;
            return Ok(());
        }
        if let Some(&cid) = self.tuples.get(&(local, remote)) {
            // The handshake's last ACK waits while the accept queue is full.
            let full = self.conns.get(&cid).is_some_and(|c| {
                c.state == State::SynRcvd
                    && c.listener
                        .and_then(|l| self.listeners.get(&l))
                        .is_some_and(|l| l.queue.len() >= l.backlog)
            });
            if full && !p.tcp.flags.contains(TcpFlags::RST) && !p.tcp.flags.contains(TcpFlags::SYN)
            {
                self.stats.syn_dropped += 1;
                return Ok(());
            }
            self.with_conn(now, cid, |c, ctx| c.on_segment(ctx, &p.tcp, p.payload));
            return Ok(());
        }
        let flags = p.tcp.flags;
        if flags.contains(TcpFlags::RST) {
            return Ok(());
        }
        if self.revive(now, local, remote, &p.tcp, p.payload) {
            return Ok(());
        }
        let lid = self
            .by_addr
            .get(&local)
            .or_else(|| {
                self.by_addr
                    .get(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local.port()))
            })
            .copied();
        match lid {
            Some(lid) if flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK) => {
                self.on_syn(now, lid, local, remote, &p.tcp);
            }
            Some(_) if !flags.contains(TcpFlags::ACK) => {
                // LISTEN drops segments without SYN or ACK (RFC 9293).
                self.stats.dropped += 1;
            }
            _ => self.reset_stray(now, local, remote, &p),
        }
        Ok(())
    }

    fn on_syn(
        &mut self,
        now: Duration,
        lid: ListenerId,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        syn: &TcpHeader,
    ) {
        let Some(l) = self.listeners.get(&lid) else {
            return;
        };
        if l.half_open.len() >= self.cfg.syn_backlog || self.conns.len() >= self.cfg.max_connections
        {
            self.stats.syn_dropped += 1;
            return;
        }
        let id = ConnId(self.alloc_id());
        let iss = self.isn();
        let mut ctx = ctx!(self, now);
        let c = Conn::passive(&mut ctx, id, lid, local, remote, syn, iss);
        self.conns.insert(id, c);
        self.tuples.insert((local, remote), id);
        if let Some(l) = self.listeners.get_mut(&lid) {
            l.half_open.insert(id);
        }
    }

    /// A segment for no connection that is the handshake's ACK (ack = our ISN + 1, seq =
    /// the peer's ISN + 1) of a half-open connection that expired: the connection comes
    /// back in SYN_RCVD and takes the segment, which completes the handshake.
    ///
    /// Why: a half-open entry expires after [`StackConfig::syn_rcvd_timeout`] so a SYN
    /// flood cannot hold the backlog, but a real peer whose retransmission timeout grew
    /// while the full backlog dropped its SYNs (smoltcp: 10 s) may lose its ACK and the
    /// data after it for that long (tcpstack-many swarm seeds 40 and 364: five segments
    /// lost in a row, then the RST for the expired entry reset the echo connection
    /// before a byte of it arrived). Linux lets such an ACK through with a SYN cookie;
    /// here the expired entry's numbers are kept instead (bounded in number and age), so
    /// the flood still frees its backlog slots.
    fn revive(
        &mut self,
        now: Duration,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        tcp: &TcpHeader,
        payload: &[u8],
    ) -> bool {
        if !tcp.flags.contains(TcpFlags::ACK) || tcp.flags.contains(TcpFlags::SYN) {
            return false;
        }
        let Some(h) = self.expired.take(now, local, remote, tcp) else {
            return false;
        };
        let room = self.listeners.get(&h.listener).is_some_and(|l| {
            l.queue.len() < l.backlog && self.by_addr.values().any(|&x| x == h.listener)
        }) && self.conns.len() < self.cfg.max_connections;
        if !room {
            return false;
        }
        let id = ConnId(self.alloc_id());
        let mut ctx = ctx!(self, now);
        let c = Conn::revived(&mut ctx, id, &h);
        ctx.stats.late_handshakes += 1;
        self.conns.insert(id, c);
        self.tuples.insert((local, remote), id);
        if let Some(l) = self.listeners.get_mut(&h.listener) {
            l.half_open.insert(id);
        }
        self.with_conn(now, id, |c, ctx| c.on_segment(ctx, tcp, payload));
        true
    }

    /// RST for a segment that has no connection (and SYN|ACK... to no listener).
    fn reset_stray(
        &mut self,
        now: Duration,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        p: &Packet<'_>,
    ) {
        let t = &p.tcp;
        let tcp = if t.flags.contains(TcpFlags::ACK) {
            TcpHeader {
                src_port: local.port(),
                dst_port: remote.port(),
                seq: t.ack,
                flags: TcpFlags::RST,
                ..TcpHeader::default()
            }
        } else {
            let len = p.payload.len() as u32
                + u32::from(t.flags.contains(TcpFlags::SYN))
                + u32::from(t.flags.contains(TcpFlags::FIN));
            TcpHeader {
                src_port: local.port(),
                dst_port: remote.port(),
                seq: 0,
                ack: t.seq.wrapping_add(len),
                flags: TcpFlags::RST | TcpFlags::ACK,
                ..TcpHeader::default()
            }
        };
        let mut ctx = ctx!(self, now);
        emit_raw(&mut ctx, local, remote, tcp, &[]);
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.poll_timeout().is_some_and(|t| t <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.with_conn(now, id, |c, ctx| c.on_timeout(ctx));
        }
    }

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// When [`Stack::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.conns.values().filter_map(Conn::poll_timeout).min()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// Reads into `buf`: `Ok(0)` is end of stream (or a closed connection),
    /// [`StackError::WouldBlock`] means wait for [`Event::Readable`].
    pub fn read(&mut self, now: Duration, id: ConnId, buf: &mut [u8]) -> Result<usize, StackError> {
        self.live(id)?;
        self.with_conn(now, id, |c, ctx| c.read(ctx, buf))
            .unwrap_or(Err(StackError::NoSuchHandle))
    }

    /// Writes from `data` (as much as the send buffer takes);
    /// [`StackError::WouldBlock`] means wait for [`Event::Writable`].
    pub fn write(&mut self, now: Duration, id: ConnId, data: &[u8]) -> Result<usize, StackError> {
        self.live(id)?;
        self.with_conn(now, id, |c, ctx| c.write(ctx, data))
            .unwrap_or(Err(StackError::NoSuchHandle))
    }

    /// Shuts the write side down: FIN after the buffered data.
    pub fn shutdown(&mut self, now: Duration, id: ConnId) -> Result<(), StackError> {
        self.live(id)?;
        self.with_conn(now, id, |c, ctx| c.shutdown(ctx))
            .unwrap_or(Err(StackError::NoSuchHandle))
    }

    /// Closes the handle: RST at once, or after the pending data is acked (seed 002).
    pub fn close(&mut self, now: Duration, id: ConnId) -> Result<(), StackError> {
        self.live(id)?;
        self.with_conn(now, id, |c, ctx| c.close(ctx))
            .ok_or(StackError::NoSuchHandle)
    }

    fn live(&self, id: ConnId) -> Result<(), StackError> {
        match self.conns.get(&id) {
            Some(c) if c.accepted && !c.released => Ok(()),
            _ => Err(StackError::NoSuchHandle),
        }
    }

    /// State of a connection (None once it is gone).
    pub fn state(&self, id: ConnId) -> Option<State> {
        self.conns.get(&id).map(|c| c.state)
    }

    /// Bytes buffered for reading on a connection.
    pub fn readable(&self, id: ConnId) -> usize {
        self.conns.get(&id).map_or(0, Conn::readable)
    }

    /// Bytes that may be written on a connection without blocking.
    pub fn send_space(&self, id: ConnId) -> usize {
        self.conns.get(&id).map_or(0, |c| c.send_space(&self.cfg))
    }

    /// Bytes written on a connection and not yet acked.
    pub fn unacked(&self, id: ConnId) -> usize {
        self.conns.get(&id).map_or(0, Conn::unacked)
    }

    /// Whether a connection's FIN was sent and acknowledged, with every byte before it
    /// (false when it is gone).
    pub fn fin_acked(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(Conn::fin_acked)
    }

    /// The (local, remote) addresses of a connection.
    pub fn addrs(&self, id: ConnId) -> Option<(SocketAddrV4, SocketAddrV4)> {
        self.conns.get(&id).map(|c| (c.local, c.remote))
    }

    /// A connection's sequence-space view, for tests and diagnostics.
    pub fn info(&self, id: ConnId) -> Option<ConnInfo> {
        self.conns.get(&id).map(Conn::info)
    }

    /// Connections in the table (any state, including closed ones whose handle is open).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Connections that wait in listeners' accept queues (not yet the application's).
    pub fn listener_backlog_total(&self) -> usize {
        self.listeners.values().map(|l| l.queue.len()).sum()
    }

    /// Handshakes waiting in a listener (half-open, accept queue).
    pub fn listener_backlog(&self, id: ListenerId) -> Option<(usize, usize)> {
        self.listeners
            .get(&id)
            .map(|l| (l.half_open.len(), l.queue.len()))
    }
}
