//! Scripted exchanges between two KCP sessions wired back to back, with the transition
//! trace and a one-line-per-datagram wire log snapshotted (insta). The loop is fully
//! deterministic: the clock moves only when a test says so, and each test decides which
//! datagrams are lost. Besides the snapshots, each case asserts the facts it claims
//! (segments really emitted, counters, delivered data), so a wrong snapshot accepted by
//! mistake still fails.

use std::time::Duration;

use tunnelbed_kcp::wire::{CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS};
use tunnelbed_kcp::{Kcp, KcpConfig, Segment, SendError};
use tunnelbed_netio::Trace;

const CONV: u32 = 0x0102_0304;
const A: usize = 0;
const B: usize = 1;

/// Two sessions, a clock, and everything that crossed the wire.
struct Pair {
    k: [Kcp; 2],
    trace: Trace,
    now: Duration,
    /// Whether each side still runs (a vanished peer neither updates nor receives).
    alive: [bool; 2],
    /// Every datagram each side emitted, with its time and whether it was dropped.
    emitted: [Vec<(Duration, Vec<u8>, bool)>; 2],
    log: Vec<String>,
}

impl Pair {
    fn new(a: &KcpConfig, b: &KcpConfig) -> Self {
        let trace = Trace::recording();
        Pair {
            k: [
                Kcp::new(CONV, a, trace.clone(), "kcp[a]"),
                Kcp::new(CONV, b, trace.clone(), "kcp[b]"),
            ],
            trace,
            now: Duration::ZERO,
            alive: [true, true],
            emitted: [Vec::new(), Vec::new()],
            log: Vec::new(),
        }
    }

    /// Updates both sides at the current time, then delivers what each emitted to the
    /// other, unless `drop(from, datagram)` says it is lost. Then the clock moves `ms`.
    fn tick(&mut self, ms: u64, mut drop: impl FnMut(usize, &[u8]) -> bool) {
        for s in [A, B] {
            if self.alive[s] {
                self.k[s].handle_timeout(self.now);
            }
        }
        for from in [A, B] {
            while let Some(d) = self.k[from].poll_transmit() {
                let to = 1 - from;
                let lost = !self.alive[to] || drop(from, &d);
                self.log.push(format!(
                    "{:>7}ms {}->{} {}{}",
                    self.now.as_millis(),
                    name(from),
                    name(to),
                    describe(&d),
                    if lost { "  [lost]" } else { "" }
                ));
                if !lost {
                    self.k[to]
                        .handle_input(self.now, &d)
                        .expect("genuine datagram accepted");
                }
                self.emitted[from].push((self.now, d, lost));
            }
        }
        self.now += Duration::from_millis(ms);
    }

    /// Segments of a command emitted by `side`, with the time they were sent.
    fn segments(&self, side: usize, cmd: u8) -> Vec<(Duration, Segment)> {
        let mut out = Vec::new();
        for (at, d, _) in &self.emitted[side] {
            for s in Segment::decode_all(d).expect("own datagrams decode") {
                if s.cmd == cmd {
                    out.push((*at, s));
                }
            }
        }
        out
    }

    /// The trace, then the wire log: what the snapshot holds.
    fn report(&self) -> String {
        format!(
            "== transitions ==\n{}\n== wire ==\n{}\n",
            self.trace.render(),
            self.log.join("\n")
        )
    }
}

fn name(side: usize) -> &'static str {
    ["a", "b"][side]
}

/// One datagram as text: its segments, with runs of consecutive data segments folded.
fn describe(d: &[u8]) -> String {
    let segs = Segment::decode_all(d).expect("own datagrams decode");
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < segs.len() {
        let s = &segs[i];
        let mut j = i + 1;
        while j < segs.len()
            && segs[j].cmd == s.cmd
            && segs[j].sn == segs[j - 1].sn.wrapping_add(1)
            && matches!(s.cmd, CMD_PUSH | CMD_ACK)
        {
            j += 1;
        }
        let cmd = match s.cmd {
            CMD_PUSH => "PUSH",
            CMD_ACK => "ACK",
            CMD_WASK => "WASK",
            CMD_WINS => "WINS",
            _ => unreachable!("decode_all rejects unknown commands"),
        };
        let sn = if j - i > 1 {
            format!("sn={}..={} ({} segs)", s.sn, segs[j - 1].sn, j - i)
        } else {
            format!("sn={}", s.sn)
        };
        let len = if s.cmd == CMD_PUSH {
            format!(
                " len={}",
                segs[i..j].iter().map(|s| s.data.len()).sum::<usize>()
            )
        } else {
            String::new()
        };
        parts.push(format!("{cmd} {sn} una={} wnd={}{len}", s.una, s.wnd));
        i = j;
    }
    parts.join(" + ")
}

fn no_loss(_: usize, _: &[u8]) -> bool {
    false
}

/// (a) One data segment is lost; with resend=2 the two later acks trigger a fast
/// retransmit long before the RTO would fire.
#[test]
fn fast_retransmit_after_one_loss() {
    let cfg = KcpConfig::fast3(); // nodelay 1, interval 10, resend 2, nc, stream mode
    assert_eq!(cfg.resend, 2);
    let mut p = Pair::new(&cfg, &cfg);
    let msgs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'0' + i; 100]).collect();
    let mut first = true;
    // One send per tick, so each data segment travels in its own datagram and each
    // ack reaches the sender separately (fast acks count one per input datagram).
    for m in &msgs {
        p.k[A].send(m).unwrap();
        p.tick(10, |from, d| {
            let lose = from == A && first && describe(d).starts_with("PUSH sn=0 ");
            first &= !lose;
            lose
        });
    }
    for _ in 0..6 {
        p.tick(10, no_loss);
    }
    let mut got = Vec::new();
    while let Some(b) = p.k[B].recv_bytes() {
        got.extend(b);
    }
    assert_eq!(got, msgs.concat(), "all data arrives, in order");
    assert!(p.k[A].all_acked());

    // Facts: sn 0 went out twice, the second time as a fast retransmit, no timeout.
    let pushes_sn0: Vec<_> = p
        .segments(A, CMD_PUSH)
        .into_iter()
        .filter(|(_, s)| s.sn == 0)
        .collect();
    assert_eq!(pushes_sn0.len(), 2);
    let stats = p.k[A].stats();
    assert_eq!(stats.fast_retransmits, 1);
    assert_eq!(stats.timeout_retransmits, 0);
    // Resent before the first RTO (200 ms initially) could have expired.
    assert!(pushes_sn0[1].0 < Duration::from_millis(200));
    let trace = p.trace.render();
    assert!(trace.contains("kcp[a] sending -> sending (fast retransmit sn=0)"));
    assert!(!trace.contains("rto-backoff"));
    insta::assert_snapshot!("fast_retransmit", p.report());
}

/// (b) The receiver's application stops reading; its queue fills the 128-segment window,
/// its acks advertise window 0, the sender stops and probes with WASK, the receiver
/// answers with WINS (still 0), and once the application reads, a WINS reopens the window.
#[test]
fn zero_window_probe_and_reopen() {
    let a_cfg = KcpConfig {
        nodelay: 1,
        interval: 10,
        nc: true,
        snd_wnd: 256,
        ..KcpConfig::default() // message mode, rcv_wnd 128
    };
    let b_cfg = KcpConfig {
        nodelay: 1,
        interval: 10,
        ..KcpConfig::default()
    };
    let mut p = Pair::new(&a_cfg, &b_cfg);
    let msgs: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_le_bytes().repeat(4)).collect();
    for m in &msgs {
        p.k[A].send(m).unwrap();
    }
    // Nobody reads on b for 8 s: past the first probe (7 s after the window closed).
    while p.now < Duration::from_millis(8000) {
        p.tick(10, no_loss);
    }
    assert!(
        p.k[A].waitsnd() > 0,
        "the sender is stuck behind the closed window"
    );
    let wasks = p.segments(A, CMD_WASK);
    assert_eq!(wasks.len(), 1, "one probe in 8 s");
    let wins: Vec<_> = p.segments(B, CMD_WINS);
    assert_eq!(wins.len(), 1, "the probe was answered");
    assert_eq!(wins[0].1.wnd, 0, "still closed when answered");
    assert!(wins[0].0 > wasks[0].0);

    // The application reads everything; the window reopens and the rest flows.
    let mut got = Vec::new();
    for _ in 0..100 {
        while let Some(m) = p.k[B].recv_bytes() {
            got.push(m);
        }
        p.tick(10, no_loss);
    }
    assert_eq!(got, msgs, "every message, in order");
    assert!(p.k[A].all_acked());
    let wins: Vec<_> = p.segments(B, CMD_WINS);
    assert!(
        wins.len() >= 2 && wins[1].1.wnd > 0,
        "a WINS told the new window"
    );

    let trace = p.trace.render();
    let closed = trace
        .find("kcp[a] window-open -> window-closed (remote window 0)")
        .expect("window closed");
    let probe = trace
        .find("kcp[a] window-closed -> window-closed (window probe sent")
        .expect("probe");
    let open = trace
        .find("kcp[a] window-closed -> window-open (remote window")
        .expect("window reopened");
    assert!(closed < probe && probe < open);
    insta::assert_snapshot!("zero_window", p.report());
}

/// (c) The peer vanishes while data is in flight: each timeout backs the RTO off
/// (x1.5 with nodelay), and the 20th transmission marks the link dead.
#[test]
fn dead_link_after_rto_backoff() {
    let cfg = KcpConfig::fast3(); // dead_link 20
    let mut p = Pair::new(&cfg, &cfg);
    p.k[A].send(b"hello").unwrap();
    for _ in 0..5 {
        p.tick(10, no_loss);
    }
    assert!(p.k[A].all_acked());
    // The peer disappears: it no longer runs, and nothing reaches it.
    p.alive[B] = false;
    p.k[A].send(b"anyone there?").unwrap();
    let mut was_alive_at = Duration::ZERO;
    while !p.k[A].is_dead() && p.now < Duration::from_secs(600) {
        was_alive_at = p.now;
        p.tick(10, no_loss);
    }
    assert!(p.k[A].is_dead(), "dead link detected");
    let sn1 = p
        .segments(A, CMD_PUSH)
        .into_iter()
        .filter(|(_, s)| s.sn == 1)
        .count();
    assert_eq!(sn1, 20, "exactly dead_link transmissions");
    assert_eq!(p.k[A].stats().timeout_retransmits, 19);
    assert!(was_alive_at > Duration::from_secs(10), "backoff took time");

    // The backoff grows: each reported RTO is at least the previous one.
    let trace = p.trace.render();
    let rtos: Vec<u32> = trace
        .lines()
        .filter_map(|l| l.split(" rto=").nth(1))
        .map(|r| r.trim_end_matches("ms)").parse().unwrap())
        .collect();
    assert_eq!(rtos.len(), 19);
    assert!(rtos.windows(2).all(|w| w[1] > w[0]), "{rtos:?}");
    assert!(trace.contains("kcp[a] sending -> rto-backoff (timeout sn=1 xmit=2"));
    assert!(trace.contains("kcp[a] rto-backoff -> dead (sn=1 sent 20 times (dead_link 20))"));
    insta::assert_snapshot!("dead_link", p.report());
}

/// A refused send queues nothing, in stream mode too (the fuzzer found that a failed
/// stream send used to leave part of its data appended to the last queued segment).
#[test]
fn refused_stream_send_queues_nothing() {
    let cfg = KcpConfig {
        stream: true,
        max_send_queue: 2,
        ..KcpConfig::default()
    };
    let mut k = Kcp::new(CONV, &cfg, Trace::disabled(), "k");
    let mss = k.mss();
    k.send(&[1; 10]).unwrap();
    let before = k.queues();
    assert_eq!(before.snd_queue_bytes, 10);
    // Fills the last segment, then needs two more: over the cap of 2.
    let r = k.send(&vec![2; mss + mss + 1]);
    assert!(matches!(r, Err(SendError::QueueFull(1))), "{r:?}");
    assert_eq!(k.queues(), before);
    let r = k.send(&vec![3; mss * 200]);
    assert!(matches!(r, Err(SendError::TooLarge { .. })), "{r:?}");
    assert_eq!(k.queues(), before);
    // What fits is still accepted whole.
    k.send(&vec![4; mss]).unwrap();
    assert_eq!(k.queues().snd_queue, 2);
    assert_eq!(k.queues().snd_queue_bytes, 10 + mss);
}
