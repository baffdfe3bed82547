//! One connection's machine: the states of seed 002's diagram, the send side
//! (retransmission of data and FIN only, go-back-N from the oldest un-acked byte, the
//! un-acked-bytes cap) and the receive side (in-order data buffered, acknowledged only
//! once the application has read it).

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tunnelbed_netio::Trace;

use crate::config::StackConfig;
use crate::expired::HalfOpen;
use crate::seq::Seq;
use crate::types::{
    ChallengeBudget, CloseReason, ConnId, Event, Events, ListenerId, StackError, State, Stats,
};
use crate::wire::{Ipv4Header, Packet, TcpFlags, TcpHeader, TcpOptions, PROTO_TCP};

/// MSS assumed when the peer's SYN carries none (RFC 9293).
const DEFAULT_MSS: u16 = 536;
/// Most segments kept out of order per connection.
const MAX_OUT_OF_ORDER: usize = 64;
/// Largest window scale shift (RFC 7323).
const MAX_WINDOW_SCALE: u8 = 14;

/// What a connection needs from the stack while it handles one input or timer.
pub(crate) struct Ctx<'a> {
    pub now: Duration,
    pub cfg: &'a StackConfig,
    pub trace: &'a Trace,
    pub out: &'a mut VecDeque<Bytes>,
    pub events: &'a mut Events,
    pub stats: &'a mut Stats,
    pub budget: &'a mut ChallengeBudget,
}

/// Sends one segment with no connection behind it (RSTs for strays).
pub(crate) fn emit_raw(
    ctx: &mut Ctx<'_>,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    tcp: TcpHeader,
    payload: &[u8],
) {
    let ip = Ipv4Header {
        src: *local.ip(),
        dst: *remote.ip(),
        protocol: PROTO_TCP,
        ttl: ctx.cfg.ttl,
        tos: 0,
        ident: 0,
        dont_fragment: true,
    };
    let p = Packet { ip, tcp, payload };
    let mut b = BytesMut::new();
    // Our own segments are at most MSS + 60 bytes: encoding cannot fail.
    if p.encode(&mut b).is_ok() {
        ctx.stats.packets_out += 1;
        if tcp.flags.contains(TcpFlags::RST) {
            ctx.stats.rst_sent += 1;
        }
        ctx.out.push_back(b.freeze());
    }
}

/// A connection's transmission control block.
pub(crate) struct Conn {
    pub id: ConnId,
    pub name: String,
    pub state: State,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub listener: Option<ListenerId>,
    /// Handed to the application (accepted, or opened by connect).
    pub accepted: bool,
    /// The application closed its handle.
    pub released: bool,
    /// The application asked for close while data was unacked: reset once it is.
    pub close_requested: bool,
    /// We sent an RST: the connection is dead on the wire.
    pub reset_sent: bool,
    /// Why the connection reached CLOSED.
    pub reason: Option<CloseReason>,
    /// Became ESTABLISHED through the handshake during the last call (the stack queues
    /// it on its listener).
    pub just_established: bool,

    iss: Seq,
    snd_una: Seq,
    snd_nxt: Seq,
    snd_max: Seq,
    snd_wnd: u32,
    snd_wl1: Seq,
    snd_wl2: Seq,
    snd_scale: u8,
    rcv_scale: u8,
    mss: u16,
    snd_buf: VecDeque<u8>,
    /// Sequence number of `snd_buf[0]`.
    data_start: Seq,
    fin_queued: bool,
    rto: Duration,
    rto_at: Option<Duration>,
    retries: u32,
    /// Duplicate ACKs in a row (same ack, no data, data in flight).
    dupacks: u32,
    /// After a fast go-back, no other until the ack passes this.
    recover: Option<Seq>,

    irs: Seq,
    rcv_nxt: Seq,
    rcv_buf: VecDeque<u8>,
    fin_rcvd: bool,
    /// Segments that arrived ahead of a hole: (seq, bytes, FIN).
    ooo: Vec<(Seq, Vec<u8>, bool)>,
    ack_at: Option<Duration>,
    ack_now: bool,
    syn_deadline: Option<Duration>,
    /// The SYN_RCVD time ran out (the stack remembers the handshake for a late ACK).
    half_open_expired: bool,
    expired_at: Option<Duration>,
}

impl Conn {
    fn blank(
        id: ConnId,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        iss: Seq,
        cfg: &StackConfig,
    ) -> Conn {
        Conn {
            id,
            name: format!("tcp[{local}-{remote}]"),
            state: State::Closed,
            local,
            remote,
            listener: None,
            accepted: false,
            released: false,
            close_requested: false,
            reset_sent: false,
            reason: None,
            just_established: false,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            snd_wl1: Seq(0),
            snd_wl2: iss,
            snd_scale: 0,
            rcv_scale: 0,
            mss: DEFAULT_MSS.min(cfg.mss),
            snd_buf: VecDeque::new(),
            data_start: iss.plus(1),
            fin_queued: false,
            rto: cfg.rto_initial,
            rto_at: None,
            retries: 0,
            dupacks: 0,
            recover: None,
            irs: Seq(0),
            rcv_nxt: Seq(0),
            rcv_buf: VecDeque::new(),
            fin_rcvd: false,
            ooo: Vec::new(),
            ack_at: None,
            ack_now: false,
            syn_deadline: None,
            half_open_expired: false,
            expired_at: None,
        }
    }

    /// A half-open connection that expired, rebuilt in SYN_RCVD because its handshake
    /// ACK came late (see `Stack::revive`); sends nothing: the ACK in hand completes it.
    pub(crate) fn revived(ctx: &mut Ctx<'_>, id: ConnId, h: &HalfOpen) -> Conn {
        let mut c = Conn::blank(id, h.local, h.remote, h.iss, ctx.cfg);
        c.listener = Some(h.listener);
        c.irs = h.irs;
        c.rcv_nxt = h.irs.plus(1);
        c.mss = h.mss;
        c.snd_scale = h.snd_scale;
        c.rcv_scale = h.rcv_scale;
        c.snd_wnd = h.snd_wnd;
        c.snd_wl1 = h.irs;
        c.snd_nxt = h.iss.plus(1);
        c.snd_max = c.snd_nxt;
        c.syn_deadline = Some(ctx.now + ctx.cfg.syn_rcvd_timeout);
        c.set_state(
            ctx,
            State::SynRcvd,
            "recv the handshake ACK after the SYN_RCVD timeout",
        );
        c
    }

    /// The handshake of a half-open connection whose SYN_RCVD time ran out.
    pub(crate) fn expired_half_open(&self) -> Option<HalfOpen> {
        if !self.half_open_expired {
            return None;
        }
        Some(HalfOpen {
            listener: self.listener?,
            local: self.local,
            remote: self.remote,
            iss: self.iss,
            irs: self.irs,
            mss: self.mss,
            snd_scale: self.snd_scale,
            rcv_scale: self.rcv_scale,
            snd_wnd: self.snd_wnd,
            at: self.expired_at?,
        })
    }

    /// A passive open: `syn` arrived on a listener; answers with SYN-ACK.
    pub(crate) fn passive(
        ctx: &mut Ctx<'_>,
        id: ConnId,
        listener: ListenerId,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        syn: &TcpHeader,
        iss: Seq,
    ) -> Conn {
        let mut c = Conn::blank(id, local, remote, iss, ctx.cfg);
        c.listener = Some(listener);
        c.irs = Seq(syn.seq);
        c.rcv_nxt = c.irs.plus(1);
        c.learn_options(ctx.cfg, &syn.options, true);
        c.snd_wnd = u32::from(syn.window);
        c.snd_wl1 = c.irs;
        c.syn_deadline = Some(ctx.now + ctx.cfg.syn_rcvd_timeout);
        c.set_state(ctx, State::SynRcvd, "recv SYN, send SYN|ACK");
        c.send_syn(ctx);
        c
    }

    /// An active open: sends SYN.
    pub(crate) fn active(
        ctx: &mut Ctx<'_>,
        id: ConnId,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        iss: Seq,
    ) -> Conn {
        let mut c = Conn::blank(id, local, remote, iss, ctx.cfg);
        c.accepted = true;
        c.set_state(ctx, State::SynSent, "appl: connect, send SYN");
        c.send_syn(ctx);
        c.rto_at = Some(ctx.now + c.rto);
        c
    }

    fn learn_options(&mut self, cfg: &StackConfig, o: &TcpOptions, offer_ws: bool) {
        // Like Linux, no MSS below 48 (a tiny one would flood); never above ours.
        self.mss = o.mss.unwrap_or(DEFAULT_MSS).max(48).min(cfg.mss.max(1));
        // Scaling only when both sides offered it.
        match (o.window_scale, offer_ws) {
            (Some(ws), true) => {
                self.snd_scale = ws.min(MAX_WINDOW_SCALE);
                self.rcv_scale = cfg.window_scale.min(MAX_WINDOW_SCALE);
            }
            _ => {
                self.snd_scale = 0;
                self.rcv_scale = 0;
            }
        }
    }

    fn set_state(&mut self, ctx: &mut Ctx<'_>, to: State, cause: &'static str) {
        ctx.trace.transition(
            ctx.now,
            self.name.clone(),
            self.state.name(),
            to.name(),
            cause,
        );
        self.state = to;
    }

    /// A record that is not a state change but a rule firing (retransmission, challenge
    /// ACK, SYN-ACK re-sent), so snapshots show it.
    fn note(&self, ctx: &mut Ctx<'_>, cause: String) {
        if ctx.trace.is_enabled() {
            ctx.trace.transition(
                ctx.now,
                self.name.clone(),
                self.state.name(),
                self.state.name(),
                cause,
            );
        }
    }

    fn event(&self, ctx: &mut Ctx<'_>, e: Event) {
        if self.accepted && !self.released {
            ctx.events.push(e);
        }
    }

    /// The window we advertise, in bytes (the receive buffer, limited by what the
    /// scale lets the 16-bit field say).
    fn rcv_wnd(&self, cfg: &StackConfig) -> u32 {
        let max = 65_535u32 << self.rcv_scale;
        let w = (cfg.recv_buffer.min(u32::MAX as usize) as u32).min(max);
        w >> self.rcv_scale << self.rcv_scale
    }

    /// The acknowledgment number we may send: up to what the application has read, plus
    /// the FIN once everything before it was read.
    pub(crate) fn ack_value(&self) -> Seq {
        if self.fin_rcvd {
            if self.rcv_buf.is_empty() {
                self.rcv_nxt
            } else {
                self.rcv_nxt.minus(1 + self.rcv_buf.len() as u32)
            }
        } else {
            self.rcv_nxt.minus(self.rcv_buf.len() as u32)
        }
    }

    fn data_end(&self) -> Seq {
        self.data_start.plus(self.snd_buf.len() as u32)
    }

    fn emit(&mut self, ctx: &mut Ctx<'_>, seq: Seq, flags: TcpFlags, payload: &[u8]) {
        let syn = flags.contains(TcpFlags::SYN);
        let wnd = self.rcv_wnd(ctx.cfg);
        let window = if syn {
            wnd.min(65_535) as u16
        } else {
            (wnd >> self.rcv_scale).min(65_535) as u16
        };
        let ack_flag = flags.contains(TcpFlags::ACK);
        let mut options = TcpOptions::default();
        if syn {
            options.mss = Some(ctx.cfg.mss);
            // Offer scaling on an active SYN; answer it only when the peer offered it.
            if self.state == State::SynSent || self.rcv_scale > 0 {
                options.window_scale = Some(ctx.cfg.window_scale.min(MAX_WINDOW_SCALE));
            }
        }
        let tcp = TcpHeader {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq: seq.0,
            ack: if ack_flag { self.ack_value().0 } else { 0 },
            flags,
            window,
            urgent: 0,
            options,
        };
        if ack_flag {
            self.ack_now = false;
            self.ack_at = None;
        }
        emit_raw(ctx, self.local, self.remote, tcp, payload);
    }

    fn send_syn(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            State::SynSent => self.emit(ctx, self.iss, TcpFlags::SYN, &[]),
            _ => self.emit(ctx, self.iss, TcpFlags::SYN | TcpFlags::ACK, &[]),
        }
        self.snd_nxt = self.iss.plus(1);
        self.snd_max = self.snd_max.max(self.snd_nxt);
    }

    /// Sends an RST for this connection (seq = what we would send next) and marks it
    /// dead on the wire.
    fn send_rst(&mut self, ctx: &mut Ctx<'_>) {
        if self.reset_sent {
            return;
        }
        let tcp = TcpHeader {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq: self.snd_max.0,
            ack: self.ack_value().0,
            flags: TcpFlags::RST | TcpFlags::ACK,
            window: 0,
            urgent: 0,
            options: TcpOptions::default(),
        };
        emit_raw(ctx, self.local, self.remote, tcp, &[]);
        self.reset_sent = true;
        self.rto_at = None;
        self.ack_at = None;
        self.ack_now = false;
    }

    fn enter_closed(&mut self, ctx: &mut Ctx<'_>, reason: CloseReason, cause: &'static str) {
        self.set_state(ctx, State::Closed, cause);
        self.reason.get_or_insert(reason);
        self.rto_at = None;
        self.ack_at = None;
        self.ack_now = false;
        self.syn_deadline = None;
        self.event(ctx, Event::Closed(self.id, reason));
        self.event(ctx, Event::Readable(self.id));
        self.event(ctx, Event::Writable(self.id));
    }

    /// Earliest time this connection needs [`Conn::on_timeout`].
    pub(crate) fn poll_timeout(&self) -> Option<Duration> {
        let mut t = self.rto_at;
        for x in [self.ack_at, self.syn_deadline].into_iter().flatten() {
            t = Some(t.map_or(x, |t| t.min(x)));
        }
        if self.ack_now {
            t = Some(Duration::ZERO);
        }
        t
    }

    /// Timers: SYN_RCVD expiry, retransmission (or zero-window probe), delayed ACK.
    pub(crate) fn on_timeout(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == State::Closed {
            return;
        }
        if let Some(d) = self.syn_deadline {
            if ctx.now >= d && self.state == State::SynRcvd {
                self.half_open_expired = true;
                self.expired_at = Some(ctx.now);
                self.enter_closed(ctx, CloseReason::TimedOut, "SYN_RCVD timeout");
                return;
            }
        }
        if let Some(t) = self.rto_at {
            if ctx.now >= t {
                self.rto_at = None;
                self.retransmit(ctx);
                if self.state == State::Closed {
                    return;
                }
            }
        }
        self.flush(ctx);
    }

    fn retransmit(&mut self, ctx: &mut Ctx<'_>) {
        let in_flight = self.snd_nxt.since(self.snd_una);
        let waiting = self.data_end().gt(self.snd_nxt);
        if in_flight == 0 && !waiting {
            return;
        }
        self.retries += 1;
        let limit = if self.close_requested {
            ctx.cfg.close_retries
        } else {
            ctx.cfg.max_retries
        };
        if self.retries > limit {
            self.send_rst(ctx);
            self.enter_closed(
                ctx,
                CloseReason::TimedOut,
                "retransmissions exhausted, send RST",
            );
            return;
        }
        self.rto = (self.rto * 2).min(ctx.cfg.rto_max);
        ctx.stats.retransmits += 1;
        if self.state == State::SynSent {
            self.note(
                ctx,
                format!("rto: resend SYN, next rto {}ms", self.rto.as_millis()),
            );
            self.send_syn(ctx);
            self.rto_at = Some(ctx.now + self.rto);
        } else if in_flight > 0 {
            self.note(
                ctx,
                format!(
                    "rto: resend from seq {} ({} bytes in flight), next rto {}ms",
                    self.snd_una,
                    in_flight,
                    self.rto.as_millis()
                ),
            );
            self.snd_nxt = self.snd_una;
            self.recover = Some(self.snd_max);
            self.dupacks = 0;
        } else {
            // Zero window: probe with an empty segment one byte below the window, which
            // the peer must answer with an ACK carrying its window (as Linux probes).
            // It takes no sequence space: a probe byte sent beyond the window and
            // dropped there left a hole before everything sent once the window opened,
            // and a capture analyser saw that byte's ACK as the ACK of an unseen segment.
            self.note(
                ctx,
                format!("zero window: probe at seq {}", self.snd_una.minus(1)),
            );
            self.emit(ctx, self.snd_una.minus(1), TcpFlags::ACK, &[]);
            self.rto_at = Some(ctx.now + self.rto);
        }
    }

    /// Sends what the window, the cap and the buffers allow, then a pure ACK if one is
    /// due and no segment carried it.
    pub(crate) fn flush(&mut self, ctx: &mut Ctx<'_>) {
        if self.reset_sent
            || matches!(
                self.state,
                State::Closed | State::Listen | State::SynSent | State::SynRcvd
            )
        {
            // Dead on the wire, or before the handshake (SYN and SYN-ACK go by their own
            // rules): no ACK is owed, so none stays pending.
            self.ack_now = false;
            self.ack_at = None;
            return;
        }
        let mut sent = false;
        let mss = u32::from(self.mss);
        let cap = self.snd_wnd.min(ctx.cfg.cap_segments.saturating_mul(mss));
        let limit = self.snd_una.plus(cap);
        loop {
            let end = self.data_end();
            if self.snd_nxt.lt(end) {
                let avail = end.since(self.snd_nxt);
                let room = if limit.gt(self.snd_nxt) {
                    limit.since(self.snd_nxt)
                } else {
                    0
                };
                let full = avail.min(room).min(mss);
                let in_flight = self.snd_nxt.since(self.snd_una);
                if full == 0 || (full < mss && full < avail && in_flight > 0) {
                    break;
                }
                let resend = self.snd_nxt.lt(self.snd_max);
                // A resent segment ends where the first sending stopped, so each segment
                // is either all old bytes or starts the new ones (capture analysers track
                // the highest contiguous byte from segment starts, and a resent segment
                // straddling it left Wireshark's mark behind: "ACKed unseen segment").
                let len = if resend {
                    full.min(self.snd_max.since(self.snd_nxt))
                } else {
                    full
                };
                let off = self.snd_nxt.since(self.data_start) as usize;
                let payload: Vec<u8> = self
                    .snd_buf
                    .range(off..off + len as usize)
                    .copied()
                    .collect();
                let fin = self.fin_queued && self.snd_nxt.plus(len) == end;
                let mut flags = TcpFlags::ACK | TcpFlags::PSH;
                if fin {
                    flags = flags | TcpFlags::FIN;
                }
                if resend {
                    ctx.stats.segments_resent += 1;
                }
                self.emit(ctx, self.snd_nxt, flags, &payload);
                self.snd_nxt = self.snd_nxt.plus(len + u32::from(fin));
                sent = true;
                continue;
            }
            if self.fin_queued && self.snd_nxt == end {
                self.emit(ctx, self.snd_nxt, TcpFlags::FIN | TcpFlags::ACK, &[]);
                self.snd_nxt = self.snd_nxt.plus(1);
                sent = true;
            }
            break;
        }
        self.snd_max = self.snd_max.max(self.snd_nxt);
        let in_flight = self.snd_nxt != self.snd_una;
        let waiting = self.data_end().gt(self.snd_nxt);
        if (in_flight || waiting) && self.rto_at.is_none() {
            self.rto_at = Some(ctx.now + self.rto);
        }
        let ack_due = self.ack_now || self.ack_at.is_some_and(|t| t <= ctx.now);
        if !sent && ack_due {
            // Pure ACKs carry the highest sequence number sent (as BSD does): after a
            // go-back-N rewind snd_nxt is behind what the peer has acked, and an ACK
            // from there would be unacceptable to it and answered, forever.
            self.emit(ctx, self.snd_max, TcpFlags::ACK, &[]);
        }
    }

    fn challenge_ack(&mut self, ctx: &mut Ctx<'_>, why: &str) {
        if !ctx.budget.take(ctx.now, ctx.cfg.challenge_acks_per_second) {
            ctx.stats.challenge_acks_limited += 1;
            return;
        }
        ctx.stats.challenge_acks += 1;
        self.note(ctx, format!("{why}: challenge ACK"));
        self.ack_now = true;
        self.flush(ctx);
    }

    /// One segment for this connection.
    pub(crate) fn on_segment(&mut self, ctx: &mut Ctx<'_>, h: &TcpHeader, payload: &[u8]) {
        if self.reset_sent || matches!(self.state, State::Closed | State::Listen) {
            return;
        }
        if self.state == State::SynSent {
            self.on_syn_sent(ctx, h);
            return;
        }
        let seq = Seq(h.seq);
        let ack = Seq(h.ack);
        let f = h.flags;
        let lo = self.ack_value();
        let wnd = self.rcv_wnd(ctx.cfg);
        let hi = lo.plus(wnd);

        // RST (RFC 5961 section 3): exact -> reset, in window -> challenge, else drop.
        // Exact is the next byte we expect, or the ack we send (an RST answering one of
        // our segments carries it; they differ while data is unread).
        if f.contains(TcpFlags::RST) {
            ctx.stats.rst_received += 1;
            if seq == self.rcv_nxt || seq == lo {
                self.enter_closed(ctx, CloseReason::Reset, "recv RST");
            } else if seq.in_range(lo, hi) {
                self.challenge_ack(ctx, "RST in window, not exact");
            } else {
                ctx.stats.dropped += 1;
            }
            return;
        }
        // SYN on a synchronized connection (RFC 5961 section 4): challenge; the SYN
        // retransmitted in SYN_RCVD gets its SYN-ACK again (the seed's only SYN-ACK resend).
        if f.contains(TcpFlags::SYN) {
            if self.state == State::SynRcvd && seq == self.irs && !f.contains(TcpFlags::ACK) {
                ctx.stats.synack_resent += 1;
                self.note(ctx, "recv SYN again, resend SYN|ACK".into());
                self.send_syn(ctx);
                // The peer is alive: its half-open entry gets the full time again, so a
                // SYN-ACK just sent is not answered by a RST for an expired entry.
                self.syn_deadline = Some(ctx.now + ctx.cfg.syn_rcvd_timeout);
            } else {
                self.challenge_ack(ctx, "SYN on a synchronized connection");
            }
            return;
        }
        // Acceptability (RFC 9293 3.10.7.4) against [ack we sent, + window).
        let seg_len = payload.len() as u32 + u32::from(f.contains(TcpFlags::FIN));
        let acceptable = if seg_len == 0 {
            seq.in_range(lo, hi) || (wnd == 0 && seq == lo)
        } else {
            seq.lt(hi) && seq.plus(seg_len).gt(lo)
        };
        if !acceptable {
            ctx.stats.dropped += 1;
            self.ack_now = true;
            self.flush(ctx);
            return;
        }
        if !f.contains(TcpFlags::ACK) {
            ctx.stats.dropped += 1;
            return;
        }
        if self.state == State::SynRcvd {
            if ack == self.iss.plus(1) {
                self.snd_una = ack;
                self.rto_at = None;
                self.syn_deadline = None;
                self.snd_wnd = u32::from(h.window) << self.snd_scale;
                self.snd_wl1 = seq;
                self.snd_wl2 = ack;
                self.just_established = true;
                self.set_state(ctx, State::Established, "recv ACK");
            } else {
                // RFC 9293: an unacceptable ACK in SYN_RCVD gets <SEQ=SEG.ACK><CTL=RST>.
                ctx.stats.dropped += 1;
                let tcp = TcpHeader {
                    src_port: self.local.port(),
                    dst_port: self.remote.port(),
                    seq: ack.0,
                    flags: TcpFlags::RST,
                    ..TcpHeader::default()
                };
                emit_raw(ctx, self.local, self.remote, tcp, &[]);
                return;
            }
        } else {
            if ack.gt(self.snd_max) {
                ctx.stats.dropped += 1;
                self.ack_now = true;
                self.flush(ctx);
                return;
            }
            if ack.gt(self.snd_una) {
                self.dupacks = 0;
                if self.recover.is_some_and(|r| ack.ge(r)) {
                    self.recover = None;
                }
                self.on_ack_progress(ctx, ack);
                if self.state == State::Closed {
                    return;
                }
            } else if ack == self.snd_una
                && payload.is_empty()
                && !f.contains(TcpFlags::FIN)
                && self.snd_max != self.snd_una
            {
                self.on_dupack(ctx);
            }
            if self.snd_wl1.lt(seq) || (self.snd_wl1 == seq && self.snd_wl2.le(ack)) {
                let was_zero = self.snd_wnd == 0;
                self.snd_wnd = u32::from(h.window) << self.snd_scale;
                self.snd_wl1 = seq;
                self.snd_wl2 = ack;
                if was_zero && self.snd_wnd > 0 && self.snd_nxt == self.snd_una {
                    // Window opened: send at once, not after the probe timer, and with
                    // the first timeout again (the probes doubled it). Probes count
                    // toward the retransmission limits, answered or not, so a peer that
                    // keeps its window shut does not keep a connection for ever.
                    self.rto_at = None;
                    self.rto = ctx.cfg.rto_initial;
                    self.retries = 0;
                }
            }
        }
        self.on_data(ctx, seq, payload, f.contains(TcpFlags::FIN));
        self.flush(ctx);
    }

    /// Three duplicate ACKs: the peer keeps nothing out of order, so go back to the
    /// oldest un-acked byte now instead of waiting for the rto (an addition to vproxy,
    /// which only has the timer); once per window. Already recovering (a go-back by
    /// the timer or by duplicate ACKs is under way), resend only the oldest segment.
    fn on_dupack(&mut self, ctx: &mut Ctx<'_>) {
        self.dupacks += 1;
        if self.dupacks != 3 {
            return;
        }
        if self.recover.is_none() {
            ctx.stats.fast_retransmits += 1;
            self.recover = Some(self.snd_max);
            self.note(
                ctx,
                format!("3 duplicate ACKs: resend from seq {}", self.snd_una),
            );
            self.snd_nxt = self.snd_una;
        } else {
            self.resend_oldest(ctx);
        }
    }

    /// Resends the one segment at the oldest un-acked byte, leaving the go-back round
    /// where it is. Called on the third duplicate ACK while recovering: the round's
    /// later segments reached the peer (each answered by the duplicate ACK) but the one
    /// its ACK waits for did not, lost again or dropped by a peer that keeps few ranges
    /// out of order. Without it that segment waited for the next, backed-off timeout:
    /// lost eight rounds in a row on a 19% loss link, it stalled a connection for 100 s
    /// (`tcpstack-bulk`, swarm seed 428). Once per value of the oldest un-acked byte
    /// (the duplicate count restarts when the ACK moves).
    fn resend_oldest(&mut self, ctx: &mut Ctx<'_>) {
        if self.snd_una.lt(self.data_start) {
            return;
        }
        let end = self.data_end();
        let sent_end = if self.snd_max.lt(end) {
            self.snd_max
        } else {
            end
        };
        let len = if sent_end.gt(self.snd_una) {
            sent_end.since(self.snd_una).min(u32::from(self.mss))
        } else {
            0
        };
        let fin = self.fin_queued && self.snd_max.gt(end) && self.snd_una.plus(len) == end;
        if len == 0 && !fin {
            return;
        }
        let off = self.snd_una.since(self.data_start) as usize;
        let payload: Vec<u8> = self
            .snd_buf
            .range(off..off + len as usize)
            .copied()
            .collect();
        let mut flags = TcpFlags::ACK;
        if len > 0 {
            flags = flags | TcpFlags::PSH;
        }
        if fin {
            flags = flags | TcpFlags::FIN;
        }
        ctx.stats.fast_retransmits += 1;
        ctx.stats.segments_resent += 1;
        self.note(
            ctx,
            format!(
                "3 duplicate ACKs while recovering: resend the segment at seq {} ({len} bytes)",
                self.snd_una
            ),
        );
        let seq = self.snd_una;
        self.emit(ctx, seq, flags, &payload);
    }

    fn on_ack_progress(&mut self, ctx: &mut Ctx<'_>, ack: Seq) {
        let data_acked = if ack.gt(self.data_start) {
            (ack.since(self.data_start) as usize).min(self.snd_buf.len())
        } else {
            0
        };
        let had_full = self.snd_buf.len() >= ctx.cfg.send_buffer;
        self.snd_buf.drain(..data_acked);
        self.data_start = self.data_start.plus(data_acked as u32);
        self.snd_una = ack;
        if self.snd_nxt.lt(self.snd_una) {
            self.snd_nxt = self.snd_una;
        }
        self.rto = ctx.cfg.rto_initial;
        self.retries = 0;
        self.rto_at = if self.snd_una == self.snd_max {
            None
        } else {
            Some(ctx.now + self.rto)
        };
        if data_acked > 0 && (had_full || self.snd_buf.is_empty()) && !self.fin_queued {
            self.event(ctx, Event::Writable(self.id));
        }
        let fin_acked = self.fin_queued && ack.gt(self.data_end());
        if fin_acked && self.snd_buf.is_empty() {
            // Whoever waits for everything to arrive (the socket API's linger) may go on.
            self.event(ctx, Event::Writable(self.id));
        }
        if self.close_requested && self.snd_buf.is_empty() {
            self.send_rst(ctx);
            self.enter_closed(
                ctx,
                CloseReason::Closed,
                "all data acked after close, send RST",
            );
            return;
        }
        if fin_acked && self.state == State::FinWait1 {
            self.set_state(ctx, State::FinWait2, "recv ACK of FIN");
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_>, seq: Seq, payload: &[u8], fin: bool) {
        let receiving = matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        );
        if !receiving || self.fin_rcvd || (payload.is_empty() && !fin) {
            return;
        }
        if self.close_requested && !payload.is_empty() {
            // Nobody will read it: drop (the reset follows once our data is acked).
            return;
        }
        let mut s = seq;
        let mut p = payload;
        if s.lt(self.rcv_nxt) {
            let cut = self.rcv_nxt.since(s) as usize;
            if cut > p.len() {
                // Only old bytes (and a FIN we already have cannot be: fin_rcvd is false).
                return;
            }
            p = &p[cut..];
            s = self.rcv_nxt;
        }
        if s.gt(self.rcv_nxt) {
            // Out of order: kept if it fits the window and the queue (vproxy drops it
            // silently); an ACK says at once where we are.
            ctx.stats.out_of_order += 1;
            self.ack_now = true;
            let hi = self.ack_value().plus(self.rcv_wnd(ctx.cfg));
            let end = s.plus(p.len() as u32);
            let kept: usize = self.ooo.iter().map(|(_, d, _)| d.len()).sum();
            let cap = self.rcv_wnd(ctx.cfg) as usize;
            if end.le(hi) && self.ooo.len() < MAX_OUT_OF_ORDER && kept + p.len() <= cap {
                self.ooo.push((s, p.to_vec(), fin));
            }
            return;
        }
        let whole = self.accept_in_order(ctx, p);
        if fin && whole {
            self.accept_fin(ctx);
            return;
        }
        // Segments kept out of order that now follow on.
        while !self.fin_rcvd {
            let Some(i) = self.ooo.iter().position(|(s, _, _)| s.le(self.rcv_nxt)) else {
                break;
            };
            let (s, d, fin) = self.ooo.swap_remove(i);
            let end = s.plus(d.len() as u32);
            if end.lt(self.rcv_nxt) || (end == self.rcv_nxt && !fin) {
                continue;
            }
            let cut = self.rcv_nxt.since(s) as usize;
            let whole = self.accept_in_order(ctx, &d[cut..]);
            if fin && whole {
                self.accept_fin(ctx);
            }
        }
        if self.fin_rcvd {
            self.ooo.clear();
        }
    }

    /// Appends in-order bytes as far as the window allows; true when all fit.
    fn accept_in_order(&mut self, ctx: &mut Ctx<'_>, p: &[u8]) -> bool {
        if p.is_empty() {
            return true;
        }
        let hi = self.ack_value().plus(self.rcv_wnd(ctx.cfg));
        let room = if hi.gt(self.rcv_nxt) {
            hi.since(self.rcv_nxt) as usize
        } else {
            0
        };
        let take = p.len().min(room);
        self.rcv_buf.extend(&p[..take]);
        self.rcv_nxt = self.rcv_nxt.plus(take as u32);
        if take > 0 {
            ctx.stats.bytes_received += take as u64;
            self.event(ctx, Event::Readable(self.id));
        }
        take == p.len()
    }

    fn accept_fin(&mut self, ctx: &mut Ctx<'_>) {
        self.rcv_nxt = self.rcv_nxt.plus(1);
        self.fin_rcvd = true;
        self.ooo.clear();
        if self.rcv_buf.is_empty() {
            self.ack_now = true;
        }
        self.event(ctx, Event::Readable(self.id));
        match self.state {
            State::Established => self.set_state(ctx, State::CloseWait, "recv FIN, ACK once read"),
            State::FinWait1 => self.set_state(ctx, State::Closing, "recv FIN"),
            State::FinWait2 => {
                self.set_state(ctx, State::Closing, "recv FIN, send RST");
                self.send_rst(ctx);
            }
            _ => {}
        }
    }

    fn on_syn_sent(&mut self, ctx: &mut Ctx<'_>, h: &TcpHeader) {
        let f = h.flags;
        let ack = Seq(h.ack);
        let ack_ok = f.contains(TcpFlags::ACK) && ack == self.iss.plus(1);
        if f.contains(TcpFlags::ACK) && !ack_ok {
            if !f.contains(TcpFlags::RST) {
                let tcp = TcpHeader {
                    src_port: self.local.port(),
                    dst_port: self.remote.port(),
                    seq: ack.0,
                    flags: TcpFlags::RST,
                    ..TcpHeader::default()
                };
                emit_raw(ctx, self.local, self.remote, tcp, &[]);
            }
            ctx.stats.dropped += 1;
            return;
        }
        if f.contains(TcpFlags::RST) {
            if ack_ok {
                ctx.stats.rst_received += 1;
                self.enter_closed(ctx, CloseReason::Refused, "recv RST|ACK (refused)");
            }
            return;
        }
        if !(f.contains(TcpFlags::SYN) && ack_ok) {
            // A bare SYN (simultaneous open) is not supported.
            ctx.stats.dropped += 1;
            return;
        }
        self.irs = Seq(h.seq);
        self.rcv_nxt = self.irs.plus(1);
        self.snd_una = ack;
        self.learn_options(ctx.cfg, &h.options, true);
        self.snd_wnd = u32::from(h.window);
        self.snd_wl1 = self.irs;
        self.snd_wl2 = ack;
        self.rto = ctx.cfg.rto_initial;
        self.rto_at = None;
        self.retries = 0;
        self.set_state(ctx, State::Established, "recv SYN|ACK, send ACK");
        self.event(ctx, Event::Connected(self.id));
        self.event(ctx, Event::Writable(self.id));
        self.ack_now = true;
        self.flush(ctx);
    }

    // ----- application calls -----

    /// Reads buffered data; the ACK for it follows after the delayed-ACK time (at once
    /// when the read reaches a FIN). `Ok(0)` is end of stream.
    pub(crate) fn read(&mut self, ctx: &mut Ctx<'_>, buf: &mut [u8]) -> Result<usize, StackError> {
        if self.state == State::Closed {
            if let Some(r) = self.reason {
                if r != CloseReason::Closed {
                    return Err(r.into());
                }
            }
        }
        if !self.rcv_buf.is_empty() {
            let n = buf.len().min(self.rcv_buf.len());
            for (d, s) in buf.iter_mut().zip(self.rcv_buf.drain(..n)) {
                *d = s;
            }
            if self.fin_rcvd && self.rcv_buf.is_empty() {
                self.ack_now = true;
            } else if self.ack_at.is_none() {
                self.ack_at = Some(ctx.now + ctx.cfg.delayed_ack);
            }
            self.flush(ctx);
            return Ok(n);
        }
        if self.fin_rcvd || buf.is_empty() || self.state == State::Closed {
            return Ok(0);
        }
        Err(StackError::WouldBlock)
    }

    /// Buffers data to send (as much as the send buffer takes).
    pub(crate) fn write(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Result<usize, StackError> {
        match self.state {
            State::Closed => return Err(self.reason.unwrap_or(CloseReason::Closed).into()),
            _ if self.fin_queued || self.reset_sent => return Err(StackError::Shutdown),
            State::Established | State::CloseWait | State::SynSent => {}
            _ => return Err(StackError::NotConnected),
        }
        let space = ctx.cfg.send_buffer.saturating_sub(self.snd_buf.len());
        if space == 0 {
            return Err(StackError::WouldBlock);
        }
        let n = space.min(data.len());
        self.snd_buf.extend(&data[..n]);
        self.flush(ctx);
        Ok(n)
    }

    /// Bytes the application may still write without blocking.
    pub(crate) fn send_space(&self, cfg: &StackConfig) -> usize {
        cfg.send_buffer.saturating_sub(self.snd_buf.len())
    }

    /// The view [`crate::Stack::info`] gives.
    pub(crate) fn info(&self) -> crate::types::ConnInfo {
        crate::types::ConnInfo {
            state: self.state,
            snd_una: self.snd_una,
            snd_nxt: self.snd_nxt,
            snd_wnd: self.snd_wnd,
            rcv_nxt: self.rcv_nxt,
            ack: self.ack_value(),
            readable: self.rcv_buf.len(),
            unacked: self.snd_buf.len(),
        }
    }

    /// Bytes buffered for the application to read.
    pub(crate) fn readable(&self) -> usize {
        self.rcv_buf.len()
    }

    /// Whether the peer's FIN has arrived.
    pub(crate) fn fin_received(&self) -> bool {
        self.fin_rcvd
    }

    /// Bytes written but not yet acked.
    pub(crate) fn unacked(&self) -> usize {
        self.snd_buf.len()
    }

    /// Whether our FIN was sent and acknowledged (so all we wrote arrived).
    pub(crate) fn fin_acked(&self) -> bool {
        self.fin_queued && self.snd_buf.is_empty() && self.snd_una.gt(self.data_end())
    }

    /// Our FIN after the buffered data (shutdown of the write side).
    pub(crate) fn shutdown(&mut self, ctx: &mut Ctx<'_>) -> Result<(), StackError> {
        if self.fin_queued {
            return Ok(());
        }
        match self.state {
            State::Established => self.set_state(ctx, State::FinWait1, "appl: shutdown, send FIN"),
            State::CloseWait => self.set_state(ctx, State::Closing, "appl: shutdown, send FIN"),
            State::Closed => return Err(self.reason.unwrap_or(CloseReason::Closed).into()),
            _ => return Err(StackError::NotConnected),
        }
        self.fin_queued = true;
        self.flush(ctx);
        Ok(())
    }

    /// The application is done: RST at once when no data is un-acked, else FIN after the
    /// data and RST once it is all acked.
    pub(crate) fn close(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == State::Closed {
            self.released = true;
            return;
        }
        if self.state == State::SynSent || self.reset_sent {
            self.released = true;
            self.enter_closed(ctx, CloseReason::Closed, "appl: close");
            return;
        }
        if self.state == State::SynRcvd || self.snd_buf.is_empty() {
            self.released = true;
            self.send_rst(ctx);
            self.enter_closed(ctx, CloseReason::Closed, "appl: close, send RST");
            return;
        }
        self.close_requested = true;
        if !self.fin_queued {
            match self.state {
                State::Established => self.set_state(
                    ctx,
                    State::FinWait1,
                    "appl: close with data pending, send FIN",
                ),
                State::CloseWait => self.set_state(
                    ctx,
                    State::Closing,
                    "appl: close with data pending, send FIN",
                ),
                _ => {}
            }
            self.fin_queued = true;
        }
        self.released = true;
        self.flush(ctx);
    }

    /// Resets the connection because its listener closed (seed: close(lsn_fd)).
    pub(crate) fn abort(&mut self, ctx: &mut Ctx<'_>, cause: &'static str) {
        if self.state == State::Closed {
            return;
        }
        self.send_rst(ctx);
        self.enter_closed(ctx, CloseReason::ListenerClosed, cause);
    }
}
