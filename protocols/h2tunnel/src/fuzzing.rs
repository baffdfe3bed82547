//! Fuzz bodies. They live here, not in `fuzz/`, so that a stable `cargo test` can replay
//! the committed corpora (`corpora/h2t_frame/`, `corpora/h2t_tunnel/`) without nightly
//! or libFuzzer; the cargo-fuzz targets are one-line wrappers around them.
//!
//! Every input's run is bounded (operations, sizes and time steps are capped) so that a
//! slow input is a real finding, not a long script.

use std::collections::BTreeSet;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use tunnelbed_netio::{Trace, Transition};

use crate::tunnel::{Event, Role, Tunnel, TunnelConfig, TunnelState};
use crate::wire::{
    decode_all, FrameError, Message, RawFrame, FLAG_END_OR_ACK, FLAG_GZIP, HANDSHAKE, HEADER_LEN,
    MAX_PAYLOAD, TYPE_DATA, TYPE_GOAWAY,
};

/// Decodes `data` as a stream of frames; decoding must never panic, and what decodes
/// must re-encode to bytes that decode to the same message. The splitting loop
/// ([`decode_all`]) must agree with [`RawFrame::parse`] frame by frame.
pub fn fuzz_frame_decode(data: &[u8]) {
    // One frame at the start.
    match RawFrame::parse(data) {
        Ok(Some((f, used))) => {
            assert_eq!(used, HEADER_LEN + f.payload.len());
            assert!(f.payload.len() <= MAX_PAYLOAD);
            assert_eq!(f.header, &data[..HEADER_LEN]);
            assert_eq!(f.sid & 0x8000_0000, 0, "reserved bit not cleared");
            if f.is_handshake() {
                assert_eq!(&data[..used], &HANDSHAKE);
            } else if let Ok(m) = Message::from_frame(&f) {
                check_reencode(&m, &f);
            }
        }
        Ok(None) => {
            // Incomplete: either no full header, or a length that is within the cap but
            // not all there yet.
            if data.len() >= HEADER_LEN {
                let len = u32::from_be_bytes([0, data[0], data[1], data[2]]) as usize;
                assert!(len <= MAX_PAYLOAD && data.len() < HEADER_LEN + len);
            }
        }
        Err(FrameError::TooLarge { len, max, .. }) => assert!(len > max),
        Err(e) => panic!("RawFrame::parse only rejects sizes, got {e:?}"),
    }

    // Every frame: the loop agrees with parse, frame by frame.
    let (msgs, used) = decode_all(data);
    assert!(used <= data.len());
    let mut off = 0;
    for m in &msgs {
        match RawFrame::parse(&data[off..]) {
            Ok(Some((f, n))) => {
                let want = if f.is_handshake() {
                    Ok(Message::Handshake)
                } else {
                    Message::from_frame(&f)
                };
                assert_eq!(m, &want);
                off += n;
            }
            Ok(None) => panic!("decode_all gave a message for an incomplete frame"),
            Err(e) => assert_eq!(m, &Err(e)),
        }
    }
    assert_eq!(off, used);
}

/// `m` (decoded from `f`) re-encoded decodes to `m` again; the simple messages re-encode
/// to the same frame type, flags bit 0 and stream id.
fn check_reencode(m: &Message, f: &RawFrame<'_>) {
    for gzip in [false, true] {
        let b = m.to_bytes(gzip);
        let (again, used) = decode_all(&b);
        assert_eq!(used, b.len(), "re-encoding of {m:?} does not parse whole");
        match m {
            Message::Ignored => assert!(b.is_empty()),
            // A gunzipped payload may be larger than one frame: re-encoding splits it.
            Message::Data { sid, payload, fin } => {
                let mut got = Vec::new();
                let n = again.len();
                assert!(n >= 1);
                for (i, r) in again.into_iter().enumerate() {
                    match r {
                        Ok(Message::Data {
                            sid: s,
                            payload: p,
                            fin: e,
                        }) => {
                            assert_eq!(s, *sid);
                            assert_eq!(e, *fin && i == n - 1);
                            got.extend_from_slice(&p);
                        }
                        other => panic!("DATA re-encoded as {other:?}"),
                    }
                }
                assert_eq!(&got[..], &payload[..]);
            }
            // A lossy UTF-8 reason may grow past one frame and is then cut.
            Message::Shutdown { reason } => match &again[..] {
                [Ok(Message::Shutdown { reason: r })] => {
                    assert!(reason.starts_with(r.as_str()));
                    if reason.len() <= MAX_PAYLOAD - 8 {
                        assert_eq!(r, reason);
                    }
                }
                other => panic!("GOAWAY re-encoded as {other:?}"),
            },
            _ => {
                assert_eq!(again, vec![Ok(m.clone())]);
                assert_eq!(b[3], f.typ);
                assert_eq!(b[4], f.flags & FLAG_END_OR_ACK);
                // PING ignores the stream id it came with; we send it on stream 0.
                let want_sid = match m {
                    Message::Syn { .. } | Message::Rst { .. } => f.sid,
                    _ => 0,
                };
                assert_eq!(u32::from_be_bytes([b[5], b[6], b[7], b[8]]), want_sid);
            }
        }
    }
}

/// Most operations per input.
const MAX_OPS: usize = 200;
/// Most bytes one raw injection or one app `send` may carry.
const MAX_RAW: usize = 4 * 1024;
/// Most payload bytes one generated DATA frame carries (above [`MAX_PAYLOAD`], so
/// oversized frames are generated too).
const MAX_GEN_DATA: usize = MAX_PAYLOAD + 64;

/// Start-up knobs of the machine under test.
#[derive(Arbitrary, Debug)]
struct Setup {
    server: bool,
    gzip: bool,
    max_streams: u8,
    rx_cap: u16,
    max_output: u16,
}

/// A well-formed (or deliberately ill-formed) frame the scripted peer sends.
#[derive(Arbitrary, Debug)]
enum PeerFrame {
    Handshake,
    /// SETTINGS with a flag or payload: never a valid handshake.
    BadSettings {
        flags: u8,
    },
    Ping {
        id: i64,
        ack: bool,
    },
    ShortPing {
        len: u8,
        ack: bool,
    },
    Syn {
        sid: u8,
    },
    Rst {
        sid: u8,
    },
    /// DATA of `len` bytes of `byte` (compressible; gzip applies above 1 KiB).
    Data {
        sid: u8,
        len: u16,
        byte: u8,
        fin: bool,
        gzip: bool,
    },
    BadGzip {
        sid: u8,
        junk: Vec<u8>,
    },
    NonEmptyHeaders {
        sid: u8,
        len: u8,
    },
    Goaway {
        reason: String,
    },
    ShortGoaway {
        len: u8,
    },
    UnknownType {
        typ: u8,
    },
    /// A header announcing more than [`MAX_PAYLOAD`] bytes.
    Oversized {
        extra: u16,
    },
}

/// One step of the script.
#[derive(Arbitrary, Debug)]
enum Op {
    /// Raw bytes from the peer, fed in pieces of `split` bytes (0: all at once).
    Raw {
        data: Vec<u8>,
        split: u8,
    },
    /// A frame from the peer, fed in pieces of `split` bytes (0: all at once).
    Frame {
        f: PeerFrame,
        split: u8,
    },
    /// Calls `start` again (must be harmless).
    Restart,
    Open,
    Send {
        pick: u8,
        len: u16,
    },
    Recv {
        pick: u8,
    },
    Shutdown {
        pick: u8,
    },
    Reset {
        pick: u8,
    },
    Close {
        pick: u8,
        linger0: bool,
    },
    ShutdownTunnel,
    /// The clock moves on `ms` and the timers run.
    Tick {
        ms: u16,
    },
    /// The clock jumps to the next timer and it runs.
    NextTimer,
    /// The driver takes the output and the events.
    Drain,
}

/// What one fuzz run did, for tests that check the corpus exercises the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelSummary {
    /// The machine was a server.
    pub server: bool,
    /// Operations run.
    pub ops: usize,
    /// The handshake completed.
    pub ready: bool,
    /// Streams that reached `established` (opened by us or accepted).
    pub established: usize,
    /// Payload bytes the application read.
    pub read: usize,
    /// Payload bytes the application queued.
    pub sent: usize,
    /// The tunnel failed (we sent GOAWAY).
    pub failed: bool,
    /// The peer shut the tunnel down.
    pub peer_shutdown: bool,
    /// Keepalives the machine sent.
    pub pings: usize,
    /// RST frames the machine sent.
    pub rsts: usize,
}

/// Runs an arbitrary-driven script against one tunnel machine; see [`run_tunnel`].
pub fn fuzz_tunnel(data: &[u8]) {
    let _ = run_tunnel(data);
}

/// Runs the script in `data` against one client or server machine, with a scripted
/// peer that sends raw bytes and (ill-)formed frames in random splits, and checks after
/// every step: no panic, the buffers stay under their caps, only legal transitions,
/// everything emitted is a well-formed frame stream obeying the protocol (handshake
/// first, our ids, no DATA after our FIN, frames within the cap), and after failure or
/// close nothing is emitted but the one documented GOAWAY. `None` when `data` is too
/// short to set up a run.
pub fn run_tunnel(data: &[u8]) -> Option<TunnelSummary> {
    let mut u = Unstructured::new(data);
    let setup = Setup::arbitrary(&mut u).ok()?;
    let cfg = TunnelConfig {
        max_streams: usize::from(setup.max_streams % 8) + 1,
        stream_rx_cap: usize::from(setup.rx_cap) + 1,
        max_output: usize::from(setup.max_output) + 1,
        // Small enough that a few full streams hold the input (the held path is fuzzed),
        // large enough that one stream can still pass its own cap.
        max_buffered: 3 * (usize::from(setup.rx_cap) + 1),
        gzip: setup.gzip,
        ..TunnelConfig::default()
    };
    let role = if setup.server {
        Role::Server
    } else {
        Role::Client
    };
    let mut h = Harness::new(role, cfg);
    h.sum.server = setup.server;
    h.t.start(h.now);
    h.after_op();
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        h.sum.ops += 1;
        h.step(op);
    }
    h.drain();
    Some(h.sum)
}

struct Harness {
    t: Tunnel,
    trace: Trace,
    cfg: TunnelConfig,
    role: Role,
    now: Duration,
    /// Input the machine did not take yet (it held its input).
    held: Vec<u8>,
    /// Trace records already checked.
    seen: usize,
    /// Everything the machine emitted, not yet split into frames.
    wire: BytesMut,
    /// The first emitted frame was checked (the handshake, when any).
    first_frame_done: bool,
    /// Streams on which we emitted FIN or RST (no DATA may follow).
    finished: BTreeSet<u32>,
    /// The tunnel went to failed or closed: at most one GOAWAY, then silence.
    ended: bool,
    goaways: usize,
    /// The peer's GOAWAY closed the tunnel: nothing at all may be emitted after it.
    peer_closed: bool,
    /// Bytes the output may exceed its cap by since the last drain (control frames
    /// answering input, frame headers of a split send).
    allowance: usize,
    sum: TunnelSummary,
}

impl Harness {
    fn new(role: Role, cfg: TunnelConfig) -> Self {
        let trace = Trace::recording();
        Harness {
            t: Tunnel::new(role, cfg.clone(), trace.clone(), "t"),
            trace,
            cfg,
            role,
            now: Duration::ZERO,
            held: Vec::new(),
            seen: 0,
            wire: BytesMut::new(),
            first_frame_done: false,
            finished: BTreeSet::new(),
            ended: false,
            goaways: 0,
            peer_closed: false,
            allowance: 0,
            sum: TunnelSummary::default(),
        }
    }

    fn pick(&self, p: u8) -> u32 {
        let ids = self.t.stream_ids();
        if ids.is_empty() || p >= 200 {
            u32::from(p % 16)
        } else {
            ids[usize::from(p) % ids.len()]
        }
    }

    fn feed(&mut self, bytes: &[u8], split: u8) {
        self.allowance += bytes.len() + HEADER_LEN;
        // Input the machine held back goes first, as a driver keeps it.
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(bytes);
        let step = if split == 0 {
            data.len().max(1)
        } else {
            usize::from(split)
        };
        let mut at = 0;
        while at < data.len() {
            let c = &data[at..(at + step).min(data.len())];
            let blocked = self.t.input_blocked().is_some();
            let live = matches!(
                self.t.state(),
                TunnelState::Init | TunnelState::HandshakeSent | TunnelState::Ready
            );
            let n = self.t.handle_input(self.now, c);
            // All or nothing, nothing exactly when a live tunnel says input is held.
            let want = if blocked && live { 0 } else { c.len() };
            assert_eq!(n, want, "handle_input took {n} of {}", c.len());
            if n < c.len() {
                break;
            }
            at += c.len();
        }
        self.held = data.split_off(at);
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Raw { mut data, split } => {
                data.truncate(MAX_RAW);
                self.feed(&data, split);
            }
            Op::Frame { f, split } => {
                let ids = self.t.stream_ids();
                let b = peer_frame(f, &ids);
                self.feed(&b, split);
            }
            Op::Restart => self.t.start(self.now),
            Op::Open => {
                let r = self.t.open(self.now);
                if self.role == Role::Server || self.t.state() != TunnelState::Ready {
                    assert!(
                        r.is_err(),
                        "open succeeded on {:?} {}",
                        self.role,
                        self.t.state()
                    );
                }
            }
            Op::Send { pick, len } => {
                let sid = self.pick(pick);
                let len = usize::from(len) % MAX_RAW;
                let payload: Vec<u8> = (0..len).map(|i| (i / 7) as u8).collect();
                // Odd lengths go through the uncopied path: the same frames either way.
                let r = if len % 2 == 1 {
                    self.t.send_bytes(self.now, sid, &Bytes::from(payload))
                } else {
                    self.t.send(self.now, sid, &payload)
                };
                if let Ok(n) = r {
                    assert!(n <= len);
                    assert!(self.t.state() == TunnelState::Ready);
                    self.sum.sent += n;
                    // One header per frame, plus gzip's worst case of "not smaller".
                    self.allowance += HEADER_LEN * (n / MAX_PAYLOAD + 1);
                }
            }
            Op::Recv { pick } => {
                let sid = self.pick(pick);
                // Reads until the stream has nothing more, as an application would.
                while let Ok(crate::tunnel::Recv::Data(b)) = self.t.recv(self.now, sid) {
                    assert!(!b.is_empty(), "empty Data read");
                    self.sum.read += b.len();
                }
            }
            Op::Shutdown { pick } => {
                let sid = self.pick(pick);
                self.allowance += HEADER_LEN;
                let _ = self.t.finish(self.now, sid);
            }
            Op::Reset { pick } => {
                let sid = self.pick(pick);
                self.allowance += HEADER_LEN;
                let _ = self.t.reset(self.now, sid);
            }
            Op::Close { pick, linger0 } => {
                let sid = self.pick(pick);
                self.allowance += HEADER_LEN;
                let had = self.t.stream_state(sid).is_some();
                let r = self.t.close(self.now, sid, linger0);
                assert_eq!(r.is_ok(), had);
                assert!(
                    self.t.stream_state(sid).is_none(),
                    "closed stream still tracked"
                );
            }
            Op::ShutdownTunnel => self.t.shutdown(self.now, "fuzz shutdown"),
            Op::Tick { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                self.timers();
            }
            Op::NextTimer => {
                if let Some(at) = self.t.poll_timeout() {
                    // Timers never ask to run in the past by more than one step.
                    self.now = self.now.max(at);
                    self.timers();
                }
            }
            Op::Drain => self.drain(),
        }
        self.after_op();
    }

    fn timers(&mut self) {
        // Run every timer that is due, as a driver would; bounded.
        for _ in 0..8 {
            match self.t.poll_timeout() {
                Some(at) if at <= self.now => {
                    self.allowance += 64;
                    self.t.handle_timeout(self.now)
                }
                _ => break,
            }
        }
    }

    fn drain(&mut self) {
        while let Some(b) = self.t.poll_transmit() {
            assert!(!b.is_empty(), "poll_transmit gave an empty chunk");
            self.wire.extend_from_slice(&b);
        }
        self.allowance = 0;
        while let Some(e) = self.t.poll_event() {
            match e {
                Event::Ready => self.sum.ready = true,
                Event::Accepted(_) | Event::Established(_) => self.sum.established += 1,
                Event::Failed(_) => self.sum.failed = true,
                Event::PeerShutdown(_) => self.sum.peer_shutdown = true,
                _ => {}
            }
        }
        self.check_wire();
    }

    /// Splits what was emitted into frames and checks each.
    fn check_wire(&mut self) {
        loop {
            let (typ, n) = match RawFrame::parse(&self.wire) {
                Ok(Some((f, n))) => (f.typ, n),
                Ok(None) => break,
                Err(e) => panic!("we emitted an oversized frame: {e}"),
            };
            let raw = self.wire.split_to(n);
            assert!(
                !(self.ended && self.goaways > 0),
                "emitted after our GOAWAY: {raw:?}"
            );
            if !self.first_frame_done {
                self.first_frame_done = true;
                if raw[..] == HANDSHAKE {
                    continue;
                }
                // The server's first frame may be a GOAWAY (failed before the
                // handshake); nothing else comes before the handshake.
                assert_eq!(
                    typ, TYPE_GOAWAY,
                    "first frame is neither handshake nor GOAWAY"
                );
            }
            let f = RawFrame::parse(&raw).unwrap().unwrap().0;
            let m = Message::from_frame(&f)
                .unwrap_or_else(|e| panic!("we emitted a frame our own rules reject: {e}"));
            match m {
                Message::Shutdown { .. } => self.goaways += 1,
                Message::Syn { sid } => {
                    match self.role {
                        Role::Client => assert_eq!(sid % 2, 1, "client opened an even id"),
                        // A SYN-ACK reopens a reused id.
                        Role::Server => {
                            self.finished.remove(&sid);
                        }
                    }
                }
                Message::Rst { sid } => {
                    self.sum.rsts += 1;
                    self.finished.insert(sid);
                }
                Message::Data { sid, fin, .. } => {
                    assert!(
                        !self.finished.contains(&sid),
                        "DATA/FIN on stream {sid} after our FIN or RST"
                    );
                    if fin {
                        self.finished.insert(sid);
                    }
                    assert_eq!(typ, TYPE_DATA);
                }
                Message::Keepalive { .. } => {
                    assert_eq!(self.role, Role::Client, "a server sent a keepalive");
                    self.sum.pings += 1;
                }
                Message::KeepaliveAck { .. } | Message::Handshake | Message::Ignored => {}
            }
        }
    }

    /// Checks the trace records added since the last call and the caps.
    fn after_op(&mut self) {
        let records = self.trace.snapshot();
        for r in &records[self.seen..] {
            check_transition(r, self.role);
            if &*r.machine == "t" {
                self.sum.ready |= &*r.to == "ready";
                if matches!(&*r.to, "failed" | "closed") {
                    self.ended = true;
                }
                if &*r.to == "closed" && &*r.from != "failed" {
                    self.peer_closed = true;
                }
            }
        }
        if let Some(last) = records.iter().rev().find(|r| &*r.machine == "t") {
            assert_eq!(&*last.to, self.t.state().name(), "trace and state disagree");
        }
        self.seen = records.len();
        let streams = self.t.stream_ids().len();
        assert!(
            streams <= self.cfg.max_streams + 16,
            "{streams} streams tracked"
        );
        assert!(
            self.t.buffered_input() <= self.cfg.stream_rx_cap * streams,
            "receive buffers over their cap"
        );
        assert!(
            self.t.pending_output() <= self.cfg.max_output + MAX_PAYLOAD + self.allowance,
            "output {} over cap {} + allowance {}",
            self.t.pending_output(),
            self.cfg.max_output,
            self.allowance
        );
        if self.ended {
            // After failure or close the machine asks for at most the close timer.
            if self.t.state() == TunnelState::Closed {
                assert_eq!(
                    self.t.poll_timeout(),
                    None,
                    "a closed tunnel still has timers"
                );
            }
            if self.goaways > 0 || self.peer_closed {
                assert_eq!(
                    self.t.pending_output(),
                    0,
                    "output after our GOAWAY went out, or after the peer's arrived"
                );
            }
        }
        if self.t.state() == TunnelState::Closed {
            self.drain_closed();
        }
    }

    /// A closed machine emits nothing more, however it got there.
    fn drain_closed(&mut self) {
        let goaway_pending = self.goaways == 0 && self.t.pending_output() > 0;
        if goaway_pending {
            // Only the GOAWAY of a failure (closed after the delay) may still be queued.
            let b = self.t.poll_transmit().unwrap();
            let (msgs, used) = decode_all(&b);
            assert_eq!(used, b.len());
            assert!(
                matches!(&msgs[..], [Ok(Message::Shutdown { .. })]),
                "a closed tunnel emits {msgs:?}"
            );
            self.wire.extend_from_slice(&b);
            self.check_wire();
        }
    }
}

/// Only the transitions the design allows.
fn check_transition(r: &Transition, role: Role) {
    let (from, to) = (&*r.from, &*r.to);
    let ok = if &*r.machine == "t" {
        matches!(
            (from, to),
            ("init", "handshake_sent")
                | ("handshake_sent", "ready")
                | ("init" | "handshake_sent" | "ready", "failed" | "closed")
                | ("failed", "closed")
        ) || (role == Role::Server && (from, to) == ("init", "ready"))
    } else if r.machine.ends_with("/keepalive") {
        role == Role::Client
            && matches!(
                (from, to),
                ("idle", "waiting") | ("waiting", "idle") | ("waiting", "missed")
            )
    } else if r.machine.starts_with("t/s") {
        match (from, to) {
            ("none", "syn_sent") => role == Role::Client,
            ("none", "established") => role == Role::Server,
            ("none", "dead") => role == Role::Server, // a refused SYN
            ("syn_sent", "established") => role == Role::Client,
            ("syn_sent" | "established", "fin_sent" | "fin_recv") => true,
            ("fin_sent" | "fin_recv", "dead") => true,
            ("syn_sent" | "established", "dead") => true,
            (f, "real_closed") => f != "real_closed",
            _ => false,
        }
    } else {
        false
    };
    assert!(ok, "illegal transition: {r}");
}

/// The peer's frame for `f`; stream ids mostly name streams the machine tracks (`ids`),
/// so that frames reach live streams, else small ids.
fn peer_frame(f: PeerFrame, ids: &[u32]) -> Vec<u8> {
    let sid = |s: u8| match ids.len() {
        n if n > 0 && s < 160 => ids[usize::from(s) % n],
        _ => u32::from(s % 12),
    };
    let frame = |typ: u8, flags: u8, sid: u32, payload: &[u8]| {
        let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        b.push(typ);
        b.push(flags);
        b.extend_from_slice(&sid.to_be_bytes());
        b.extend_from_slice(payload);
        b
    };
    match f {
        PeerFrame::Handshake => HANDSHAKE.to_vec(),
        PeerFrame::BadSettings { flags } => {
            if flags == 0 {
                frame(4, 0, 0, &[0, 1, 0, 0, 0, 0])
            } else {
                frame(4, flags, 0, &[])
            }
        }
        PeerFrame::Ping { id, ack } => if ack {
            Message::KeepaliveAck { id }
        } else {
            Message::Keepalive { id }
        }
        .to_bytes(false),
        PeerFrame::ShortPing { len, ack } => {
            frame(6, u8::from(ack), 0, &vec![7; usize::from(len % 8)])
        }
        PeerFrame::Syn { sid: s } => Message::Syn { sid: sid(s) }.to_bytes(false),
        PeerFrame::Rst { sid: s } => Message::Rst { sid: sid(s) }.to_bytes(false),
        PeerFrame::Data {
            sid: s,
            len,
            byte,
            fin,
            gzip,
        } => {
            let len = usize::from(len) % MAX_GEN_DATA;
            let payload = vec![byte; len];
            if len > MAX_PAYLOAD {
                // One oversized frame, as vproxy would send it.
                frame(0, u8::from(fin), sid(s), &payload)
            } else {
                Message::Data {
                    sid: sid(s),
                    payload: Bytes::from(payload),
                    fin,
                }
                .to_bytes(gzip)
            }
        }
        PeerFrame::BadGzip { sid: s, mut junk } => {
            junk.truncate(64);
            frame(0, FLAG_GZIP, sid(s), &junk)
        }
        PeerFrame::NonEmptyHeaders { sid: s, len } => {
            frame(1, 0, sid(s), &vec![0; usize::from(len % 16) + 1])
        }
        PeerFrame::Goaway { mut reason } => {
            reason.truncate(64);
            Message::Shutdown { reason }.to_bytes(false)
        }
        PeerFrame::ShortGoaway { len } => frame(7, 0, 0, &vec![1; usize::from(len % 8)]),
        PeerFrame::UnknownType { typ } => {
            let typ = if matches!(typ, 0 | 1 | 6 | 7) { 9 } else { typ };
            frame(typ, 0, 0, &[])
        }
        PeerFrame::Oversized { extra } => {
            let len = MAX_PAYLOAD + 1 + usize::from(extra);
            let mut b = frame(0, 0, 1, &[]);
            b[..3].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_decode_handles_known_inputs() {
        fuzz_frame_decode(&[]);
        fuzz_frame_decode(&HANDSHAKE);
        fuzz_frame_decode(&Message::Keepalive { id: -3 }.to_bytes(false));
        fuzz_frame_decode(&[0, 0x40, 1, 0, 0, 0, 0, 0, 1]);
        fuzz_frame_decode(&[0, 0, 2, 7, 0, 0x80, 0, 0, 1, 0xff, 0xfe]);
        let big = Message::Data {
            sid: 1,
            payload: Bytes::from(vec![b'x'; 100_000]),
            fin: true,
        }
        .to_bytes(true);
        fuzz_frame_decode(&big);
    }

    #[test]
    fn tunnel_runs_pseudo_random_scripts() {
        // A cheap stand-in for the fuzzer: pseudo-random byte strings of many lengths.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut ready = 0;
        for n in 0..400usize {
            let data: Vec<u8> = (0..(n * 7 % 900))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if let Some(s) = run_tunnel(&data) {
                ready += usize::from(s.ready);
            }
        }
        assert!(ready > 0, "no random script completed a handshake");
    }
}
