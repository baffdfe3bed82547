//! Fuzz bodies. They live here, not in `fuzz/`, so that a stable `cargo test` can replay
//! the committed corpora (`corpora/kcp_segment/`, `corpora/kcp_session_ops/`) without
//! nightly or libFuzzer; the cargo-fuzz targets are one-line wrappers around them.
//!
//! Every input's run is bounded (operations, sizes and time steps are capped) so that a
//! slow input is a real finding, not a long script.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;
use tunnelbed_netio::Trace;

use crate::config::KcpConfig;
use crate::kcp::Kcp;
use crate::wire::{self, InputError, Segment, CMD_PUSH, OVERHEAD};

/// Decodes `data` as a datagram of packed segments; decoding must never panic, and what
/// decodes must re-encode to the very bytes it came from. The machine's own parser
/// (`Kcp::handle_input`) must accept and reject exactly what the codec does, with the same error.
pub fn fuzz_segment_decode(data: &[u8]) {
    // One segment at the start.
    if let Ok((seg, used)) = Segment::decode(data, None) {
        assert_eq!(used, OVERHEAD + seg.data.len());
        let mut b = BytesMut::new();
        seg.encode(&mut b);
        assert_eq!(&b[..], &data[..used], "single segment does not round-trip");
        let h = wire::decode_header(data).expect("a decoded segment has a header");
        assert_eq!(
            (
                h.conv,
                h.cmd,
                h.frg,
                h.wnd,
                h.ts,
                h.sn,
                h.una,
                h.len as usize
            ),
            (
                seg.conv,
                seg.cmd,
                seg.frg,
                seg.wnd,
                seg.ts,
                seg.sn,
                seg.una,
                seg.data.len()
            )
        );
    }

    // Every segment of the datagram: the re-encoding is the consumed prefix, and what is
    // left over is shorter than a header (ikcp ignores such a tail).
    if let Ok(segs) = Segment::decode_all(data) {
        assert!(!segs.is_empty());
        let mut b = BytesMut::new();
        for s in &segs {
            s.encode(&mut b);
        }
        assert!(data.starts_with(&b), "packed segments do not round-trip");
        assert!(data.len() - b.len() < OVERHEAD);
    }

    // The machine's inline parser agrees with the codec, for the conversation of the
    // first header (or a fixed one when there is none).
    let conv = wire::decode_header(data).map(|h| h.conv).unwrap_or(1);
    let want = codec_verdict(data, conv);
    let mut k = Kcp::new(conv, &KcpConfig::default(), Trace::disabled(), "fuzz");
    k.handle_timeout(Duration::ZERO);
    let got = k.handle_input(Duration::from_millis(1), data);
    assert_eq!(got, want, "Kcp::handle_input and the codec disagree");
    // Whatever it accepted, the next flush must not panic either.
    k.handle_timeout(Duration::from_millis(100));
    while k.poll_transmit().is_some() {}
}

/// What ikcp_input would return for `data`, computed with the codec alone.
fn codec_verdict(data: &[u8], conv: u32) -> Result<(), InputError> {
    if data.len() < OVERHEAD {
        return Err(InputError::Short(data.len()));
    }
    let mut rest = data;
    while rest.len() >= OVERHEAD {
        let (_, used) = Segment::decode(rest, Some(conv))?;
        rest = &rest[used..];
    }
    Ok(())
}

/// Conversation id of the fuzzed pair.
const CONV: u32 = 0x4b43_5021;
/// Most operations per input.
const MAX_OPS: usize = 256;
/// Most bytes one `send` may carry.
const MAX_SEND: usize = 8 * 1024;
/// Most bytes one side may send in total.
const MAX_TOTAL: usize = 128 * 1024;
/// Most datagrams in flight per direction (older ones are lost beyond it).
const MAX_IN_FLIGHT: usize = 256;
/// Rounds of the lossless phase at the end.
const HEAL_ROUNDS: usize = 2000;

/// Start-up knobs of the pair.
#[derive(Arbitrary, Debug)]
struct Setup {
    /// Preset index per side (into [`KcpConfig::PRESETS`]).
    preset: [u8; 2],
    /// Stream mode (both sides).
    stream: bool,
    /// MTU override per side (index into a fixed list; out of range keeps the preset's).
    mtu: [u8; 2],
    /// Send-queue cap per side (small values make `send` fail with `QueueFull`).
    max_send_queue: [u8; 2],
    /// Start of the clock, in ms (exercises the 32-bit wrap).
    start_ms: u32,
}

/// One step of the script. `side` 0/1 picks a session; datagrams "from side s" travel
/// from s to the other side.
#[derive(Arbitrary, Debug)]
enum Op {
    /// Side sends `len` bytes of its pattern.
    Send { side: bool, len: u16 },
    /// The clock moves on; both sides run `handle_timeout`.
    Tick { ms: u16 },
    /// Only one side runs `handle_timeout` at the current time.
    Update { side: bool },
    /// Deliver one datagram in flight (any one: reordering).
    Deliver { side: bool, pick: u8 },
    /// Deliver everything in flight both ways, in order.
    DeliverAll,
    /// Lose one datagram in flight.
    Drop { side: bool, pick: u8 },
    /// Duplicate one datagram in flight.
    Duplicate { side: bool, pick: u8 },
    /// Input a copy of a datagram in flight with one byte flipped.
    Mangle {
        side: bool,
        pick: u8,
        at: u16,
        xor: u8,
    },
    /// Input a truncated copy of a datagram in flight.
    Truncate { side: bool, pick: u8, keep: u16 },
    /// Input raw bytes to the other side.
    Inject { side: bool, data: Vec<u8> },
    /// The application on `side` reads one message (or stream chunk).
    Recv { side: bool },
    /// ikcp_nodelay on a side (negative values keep a knob).
    Nodelay {
        side: bool,
        nodelay: i8,
        interval: i16,
        resend: i8,
        nc: i8,
    },
    /// ikcp_wndsize on a side (non-positive values keep a window).
    Wndsize { side: bool, snd: i16, rcv: i16 },
}

/// Byte `i` of what side `side` sends: position-dependent, so reordering or loss of a
/// chunk cannot go unnoticed.
fn pattern(side: usize, i: usize) -> u8 {
    let x = (i as u64 ^ (side as u64) << 40).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

/// One direction of the pair: what was sent, what arrived, what is on the wire.
#[derive(Default)]
struct Flow {
    /// Stream mode: every byte accepted by `send`.
    sent_bytes: Vec<u8>,
    /// Message mode: every message accepted by `send`.
    sent_msgs: Vec<Vec<u8>>,
    /// Stream mode: bytes the receiver read.
    got_bytes: usize,
    /// Message mode: messages the receiver read.
    got_msgs: usize,
    /// Datagrams in flight.
    wire: VecDeque<Vec<u8>>,
    /// Data segments the sender really emitted: sn -> (frg, data).
    genuine: BTreeMap<u32, (u8, Vec<u8>)>,
    /// A forged data segment reached the receiver: integrity no longer holds.
    tainted: bool,
    /// Anything not genuine reached either end: liveness no longer holds (a forged ack
    /// can make the sender forget data forever, as in ikcp).
    forged_input: bool,
}

struct Pair {
    k: [Kcp; 2],
    flow: [Flow; 2],
    stream: bool,
    now: Duration,
    max_send_queue: [usize; 2],
    max_snd_wnd: [u32; 2],
    max_rcv_wnd: [u32; 2],
    bytes_in: [usize; 2],
}

impl Pair {
    fn new(setup: &Setup) -> Self {
        const MTUS: [u32; 6] = [50, 60, 200, 576, 1250, 1400];
        let cfg = |s: usize| {
            let name = KcpConfig::PRESETS[setup.preset[s] as usize % KcpConfig::PRESETS.len()];
            let mut c = KcpConfig::preset(name).expect("listed preset");
            c.stream = setup.stream;
            if let Some(m) = MTUS.get(setup.mtu[s] as usize) {
                c.mtu = *m;
            }
            c.max_send_queue = setup.max_send_queue[s] as usize + 1;
            c
        };
        let cfgs = [cfg(0), cfg(1)];
        let k = [
            Kcp::new(CONV, &cfgs[0], Trace::disabled(), "a"),
            Kcp::new(CONV, &cfgs[1], Trace::disabled(), "b"),
        ];
        let max_snd_wnd = [k[0].snd_wnd(), k[1].snd_wnd()];
        let max_rcv_wnd = [k[0].rcv_wnd(), k[1].rcv_wnd()];
        Pair {
            k,
            flow: [Flow::default(), Flow::default()],
            stream: setup.stream,
            now: Duration::from_millis(setup.start_ms as u64),
            max_send_queue: [cfgs[0].max_send_queue, cfgs[1].max_send_queue],
            max_snd_wnd,
            max_rcv_wnd,
            bytes_in: [0, 0],
        }
    }

    /// Moves what each side emitted onto the wire, recording its data segments.
    fn collect(&mut self) {
        for s in 0..2 {
            while let Some(d) = self.k[s].poll_transmit() {
                let mut rest = &d[..];
                while let Ok((seg, used)) = Segment::decode(rest, Some(CONV)) {
                    if seg.cmd == CMD_PUSH {
                        let prev = self.flow[s]
                            .genuine
                            .insert(seg.sn, (seg.frg, seg.data.clone()));
                        if let Some(p) = prev {
                            assert_eq!(p, (seg.frg, seg.data), "sn {} resent changed", seg.sn);
                        }
                    }
                    rest = &rest[used..];
                }
                let w = &mut self.flow[s].wire;
                w.push_back(d);
                if w.len() > MAX_IN_FLIGHT {
                    w.pop_front();
                }
            }
        }
    }

    /// Inputs a datagram from side `from` to the other side. `genuine` false: it may be
    /// forged, so check whether any data segment in it differs from what was sent.
    fn input(&mut self, from: usize, d: &[u8], genuine: bool) {
        let to = 1 - from;
        if !genuine {
            self.flow[from].forged_input = true;
            let mut rest = d;
            // The machine stops at the first bad segment, so do we.
            while let Ok((seg, used)) = Segment::decode(rest, Some(CONV)) {
                if seg.cmd == CMD_PUSH
                    && self.flow[from].genuine.get(&seg.sn) != Some(&(seg.frg, seg.data))
                {
                    self.flow[from].tainted = true;
                }
                rest = &rest[used..];
            }
        }
        self.bytes_in[to] += d.len();
        let _ = self.k[to].handle_input(self.now, d);
    }

    fn pick(&self, from: usize, pick: u8) -> Option<usize> {
        let n = self.flow[from].wire.len();
        (n > 0).then(|| pick as usize % n)
    }

    fn send(&mut self, side: usize, len: usize) {
        let f = &self.flow[side];
        let sent = if self.stream {
            f.sent_bytes.len()
        } else {
            f.sent_msgs.iter().map(Vec::len).sum()
        };
        let len = len.min(MAX_SEND).min(MAX_TOTAL - sent);
        let data: Vec<u8> = (sent..sent + len).map(|i| pattern(side, i)).collect();
        let before = self.k[side].queues();
        match self.k[side].send(&data) {
            Ok(()) => {
                let f = &mut self.flow[side];
                if self.stream {
                    f.sent_bytes.extend_from_slice(&data);
                } else {
                    f.sent_msgs.push(data);
                }
            }
            // A refused send must leave nothing behind (the caller will retry it).
            Err(e) => assert_eq!(
                self.k[side].queues(),
                before,
                "failed send ({e}) queued data"
            ),
        }
    }

    fn recv(&mut self, side: usize) -> bool {
        let Some(m) = self.k[side].recv_bytes() else {
            return false;
        };
        let from = 1 - side;
        let f = &mut self.flow[from];
        if f.tainted {
            return true;
        }
        if self.stream {
            let end = f.got_bytes + m.len();
            assert!(end <= f.sent_bytes.len(), "received more than was sent");
            assert_eq!(&m[..], &f.sent_bytes[f.got_bytes..end], "stream corrupted");
            f.got_bytes = end;
        } else {
            let want = f.sent_msgs.get(f.got_msgs);
            assert_eq!(Some(&m), want, "message {} wrong", f.got_msgs);
            f.got_msgs += 1;
        }
        true
    }

    fn check_bounds(&self) {
        for s in 0..2 {
            let q = self.k[s].queues();
            assert!(q.snd_queue <= self.max_send_queue[s], "{q:?}");
            assert!(q.snd_buf as u32 <= self.max_snd_wnd[s], "{q:?}");
            assert!(q.rcv_queue as u32 <= self.max_rcv_wnd[s], "{q:?}");
            assert!(q.rcv_buf as u32 <= self.max_rcv_wnd[s], "{q:?}");
            assert!(q.acklist <= self.bytes_in[s] / OVERHEAD, "{q:?}");
            assert_eq!(q.out, 0, "{q:?}");
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Send { side, len } => self.send(side as usize, len as usize),
            Op::Tick { ms } => {
                self.now += Duration::from_millis(ms as u64);
                self.k[0].handle_timeout(self.now);
                self.k[1].handle_timeout(self.now);
            }
            Op::Update { side } => self.k[side as usize].handle_timeout(self.now),
            Op::Deliver { side, pick } => {
                let from = side as usize;
                if let Some(i) = self.pick(from, pick) {
                    let d = self.flow[from].wire.remove(i).expect("picked");
                    self.input(from, &d, true);
                }
            }
            Op::DeliverAll => self.deliver_all(),
            Op::Drop { side, pick } => {
                if let Some(i) = self.pick(side as usize, pick) {
                    self.flow[side as usize].wire.remove(i);
                }
            }
            Op::Duplicate { side, pick } => {
                let w = &mut self.flow[side as usize].wire;
                if let Some(d) = (!w.is_empty()).then(|| w[pick as usize % w.len()].clone()) {
                    if w.len() < MAX_IN_FLIGHT {
                        w.push_back(d);
                    }
                }
            }
            Op::Mangle {
                side,
                pick,
                at,
                xor,
            } => {
                let from = side as usize;
                if let Some(i) = self.pick(from, pick) {
                    let mut d = self.flow[from].wire[i].clone();
                    let at = at as usize % d.len();
                    d[at] ^= xor;
                    self.input(from, &d, xor == 0);
                }
            }
            Op::Truncate { side, pick, keep } => {
                let from = side as usize;
                if let Some(i) = self.pick(from, pick) {
                    let d = self.flow[from].wire[i].clone();
                    let keep = keep as usize % (d.len() + 1);
                    // A prefix of a genuine datagram holds only genuine segments (the cut
                    // one fails its length check), but it is counted as forged anyway.
                    self.input(from, &d[..keep], false);
                }
            }
            Op::Inject { side, data } => {
                let data = &data[..data.len().min(4096)];
                self.input(side as usize, data, false);
            }
            Op::Recv { side } => {
                self.recv(side as usize);
            }
            Op::Nodelay {
                side,
                nodelay,
                interval,
                resend,
                nc,
            } => self.k[side as usize].set_nodelay(
                nodelay as i32 % 3,
                interval as i32,
                resend as i32,
                nc as i32,
            ),
            Op::Wndsize { side, snd, rcv } => {
                let s = side as usize;
                self.k[s].set_wndsize(snd as i32, rcv as i32);
                self.max_snd_wnd[s] = self.max_snd_wnd[s].max(self.k[s].snd_wnd());
                self.max_rcv_wnd[s] = self.max_rcv_wnd[s].max(self.k[s].rcv_wnd());
            }
        }
        self.collect();
        self.check_bounds();
    }

    fn deliver_all(&mut self) {
        for from in 0..2 {
            while let Some(d) = self.flow[from].wire.pop_front() {
                self.input(from, &d, true);
            }
        }
    }

    /// Lossless phase: once the faults stop, everything sent must arrive, unless forged
    /// input may have fooled a sender into dropping data.
    fn heal(&mut self) {
        let mut step = 10u64;
        for _ in 0..HEAL_ROUNDS {
            self.now += Duration::from_millis(step);
            // Grow the step so that long backed-off timers fire within the round budget;
            // 2^30 ms keeps every time difference inside ikcp's signed 32-bit clock.
            step = (step + step / 8).min(1 << 30);
            for s in 0..2 {
                self.k[s].handle_timeout(self.now);
            }
            // Exchange until quiet, flushing after each delivery so that acks return
            // within the round (no spurious timeouts however large the step).
            for _ in 0..8 {
                self.collect();
                if self.flow.iter().all(|f| f.wire.is_empty()) {
                    break;
                }
                self.deliver_all();
                for s in 0..2 {
                    self.k[s].flush();
                }
            }
            for s in 0..2 {
                while self.recv(s) {}
            }
            self.collect();
            self.check_bounds();
            if self.done() {
                return;
            }
        }
        if self.flow.iter().any(|f| f.forged_input) {
            return;
        }
        panic!(
            "not delivered after the lossless phase: stream={} got {:?} of {:?} sent",
            self.stream,
            self.flow
                .iter()
                .map(|f| (f.got_bytes, f.got_msgs))
                .collect::<Vec<_>>(),
            self.flow
                .iter()
                .map(|f| (f.sent_bytes.len(), f.sent_msgs.len()))
                .collect::<Vec<_>>(),
        );
    }

    fn done(&self) -> bool {
        (0..2).all(|s| {
            let f = &self.flow[s];
            let delivered = if self.stream {
                f.got_bytes == f.sent_bytes.len()
            } else {
                f.got_msgs == f.sent_msgs.len()
            };
            delivered && self.k[s].all_acked()
        })
    }
}

/// What one [`fuzz_session_ops`] run did, so tests can check that a corpus really
/// exercises the machine (data delivered in both modes, faults injected) and is not a
/// pile of inputs that stop at the first byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionSummary {
    /// Operations applied before the lossless phase.
    pub ops: usize,
    /// Stream mode (else message mode).
    pub stream: bool,
    /// Bytes (stream mode) or messages (message mode) checked on arrival, both ways.
    pub delivered: usize,
    /// A datagram not emitted by the peer (mangled, truncated, injected) was input.
    pub forged_input: bool,
    /// A forged data segment was accepted, so integrity was not checked afterwards.
    pub tainted: bool,
    /// Either side declared the link dead.
    pub dead: bool,
}

/// Runs an op sequence (decoded with `arbitrary`) on a pair of sessions over a faulty
/// wire, then a lossless phase. Checks: no panic; received data is a prefix of the sent
/// stream (stream mode) or the sent messages in order (message mode) unless a forged data
/// segment was input; a refused `send` queues nothing; queues stay within their windows;
/// and, when nothing forged was input, everything arrives once faults stop.
pub fn fuzz_session_ops(data: &[u8]) {
    run_session_ops(data);
}

/// [`fuzz_session_ops`], returning what the run did (None: too short for a setup).
pub fn run_session_ops(data: &[u8]) -> Option<SessionSummary> {
    let mut u = Unstructured::new(data);
    let setup = Setup::arbitrary(&mut u).ok()?;
    let mut pair = Pair::new(&setup);
    let mut ops = 0;
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        pair.apply(op);
        ops += 1;
    }
    let dead = pair.k.iter().any(Kcp::is_dead);
    pair.heal();
    Some(SessionSummary {
        ops,
        stream: pair.stream,
        delivered: pair
            .flow
            .iter()
            .map(|f| if pair.stream { f.got_bytes } else { f.got_msgs })
            .sum(),
        forged_input: pair.flow.iter().any(|f| f.forged_input),
        tainted: pair.flow.iter().any(|f| f.tainted),
        dead: dead || pair.k.iter().any(Kcp::is_dead),
    })
}
