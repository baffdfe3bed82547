//! A discrete-event loop that runs two ARQ endpoints over the simulator's link model in
//! virtual time, so two implementations can be compared on exactly the same link: same
//! seed, same loss pattern per datagram index, same clock, same payload.
//!
//! Every call into the implementations happens in one contiguous block per event, timed
//! with a monotonic clock; the harness's own work (the link model, the event heap,
//! checking the received bytes) happens outside it. The loop is single-threaded and never
//! blocks, so that time is CPU time spent in the implementation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tunnelbed_sim::link::{LinkModel, LinkParams, LinkStats};

use super::measure::thread_cpu;

/// What the benchmark needs from an ARQ implementation (ours or the reference port), so
/// one loop drives both the same way.
pub trait Arq {
    /// Queues one message (a write, in stream mode); false when the implementation
    /// refuses it.
    fn send(&mut self, msg: &[u8]) -> bool;
    /// Feeds one datagram from the link.
    fn input(&mut self, datagram: &[u8]);
    /// Advances the clock to `now_ms` (and flushes when due).
    fn update(&mut self, now_ms: u32);
    /// When `update` must be called next, as an absolute time on the same clock.
    fn check(&mut self, now_ms: u32) -> u32;
    /// Takes the next received message (stream mode: the next chunk of bytes).
    fn recv(&mut self) -> Option<Vec<u8>>;
    /// Takes the next datagram to put on the link.
    fn poll_output(&mut self) -> Option<Vec<u8>>;
    /// Segments waiting to be sent or acknowledged (ikcp_waitsnd).
    fn waitsnd(&self) -> usize;
}

/// What one transfer sends and how, identical for every implementation in a comparison.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The bytes to deliver, cut into messages of `msg_size` (the last may be shorter).
    pub payload: Vec<u8>,
    /// Message size (stream mode: the size of each write).
    pub msg_size: usize,
    /// Message mode: every `recv` must return exactly one whole message.
    pub message_mode: bool,
    /// The sending application writes only while `waitsnd` is below this, so latency
    /// measures the ARQ rather than an unbounded application queue.
    pub app_window: usize,
    /// Give up (and report the transfer as incomplete) after this much virtual time.
    pub limit: Duration,
}

/// Results of one transfer, for the benchmark table.
#[derive(Clone, Debug, Default)]
pub struct Transfer {
    /// Payload bytes delivered intact and in order.
    pub bytes: u64,
    /// Virtual time until the last byte arrived (or the limit).
    pub virtual_time: Duration,
    /// Per-message latency from the application's write to delivery of its last byte, µs.
    pub latencies_us: Vec<u64>,
    /// Datagrams the sender put on the link.
    pub datagrams_ab: u64,
    /// Datagrams the receiver put on the link (acks, window answers).
    pub datagrams_ba: u64,
    /// Data segments the sender sent again (timeouts, fast or spurious retransmissions).
    pub retransmits: u64,
    /// Wall time spent inside the two implementations' calls.
    pub impl_time: Duration,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Thread CPU time of the whole run, harness included (None where the kernel does
    /// not expose `/proc/thread-self/schedstat`).
    pub run_cpu: Option<Duration>,
    /// What the link model did, both directions.
    pub link: LinkStats,
    /// Whether every byte arrived intact, in order, with message boundaries kept (in
    /// message mode), before the limit.
    pub intact: bool,
    /// The first problem found, when not intact.
    pub problem: Option<String>,
}

impl Transfer {
    /// CPU time inside the implementations: the wall time of their calls scaled by the
    /// share of the run's wall time the thread was actually on a CPU, which removes time
    /// spent preempted by other processes (the share is 1 on an idle machine).
    pub fn impl_cpu(&self) -> Duration {
        match self.run_cpu {
            Some(cpu) if !self.wall.is_zero() => {
                let share = (cpu.as_secs_f64() / self.wall.as_secs_f64()).min(1.0);
                self.impl_time.mul_f64(share)
            }
            _ => self.impl_time,
        }
    }

    /// Goodput in bytes per second of virtual time.
    pub fn goodput(&self) -> f64 {
        let s = self.virtual_time.as_secs_f64();
        if s > 0.0 {
            self.bytes as f64 / s
        } else {
            0.0
        }
    }
}

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

/// Counts data segments the sender transmits more than once, by reading the KCP headers
/// of its datagrams (the harness's view, the same for every implementation).
#[derive(Default)]
struct RetransmitCounter {
    seen: Vec<u64>,
    retransmits: u64,
}

impl RetransmitCounter {
    fn datagram(&mut self, mut d: &[u8]) {
        while let Ok(h) = tunnelbed_kcp::wire::decode_header(d) {
            let end = 24usize.saturating_add(h.len as usize);
            if h.cmd == tunnelbed_kcp::wire::CMD_PUSH {
                let (w, bit) = ((h.sn / 64) as usize, h.sn % 64);
                if w < 1 << 24 {
                    if self.seen.len() <= w {
                        self.seen.resize(w + 1, 0);
                    }
                    if self.seen[w] & (1 << bit) != 0 {
                        self.retransmits += 1;
                    }
                    self.seen[w] |= 1 << bit;
                }
            }
            if end > d.len() {
                break;
            }
            d = &d[end..];
        }
    }
}

/// A datagram on the wire: arrival time in µs, a sequence number for a stable order,
/// whether it goes to `b`, and its bytes.
type InFlight = (u64, u64, bool, Vec<u8>);

/// Sends `w.payload` from `a` to `b` over a link with `params` seeded with `seed`, in
/// virtual time, and checks what `b` delivers against it.
pub fn transfer(
    a: &mut dyn Arq,
    b: &mut dyn Arq,
    params: &LinkParams,
    seed: u64,
    w: &Workload,
) -> Transfer {
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    let link = LinkModel::new(seed, params.clone());
    let base_us = params.latency.as_micros() as u64;
    let total = w.payload.len();
    let size = w.msg_size.max(1);
    let messages = total.div_ceil(size);
    let msg_end = |i: usize| ((i + 1) * size).min(total);

    let mut wire: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut due: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut out_a: Vec<Vec<u8>> = Vec::new();
    let mut out_b: Vec<Vec<u8>> = Vec::new();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut enqueue_us: Vec<u64> = Vec::with_capacity(messages);
    let mut sent = 0usize;
    let mut rx_off = 0usize;
    let mut delivered_msgs = 0usize;
    let mut out = Transfer {
        intact: true,
        ..Transfer::default()
    };
    let mut impl_time = Duration::ZERO;
    let mut rtx = RetransmitCounter::default();
    let mut now_us: u64 = 0;
    let limit_us = w.limit.as_micros() as u64;
    let mut next_a = 0u32;
    let mut next_b = 0u32;
    loop {
        let now_ms = (now_us / 1000) as u32;
        while let Some(Reverse((t, ..))) = wire.peek() {
            if *t > now_us {
                break;
            }
            let Reverse((_, _, to_b, data)) = wire.pop().expect("peeked");
            due.push((to_b, data));
        }
        let sent_before = sent;

        // Every implementation call of this event, timed as one block.
        let t0 = Instant::now();
        let (mut wake_a, mut wake_b) = (now_ms >= next_a, now_ms >= next_b);
        for (to_b, data) in &due {
            if *to_b {
                b.input(data);
                wake_b = true;
            } else {
                a.input(data);
                wake_a = true;
            }
        }
        while sent < messages && a.waitsnd() < w.app_window {
            if !a.send(&w.payload[sent * size..msg_end(sent)]) {
                break;
            }
            sent += 1;
            wake_a = true;
        }
        if wake_a {
            a.update(now_ms);
            next_a = a.check(now_ms);
        }
        if wake_b {
            b.update(now_ms);
            next_b = b.check(now_ms);
        }
        while let Some(d) = a.poll_output() {
            out_a.push(d);
        }
        while let Some(d) = b.poll_output() {
            out_b.push(d);
        }
        while let Some(m) = b.recv() {
            got.push(m);
        }
        impl_time += t0.elapsed();

        // The harness: link, bookkeeping and checks.
        due.clear();
        enqueue_us.extend(std::iter::repeat_n(now_us, sent - sent_before));
        for (outs, to_b, src, dst) in [(&mut out_a, true, A, B), (&mut out_b, false, B, A)] {
            for d in outs.drain(..) {
                if to_b {
                    out.datagrams_ab += 1;
                    rtx.datagram(&d);
                } else {
                    out.datagrams_ba += 1;
                }
                for dl in link.transmit(Duration::from_micros(now_us), src, dst, &d) {
                    let at = now_us + base_us + dl.extra_delay.as_micros() as u64;
                    wire.push(Reverse((at, seq, to_b, dl.payload)));
                    seq += 1;
                }
            }
        }
        for m in got.drain(..) {
            if !out.intact {
                break;
            }
            let end = rx_off + m.len();
            if end > total || m[..] != w.payload[rx_off..end] {
                out.intact = false;
                out.problem = Some(format!(
                    "{} bytes received at offset {rx_off} do not match what was sent",
                    m.len()
                ));
                break;
            }
            let idx = rx_off / size;
            if w.message_mode && (idx * size != rx_off || end != msg_end(idx)) {
                out.intact = false;
                out.problem = Some(format!(
                    "message boundary lost: {} bytes received at offset {rx_off}",
                    m.len()
                ));
                break;
            }
            rx_off = end;
            while delivered_msgs < messages && msg_end(delivered_msgs) <= rx_off {
                let t0 = enqueue_us.get(delivered_msgs).copied().unwrap_or(now_us);
                out.latencies_us.push(now_us.saturating_sub(t0));
                delivered_msgs += 1;
            }
        }
        if rx_off >= total || !out.intact {
            break;
        }
        if now_us >= limit_us {
            out.intact = false;
            out.problem = Some(format!(
                "incomplete: {rx_off} of {total} bytes delivered within {:?} of virtual time",
                w.limit
            ));
            break;
        }
        // Jump to the next event: a timer or an arrival.
        let mut next_timer = next_a.min(next_b) as u64 * 1000;
        if next_timer <= now_us {
            next_timer = (now_ms as u64 + 1) * 1000;
        }
        let next_arrival = wire.peek().map(|Reverse((t, ..))| *t).unwrap_or(u64::MAX);
        now_us = next_timer.min(next_arrival).max(now_us + 1).min(limit_us);
    }
    out.bytes = rx_off as u64;
    out.virtual_time = Duration::from_micros(now_us);
    out.impl_time = impl_time;
    out.wall = wall0.elapsed();
    out.retransmits = rtx.retransmits;
    out.link = link.stats();
    out.run_cpu = match (cpu0, thread_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    out
}
