//! [`StallWatch`]: gets smoltcp 0.12 out of retransmission stalls a kernel's TCP does
//! not have, so a lossy run measures the protocols above TCP rather than smoltcp's gaps.
//!
//! What it works around (both seen in our runs, seeds in the README):
//! - In CLOSE-WAIT, LAST-ACK and CLOSING a partial ACK sets smoltcp's retransmission
//!   timer to idle, so a segment (or the FIN) lost after the peer's FIN is never sent
//!   again and the connection hangs for good (`tcp-echo --seed 3 --profile lossy`).
//! - Fast retransmit starts only on exactly the third pure duplicate ACK; a peer that is
//!   itself sending data acknowledges with data segments, so the loss waits for the
//!   retransmission timeout, which backs off to 7-10 s gaps under 5% loss
//!   (`pong-streams --seed 1 --profile lossy`: pong's 20 s idle timeout fired).
//!
//! - smoltcp has no persist timer: when the peer's window update after a zero window is
//!   lost, the sender waits forever (`pong-streams --seed 1 --profile lossy`, a slow
//!   reader). The receiver's side repeats an update only while its own last segment
//!   still said zero; when the update was lost after an ACK that already carried the
//!   open window, only the sender can ask: see "Persist" below.
//!
//! How: every [`WATCH_EVERY`], a connection with data or a FIN in flight whose peer has
//! not advanced its ACK for [`STALL_AFTER`] is handed
//! duplicate ACKs made from the peer's newest segment header (sequence number set to
//! what we acknowledge, so smoltcp accepts it): first one with the window one off,
//! which resets smoltcp's duplicate count, then four as they are, the last three of
//! which are duplicates; smoltcp then retransmits from the first unacknowledged byte.
//! A connection that advertised a zero window and has room again, with the peer silent
//! for [`STALL_AFTER`], is handed a segment just below what it acknowledges, which smoltcp
//! answers with an ACK carrying its window: the update repeated.
//! Nothing is sent or recorded for them: on the wire it looks like a retransmission
//! timeout of [`STALL_AFTER`] at most.
//!
//! Persist: a connection with bytes to send, nothing in flight (the peer acknowledged
//! all we sent) and a zero window from the peer for [`PERSIST_AFTER`] turns smoltcp's
//! keepalive on (every [`PROBE_EVERY`]) until the window opens. With nothing in flight
//! the keepalive is a real zero-window probe: one old byte the peer already has, which
//! it answers with an ACK carrying its window. (A probe one byte past the window would
//! make smoltcp 0.12 panic, see `window_reminder`.)
//!
//! Keepalive probes cannot do the stalls' work: smoltcp sends them one byte below the highest
//! sequence number sent, so with data (or a FIN) in flight the peer takes the probe's
//! byte as data. Dropped streams in FIN-WAIT-2, with everything acknowledged, get a slow
//! keepalive here, so a peer that went silent ends them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket, TcpSeqNumber};

use super::conns::{ConnId, Conns, Tuple};
use super::smol;

/// How long an ACK may stand still with data in flight before the watch steps in: about
/// a kernel's smallest retransmission timeout (Linux: 200 ms) plus a swarm round trip.
/// Chosen by sweep (README, "the stall watch's timing"): 1.5 s gave 64 of 100 swarm
/// seeds, 500 ms 87, 300 ms 92, 200 ms 90.
pub const STALL_AFTER: Duration = Duration::from_millis(300);
/// How often the watch walks every connection.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How long a peer's zero window must last before the sender starts probing it.
pub const PERSIST_AFTER: Duration = Duration::from_millis(300);
/// How often a sender facing a zero window probes it (smoltcp's keepalive interval).
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// The keepalive interval of dropped streams in FIN-WAIT-2.
const ORPHAN_KEEPALIVE: Duration = Duration::from_secs(15);

/// What we know of a connection from the packets crossing the interface.
#[derive(Default)]
struct Peer {
    /// The peer's newest segment (by ACK number), IP and TCP headers only.
    header: Option<Vec<u8>>,
    /// Its ACK number.
    ack: Option<TcpSeqNumber>,
    /// Its window field (as sent, unscaled).
    window: u16,
    /// The ACK number of our last segment: what a segment from the peer must start at.
    our_ack: Option<TcpSeqNumber>,
    /// The window field of our last segment.
    our_window: u16,
    /// The sequence number just past the newest byte (or FIN) we sent.
    our_next: Option<TcpSeqNumber>,
}

/// The stall watch of one host stack (see the module notes).
#[derive(Default)]
pub struct StallWatch {
    peers: BTreeMap<Tuple, Peer>,
    /// Connections with something in flight: (the peer's ACK then, unchanged since).
    stalls: BTreeMap<ConnId, (Option<TcpSeqNumber>, Duration)>,
    /// Connections facing a zero window with nothing in flight: since when.
    zero_windows: BTreeMap<ConnId, Duration>,
    /// Connections probing a zero window (keepalive on), by their tuple.
    persisting: BTreeMap<ConnId, Tuple>,
    next_watch: Duration,
    /// A pump touched a connection since the last walk (see [`StallWatch::owe_walk`]).
    walk_owed: bool,
}

fn later(a: TcpSeqNumber, b: TcpSeqNumber) -> bool {
    a.0.wrapping_sub(b.0) >= 0
}

/// A parsed IPv4 packet and the TCP segment it carries.
type Segment<'a> = (Ipv4Packet<&'a [u8]>, TcpPacket<&'a [u8]>);

/// The IPv4 and TCP headers of `p`, if it is a TCP segment.
fn parse(p: &[u8]) -> Option<Segment<'_>> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let t = TcpPacket::new_checked(ip.payload()).ok()?;
    Some((Ipv4Packet::new_unchecked(p), t))
}

impl StallWatch {
    /// Asks for a walk at the next chance: a pump touched a connection (a packet, the
    /// application, a timer), and the walk must see it even when nothing else will wake
    /// the host. A partial ACK in LAST-ACK leaves smoltcp with no timer at all, and a
    /// host with no other traffic then slept for good with its answer unsent
    /// (`pong-remote-crash --tcp real`, swarm seeds 31 and 60: a target's 22-23 KB reply,
    /// first segment lost, unsent for 18-19 s until the remote's idle timeout). The debt
    /// stays until a walk pays it: a later pump that touched nothing must not cancel it.
    pub fn owe_walk(&mut self) {
        self.walk_owed = true;
    }

    /// How long until the owed walk may run (`None`: none is owed).
    pub fn next_walk_in(&self, now: Duration) -> Option<Duration> {
        self.walk_owed.then(|| self.next_watch.saturating_sub(now))
    }

    /// Notes a packet received from a peer (before smoltcp sees it).
    pub fn note_rx(&mut self, p: &[u8]) {
        let Some((ip, t)) = parse(p) else { return };
        if !t.ack() || t.syn() || t.rst() {
            return;
        }
        let key = (t.dst_port(), ip.src_addr(), t.src_port());
        let peer = self.peers.entry(key).or_default();
        let ack = t.ack_number();
        if peer.ack.is_some_and(|old| !later(ack, old)) {
            // A reordered or duplicated older segment.
            return;
        }
        let len = usize::from(ip.header_len()) + usize::from(t.header_len());
        let mut h = p.get(..len).map(<[u8]>::to_vec);
        if let Some(h) = h.as_mut() {
            let mut ipm = Ipv4Packet::new_unchecked(&mut h[..]);
            ipm.set_total_len(len as u16);
        }
        peer.header = h;
        peer.ack = Some(ack);
        peer.window = t.window_len();
    }

    /// Notes a packet we send.
    pub fn note_tx(&mut self, p: &[u8]) {
        let Some((ip, t)) = parse(p) else { return };
        if !t.ack() || t.rst() {
            return;
        }
        let key = (t.src_port(), ip.dst_addr(), t.dst_port());
        let peer = self.peers.entry(key).or_default();
        peer.our_ack = Some(t.ack_number());
        peer.our_window = t.window_len();
        let end = t.seq_number() + t.payload().len() + usize::from(t.fin());
        if peer.our_next.is_none_or(|n| later(end, n)) {
            peer.our_next = Some(end);
        }
    }

    /// Stops the zero-window probes of connections whose peer opened its window (called
    /// after each batch of received packets, so no probe follows the opening).
    pub fn end_persist(&mut self, conns: &mut Conns) {
        if self.persisting.is_empty() {
            return;
        }
        let peers = &self.peers;
        self.persisting.retain(|h, k| {
            if peers.get(k).is_some_and(|p| p.window == 0) {
                return true;
            }
            if conns.contains(*h) {
                conns.tcp(*h).set_keep_alive(None);
            }
            false
        });
    }

    /// Walks the connections (at most every [`WATCH_EVERY`]): returns the packets to hand
    /// smoltcp as if received, and how long until the watch next needs to run.
    pub fn watch(
        &mut self,
        now: Duration,
        conns: &mut Conns,
        orphans: &BTreeSet<ConnId>,
    ) -> Watched {
        let mut inject = Vec::new();
        let mut send = Vec::new();
        if now < self.next_watch {
            return Watched {
                inject,
                send,
                next: (!self.stalls.is_empty()).then(|| self.next_watch - now),
            };
        }
        self.next_watch = now + WATCH_EVERY;
        self.walk_owed = false;
        let mut stalls = BTreeMap::new();
        let mut zero_windows = BTreeMap::new();
        let mut persisting = BTreeMap::new();
        let mut live = BTreeSet::new();
        let mut changed = Vec::new();
        for (h, conn) in conns.iter_mut() {
            let t = conn.tcp();
            let tuple = match (t.local_endpoint(), t.remote_endpoint()) {
                #[allow(unreachable_patterns)]
                (Some(l), Some(r)) => match r.addr {
                    IpAddress::Ipv4(a) => Some((l.port, a, r.port)),
                    _ => None,
                },
                _ => None,
            };
            if let Some(k) = tuple {
                live.insert(k);
            }
            let state = t.state();
            let in_flight = match state {
                tcp::State::Established | tcp::State::CloseWait => t.send_queue() > 0,
                tcp::State::FinWait1 | tcp::State::LastAck | tcp::State::Closing => true,
                _ => false,
            };
            let peer = tuple.and_then(|k| self.peers.get(&k));
            // We advertised a zero window and have room now: the update may be lost.
            let closed_window = peer.is_some_and(|p| p.our_window == 0)
                && t.recv_queue() < t.recv_capacity()
                && t.may_recv();
            if in_flight || closed_window {
                let ack = peer.and_then(|p| p.ack);
                let since = match self.stalls.get(&h) {
                    Some(&(a, since)) if a == ack => since,
                    _ => now,
                };
                let since = if now.saturating_sub(since) >= STALL_AFTER {
                    if let Some(p) = peer {
                        if in_flight && p.window == 0 && p.ack != p.our_next {
                            // Bytes unacknowledged and our newest news from the peer is a
                            // closed window, maybe a reordered old segment (its newer,
                            // open one came first): ask again, as a kernel's probe does.
                            // (All acknowledged: the persist probes below do it.)
                            send.extend(window_probe(p));
                        } else if in_flight {
                            inject.extend(dup_acks(p));
                        }
                        if closed_window {
                            inject.extend(window_reminder(p));
                        }
                    }
                    now
                } else {
                    since
                };
                stalls.insert(h, (ack, since));
            }
            // The peer's window is closed, we have bytes for it and it has all we sent.
            let zero_window = in_flight
                && t.send_queue() > 0
                && peer.is_some_and(|p| p.window == 0 && p.ack.is_some() && p.ack == p.our_next);
            let mut probe = false;
            if zero_window {
                let since = self.zero_windows.get(&h).copied().unwrap_or(now);
                zero_windows.insert(h, since);
                if now.saturating_sub(since) >= PERSIST_AFTER {
                    probe = true;
                    if let Some(k) = tuple {
                        persisting.insert(h, k);
                    }
                }
            }
            let want = if probe {
                Some(smol(PROBE_EVERY))
            } else {
                (orphans.contains(&h) && state == tcp::State::FinWait2)
                    .then(|| smol(ORPHAN_KEEPALIVE))
            };
            if t.keep_alive() != want {
                t.set_keep_alive(want);
                changed.push(h);
            }
        }
        for h in changed {
            conns.mark(h);
        }
        self.stalls = stalls;
        self.zero_windows = zero_windows;
        self.persisting = persisting;
        self.peers.retain(|k, _| live.contains(k));
        let next = self
            .stalls
            .values()
            .map(|(_, since)| *since + STALL_AFTER)
            .chain(
                self.zero_windows
                    .values()
                    .map(|since| *since + PERSIST_AFTER),
            )
            .min()
            .map(|due| due.saturating_sub(now).max(WATCH_EVERY));
        Watched { inject, send, next }
    }
}

/// What one walk of the watch asks of its stack.
pub struct Watched {
    /// Packets to hand smoltcp as if received.
    pub inject: Vec<Vec<u8>>,
    /// Packets to send to peers (window probes).
    pub send: Vec<Vec<u8>>,
    /// How long until the watch next needs to run.
    pub next: Option<Duration>,
}

/// A zero-window probe to `peer`, as a kernel sends one: an empty segment one below the
/// first byte it has not acknowledged, which it answers with an ACK carrying its window.
/// For a connection with data in flight whose peer's newest segment said the window is
/// closed: when that segment was an old one arriving after the opening (reordering),
/// smoltcp waits forever for an update the peer has no reason to repeat, and its
/// retransmission timer does not send into a closed window. The probe carries no byte,
/// so it cannot meet smoltcp's zero-window panic (see [`window_reminder`]).
fn window_probe(peer: &Peer) -> Option<Vec<u8>> {
    let (h, their_ack, our_ack) = (peer.header.as_ref()?, peer.ack?, peer.our_ack?);
    let mut b = h.clone();
    let mut ip = Ipv4Packet::new_checked(&mut b[..]).ok()?;
    let (src, dst) = (ip.dst_addr(), ip.src_addr());
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    let mut t = TcpPacket::new_checked(ip.payload_mut()).ok()?;
    let (sport, dport) = (t.dst_port(), t.src_port());
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(TcpSeqNumber(their_ack.0.wrapping_sub(1)));
    t.set_ack_number(our_ack);
    t.set_window_len(peer.our_window);
    t.set_fin(false);
    t.set_psh(false);
    t.set_syn(false);
    t.set_rst(false);
    t.set_ack(true);
    t.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    Some(b)
}

/// Duplicate ACKs from `peer`'s newest header (see the module notes): one with the
/// window one off, then four as they are. Empty when we lack what to build them from.
fn dup_acks(peer: &Peer) -> Vec<Vec<u8>> {
    let (Some(h), Some(our_ack)) = (&peer.header, peer.our_ack) else {
        return Vec::new();
    };
    let build = |window: u16| -> Option<Vec<u8>> {
        let mut b = h.clone();
        let mut ip = Ipv4Packet::new_checked(&mut b[..]).ok()?;
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.fill_checksum();
        let mut t = TcpPacket::new_checked(ip.payload_mut()).ok()?;
        t.set_seq_number(our_ack);
        t.set_fin(false);
        t.set_psh(false);
        t.set_window_len(window);
        t.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
        Some(b)
    };
    let (Some(bumped), Some(same)) = (build(peer.window ^ 1), build(peer.window)) else {
        return Vec::new();
    };
    if peer.window == 0 {
        // The peer's window is closed: its side repeats the update (`window_reminder`).
        return Vec::new();
    }
    let mut out = vec![bumped];
    out.extend(std::iter::repeat_n(same, 4));
    out
}

/// A segment from the peer just below what we acknowledge: smoltcp answers a segment
/// outside its window with an ACK, which carries our current window to the peer. (A
/// window probe from the sender, one byte past a zero window, would make smoltcp 0.12
/// panic: it accepts the byte and then underflows computing its last window.)
fn window_reminder(peer: &Peer) -> Option<Vec<u8>> {
    let (h, our_ack) = (peer.header.as_ref()?, peer.our_ack?);
    let mut b = h.clone();
    let mut ip = Ipv4Packet::new_checked(&mut b[..]).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.fill_checksum();
    let mut t = TcpPacket::new_checked(ip.payload_mut()).ok()?;
    t.set_seq_number(TcpSeqNumber(our_ack.0.wrapping_sub(1)));
    t.set_fin(false);
    t.set_psh(false);
    t.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    Some(b)
}
