//! Conformance cases for vproxy's HTTP/2-framed tunnel (seed 000 and
//! `shared/protocols/h2tunnel.md`), one per statement of the seed and per row or rule of
//! the notes' tables, each with a stable ID.
//!
//! Each case is a scripted frame exchange against one sans-IO [`Tunnel`] (client or
//! server role): it feeds exact bytes, steps a fake clock, and checks the exact bytes the
//! machine emits, its events and its states. Expected and injected bytes are written out
//! by hand here ([`frame`]), never produced by the crate's own encoder, so a case also
//! checks the codec. Each run returns a [`CaseResult`] whose `log` (frames both ways,
//! events, clock steps, then the transition trace) is what the tests snapshot.

use std::fmt::Write as _;
use std::time::Duration;

use tunnelbed_h2tunnel::stream::{ResetCause, StreamState};
use tunnelbed_h2tunnel::tunnel::{
    Event, Recv, Role, StreamError, Tunnel, TunnelConfig, TunnelState,
};
use tunnelbed_h2tunnel::wire::{decode_all, RawFrame, HEADER_LEN};
use tunnelbed_netio::Trace;

/// Where a case's rule comes from, so a reader can find the text it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A statement of seed 000 (vproxy's kcp tunnel README).
    Seed000,
    /// A row or rule of `shared/protocols/h2tunnel.md` (facts from vproxy's code).
    Notes,
    /// A rule of ours where both are silent (documented in the clause).
    Ours,
}

impl Source {
    /// The short name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Source::Seed000 => "seed 000",
            Source::Notes => "notes",
            Source::Ours => "tunnelbed",
        }
    }
}

/// One conformance case: a stable ID, the rule it checks, and the script that checks it.
pub struct Case {
    /// Stable identifier (`H2T-...`); snapshots and reports are keyed by it.
    pub id: &'static str,
    /// Where the rule comes from.
    pub source: Source,
    /// The rule, quoted or paraphrased.
    pub clause: &'static str,
    /// Set when we deliberately behave differently from vproxy, saying how and why.
    pub differs_from_vproxy: Option<&'static str>,
    /// Runs the scripted exchange.
    pub run: fn() -> CaseResult,
}

/// What running a case gave: pass or the first failed check, and the readable log.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// `Err` holds the first check that failed.
    pub outcome: Result<(), String>,
    /// Frames both ways, events, clock steps, then the transition trace.
    pub log: String,
}

impl CaseResult {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// A check's outcome: `Err` says what differed.
pub type R = Result<(), String>;

/// The handshake bytes, written out (notes: "`00 00 00 04 00 00 00 00 00` exactly").
pub const HS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Builds one frame by hand: length u24, type, flags, stream id u32, payload.
pub fn frame(typ: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    b.push(typ);
    b.push(flags);
    b.extend_from_slice(&sid.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn syn(sid: u32) -> Vec<u8> {
    frame(1, 0, sid, &[])
}
fn rst(sid: u32) -> Vec<u8> {
    frame(1, 1, sid, &[])
}
fn data(sid: u32, p: &[u8]) -> Vec<u8> {
    frame(0, 0, sid, p)
}
fn fin(sid: u32) -> Vec<u8> {
    frame(0, 1, sid, &[])
}
fn ping(id: i64) -> Vec<u8> {
    frame(6, 0, 0, &id.to_be_bytes())
}
fn pong(id: i64) -> Vec<u8> {
    frame(6, 1, 0, &id.to_be_bytes())
}
fn goaway(reason: &str) -> Vec<u8> {
    let mut p = vec![0xff; 8];
    p.extend_from_slice(reason.as_bytes());
    frame(7, 0, 0, &p)
}

/// gzip (RFC 1952, mtime 0) of `b"tunnelbed "` repeated 200 times, made by Python's
/// `gzip.compress`: an independent producer for the gunzip rule.
const GZ_TUNNELBED: &str =
    "1f8b08000000000002032b29cdcb4bcd494a4d512819658db24659a3ac51d6286b9435445900134a5a44d0070000";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
        .collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const TYPE_NAMES: [&str; 10] = [
    "DATA",
    "HEADERS",
    "PRIORITY",
    "RST_STREAM",
    "SETTINGS",
    "PUSH_PROMISE",
    "PING",
    "GOAWAY",
    "WINDOW_UPDATE",
    "CONTINUATION",
];

/// One line per frame in `bytes`: header fields, payload (hex, cut), and our reading.
pub fn describe_frames(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        match RawFrame::parse(&bytes[off..]) {
            Ok(Some((f, n))) => {
                let name = TYPE_NAMES.get(usize::from(f.typ)).copied().unwrap_or("?");
                let mut l = format!(
                    "{name}({}) flags=0x{:02x} sid={} len={}",
                    f.typ,
                    f.flags,
                    f.sid,
                    f.payload.len()
                );
                if !f.payload.is_empty() {
                    let shown = &f.payload[..f.payload.len().min(24)];
                    let _ = write!(l, " payload={}", hex::encode(shown));
                    if shown.len() < f.payload.len() {
                        l.push_str("...");
                    }
                }
                let (m, _) = decode_all(&bytes[off..off + n]);
                match m.first() {
                    Some(Ok(m)) => {
                        let mut d = format!("{m:?}");
                        if d.len() > 90 {
                            d.truncate(90);
                            d.push_str("...");
                        }
                        let _ = write!(l, "  = {d}");
                    }
                    Some(Err(e)) => {
                        let _ = write!(l, "  = invalid by the post-handshake rules: {e}");
                    }
                    None => {}
                }
                out.push(l);
                off += n;
            }
            Ok(None) => {
                out.push(format!(
                    "partial frame: {}",
                    hex::encode(&bytes[off..bytes.len().min(off + 32)])
                ));
                break;
            }
            Err(e) => {
                out.push(format!(
                    "bad header {} ({e})",
                    hex::encode(&bytes[off..bytes.len().min(off + HEADER_LEN)])
                ));
                break;
            }
        }
    }
    out
}

/// A scripted exchange with one machine: every action and check is logged.
pub struct Script {
    /// The machine under test.
    pub t: Tunnel,
    trace: Trace,
    now: Duration,
    log: String,
    name: &'static str,
}

impl Script {
    /// A machine with `cfg`, started at time 0 (carrier connected).
    pub fn new(role: Role, cfg: TunnelConfig) -> Self {
        let trace = Trace::recording();
        let name = match role {
            Role::Client => "client",
            Role::Server => "server",
        };
        let mut t = Tunnel::new(role, cfg, trace.clone(), name);
        t.start(Duration::ZERO);
        Script {
            t,
            trace,
            now: Duration::ZERO,
            log: String::new(),
            name,
        }
    }

    fn line(&mut self, l: impl AsRef<str>) {
        let _ = writeln!(self.log, "{:>9.3}s {}", self.now.as_secs_f64(), l.as_ref());
    }

    /// Logs a note (what the next steps do).
    pub fn note(&mut self, s: &str) {
        self.line(format!("# {s}"));
    }

    /// The peer's bytes arrive in one read.
    pub fn rx(&mut self, bytes: &[u8]) {
        for l in describe_frames(bytes) {
            self.line(format!("peer -> {}: {l}", self.name));
        }
        self.t.handle_input(self.now, bytes);
    }

    /// The peer's bytes arrive in reads of `chunk` bytes.
    pub fn rx_split(&mut self, bytes: &[u8], chunk: usize) {
        for l in describe_frames(bytes) {
            self.line(format!(
                "peer -> {}: {l} (in {chunk}-byte reads)",
                self.name
            ));
        }
        for c in bytes.chunks(chunk) {
            self.t.handle_input(self.now, c);
        }
    }

    /// Takes everything the machine queued and logs it frame by frame.
    pub fn take_tx(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(b) = self.t.poll_transmit() {
            got.extend_from_slice(&b);
        }
        for l in describe_frames(&got) {
            self.line(format!("{} -> peer: {l}", self.name));
        }
        got
    }

    /// The machine emitted exactly `want` since the last check.
    pub fn tx(&mut self, want: &[u8]) -> R {
        let got = self.take_tx();
        if got != want {
            let short = |b: &[u8]| {
                let h = hex::encode(&b[..b.len().min(64)]);
                format!(
                    "{h}{} ({} bytes)",
                    if b.len() > 64 { "..." } else { "" },
                    b.len()
                )
            };
            return Err(format!(
                "emitted {}\n  expected {}",
                short(&got),
                short(want)
            ));
        }
        Ok(())
    }

    /// The machine emitted nothing since the last check.
    pub fn silent(&mut self) -> R {
        self.tx(&[])
    }

    /// The machine reported exactly `want` since the last check.
    pub fn events(&mut self, want: &[Event]) -> R {
        let mut got = Vec::new();
        while let Some(e) = self.t.poll_event() {
            self.line(format!("event {e:?}"));
            got.push(e);
        }
        if got != want {
            return Err(format!("events {got:?}, expected {want:?}"));
        }
        Ok(())
    }

    /// The clock moves to `ms` and every timer due runs, as a driver would.
    pub fn at_ms(&mut self, ms: u64) {
        self.now = Duration::from_millis(ms);
        self.line("clock");
        for _ in 0..16 {
            match self.t.poll_timeout() {
                Some(at) if at <= self.now => self.t.handle_timeout(self.now),
                _ => break,
            }
        }
    }

    /// The tunnel is in `want`.
    pub fn state(&mut self, want: TunnelState) -> R {
        let got = self.t.state();
        self.line(format!("state {got}"));
        check(got == want, format!("tunnel is {got}, expected {want}"))
    }

    /// Stream `sid` is in `want` (`None`: not tracked).
    pub fn stream(&mut self, sid: u32, want: Option<StreamState>) -> R {
        let got = self.t.stream_state(sid);
        self.line(format!(
            "stream {sid}: {}",
            got.map_or("untracked", StreamState::name)
        ));
        check(
            got == want,
            format!("stream {sid} is {got:?}, expected {want:?}"),
        )
    }

    /// Reads stream `sid` until it is empty: the bytes, and how the read ended.
    pub fn read_all(&mut self, sid: u32) -> (Vec<u8>, Result<Recv, StreamError>) {
        let mut got = Vec::new();
        let end = loop {
            match self.t.recv(sid) {
                Ok(Recv::Data(b)) => got.extend_from_slice(&b),
                other => break other,
            }
        };
        self.line(format!(
            "app reads stream {sid}: {} bytes, then {end:?}",
            got.len()
        ));
        (got, end)
    }

    /// A client whose handshake is done (frames and events checked, then cleared), and
    /// whether the handshake went as it must.
    pub fn ready_client(cfg: TunnelConfig) -> (Self, R) {
        let mut s = Script::new(Role::Client, cfg);
        let r = (|| {
            s.tx(&HS)?;
            s.rx(&HS);
            s.events(&[Event::Ready])
        })();
        (s, r)
    }

    /// A server whose handshake is done, and whether it went as it must.
    pub fn ready_server(cfg: TunnelConfig) -> (Self, R) {
        let mut s = Script::new(Role::Server, cfg);
        let r = (|| {
            s.silent()?;
            s.rx(&HS);
            s.tx(&HS)?;
            s.events(&[Event::Ready])
        })();
        (s, r)
    }

    /// Ends the script: the outcome and the log with the trace appended.
    pub fn finish(self, outcome: R) -> CaseResult {
        let mut log = self.log;
        log.push_str("--- transitions ---\n");
        log.push_str(&self.trace.render());
        if let Err(e) = &outcome {
            let _ = writeln!(log, "--- FAILED ---\n{e}");
        }
        CaseResult { outcome, log }
    }
}

fn check(cond: bool, msg: impl Into<String>) -> R {
    if cond {
        Ok(())
    } else {
        Err(msg.into())
    }
}

/// Runs `body` on a fresh machine of `role`.
fn run(role: Role, cfg: TunnelConfig, body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    let mut s = Script::new(role, cfg);
    let r = body(&mut s);
    s.finish(r)
}

/// Runs `body` on a machine of `role` whose handshake is done.
fn run_ready(role: Role, cfg: TunnelConfig, body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    let (mut s, r) = match role {
        Role::Client => Script::ready_client(cfg),
        Role::Server => Script::ready_server(cfg),
    };
    if let Err(e) = r {
        return s.finish(Err(format!("handshake: {e}")));
    }
    s.note("handshake done");
    let r = body(&mut s);
    s.finish(r)
}

fn client(body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    run_ready(Role::Client, TunnelConfig::default(), body)
}

fn server(body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    run_ready(Role::Server, TunnelConfig::default(), body)
}

/// A client with stream 1 open and established.
fn client_with_stream(body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    client(|s| {
        let sid = s.t.open().map_err(|e| e.to_string())?;
        check(sid == 1, format!("first stream is {sid}"))?;
        s.tx(&syn(1))?;
        s.rx(&syn(1));
        s.events(&[Event::Established(1)])?;
        s.note("stream 1 established");
        body(s)
    })
}

/// A server with stream 1 accepted.
fn server_with_stream(body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    server(|s| {
        s.rx(&syn(1));
        s.tx(&syn(1))?;
        s.events(&[Event::Accepted(1)])?;
        s.note("stream 1 accepted");
        body(s)
    })
}

fn ended(why: &str) -> ResetCause {
    ResetCause::TunnelEnded(why.to_string())
}

/// A violation after the handshake: GOAWAY with `reason` goes out, streams die, the
/// tunnel is failed, then closed 1 s later; later input is ignored.
fn fails_with(s: &mut Script, bad: &[u8], reason: &str) -> R {
    s.rx(bad);
    s.tx(&goaway(reason))?;
    s.state(TunnelState::Failed)?;
    s.events(&[Event::Failed(reason.to_string())])?;
    s.rx(&ping(9));
    s.silent()?;
    s.at_ms(1000);
    s.state(TunnelState::Closed)?;
    s.events(&[Event::Closed])?;
    s.silent()
}

// ---------------------------------------------------------------- the cases

fn handshake_exact() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.note("the client sends the handshake on connect");
        s.tx(&HS)?;
        s.state(TunnelState::HandshakeSent)?;
        s.rx(&HS);
        s.state(TunnelState::Ready)?;
        s.events(&[Event::Ready])?;
        s.silent()
    })
}

fn handshake_server() -> CaseResult {
    run(Role::Server, TunnelConfig::default(), |s| {
        s.note("the server sends nothing until the client's SETTINGS");
        s.silent()?;
        s.state(TunnelState::Init)?;
        s.rx(&HS);
        s.tx(&HS)?;
        s.state(TunnelState::Ready)?;
        s.events(&[Event::Ready])
    })
}

fn handshake_invalid() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        s.note("a SETTINGS with the ACK flag is not the handshake byte for byte");
        s.rx(&frame(4, 1, 0, &[]));
        s.tx(&goaway("handshake message is invalid"))?;
        s.state(TunnelState::Failed)?;
        s.events(&[Event::Failed("handshake message is invalid".into())])?;
        s.at_ms(1000);
        s.state(TunnelState::Closed)?;
        s.events(&[Event::Closed])
    })
}

fn handshake_invalid_server() -> CaseResult {
    run(Role::Server, TunnelConfig::default(), |s| {
        s.note("a SYN before the handshake");
        s.rx(&syn(1));
        s.tx(&goaway("handshake message is invalid"))?;
        s.state(TunnelState::Failed)?;
        s.events(&[Event::Failed("handshake message is invalid".into())])
    })
}

fn handshake_settings_payload() -> CaseResult {
    run(Role::Server, TunnelConfig::default(), |s| {
        s.note("a standard HTTP/2 SETTINGS with one setting is not the empty handshake");
        s.rx(&frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        s.tx(&goaway("handshake message is invalid"))?;
        s.state(TunnelState::Failed)
    })
}

fn handshake_timeout() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        s.at_ms(4999);
        s.silent()?;
        s.state(TunnelState::HandshakeSent)?;
        s.at_ms(5000);
        s.tx(&goaway("handshake timeout"))?;
        s.state(TunnelState::Failed)?;
        s.events(&[Event::Failed("handshake timeout".into())])?;
        s.at_ms(5999);
        s.state(TunnelState::Failed)?;
        s.at_ms(6000);
        s.state(TunnelState::Closed)?;
        s.events(&[Event::Closed])?;
        check(s.t.poll_timeout().is_none(), "timers left after close")
    })
}

fn goaway_during_handshake() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        s.rx(&goaway("go away"));
        s.note("closed at once, without answering");
        s.silent()?;
        s.state(TunnelState::Closed)?;
        s.events(&[Event::PeerShutdown("go away".into()), Event::Closed])?;
        s.at_ms(10_000);
        s.silent()
    })
}

fn carrier_split() -> CaseResult {
    run(Role::Server, TunnelConfig::default(), |s| {
        let all = cat(&[&HS, &syn(1), &data(1, b"hello"), &ping(5)]);
        s.rx_split(&all, 1);
        s.tx(&cat(&[&HS, &syn(1), &pong(5)]))?;
        s.events(&[Event::Ready, Event::Accepted(1), Event::Readable(1)])?;
        let (got, _) = s.read_all(1);
        check(got == b"hello", "data split across reads not reassembled")
    })
}

fn carrier_coalesced() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        s.note("handshake and a PING in one read");
        s.rx(&cat(&[&HS, &ping(77)]));
        s.tx(&pong(77))?;
        s.events(&[Event::Ready])
    })
}

fn ping_echo() -> CaseResult {
    server(|s| {
        s.rx(&ping(0x0102_0304_0506_0708));
        s.tx(&pong(0x0102_0304_0506_0708))?;
        s.rx(&ping(-1));
        s.tx(&pong(-1))?;
        s.events(&[])
    })
}

fn ping_echo_client() -> CaseResult {
    client(|s| {
        s.rx(&ping(3));
        s.tx(&pong(3))
    })
}

fn ping_extra_ignored() -> CaseResult {
    server(|s| {
        s.rx(&frame(6, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 9, 0xaa, 0xbb]));
        s.note("answered with the first 8 bytes as the id, extra bytes dropped");
        s.tx(&pong(9))
    })
}

fn ping_short_ignored() -> CaseResult {
    server(|s| {
        s.rx(&frame(6, 0, 0, &[1, 2, 3, 4]));
        s.rx(&frame(6, 0, 0, &[]));
        s.silent()?;
        s.state(TunnelState::Ready)?;
        s.events(&[])
    })
}

fn goaway_short_reason() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&frame(7, 0, 0, &[0, 0, 0]));
        s.silent()?;
        s.state(TunnelState::Closed)?;
        s.events(&[
            Event::Reset(1, ended("peer shut down: GOAWAY")),
            Event::PeerShutdown("GOAWAY".into()),
            Event::Closed,
        ])
    })
}

fn goaway_received() -> CaseResult {
    client_with_stream(|s| {
        s.t.open().map_err(|e| e.to_string())?;
        s.tx(&syn(3))?;
        s.note("data queued for stream 1, not yet written, when the GOAWAY arrives");
        let n = s.t.send(1, b"late").map_err(|e| e.to_string())?;
        check(n == 4, "send refused")?;
        s.rx(&goaway("server restarting"));
        s.note("closed without answering; queued data dropped");
        s.silent()?;
        s.state(TunnelState::Closed)?;
        s.stream(1, Some(StreamState::Dead))?;
        s.stream(3, Some(StreamState::Dead))?;
        let cause = ended("peer shut down: server restarting");
        s.events(&[
            Event::Reset(1, cause.clone()),
            Event::Reset(3, cause.clone()),
            Event::PeerShutdown("server restarting".into()),
            Event::Closed,
        ])?;
        let w = s.t.send(1, b"x");
        check(
            w == Err(StreamError::NotReady(TunnelState::Closed)),
            format!("send after close: {w:?}"),
        )?;
        let (_, end) = s.read_all(1);
        check(
            end == Err(StreamError::Reset { sid: 1, cause }),
            format!("read after close: {end:?}"),
        )
    })
}

fn shutdown_send() -> CaseResult {
    client_with_stream(|s| {
        s.t.shutdown_tunnel("bye");
        s.tx(&goaway("bye"))?;
        s.state(TunnelState::Failed)?;
        s.stream(1, Some(StreamState::Dead))?;
        s.events(&[Event::Reset(1, ended("bye")), Event::Failed("bye".into())])?;
        s.at_ms(1000);
        s.state(TunnelState::Closed)?;
        s.events(&[Event::Closed])
    })
}

fn fail_goaway_first() -> CaseResult {
    server_with_stream(|s| {
        s.note("the server queued data, then the peer breaks a rule before it is written");
        s.t.send(1, b"queued").map_err(|e| e.to_string())?;
        s.rx(&frame(8, 0, 0, &[0, 0, 0, 1]));
        let reason = "unexpected frame type 8 after the handshake";
        s.tx(&goaway(reason))?;
        s.stream(1, Some(StreamState::Dead))?;
        s.events(&[Event::Reset(1, ended(reason)), Event::Failed(reason.into())])?;
        s.note("nothing is read or sent after the failure");
        s.rx(&ping(1));
        s.silent()?;
        check(s.t.open().is_err(), "open after failure")?;
        s.at_ms(1000);
        s.state(TunnelState::Closed)?;
        s.events(&[Event::Closed])?;
        s.silent()
    })
}

fn settings_after_handshake() -> CaseResult {
    client(|s| fails_with(s, &HS, "unexpected frame type 4 after the handshake"))
}

fn unknown_type_fails() -> CaseResult {
    server(|s| {
        fails_with(
            s,
            &frame(3, 0, 1, &[0, 0, 0, 8]),
            "unexpected frame type 3 after the handshake",
        )
    })
}

fn headers_nonempty() -> CaseResult {
    server(|s| {
        fails_with(
            s,
            &frame(1, 4, 1, &[0x82]),
            "HEADERS frame on stream 1 has non-empty payload (1 bytes)",
        )
    })
}

fn unknown_flags_ignored() -> CaseResult {
    server(|s| {
        s.note("HEADERS with END_HEADERS|PADDED flags and the reserved sid bit set: a SYN");
        s.rx(&frame(1, 0x0c, 0x8000_0001, &[]));
        s.tx(&syn(1))?;
        s.note("DATA with PADDED (0x08) and 0x20 set: payload taken as is");
        s.rx(&frame(0, 0x28, 1, b"\x02ab"));
        s.note("PING with the 0x80 flag: still a keepalive");
        s.rx(&frame(6, 0x80, 0, &7i64.to_be_bytes()));
        s.tx(&pong(7))?;
        s.events(&[Event::Accepted(1), Event::Readable(1)])?;
        let (got, _) = s.read_all(1);
        check(got == b"\x02ab", format!("read {got:?}"))
    })
}

fn gzip_receive() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&frame(0, 0x04, 1, &unhex(GZ_TUNNELBED)));
        s.silent()?;
        let (got, _) = s.read_all(1);
        check(
            got == b"tunnelbed ".repeat(200),
            format!("gunzipped {} bytes", got.len()),
        )
    })
}

fn gzip_send() -> CaseResult {
    client_with_stream(|s| {
        s.note("1024 compressible bytes: sent plain (gzip only above 1024)");
        s.t.send(1, &[b'a'; 1024]).map_err(|e| e.to_string())?;
        s.tx(&data(1, &[b'a'; 1024]))?;
        s.note("1025 compressible bytes: gzipped, flag 0x04");
        s.t.send(1, &[b'a'; 1025]).map_err(|e| e.to_string())?;
        let out = s.take_tx();
        let (f, n) = RawFrame::parse(&out)
            .map_err(|e| e.to_string())?
            .ok_or("no frame")?;
        check(n == out.len(), "more than one frame")?;
        check(
            f.typ == 0 && f.flags == 0x04 && f.sid == 1,
            "not a gzip DATA",
        )?;
        check(f.payload.len() < 1025, "gzip not smaller")?;
        check(f.payload.starts_with(&[0x1f, 0x8b]), "not gzip magic")?;
        s.note("2000 incompressible bytes: sent plain (gzip would be larger)");
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        s.t.send(1, &noise).map_err(|e| e.to_string())?;
        s.tx(&data(1, &noise))
    })
}

fn gzip_invalid() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&frame(0, 0x04, 1, b"not gzip"));
        let out = s.take_tx();
        let (m, _) = decode_all(&out);
        let ok = matches!(&m[..], [Ok(tunnelbed_h2tunnel::Message::Shutdown { reason })]
            if reason.starts_with("gzip DATA on stream 1 is invalid"));
        check(
            ok,
            format!("expected one GOAWAY for the bad gzip, got {m:?}"),
        )?;
        s.state(TunnelState::Failed)
    })
}

fn frame_cap() -> CaseResult {
    server_with_stream(|s| {
        s.note("a DATA header announcing 16385 bytes fails the tunnel as soon as it arrives");
        s.rx(&[0x00, 0x40, 0x01, 0, 0, 0, 0, 0, 1]);
        s.tx(&goaway(
            "frame of type 0 has payload length 16385, over the 16384-byte limit",
        ))?;
        s.state(TunnelState::Failed)
    })
}

fn frame_cap_exact() -> CaseResult {
    server_with_stream(|s| {
        s.note("exactly 16384 bytes is accepted");
        let p = vec![7u8; 16384];
        s.rx(&data(1, &p));
        s.silent()?;
        let (got, _) = s.read_all(1);
        check(got == p, "16384-byte DATA not delivered")
    })
}

fn frame_cap_send() -> CaseResult {
    let cfg = TunnelConfig {
        gzip: false,
        ..TunnelConfig::default()
    };
    run_ready(Role::Client, cfg, |s| {
        s.t.open().map_err(|e| e.to_string())?;
        s.tx(&syn(1))?;
        let p: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let n = s.t.send(1, &p).map_err(|e| e.to_string())?;
        check(n == p.len(), "send took less")?;
        s.tx(&cat(&[
            &data(1, &p[..16384]),
            &data(1, &p[16384..32768]),
            &data(1, &p[32768..]),
        ]))
    })
}

fn keepalive_send() -> CaseResult {
    client(|s| {
        s.at_ms(9_999);
        s.silent()?;
        s.note("first check at 10 s, idle for 10 s: PING id 1");
        s.at_ms(10_000);
        s.tx(&ping(1))?;
        s.at_ms(10_050);
        s.rx(&pong(1));
        s.silent()?;
        s.at_ms(20_000);
        s.tx(&ping(2))?;
        s.at_ms(20_010);
        s.rx(&pong(2));
        s.at_ms(30_000);
        s.tx(&ping(3))?;
        s.state(TunnelState::Ready)
    })
}

fn keepalive_busy() -> CaseResult {
    client_with_stream(|s| {
        s.note("something read at 6 s: the 10 s check finds the tunnel busy");
        s.at_ms(6_000);
        s.rx(&data(1, b"x"));
        s.at_ms(10_000);
        s.silent()?;
        s.note("output still queued at the 20 s check: no PING either");
        s.at_ms(19_000);
        s.t.send(1, b"pending").map_err(|e| e.to_string())?;
        s.at_ms(20_000);
        s.tx(&data(1, b"pending"))?;
        s.note("idle at the 30 s check: PING id 1");
        s.at_ms(30_000);
        s.tx(&ping(1))
    })
}

fn keepalive_first_must_succeed() -> CaseResult {
    client(|s| {
        s.at_ms(10_000);
        s.tx(&ping(1))?;
        s.at_ms(14_999);
        s.state(TunnelState::Ready)?;
        s.at_ms(15_000);
        s.tx(&goaway("keepalive response timeout"))?;
        s.state(TunnelState::Failed)?;
        s.events(&[Event::Failed("keepalive response timeout".into())])
    })
}

fn keepalive_wrong_ack() -> CaseResult {
    client(|s| {
        s.at_ms(10_000);
        s.tx(&ping(1))?;
        s.note("an ACK with another id, and a PING (not ACK) with id 1, do not answer it");
        s.rx(&pong(2));
        s.rx(&ping(1));
        s.tx(&pong(1))?;
        s.at_ms(15_000);
        s.tx(&goaway("keepalive response timeout"))
    })
}

fn keepalive_tolerance() -> CaseResult {
    client(|s| {
        for (i, t) in [(1i64, 10_000u64), (2, 20_000)] {
            s.at_ms(t);
            s.tx(&ping(i))?;
            s.rx(&pong(i));
        }
        s.note("two successes; now two misses in a row are tolerated");
        s.at_ms(30_000);
        s.tx(&ping(3))?;
        s.at_ms(35_000);
        s.state(TunnelState::Ready)?;
        s.at_ms(40_000);
        s.tx(&ping(4))?;
        s.at_ms(45_000);
        s.state(TunnelState::Ready)?;
        s.at_ms(50_000);
        s.tx(&ping(5))?;
        s.note("the third miss in a row fails the tunnel");
        s.at_ms(55_000);
        s.tx(&goaway("keepalive response timeout"))?;
        s.state(TunnelState::Failed)
    })
}

fn keepalive_tolerance_resets() -> CaseResult {
    client(|s| {
        for (i, t) in [(1i64, 10_000u64), (2, 20_000)] {
            s.at_ms(t);
            s.tx(&ping(i))?;
            s.rx(&pong(i));
        }
        s.note("miss, miss, success: the count of misses starts again");
        for (i, t) in [(3i64, 30_000u64), (4, 40_000)] {
            s.at_ms(t);
            s.tx(&ping(i))?;
        }
        s.at_ms(50_000);
        s.tx(&ping(5))?;
        s.rx(&pong(5));
        for (i, t) in [(6i64, 60_000u64), (7, 70_000)] {
            s.at_ms(t);
            s.tx(&ping(i))?;
        }
        s.at_ms(79_000);
        s.state(TunnelState::Ready)?;
        s.at_ms(80_000);
        s.tx(&ping(8))?;
        s.at_ms(85_000);
        s.tx(&goaway("keepalive response timeout"))
    })
}

fn keepalive_client_only() -> CaseResult {
    server(|s| {
        for t in [10_000, 20_000, 60_000, 600_000] {
            s.at_ms(t);
            s.silent()?;
        }
        s.state(TunnelState::Ready)?;
        check(s.t.poll_timeout().is_none(), "a ready server has a timer")
    })
}

fn stream_open() -> CaseResult {
    client(|s| {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(s.t.open().map_err(|e| e.to_string())?);
        }
        check(ids == [1, 3, 5], format!("ids {ids:?}"))?;
        s.tx(&cat(&[&syn(1), &syn(3), &syn(5)]))?;
        s.stream(1, Some(StreamState::SynSent))?;
        s.stream(5, Some(StreamState::SynSent))
    })
}

fn stream_open_before_ready() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        let r = s.t.open();
        check(
            r == Err(StreamError::NotReady(TunnelState::HandshakeSent)),
            format!("open during the handshake: {r:?}"),
        )?;
        s.silent()
    })
}

fn stream_syn_ack() -> CaseResult {
    client(|s| {
        s.t.open().map_err(|e| e.to_string())?;
        s.tx(&syn(1))?;
        s.note("a SYN-ACK for an id we did not open is ignored");
        s.rx(&syn(7));
        s.stream(7, None)?;
        s.rx(&syn(1));
        s.stream(1, Some(StreamState::Established))?;
        s.events(&[Event::Established(1)])?;
        s.note("a second SYN-ACK is ignored");
        s.rx(&syn(1));
        s.silent()?;
        s.events(&[])
    })
}

fn stream_syn_data_before_ack() -> CaseResult {
    client(|s| {
        let sid = s.t.open().map_err(|e| e.to_string())?;
        s.t.send(sid, b"early").map_err(|e| e.to_string())?;
        s.tx(&cat(&[&syn(1), &data(1, b"early")]))?;
        s.stream(1, Some(StreamState::SynSent))
    })
}

fn stream_server_accept() -> CaseResult {
    server(|s| {
        s.note("the SYN and data that follow it in the same read");
        s.rx(&cat(&[&syn(1), &data(1, b"early")]));
        s.tx(&syn(1))?;
        s.stream(1, Some(StreamState::Established))?;
        s.events(&[Event::Accepted(1), Event::Readable(1)])?;
        let (got, _) = s.read_all(1);
        check(got == b"early", "data after SYN lost")
    })
}

fn stream_syn_live_ignored() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&data(1, b"kept"));
        s.rx(&syn(1));
        s.silent()?;
        s.stream(1, Some(StreamState::Established))?;
        s.events(&[Event::Readable(1)])?;
        let (got, _) = s.read_all(1);
        check(got == b"kept", "a repeated SYN disturbed the stream")
    })
}

fn stream_server_never_opens() -> CaseResult {
    server(|s| {
        let r = s.t.open();
        check(
            r == Err(StreamError::NotClient),
            format!("server open: {r:?}"),
        )?;
        s.silent()
    })
}

fn stream_psh() -> CaseResult {
    client_with_stream(|s| {
        s.t.send(1, b"ping?").map_err(|e| e.to_string())?;
        s.tx(&data(1, b"ping?"))?;
        s.rx(&cat(&[&data(1, b"po"), &data(1, b"ng!")]));
        s.events(&[Event::Readable(1), Event::Readable(1)])?;
        let (got, end) = s.read_all(1);
        check(got == b"pong!", "data out of order")?;
        check(end == Ok(Recv::Pending), "not pending")
    })
}

fn stream_data_unknown() -> CaseResult {
    server(|s| {
        s.rx(&data(5, b"who?"));
        s.rx(&fin(5));
        s.silent()?;
        s.state(TunnelState::Ready)?;
        s.stream(5, None)?;
        s.events(&[])
    })
}

fn stream_data_dead_ignored() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&rst(1));
        s.events(&[Event::Reset(1, ResetCause::ByPeer)])?;
        s.rx(&data(1, b"after rst"));
        s.silent()?;
        s.events(&[])?;
        s.stream(1, Some(StreamState::Dead))
    })
}

fn stream_data_after_fin() -> CaseResult {
    server_with_stream(|s| {
        s.note("vproxy delivers DATA unless the stream is dead, even after the peer's FIN");
        s.rx(&fin(1));
        s.rx(&data(1, b"late"));
        s.stream(1, Some(StreamState::FinRecv))?;
        let (got, end) = s.read_all(1);
        check(got == b"late", "late data dropped")?;
        check(end == Ok(Recv::Eof), format!("{end:?}"))
    })
}

fn stream_fin_half_close() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&cat(&[&data(1, b"req"), &fin(1)]));
        s.silent()?;
        s.stream(1, Some(StreamState::FinRecv))?;
        let (got, end) = s.read_all(1);
        check(got == b"req" && end == Ok(Recv::Eof), "no data then EOF")?;
        s.note("we may still send after the peer's FIN");
        s.t.send(1, b"resp").map_err(|e| e.to_string())?;
        s.tx(&data(1, b"resp"))
    })
}

fn stream_psh_fin() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&frame(0, 1, 1, b"last"));
        s.stream(1, Some(StreamState::FinRecv))?;
        let (got, end) = s.read_all(1);
        check(
            got == b"last" && end == Ok(Recv::Eof),
            "PSH-FIN: data then EOF",
        )
    })
}

fn stream_fin_after_own_fin() -> CaseResult {
    client_with_stream(|s| {
        s.t.shutdown(1).map_err(|e| e.to_string())?;
        s.tx(&fin(1))?;
        s.stream(1, Some(StreamState::FinSent))?;
        let w = s.t.send(1, b"x");
        check(
            matches!(w, Err(StreamError::Closed { .. })),
            format!("{w:?}"),
        )?;
        s.rx(&data(1, b"still"));
        s.rx(&fin(1));
        s.stream(1, Some(StreamState::Dead))?;
        let (got, end) = s.read_all(1);
        check(got == b"still" && end == Ok(Recv::Eof), "data then EOF")
    })
}

fn stream_shutdown_after_fin_recv() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&fin(1));
        s.stream(1, Some(StreamState::FinRecv))?;
        s.t.shutdown(1).map_err(|e| e.to_string())?;
        s.tx(&fin(1))?;
        s.stream(1, Some(StreamState::Dead))
    })
}

fn stream_rst_no_echo() -> CaseResult {
    client_with_stream(|s| {
        s.rx(&data(1, b"partial"));
        s.rx(&rst(1));
        s.note("no RST goes back");
        s.silent()?;
        s.stream(1, Some(StreamState::Dead))?;
        s.events(&[Event::Readable(1), Event::Reset(1, ResetCause::ByPeer)])?;
        let w = s.t.send(1, b"x");
        check(
            w == Err(StreamError::Reset {
                sid: 1,
                cause: ResetCause::ByPeer,
            }),
            format!("{w:?}"),
        )?;
        let (got, end) = s.read_all(1);
        check(got == b"partial", "buffered data lost")?;
        check(
            matches!(&end, Err(e) if e.to_string() == "stream 1: reset by peer"),
            format!("{end:?}"),
        )
    })
}

fn stream_rst_unknown_ignored() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&rst(9));
        s.rx(&rst(1));
        s.events(&[Event::Reset(1, ResetCause::ByPeer)])?;
        s.note("RST to a dead stream");
        s.rx(&rst(1));
        s.silent()?;
        s.events(&[])?;
        s.state(TunnelState::Ready)
    })
}

fn stream_reset_send() -> CaseResult {
    client_with_stream(|s| {
        s.t.reset(1).map_err(|e| e.to_string())?;
        s.tx(&rst(1))?;
        s.stream(1, Some(StreamState::Dead))?;
        s.note("a second reset sends nothing");
        s.t.reset(1).map_err(|e| e.to_string())?;
        s.silent()
    })
}

fn stream_close_linger() -> CaseResult {
    client(|s| {
        s.t.open().map_err(|e| e.to_string())?;
        s.t.open().map_err(|e| e.to_string())?;
        s.tx(&cat(&[&syn(1), &syn(3)]))?;
        s.t.close(1, true).map_err(|e| e.to_string())?;
        s.tx(&rst(1))?;
        s.t.close(3, false).map_err(|e| e.to_string())?;
        s.tx(&fin(3))?;
        s.stream(1, None)?;
        s.stream(3, None)?;
        s.note("late frames for closed ids are ignored");
        s.rx(&cat(&[&syn(1), &data(3, b"late")]));
        s.silent()?;
        s.events(&[])
    })
}

fn stream_no_second_fin() -> CaseResult {
    client_with_stream(|s| {
        s.t.shutdown(1).map_err(|e| e.to_string())?;
        s.tx(&fin(1))?;
        let again = s.t.shutdown(1);
        check(again.is_err(), "second shutdown accepted")?;
        s.t.close(1, false).map_err(|e| e.to_string())?;
        s.note("shutdown then close: one FIN in all");
        s.silent()?;
        s.stream(1, None)
    })
}

fn stream_refuse_not_fail() -> CaseResult {
    let cfg = TunnelConfig {
        max_streams: 1,
        ..TunnelConfig::default()
    };
    run_ready(Role::Server, cfg, |s| {
        s.rx(&syn(1));
        s.tx(&syn(1))?;
        s.note("a second stream beyond the limit is refused alone");
        s.rx(&cat(&[&syn(3), &data(3, b"dropped")]));
        s.tx(&rst(3))?;
        s.state(TunnelState::Ready)?;
        s.stream(3, None)?;
        s.events(&[Event::Accepted(1)])?;
        s.rx(&data(1, b"fine"));
        let (got, _) = s.read_all(1);
        check(got == b"fine", "stream 1 disturbed")
    })
}

fn stream_even_id_refused() -> CaseResult {
    server(|s| {
        s.rx(&syn(2));
        s.tx(&rst(2))?;
        s.state(TunnelState::Ready)?;
        s.stream(2, None)
    })
}

fn stream_rx_cap() -> CaseResult {
    let cfg = TunnelConfig {
        stream_rx_cap: 8,
        ..TunnelConfig::default()
    };
    run_ready(Role::Server, cfg, |s| {
        s.rx(&syn(1));
        s.tx(&syn(1))?;
        s.rx(&data(1, b"12345678"));
        s.silent()?;
        s.note("one byte more than the application has room for");
        s.rx(&data(1, b"9"));
        s.tx(&rst(1))?;
        s.stream(1, Some(StreamState::Dead))?;
        s.state(TunnelState::Ready)
    })
}

/// Seed 000's flow, steps 1-9, between our client and our server.
fn flow_end_to_end() -> CaseResult {
    let trace = Trace::recording();
    let mut c = Tunnel::new(
        Role::Client,
        TunnelConfig::default(),
        trace.clone(),
        "client",
    );
    let mut sv = Tunnel::new(
        Role::Server,
        TunnelConfig::default(),
        trace.clone(),
        "server",
    );
    let mut log = String::new();
    let r = (|| -> R {
        c.start(Duration::ZERO);
        sv.start(Duration::ZERO);
        let now = Duration::from_millis(1);
        let pump = |c: &mut Tunnel, sv: &mut Tunnel, log: &mut String| {
            for _ in 0..4 {
                if let Some(b) = c.poll_transmit() {
                    for l in describe_frames(&b) {
                        let _ = writeln!(log, "client -> server: {l}");
                    }
                    sv.handle_input(now, &b);
                }
                if let Some(b) = sv.poll_transmit() {
                    for l in describe_frames(&b) {
                        let _ = writeln!(log, "server -> client: {l}");
                    }
                    c.handle_input(now, &b);
                }
            }
        };
        pump(&mut c, &mut sv, &mut log);
        check(
            c.state() == TunnelState::Ready && sv.state() == TunnelState::Ready,
            "not ready",
        )?;
        let sid = c.open().map_err(|e| e.to_string())?;
        c.send(sid, b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        c.shutdown(sid).map_err(|e| e.to_string())?;
        pump(&mut c, &mut sv, &mut log);
        let mut req = Vec::new();
        while let Ok(Recv::Data(b)) = sv.recv(sid) {
            req.extend_from_slice(&b);
        }
        check(req == b"GET / HTTP/1.0\r\n\r\n", "request")?;
        check(sv.recv(sid) == Ok(Recv::Eof), "no EOF at the server")?;
        sv.send(sid, &b"hello ".repeat(300))
            .map_err(|e| e.to_string())?;
        sv.shutdown(sid).map_err(|e| e.to_string())?;
        pump(&mut c, &mut sv, &mut log);
        let mut resp = Vec::new();
        while let Ok(Recv::Data(b)) = c.recv(sid) {
            resp.extend_from_slice(&b);
        }
        check(resp == b"hello ".repeat(300), "response")?;
        check(
            c.stream_state(sid) == Some(StreamState::Dead),
            "client stream",
        )?;
        check(
            sv.stream_state(sid) == Some(StreamState::Dead),
            "server stream",
        )?;
        c.close(sid, false).map_err(|e| e.to_string())?;
        sv.close(sid, false).map_err(|e| e.to_string())?;
        let s2 = c.open().map_err(|e| e.to_string())?;
        pump(&mut c, &mut sv, &mut log);
        c.reset(s2).map_err(|e| e.to_string())?;
        pump(&mut c, &mut sv, &mut log);
        check(
            sv.stream_state(s2) == Some(StreamState::Dead),
            "RST not applied",
        )?;
        c.shutdown_tunnel("done");
        pump(&mut c, &mut sv, &mut log);
        check(
            sv.state() == TunnelState::Closed,
            "server not closed by GOAWAY",
        )?;
        check(c.state() == TunnelState::Failed, "client not failed")?;
        Ok(())
    })();
    log.push_str("--- transitions ---\n");
    log.push_str(&trace.render());
    if let Err(e) = &r {
        let _ = writeln!(log, "--- FAILED ---\n{e}");
    }
    CaseResult { outcome: r, log }
}

macro_rules! case {
    ($id:literal, $src:ident, $clause:literal, $run:ident) => {
        Case {
            id: $id,
            source: Source::$src,
            clause: $clause,
            differs_from_vproxy: None,
            run: $run,
        }
    };
    ($id:literal, $src:ident, $clause:literal, $run:ident, differs: $d:literal) => {
        Case {
            id: $id,
            source: Source::$src,
            clause: $clause,
            differs_from_vproxy: Some($d),
            run: $run,
        }
    };
}

/// Every case, in report order. IDs are stable: add new ones, never renumber.
pub fn cases() -> Vec<Case> {
    vec![
        case!("H2T-HANDSHAKE-EXACT", Notes, "handshake (both ways): `00 00 00 04 00 00 00 00 00` exactly; the client sends SETTINGS on connect and the exact SETTINGS back makes it ready (seed: handshake is an empty SETTINGS frame; states init -> handshake_sent -> ready)", handshake_exact),
        case!("H2T-HANDSHAKE-SERVER", Seed000, "flow 1-2: the client sends a HANDSHAKE frame, the server sends HANDSHAKE-ACK (an empty SETTINGS) and is ready; notes: the server waits for SETTINGS, answers SETTINGS, is ready", handshake_server),
        case!("H2T-HANDSHAKE-INVALID", Notes, "client: anything but the exact SETTINGS back fails (\"handshake message is invalid\"); a failure sends GOAWAY(reason) first, closes after ~1 s", handshake_invalid),
        case!("H2T-HANDSHAKE-INVALID-SERVER", Notes, "server waits for SETTINGS; another frame first is a violation that fails the tunnel with GOAWAY", handshake_invalid_server),
        case!("H2T-HANDSHAKE-NOT-STANDARD-SETTINGS", Notes, "the handshake is the empty SETTINGS byte for byte: a standard SETTINGS with parameters is invalid", handshake_settings_payload),
        case!("H2T-HANDSHAKE-TIMEOUT", Notes, "the client arms a 5 s handshake timer; on expiry the tunnel fails (GOAWAY) and closes ~1 s later", handshake_timeout),
        case!("H2T-GOAWAY-DURING-HANDSHAKE", Notes, "GOAWAY during the handshake invalidates it; a received GOAWAY closes without answering", goaway_during_handshake),
        case!("H2T-CARRIER-SPLIT", Notes, "carrier: a frame may be split across ARQ segments; the receiver buffers and parses in a loop (fed 1 byte per read)", carrier_split),
        case!("H2T-CARRIER-COALESCED", Notes, "carrier: frames are concatenated; several frames in one read are all handled", carrier_coalesced),
        case!("H2T-PING-ECHO", Notes, "a PING is answered at once with the ACK flag and the same id (seed: keepalive ack carries the same integer)", ping_echo),
        case!("H2T-PING-ECHO-CLIENT", Notes, "the client answers a PING too (the rule is not role-specific)", ping_echo_client),
        case!("H2T-PING-EXTRA-IGNORED", Notes, "PING: extra bytes (beyond 8) ignored", ping_extra_ignored),
        case!("H2T-PING-SHORT-IGNORED", Notes, "PING shorter than 8 is ignored", ping_short_ignored),
        case!("H2T-GOAWAY-SHORT-REASON", Notes, "GOAWAY shorter than 8 reads as reason \"GOAWAY\"", goaway_short_reason),
        case!("H2T-GOAWAY-RECEIVED", Seed000, "shutdown closes the tunnel and all connections inside it (flow 9); notes: a received GOAWAY closes without answering", goaway_received),
        case!("H2T-SHUTDOWN-SEND", Notes, "shutdown: GOAWAY, sid 0, payload `FF FF FF FF` (last sid) `FF FF FF FF` (code) + UTF-8 reason; every stream dies", shutdown_send),
        case!("H2T-FAIL-GOAWAY-FIRST", Notes, "failure: every stream dies, GOAWAY(reason) goes out first, the tunnel is closed after ~1 s", fail_goaway_first),
        case!("H2T-SETTINGS-AFTER-HANDSHAKE-FAILS", Notes, "after the handshake only DATA, HEADERS, PING, GOAWAY are valid; a violation fails the tunnel (GOAWAY with the reason)", settings_after_handshake),
        case!("H2T-UNKNOWN-TYPE-FAILS", Notes, "after the handshake only DATA, HEADERS, PING, GOAWAY are valid (RST_STREAM type 3 fails)", unknown_type_fails),
        case!("H2T-HEADERS-NONEMPTY-FAILS", Notes, "non-zero length only on DATA, PING, GOAWAY: a HEADERS with a payload fails the tunnel", headers_nonempty),
        case!("H2T-UNKNOWN-FLAGS-IGNORED", Notes, "unknown flags ignored (also the reserved stream-id bit, as RFC 9113 says)", unknown_flags_ignored),
        case!("H2T-GZIP-RECEIVE", Notes, "flag 0x04 on DATA = payload is gzip (RFC 1952): delivered gunzipped (blob made by Python's gzip)", gzip_receive),
        case!("H2T-GZIP-SEND", Notes, "PSH: DATA, flags 0 (or 0x04 when gzip is smaller and payload > 1024)", gzip_send),
        case!("H2T-GZIP-INVALID-FAILS", Notes, "a DATA with 0x04 that does not gunzip fails the tunnel", gzip_invalid),
        case!("H2T-FRAME-CAP", Notes, "do not copy vproxy's unbounded frame sizes: a frame over 16 KiB fails the tunnel as soon as its header arrives", frame_cap, differs: "vproxy accepts any u24 length and buffers it; we fail the tunnel on a payload over 16384 bytes"),
        case!("H2T-FRAME-CAP-EXACT", Ours, "the cap is inclusive: a 16384-byte DATA is accepted", frame_cap_exact),
        case!("H2T-FRAME-CAP-SEND", Notes, "cap frames, e.g. 16 KiB payload per DATA: a large send is split, in order", frame_cap_send, differs: "vproxy sends one DATA frame per write, of any size; we split at 16384 bytes"),
        case!("H2T-KEEPALIVE-SEND", Notes, "the client checks every 10 s; sends a PING (length 8, flags 0, sid 0, id as i64 BE) when nothing is queued and nothing was read for 5 s; ids count up from 1", keepalive_send),
        case!("H2T-KEEPALIVE-BUSY", Notes, "a PING is sent only when nothing is queued and nothing was read for 5 s", keepalive_busy),
        case!("H2T-KEEPALIVE-FIRST-MUST-SUCCEED", Notes, "5 s timeout per PING; the first must succeed, else the tunnel fails (\"keepalive response timeout\")", keepalive_first_must_succeed),
        case!("H2T-KEEPALIVE-WRONG-ACK", Seed000, "keepalive ack: PING with the ACK flag and the same integer; another id, or no ACK flag, does not answer it", keepalive_wrong_ack),
        case!("H2T-KEEPALIVE-TOLERANCE", Notes, "after two successes two consecutive misses are tolerated, then the tunnel fails", keepalive_tolerance),
        case!("H2T-KEEPALIVE-TOLERANCE-RESETS", Notes, "the misses tolerated are consecutive: a success in between starts the count again", keepalive_tolerance_resets),
        case!("H2T-KEEPALIVE-CLIENT-ONLY", Notes, "the client checks liveness; the server only answers", keepalive_client_only),
        case!("H2T-STREAM-OPEN-ODD-IDS", Notes, "client opens odd ids 1, 3, 5, ... per tunnel; SYN: HEADERS, length 0, flags 0, sid; state syn_sent", stream_open),
        case!("H2T-STREAM-OPEN-NOT-READY", Seed000, "flow 3 comes after flow 2: streams are opened once the tunnel is established", stream_open_before_ready),
        case!("H2T-STREAM-SYN-ACK", Notes, "SYN-ACK moves syn_sent -> established, else ignored", stream_syn_ack),
        case!("H2T-STREAM-SYN-DATA-BEFORE-ACK", Notes, "open: SYN -> syn_sent; data may follow the SYN before SYN-ACK arrives", stream_syn_data_before_ack),
        case!("H2T-STREAM-SERVER-ACCEPT", Notes, "server: SYN for a new id creates the stream (established) and answers SYN-ACK (HEADERS, length 0, flags 0, sid)", stream_server_accept),
        case!("H2T-STREAM-SYN-LIVE-IGNORED", Notes, "a SYN for a live id is ignored", stream_syn_live_ignored),
        case!("H2T-STREAM-SERVER-NEVER-OPENS", Notes, "the server never opens", stream_server_never_opens),
        case!("H2T-STREAM-PSH", Seed000, "PSH: a DATA frame containing the pushed data in the payload; both ends may send (flow 5)", stream_psh),
        case!("H2T-STREAM-DATA-UNKNOWN-IGNORED", Notes, "DATA for an unknown id is ignored", stream_data_unknown),
        case!("H2T-STREAM-DATA-DEAD-IGNORED", Notes, "DATA is delivered unless the stream is dead", stream_data_dead_ignored),
        case!("H2T-STREAM-DATA-AFTER-FIN", Notes, "DATA is delivered unless the stream is dead (so also after the peer's FIN, as vproxy does)", stream_data_after_fin),
        case!("H2T-STREAM-FIN-HALF-CLOSE", Notes, "FIN (DATA, length 0, flags 0x01): established -> fin_recv; the other direction stays open", stream_fin_half_close),
        case!("H2T-STREAM-PSH-FIN", Notes, "PSH-FIN: DATA with payload, flags 0x01 (data first, then FIN)", stream_psh_fin),
        case!("H2T-STREAM-FIN-AFTER-OWN-FIN", Notes, "FIN after our own FIN (fin_sent) -> dead; shutdown of output: established -> FIN, fin_sent", stream_fin_after_own_fin),
        case!("H2T-STREAM-SHUTDOWN-AFTER-FIN-RECV", Notes, "shutdown of output: fin_recv -> FIN, dead", stream_shutdown_after_fin_recv),
        case!("H2T-STREAM-RST-NO-ECHO", Notes, "RST: live stream -> dead, reads/writes fail \"reset by peer\" (and nothing is sent back)", stream_rst_no_echo),
        case!("H2T-STREAM-RST-UNKNOWN-IGNORED", Notes, "RST to an unknown or dead stream is ignored", stream_rst_unknown_ignored),
        case!("H2T-STREAM-RESET-SEND", Notes, "RST: HEADERS, length 0, flags 0x01 (seed: both endpoints may send RST on an established connection)", stream_reset_send),
        case!("H2T-STREAM-CLOSE-LINGER", Notes, "close() with linger 0 sends RST, else FIN; the id is then forgotten (real_closed)", stream_close_linger),
        case!("H2T-STREAM-NO-SECOND-FIN", Notes, "do not copy vproxy's slip of a second FIN after shutdown+close", stream_no_second_fin, differs: "vproxy sends FIN again when close() follows shutdown(); we send one FIN"),
        case!("H2T-STREAM-REFUSE-NOT-FAIL", Notes, "do not fail a whole tunnel because one stream could not be accepted: answer that stream with RST", stream_refuse_not_fail, differs: "vproxy fails the tunnel when it cannot accept a stream; we answer that SYN with RST and keep the tunnel"),
        case!("H2T-STREAM-EVEN-ID-REFUSED", Ours, "clients open odd ids: a SYN with an even id is refused with RST, like a stream that cannot be accepted", stream_even_id_refused),
        case!("H2T-STREAM-RX-CAP-RST", Ours, "a stream whose unread input exceeds its buffer cap is reset (RST), not the tunnel", stream_rx_cap),
        case!("H2T-FLOW-END-TO-END", Seed000, "flow 1-9 between our client and our server: handshake, SYN/SYN-ACK, PSH both ways, FIN each way, RST, shutdown", flow_end_to_end),
    ]
}

/// Runs every case.
pub fn run_all() -> Vec<(Case, CaseResult)> {
    cases()
        .into_iter()
        .map(|c| {
            let r = (c.run)();
            (c, r)
        })
        .collect()
}

/// The Markdown report: one row per case with its result.
pub fn report(results: &[(Case, CaseResult)]) -> String {
    let mut md = String::new();
    md.push_str("# h2tunnel conformance\n\n");
    md.push_str("Generated by `cargo test -p tunnelbed-conformance --test h2tunnel_cases` from\n");
    md.push_str(
        "`conformance/src/h2tunnel_cases.rs`; do not edit by hand. Each case is a scripted\n",
    );
    md.push_str(
        "frame exchange with one tunnel machine; its frames and transitions are snapshotted\n",
    );
    md.push_str("in `conformance/tests/snapshots/`.\n\n");
    let passed = results.iter().filter(|(_, r)| r.passed()).count();
    let _ = writeln!(md, "{passed} of {} cases pass.\n", results.len());
    md.push_str("| ID | source | clause | result | differs from vproxy |\n|---|---|---|---|---|\n");
    for (c, r) in results {
        let result = match &r.outcome {
            Ok(()) => "pass".to_string(),
            Err(e) => format!("FAIL: {}", e.lines().next().unwrap_or("")),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} |",
            c.id,
            c.source.name(),
            c.clause.replace('|', "\\|"),
            result.replace('|', "\\|"),
            c.differs_from_vproxy.unwrap_or("").replace('|', "\\|")
        );
    }
    md
}
