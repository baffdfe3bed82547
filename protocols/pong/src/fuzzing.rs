//! Fuzz bodies. They live here, not in `fuzz/`, so that a stable `cargo test` can run
//! them on seeded inputs (and later replay committed corpora) without nightly or
//! libFuzzer; cargo-fuzz targets are meant to be one-line wrappers around them.
//!
//! Every run is bounded (operations and sizes are capped) so that a slow input is a real
//! finding, not a long script.

use std::collections::BTreeSet;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use tunnelbed_netio::Trace;

use crate::session::{DialError, Event, Session, SessionConfig};
use crate::stream::{Recv, DATAGRAM_OVERHEAD};
use crate::wire::{
    self, Address, Body, ConnHeader, DecodeError, Frame, RawFrame, RstCode, RstInfo,
    CONN_HEADER_LEN, FRAME_HEADER_LEN, MAX_FRAME_LEN, MAX_PAYLOAD,
};

/// Decodes `data` as frames (and as a header, an address, an rst payload); decoding must
/// never panic, what decodes must re-encode to the very bytes it came from, and feeding
/// the same bytes in pieces (cut where the input's own bytes say) must give the same
/// frames as decoding them whole.
pub fn fuzz_frame_decode(data: &[u8]) {
    // Whole-buffer decoding, frame after frame, up to the first framing error.
    let mut whole = Vec::new();
    let mut rest = data;
    let mut framing_error = None;
    loop {
        match Frame::decode(rest) {
            Ok(Some((f, n))) => {
                assert!((FRAME_HEADER_LEN..=MAX_FRAME_LEN).contains(&n));
                let b = f.to_bytes().expect("a decoded frame re-encodes");
                assert_eq!(&b[..], &rest[..n], "frame does not round-trip");
                whole.push(Ok(f));
                rest = &rest[n..];
            }
            Ok(None) => break,
            Err(DecodeError::Payload { len, kind, .. }) => {
                let (raw, n) = RawFrame::decode(rest)
                    .expect("payload errors come after good framing")
                    .expect("complete");
                assert_eq!((n, raw.kind), (len, kind));
                let mut b = BytesMut::new();
                raw.encode(&mut b).expect("raw frame re-encodes");
                assert_eq!(&b[..], &rest[..n], "raw frame does not round-trip");
                whole.push(Err(len));
                rest = &rest[len..];
            }
            Err(DecodeError::Frame(e)) => {
                framing_error = Some(e);
                break;
            }
        }
    }

    // The same bytes in pieces through a streaming buffer.
    let mut pieces = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut cut = 0usize;
    let mut streamed_error = None;
    'outer: while at < data.len() {
        cut = cut.wrapping_mul(31).wrapping_add(data[at] as usize);
        let step = 1 + cut % 97;
        let end = (at + step).min(data.len());
        buf.extend_from_slice(&data[at..end]);
        at = end;
        loop {
            match Frame::decode(&buf) {
                Ok(Some((f, n))) => {
                    pieces.push(Ok(f));
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(DecodeError::Payload { len, .. }) => {
                    pieces.push(Err(len));
                    buf.drain(..len);
                }
                Err(DecodeError::Frame(e)) => {
                    streamed_error = Some(e);
                    break 'outer;
                }
            }
        }
    }
    assert_eq!(pieces, whole, "split decoding differs from whole decoding");
    assert_eq!(streamed_error, framing_error);

    // The other decoders: no panic, and what decodes re-encodes.
    if let Ok(Some((h, n))) = ConnHeader::decode(data) {
        assert_eq!(n, CONN_HEADER_LEN);
        let mut b = BytesMut::new();
        h.encode(&mut b);
        assert_eq!(&b[..], &data[..n]);
    }
    if let Ok((a, n)) = Address::decode(data) {
        let mut b = BytesMut::new();
        a.encode(&mut b).expect("a decoded address re-encodes");
        assert_eq!(&b[..], &data[..n]);
        assert_eq!(a.encoded_len(), n);
    }
    if let Ok(r) = wire::decode_rst(data) {
        let f = Frame::new(0, Body::Rst(r));
        let b = f.to_bytes();
        if data.len() <= MAX_PAYLOAD {
            assert_eq!(&b.expect("fits")[FRAME_HEADER_LEN..], data);
        }
    }
}

/// Start-up choices of a session run.
#[derive(Arbitrary, Debug)]
struct Setup {
    /// Queue a valid header first unless 0 (else whatever the ops queue is taken as one).
    header: u8,
    /// The driver accepts the client id unless this is 0 mod 8.
    accept: u8,
    /// Receive cap per stream (small values exercise backpressure).
    rx_cap: u16,
    /// Output cap (small values exercise output backpressure).
    max_output: u16,
    /// Most streams.
    max_streams: u8,
    /// Ended ids remembered exactly.
    ended_memory: u8,
}

/// A frame the fuzzer builds; ids come from a small space so that they collide.
#[derive(Debug)]
enum FrameOp {
    Data(Vec<u8>),
    Connect(u8),
    Relay(u8),
    Bind,
    Associate,
    Set,
    Finish,
    Close,
    Rst(Option<(u8, Vec<u8>)>),
    Unknown(u8),
}

/// One step of a session run (drawn with weights, see [`draw_op`]).
#[derive(Debug)]
enum Op {
    /// Queue a well-formed frame for input.
    Frame { sid: u8, frame: FrameOp },
    /// Queue raw bytes for input (may break the framing).
    Raw(Vec<u8>),
    /// Feed up to `n` queued bytes to the session (random splits).
    Feed(u16),
    /// Feed everything queued.
    FeedAll,
    /// The driver reports a pending dial as done.
    DialOk(u8),
    /// The driver reports a pending dial as failed (code picks the error).
    DialFail(u8, u8),
    /// The application reads a stream.
    Recv(u8),
    /// The application sends on a stream.
    Send(u8, u16),
    /// The application finishes, closes or resets a stream.
    Finish(u8),
    /// Close.
    Close(u8),
    /// Reset.
    Reset(u8),
    /// The driver writes the output out.
    Drain,
    /// The carrier ends.
    CarrierClosed,
}

/// Draws a frame with weights: mostly data and connects, so streams live long enough to
/// carry data; the stream-killing kinds are rarer.
fn draw_frame(u: &mut Unstructured<'_>) -> arbitrary::Result<FrameOp> {
    let sel: u8 = u.arbitrary()?;
    Ok(match sel {
        0..=119 => {
            let n: u8 = u.arbitrary()?;
            let mut d: Vec<u8> = u.arbitrary()?;
            // occasionally large, to reach the buffer caps
            if n > 240 {
                d.resize(n as usize * 64, 0x61);
            }
            FrameOp::Data(d)
        }
        120..=159 => FrameOp::Connect(u.arbitrary()?),
        160..=179 => FrameOp::Relay(u.arbitrary()?),
        180..=199 => FrameOp::Finish,
        200..=214 => FrameOp::Close,
        215..=229 => FrameOp::Rst(u.arbitrary()?),
        230..=235 => FrameOp::Bind,
        236..=240 => FrameOp::Associate,
        241..=247 => FrameOp::Set,
        _ => FrameOp::Unknown(u.arbitrary()?),
    })
}

/// Draws an op with weights, so that random bytes mostly build frames and feed them
/// (uniform choice would break the framing with raw bytes in most runs).
fn draw_op(u: &mut Unstructured<'_>) -> arbitrary::Result<Op> {
    let sel: u8 = u.arbitrary()?;
    Ok(match sel {
        0..=99 => Op::Frame {
            sid: u.arbitrary()?,
            frame: draw_frame(u)?,
        },
        100..=104 => Op::Raw(u.arbitrary()?),
        105..=144 => Op::Feed(u.arbitrary()?),
        145..=164 => Op::FeedAll,
        165..=189 => Op::DialOk(u.arbitrary()?),
        190..=199 => Op::DialFail(u.arbitrary()?, u.arbitrary()?),
        200..=224 => Op::Recv(u.arbitrary()?),
        225..=234 => Op::Send(u.arbitrary()?, u.arbitrary()?),
        235..=240 => Op::Finish(u.arbitrary()?),
        241..=245 => Op::Close(u.arbitrary()?),
        246..=248 => Op::Reset(u.arbitrary()?),
        249..=253 => Op::Drain,
        _ => Op::CarrierClosed,
    })
}

/// Most operations per input.
const MAX_OPS: usize = 512;
/// Most bytes queued for input at once.
const MAX_QUEUED: usize = 256 * 1024;
/// Stream ids used (0..16: odd and even, colliding).
const ID_SPACE: u8 = 16;

fn addr_for(b: u8) -> Address {
    match b % 4 {
        0 => Address::Ip(std::net::SocketAddr::from(([10, 0, 0, b], 80))),
        1 => Address::Ip(std::net::SocketAddr::from((
            [0u16, 0, 0, 0, 0, 0, 0, b as u16],
            443,
        ))),
        2 => Address::Domain(format!("h{b}.test"), 8080),
        _ => Address::Domain("x".repeat(255), 1),
    }
}

fn build(sid: u32, op: FrameOp) -> Vec<u8> {
    let body = match op {
        FrameOp::Data(d) => Body::Data(Bytes::from(d)),
        FrameOp::Connect(a) => Body::Connect(addr_for(a)),
        FrameOp::Relay(a) => Body::Relay(addr_for(a)),
        FrameOp::Bind => Body::Bind(Bytes::new()),
        FrameOp::Associate => Body::Associate(Bytes::new()),
        FrameOp::Set => Body::Set(Bytes::new()),
        FrameOp::Finish => Body::Finish(Bytes::new()),
        FrameOp::Close => Body::Close(Bytes::new()),
        FrameOp::Rst(None) => Body::Rst(None),
        FrameOp::Rst(Some((c, d))) => {
            // raw bytes, possibly not UTF-8: build it by hand
            let mut p = vec![c];
            p.extend_from_slice(&d[..d.len().min(64)]);
            let mut b = BytesMut::new();
            let _ = wire::encode_raw(&mut b, sid, wire::frame_type::RST, &p);
            return b.to_vec();
        }
        FrameOp::Unknown(k) => {
            let k = if wire::kind_name(k) == "unknown" {
                k
            } else {
                0x0a
            };
            let mut b = BytesMut::new();
            let _ = wire::encode_raw(&mut b, sid, k, b"?");
            return b.to_vec();
        }
    };
    Frame::new(sid, body)
        .to_bytes()
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// What one [`fuzz_remote_session`] run did, so tests can check that random inputs really
/// exercise the machine and do not all stop at the first byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionSummary {
    /// Operations applied.
    pub ops: usize,
    /// Dial events raised.
    pub dials: usize,
    /// Data chunks read by the application.
    pub reads: usize,
    /// rst frames the remote sent.
    pub rsts_sent: usize,
    /// Times input was held (backpressure).
    pub holds: usize,
    /// The connection ended with a protocol error.
    pub protocol_error: bool,
    /// Frames fed for ids that had already ended (and had to be ignored).
    pub late_frames: usize,
}

struct Run {
    r: Session,
    cfg: SessionConfig,
    queued: Vec<u8>,
    /// Streams whose dial the driver has not answered yet.
    dialing: Vec<u32>,
    out: Vec<u8>,
    now: Duration,
    accept: bool,
    sum: SessionSummary,
}

impl Run {
    fn ended_ids(&self) -> BTreeSet<u32> {
        (0..ID_SPACE as u32)
            .filter(|&i| {
                self.r.stream_end(i).is_some()
                    || self.r.stream_state(i).is_some_and(|s| s.is_terminal())
            })
            .collect()
    }

    fn check_bounds(&self) {
        let cap = self.cfg.stream_rx_cap.max(MAX_PAYLOAD + DATAGRAM_OVERHEAD);
        for sid in self.r.stream_ids() {
            let b = self.r.buffered(sid).unwrap_or(0);
            assert!(b <= cap, "s{sid} buffers {b} > {cap}");
        }
        assert!(self.r.pending_input() <= MAX_FRAME_LEN.max(CONN_HEADER_LEN));
        // App sends stop at the cap (a lone datagram may exceed it); the machine's own
        // answers (at most one per frame, input stops at the cap) add a little.
        assert!(
            self.r.pending_output() <= self.cfg.max_output.max(MAX_FRAME_LEN) + 2048,
            "output {} over {}",
            self.r.pending_output(),
            self.cfg.max_output
        );
        assert!(self.r.remembered_ends() <= self.cfg.ended_memory.max(1));
        assert!(self.r.stream_ids().len() <= self.cfg.max_streams);
    }

    /// Feeds `n` queued bytes and checks that ended ids stay ended.
    fn feed(&mut self, n: usize) {
        let n = n.min(self.queued.len());
        let ended = self.ended_ids();
        let before: Vec<(u32, usize)> = ended
            .iter()
            .map(|&i| (i, self.r.buffered(i).unwrap_or(0)))
            .collect();
        self.sum.late_frames += count_frames_for(&self.queued[..n], &ended);
        self.drain();
        let used = self.r.handle_input(self.now, &self.queued[..n]);
        assert!(used <= n);
        if used < n && self.r.input_blocked().is_some() {
            self.sum.holds += 1;
        }
        assert!(
            used == n || self.r.input_blocked().is_some(),
            "took {used} of {n} bytes without a reason"
        );
        self.queued.drain(..used);
        // Nothing may be said about, or buffered for, an ended stream.
        let out = self.r.poll_transmit().unwrap_or_default();
        for f in frames_in(&out) {
            assert!(
                !ended.contains(&f.stream_id),
                "answered {f} for an ended stream"
            );
            if matches!(f.body, Body::Rst(_)) {
                self.sum.rsts_sent += 1;
            }
        }
        self.out.extend_from_slice(&out);
        for (i, b) in before {
            assert!(
                self.r.buffered(i).unwrap_or(0) <= b,
                "s{i} grew after it ended"
            );
        }
        self.events(Some(&ended));
    }

    fn events(&mut self, ended: Option<&BTreeSet<u32>>) {
        while let Some(e) = self.r.poll_event() {
            let sid = match &e {
                Event::Dial { stream_id, .. } => {
                    self.sum.dials += 1;
                    self.dialing.push(*stream_id);
                    Some(*stream_id)
                }
                Event::Readable(s) | Event::Closed(s) => Some(*s),
                Event::Reset { stream_id, .. } => Some(*stream_id),
                Event::ConnectionClosed { error } => {
                    self.sum.protocol_error |= error.is_some();
                    None
                }
                Event::ClientHello { .. } => {
                    // The driver's answer, chosen by the input.
                    let _ = if self.accept {
                        self.r.accept_client(self.now)
                    } else {
                        self.r.reject_client(self.now)
                    };
                    None
                }
            };
            if let (Some(sid), Some(ended)) = (sid, ended) {
                // A connection-wide end resets live streams only; an ended one is silent.
                assert!(!ended.contains(&sid), "event {e:?} for an ended stream");
            }
        }
    }

    fn drain(&mut self) {
        if let Some(b) = self.r.poll_transmit() {
            for f in frames_in(&b) {
                if matches!(f.body, Body::Rst(_)) {
                    self.sum.rsts_sent += 1;
                }
            }
        }
    }
}

/// A stream id: mostly odd (as local opens them), sometimes any in the space.
fn pick(x: u8) -> u32 {
    if x & 0x80 == 0 {
        ((x % (ID_SPACE / 2)) * 2 + 1) as u32
    } else {
        (x % ID_SPACE) as u32
    }
}

/// Frames in our own output (the machine's output always decodes).
fn frames_in(mut b: &[u8]) -> Vec<Frame> {
    let mut v = Vec::new();
    while !b.is_empty() {
        match Frame::decode(b) {
            Ok(Some((f, n))) => {
                v.push(f);
                b = &b[n..];
            }
            other => panic!("own output does not decode: {other:?}"),
        }
    }
    v
}

/// How many complete frames at the start of `b` are for ids in `ended`.
fn count_frames_for(mut b: &[u8], ended: &BTreeSet<u32>) -> usize {
    let mut n = 0;
    while let Ok(Some((raw, len))) = RawFrame::decode(b) {
        if ended.contains(&raw.stream_id) {
            n += 1;
        }
        b = &b[len..];
    }
    n
}

/// Runs an op sequence (decoded with `arbitrary`) against a remote session: well-formed
/// and raw frames fed in random splits, driver answers (accept/reject, dial results) and
/// application calls chosen by the input. Checks: no panic; receive buffers, output,
/// held input and remembered ids stay under their caps; input is only refused with a
/// reason; and once a stream has ended, nothing is sent, raised or buffered for it.
pub fn fuzz_remote_session(data: &[u8]) {
    run_remote_session(data);
}

/// [`fuzz_remote_session`], returning what the run did (None: too short for a setup).
pub fn run_remote_session(data: &[u8]) -> Option<SessionSummary> {
    let mut u = Unstructured::new(data);
    let setup = Setup::arbitrary(&mut u).ok()?;
    let cfg = SessionConfig {
        stream_rx_cap: setup.rx_cap as usize,
        max_output: 64 + setup.max_output as usize,
        max_streams: 1 + setup.max_streams as usize % 12,
        ended_memory: 1 + setup.ended_memory as usize % 8,
    };
    let mut run = Run {
        r: Session::remote(cfg.clone(), Trace::disabled(), "pong[fuzz]"),
        cfg,
        queued: Vec::new(),
        dialing: Vec::new(),
        out: Vec::new(),
        now: Duration::ZERO,
        accept: setup.accept % 8 != 0,
        sum: SessionSummary::default(),
    };
    if setup.header != 0 {
        let mut h = BytesMut::new();
        ConnHeader { client_id: [7; 16] }.encode(&mut h);
        run.queued.extend_from_slice(&h);
    }
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = draw_op(&mut u) else {
            break;
        };
        run.sum.ops += 1;
        run.now += Duration::from_millis(1);
        let now = run.now;
        match op {
            Op::Frame { sid, frame } => {
                if run.queued.len() < MAX_QUEUED {
                    let b = build(pick(sid), frame);
                    run.queued.extend_from_slice(&b);
                }
            }
            Op::Raw(b) => {
                if run.queued.len() < MAX_QUEUED {
                    run.queued.extend_from_slice(&b[..b.len().min(512)]);
                }
            }
            Op::Feed(n) => run.feed(n as usize),
            Op::FeedAll => run.feed(usize::MAX),
            Op::DialOk(p) => {
                if !run.dialing.is_empty() {
                    let sid = run.dialing.remove(p as usize % run.dialing.len());
                    let _ = run.r.dial_succeeded(now, sid);
                }
            }
            Op::DialFail(p, code) => {
                if !run.dialing.is_empty() {
                    let sid = run.dialing.remove(p as usize % run.dialing.len());
                    let e = match code % 8 {
                        0 => DialError::Refused,
                        1 => DialError::HostUnreachable,
                        2 => DialError::NetworkUnreachable,
                        3 => DialError::Timeout,
                        4 => DialError::TtlExpired,
                        5 => DialError::RuleRefused,
                        6 => DialError::AddressTypeNotSupported,
                        _ => DialError::Other("fuzz".into()),
                    };
                    let _ = run.r.dial_failed(now, sid, &e);
                }
            }
            Op::Recv(s) => {
                let sid = pick(s);
                if let Ok(Recv::Data(_)) = run.r.recv(now, sid) {
                    run.sum.reads += 1;
                }
            }
            Op::Send(s, len) => {
                let sid = pick(s);
                let d = vec![0x5a; len as usize];
                if run.r.send(now, sid, &d).is_err() {
                    let _ = run.r.send_datagram(now, sid, &d);
                }
            }
            Op::Finish(s) => {
                let _ = run.r.finish(now, pick(s));
            }
            Op::Close(s) => {
                let _ = run.r.close(now, pick(s));
            }
            Op::Reset(s) => {
                let _ = run.r.reset(now, pick(s), RstInfo::new(RstCode::from_u8(s)));
            }
            Op::Drain => run.drain(),
            Op::CarrierClosed => run.r.handle_carrier_closed(now),
        }
        run.events(None);
        run.check_bounds();
    }
    // Everything left goes in, as the driver would after the application read it all.
    for _ in 0..64 {
        for sid in run.r.stream_ids() {
            while let Ok(Recv::Data(_)) = run.r.recv(run.now, sid) {
                run.sum.reads += 1;
            }
        }
        run.feed(usize::MAX);
        run.check_bounds();
        if run.queued.is_empty() {
            break;
        }
    }
    Some(run.sum)
}
