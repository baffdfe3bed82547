//! A discrete-event loop that runs two ARQ endpoints over the simulator's link model in
//! virtual time, so two implementations can be compared on exactly the same link: same
//! seed, same loss pattern per datagram index, same clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tunnelbed_sim::link::{LinkModel, LinkParams};

/// What the benchmark needs from an ARQ implementation (ours or the reference port).
pub trait Arq {
    /// Queues one message; false when the implementation refuses it.
    fn send(&mut self, msg: &[u8]) -> bool;
    /// Feeds one datagram from the link.
    fn input(&mut self, datagram: &[u8]);
    /// Advances the clock to `now_ms` (and flushes when due).
    fn update(&mut self, now_ms: u32);
    /// When `update` must be called next.
    fn check(&mut self, now_ms: u32) -> u32;
    /// Takes the next received message.
    fn recv(&mut self) -> Option<Vec<u8>>;
    /// Takes the next datagram to put on the link.
    fn poll_output(&mut self) -> Option<Vec<u8>>;
    /// Segments waiting to be sent or acknowledged.
    fn waitsnd(&self) -> usize;
}

/// Results of one transfer.
#[derive(Clone, Debug, Default)]
pub struct Transfer {
    /// Payload bytes delivered in order.
    pub bytes: u64,
    /// Virtual time until the last byte arrived.
    pub virtual_time: Duration,
    /// Per-message latency from enqueue to delivery, in ms.
    pub latencies_ms: Vec<u32>,
    /// Datagrams the two ends put on the link.
    pub datagrams: u64,
    /// Whether every message arrived intact and in order.
    pub intact: bool,
}

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

/// Sends `messages` messages of `size` bytes from `a` to `b` over a link with `params`
/// (seeded), keeping `window` segments in flight at most. Gives up at `limit` virtual time.
pub fn transfer(
    a: &mut dyn Arq,
    b: &mut dyn Arq,
    params: &LinkParams,
    seed: u64,
    messages: u32,
    size: usize,
    window: usize,
    limit: Duration,
) -> Transfer {
    let link = LinkModel::new(seed, params.clone());
    let base = params.latency;
    // (arrival time in µs, sequence, to_b, payload)
    let mut wire: BinaryHeap<Reverse<(u64, u64, bool, Vec<u8>)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut sent = 0u32;
    let mut got = 0u32;
    let mut enqueue_ms: Vec<u32> = Vec::with_capacity(messages as usize);
    let mut out = Transfer {
        intact: true,
        ..Transfer::default()
    };
    let mut now_us: u64 = 0;
    let limit_us = limit.as_micros() as u64;
    let mut next_a = 0u32;
    let mut next_b = 0u32;
    loop {
        let now_ms = (now_us / 1000) as u32;
        // Arrivals due now.
        while let Some(Reverse((t, _, _, _))) = wire.peek() {
            if *t > now_us {
                break;
            }
            let Reverse((_, _, to_b, data)) = wire.pop().expect("peeked");
            if to_b {
                b.input(&data);
                next_b = now_ms;
            } else {
                a.input(&data);
                next_a = now_ms;
            }
        }
        // The sender's application keeps the queue full.
        while sent < messages && a.waitsnd() < window {
            let mut msg = vec![0u8; size];
            msg[..4].copy_from_slice(&sent.to_be_bytes());
            for (i, x) in msg[4..].iter_mut().enumerate() {
                *x = (sent as usize + i) as u8;
            }
            if !a.send(&msg) {
                break;
            }
            enqueue_ms.push(now_ms);
            sent += 1;
            next_a = now_ms;
        }
        if now_ms >= next_a {
            a.update(now_ms);
            next_a = a.check(now_ms);
        }
        if now_ms >= next_b {
            b.update(now_ms);
            next_b = b.check(now_ms);
        }
        for (ep, to_b, src, dst) in [(&mut *a, true, A, B), (&mut *b, false, B, A)] {
            while let Some(d) = ep.poll_output() {
                out.datagrams += 1;
                for dl in link.transmit(Duration::from_micros(now_us), src, dst, &d) {
                    let at = now_us + (base + dl.extra_delay).as_micros() as u64;
                    wire.push(Reverse((at, seq, to_b, dl.payload)));
                    seq += 1;
                }
            }
        }
        while let Some(m) = b.recv() {
            let idx = got;
            let ok = m.len() == size
                && m[..4] == idx.to_be_bytes()
                && m[4..]
                    .iter()
                    .enumerate()
                    .all(|(i, x)| *x == (idx as usize + i) as u8);
            out.intact &= ok;
            out.bytes += m.len() as u64;
            if let Some(t0) = enqueue_ms.get(idx as usize) {
                out.latencies_ms.push(now_ms.saturating_sub(*t0));
            }
            got += 1;
        }
        if got >= messages {
            out.virtual_time = Duration::from_micros(now_us);
            return out;
        }
        if now_us >= limit_us {
            out.intact = false;
            out.virtual_time = Duration::from_micros(now_us);
            return out;
        }
        // Jump to the next event: a timer or an arrival.
        let next_ms = next_a.min(next_b) as u64 * 1000;
        let next_arrival = wire.peek().map(|Reverse((t, ..))| *t).unwrap_or(u64::MAX);
        let next = next_ms.min(next_arrival).max(now_us + 1);
        now_us = next.min(limit_us);
    }
}

/// The p-th percentile (0..=100) of `v` (sorted copy), 0 when empty.
pub fn percentile(v: &[u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}
