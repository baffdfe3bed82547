//! The harness of the h2tunnel cases: a [`Script`] drives one sans-IO tunnel machine
//! (client or server role) with exact bytes and a fake clock, checks the bytes it emits,
//! its events and states, and logs everything (frames both ways, events, clock steps,
//! then the transition trace) into the [`CaseResult`] the tests snapshot. Expected and
//! injected bytes are written out by hand ([`frame`] and the helpers here), never
//! produced by the crate's own encoder, so a case also checks the codec.

use std::fmt::Write as _;
use std::time::Duration;

use tunnelbed_h2tunnel::stream::{ResetCause, StreamState};
use tunnelbed_h2tunnel::tunnel::{
    Event, Recv, Role, StreamError, Tunnel, TunnelConfig, TunnelState,
};
use tunnelbed_h2tunnel::wire::{decode_all, RawFrame, HEADER_LEN};
use tunnelbed_netio::Trace;

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

pub(super) fn syn(sid: u32) -> Vec<u8> {
    frame(1, 0, sid, &[])
}
pub(super) fn rst(sid: u32) -> Vec<u8> {
    frame(1, 1, sid, &[])
}
pub(super) fn data(sid: u32, p: &[u8]) -> Vec<u8> {
    frame(0, 0, sid, p)
}
pub(super) fn fin(sid: u32) -> Vec<u8> {
    frame(0, 1, sid, &[])
}
pub(super) fn ping(id: i64) -> Vec<u8> {
    frame(6, 0, 0, &id.to_be_bytes())
}
pub(super) fn pong(id: i64) -> Vec<u8> {
    frame(6, 1, 0, &id.to_be_bytes())
}
pub(super) fn goaway(reason: &str) -> Vec<u8> {
    let mut p = vec![0xff; 8];
    p.extend_from_slice(reason.as_bytes());
    frame(7, 0, 0, &p)
}

/// gzip (RFC 1952, mtime 0) of `b"tunnelbed "` repeated 200 times, made by Python's
/// `gzip.compress`: an independent producer for the gunzip rule.
pub(super) const GZ_TUNNELBED: &str =
    "1f8b08000000000002032b29cdcb4bcd494a4d512819658db24659a3ac51d6286b9435445900134a5a44d0070000";

pub(super) fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
        .collect()
}

pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub(super) const TYPE_NAMES: [&str; 10] = [
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

    /// The script's clock (what the application calls are stamped with).
    pub fn now(&self) -> Duration {
        self.now
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
        self.feed(bytes);
    }

    /// Feeds one read; logs it when the machine holds input back (none of the cases
    /// fills the receive buffers that far, so the log would show a surprise).
    fn feed(&mut self, bytes: &[u8]) {
        let n = self.t.handle_input(self.now, bytes);
        if n < bytes.len() {
            self.line(format!(
                "machine held input: took {n} of {} bytes",
                bytes.len()
            ));
        }
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
            self.feed(c);
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
            match self.t.recv(self.now, sid) {
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

pub(super) fn check(cond: bool, msg: impl Into<String>) -> R {
    if cond {
        Ok(())
    } else {
        Err(msg.into())
    }
}

/// Runs `body` on a fresh machine of `role`.
pub(super) fn run(
    role: Role,
    cfg: TunnelConfig,
    body: impl FnOnce(&mut Script) -> R,
) -> CaseResult {
    let mut s = Script::new(role, cfg);
    let r = body(&mut s);
    s.finish(r)
}

/// Runs `body` on a machine of `role` whose handshake is done.
pub(super) fn run_ready(
    role: Role,
    cfg: TunnelConfig,
    body: impl FnOnce(&mut Script) -> R,
) -> CaseResult {
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

pub(super) fn client(body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    run_ready(Role::Client, TunnelConfig::default(), body)
}

pub(super) fn server(body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    run_ready(Role::Server, TunnelConfig::default(), body)
}

/// A client with stream 1 open and established.
pub(super) fn client_with_stream(body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    client(|s| {
        let sid = s.t.open(s.now()).map_err(|e| e.to_string())?;
        check(sid == 1, format!("first stream is {sid}"))?;
        s.tx(&syn(1))?;
        s.rx(&syn(1));
        s.events(&[Event::Established(1)])?;
        s.note("stream 1 established");
        body(s)
    })
}

/// A server with stream 1 accepted.
pub(super) fn server_with_stream(body: impl FnOnce(&mut Script) -> R) -> CaseResult {
    server(|s| {
        s.rx(&syn(1));
        s.tx(&syn(1))?;
        s.events(&[Event::Accepted(1)])?;
        s.note("stream 1 accepted");
        body(s)
    })
}

pub(super) fn ended(why: &str) -> ResetCause {
    ResetCause::TunnelEnded(why.to_string())
}

/// A violation after the handshake: GOAWAY with `reason` goes out, streams die, the
/// tunnel is failed, then closed 1 s later; later input is ignored.
pub(super) fn fails_with(s: &mut Script, bad: &[u8], reason: &str) -> R {
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
