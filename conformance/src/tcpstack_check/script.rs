//! The packetdrill-style script language: segments the checker injects, segments it
//! expects back (flags, relative sequence numbers, length, options, a time window),
//! silences, and application calls on the target. One script runs unchanged against
//! every [`Target`].
//!
//! Sequence numbers are relative: [`Num::Peer`] counts from the checker's ISN,
//! [`Num::Target`] from the target's ISN, learnt from its SYN-ACK.

use std::time::Duration;

use bytes::BytesMut;
use tunnelbed_tcpstack::wire::{Ipv4Header, Packet, PROTO_TCP};
use tunnelbed_tcpstack::{TcpFlags, TcpHeader, TcpOptions};

use super::target::{AppOp, AppResult, Flow, Target};

/// A sequence or acknowledgement number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Num {
    /// The checker's ISN plus this.
    Peer(i64),
    /// The target's ISN plus this (known once its SYN-ACK was seen).
    Target(i64),
    /// This number as it is.
    Abs(u32),
}

/// A segment the checker sends.
#[derive(Clone, Debug)]
pub struct Seg {
    /// Flags.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: Num,
    /// Acknowledgement number.
    pub ack: Num,
    /// Window field.
    pub window: u16,
    /// Payload length (bytes of a fixed pattern).
    pub len: usize,
    /// Offer MSS 1460 and window scale 7 (SYNs only).
    pub options: bool,
    /// Corrupt the TCP checksum.
    pub bad_checksum: bool,
    /// Send to this port instead of the listener's.
    pub dport: Option<u16>,
    /// Send from this port instead of the case's.
    pub sport: Option<u16>,
}

impl Seg {
    /// A segment with `flags`, `seq` and `ack`, the default window and nothing else.
    pub fn new(flags: TcpFlags, seq: Num, ack: Num) -> Seg {
        Seg {
            flags,
            seq,
            ack,
            window: 65535,
            len: 0,
            options: false,
            bad_checksum: false,
            dport: None,
            sport: None,
        }
    }
    /// SYN with MSS 1460 and window scale 7 at the checker's ISN.
    pub fn syn() -> Seg {
        Seg {
            options: true,
            ..Seg::new(TcpFlags::SYN, Num::Peer(0), Num::Abs(0))
        }
    }
    /// Sets the payload length.
    pub fn len(mut self, n: usize) -> Seg {
        self.len = n;
        self
    }
}

/// What an expected segment must look like.
#[derive(Clone, Debug)]
pub struct Want {
    /// Exact flags.
    pub flags: TcpFlags,
    /// Sequence number, when it matters.
    pub seq: Option<Num>,
    /// Acknowledgement number, when it matters.
    pub ack: Option<Num>,
    /// Payload length, when it matters.
    pub len: Option<usize>,
    /// MSS option value, when it matters (`Some(None)`: must be absent).
    pub mss: Option<Option<u16>>,
    /// Window-scale option presence, when it matters.
    pub wscale: Option<bool>,
    /// Earliest arrival after the last injected segment or application call (`None`:
    /// any time, also before it).
    pub min: Option<Duration>,
    /// Latest arrival after the last injected segment or application call.
    pub max: Duration,
    /// Take the target's ISN from this segment's sequence number (the SYN-ACK).
    pub learn_isn: bool,
}

impl Want {
    /// A segment with `flags` within `max`.
    pub fn flags(flags: TcpFlags, max: Duration) -> Want {
        Want {
            flags,
            seq: None,
            ack: None,
            len: None,
            mss: None,
            wscale: None,
            min: None,
            max,
            learn_isn: false,
        }
    }
    /// Requires `seq` and `ack`.
    pub fn nums(mut self, seq: Num, ack: Num) -> Want {
        self.seq = Some(seq);
        self.ack = Some(ack);
        self
    }
    /// Requires the payload length.
    pub fn len(mut self, n: usize) -> Want {
        self.len = Some(n);
        self
    }
    /// Requires the arrival no earlier than `d`.
    pub fn not_before(mut self, d: Duration) -> Want {
        self.min = Some(d);
        self
    }
}

/// What an application call must give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppWant {
    /// Anything that is not an error.
    Ok,
    /// Exactly this many bytes (read) or accepted (write).
    Bytes(usize),
    /// End of stream.
    Eof,
    /// Nothing to read now; the connection is alive.
    WouldBlock,
    /// The connection was reset.
    Reset,
}

/// One step.
#[derive(Clone, Debug)]
pub enum Step {
    /// The checker sends a segment.
    Send(Seg),
    /// The target's next segment on the case's flow must match.
    Expect(Want),
    /// No segment on the flow for this long.
    Silence(Duration),
    /// The target sends data segments for this long without acknowledgement: their
    /// distinct payload bytes must lie in `min..=max`.
    Burst {
        /// How long to collect.
        during: Duration,
        /// Fewest bytes.
        min: usize,
        /// Most bytes.
        max: usize,
    },
    /// An application call on the target and what it must give.
    App(AppOp, AppWant),
}

/// A case's script: the checker's port and ISN, and the steps.
#[derive(Clone, Debug)]
pub struct Script {
    /// The checker's source port (distinct per case).
    pub sport: u16,
    /// The checker's ISN.
    pub isn: u32,
    /// The steps in order.
    pub steps: Vec<Step>,
}

/// A segment the target sent, decoded.
#[derive(Clone, Debug)]
pub struct Got {
    /// When, since the target's origin.
    pub at: Duration,
    /// The header.
    pub tcp: TcpHeader,
    /// Payload length.
    pub len: usize,
}

fn describe(g: &Got, isn_t: Option<u32>, isn_p: u32) -> String {
    let rel = |x: u32, base: Option<u32>| match base {
        Some(b) => format!("{}", x.wrapping_sub(b)),
        None => format!("{x} (abs)"),
    };
    format!(
        "{} seq={} ack={} len={} win={} mss={:?} ws={:?}",
        g.tcp.flags,
        rel(g.tcp.seq, isn_t),
        rel(g.tcp.ack, Some(isn_p)),
        g.len,
        g.tcp.window,
        g.tcp.options.mss,
        g.tcp.options.window_scale
    )
}

/// Plays scripts against a target and says what differed.
pub struct Player<'a, T: Target> {
    target: &'a mut T,
    script: &'a Script,
    isn_t: Option<u32>,
    mark: Duration,
    log: Vec<String>,
}

impl<'a, T: Target> Player<'a, T> {
    /// A player for `script` on `target`.
    pub fn new(target: &'a mut T, script: &'a Script) -> Self {
        let mark = target.now();
        Self {
            target,
            script,
            isn_t: None,
            mark,
            log: Vec::new(),
        }
    }

    fn flow(&self) -> Flow {
        self.target.flow(self.script.sport)
    }

    fn num(&self, n: Num) -> Result<u32, String> {
        Ok(match n {
            Num::Peer(k) => self.script.isn.wrapping_add(k as u32),
            Num::Target(k) => self
                .isn_t
                .ok_or("script error: the target's ISN is not known yet")?
                .wrapping_add(k as u32),
            Num::Abs(x) => x,
        })
    }

    fn packet(&self, s: &Seg) -> Result<Vec<u8>, String> {
        let f = self.flow();
        let sport = s.sport.unwrap_or(f.peer.port());
        let dport = s.dport.unwrap_or(f.target.port());
        let mut options = TcpOptions::default();
        if s.options {
            options.mss = Some(1460);
            options.window_scale = Some(7);
        }
        let payload: Vec<u8> = (0..s.len).map(|i| b'a' + (i % 26) as u8).collect();
        let p = Packet {
            ip: Ipv4Header {
                src: *f.peer.ip(),
                dst: *f.target.ip(),
                protocol: PROTO_TCP,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_fragment: true,
            },
            tcp: TcpHeader {
                src_port: sport,
                dst_port: dport,
                seq: self.num(s.seq)?,
                ack: self.num(s.ack)?,
                flags: s.flags,
                window: s.window,
                urgent: 0,
                options,
            },
            payload: &payload,
        };
        let mut out = BytesMut::new();
        p.encode(&mut out)
            .map_err(|e| format!("script error: encoding: {e}"))?;
        let mut out = out.to_vec();
        if s.bad_checksum {
            // The TCP checksum sits at bytes 16..18 of the TCP header (after 20 of IPv4).
            if let Some(b) = out.get_mut(36) {
                *b ^= 0x5a;
            }
        }
        Ok(out)
    }

    /// The next segment on the flow until `deadline` (target time).
    fn next(&mut self, deadline: Duration) -> Option<Got> {
        let f = self.flow();
        loop {
            let (at, p) = self.target.poll_packet(deadline)?;
            let Ok(pk) = Packet::decode(&p) else { continue };
            if pk.ip.src != *f.target.ip()
                || pk.ip.dst != *f.peer.ip()
                || pk.tcp.dst_port != f.peer.port()
            {
                continue;
            }
            let g = Got {
                at,
                tcp: pk.tcp,
                len: pk.payload.len(),
            };
            self.log.push(format!(
                "{:>8.1?} -> {}",
                at,
                describe(&g, self.isn_t, self.script.isn)
            ));
            return Some(g);
        }
    }

    fn check(&mut self, w: &Want, g: &Got) -> Result<(), String> {
        let seen = describe(g, self.isn_t, self.script.isn);
        let after = g.at.saturating_sub(self.mark);
        if g.tcp.flags != w.flags {
            return Err(format!("expected {} but got {seen}", w.flags));
        }
        if let Some(min) = w.min {
            if g.at < self.mark + min {
                return Err(format!(
                    "{seen} came {after:?} after the cause, expected no earlier than {min:?}"
                ));
            }
        }
        if w.learn_isn {
            self.isn_t = Some(g.tcp.seq);
        }
        if let Some(s) = w.seq {
            let want = self.num(s)?;
            if g.tcp.seq != want {
                return Err(format!("expected seq {s:?} but got {seen}"));
            }
        }
        if let Some(a) = w.ack {
            let want = self.num(a)?;
            if g.tcp.ack != want {
                return Err(format!("expected ack {a:?} but got {seen}"));
            }
        }
        if let Some(n) = w.len {
            if g.len != n {
                return Err(format!("expected {n} payload bytes but got {seen}"));
            }
        }
        if let Some(m) = w.mss {
            if g.tcp.options.mss != m {
                return Err(format!("expected MSS option {m:?} but got {seen}"));
            }
        }
        if let Some(ws) = w.wscale {
            if g.tcp.options.window_scale.is_some() != ws {
                let what = if ws { "a" } else { "no" };
                return Err(format!(
                    "expected {what} window-scale option but got {seen}"
                ));
            }
        }
        Ok(())
    }

    fn step(&mut self, i: usize, s: &Step) -> Result<(), String> {
        match s {
            Step::Send(seg) => {
                let p = self.packet(seg)?;
                self.target.inject(&p);
                self.mark = self.target.now();
                self.log.push(format!(
                    "{:>8.1?} <- {} seq={:?} ack={:?} len={}{}",
                    self.mark,
                    seg.flags,
                    seg.seq,
                    seg.ack,
                    seg.len,
                    if seg.bad_checksum {
                        " (bad checksum)"
                    } else {
                        ""
                    }
                ));
                Ok(())
            }
            Step::Expect(w) => {
                let deadline = self.mark + w.max;
                match self.next(deadline) {
                    Some(g) => self.check(w, &g),
                    None => Err(format!(
                        "step {i}: expected {} within {:?}, got nothing",
                        w.flags, w.max
                    )),
                }
            }
            Step::Silence(d) => {
                let start = self.target.now();
                match self.next(start + *d) {
                    Some(g) => Err(format!(
                        "step {i}: expected silence for {d:?}, got {} after {:?}",
                        describe(&g, self.isn_t, self.script.isn),
                        g.at.saturating_sub(start)
                    )),
                    None => Ok(()),
                }
            }
            Step::Burst { during, min, max } => {
                let start = self.target.now();
                let mut top: Option<u32> = None;
                let first = self.num(Num::Target(1))?;
                while let Some(g) = self.next(start + *during) {
                    if g.len > 0 {
                        let end = g.tcp.seq.wrapping_add(g.len as u32);
                        if top.is_none_or(|t| (end.wrapping_sub(t) as i32) > 0) {
                            top = Some(end);
                        }
                    }
                }
                let sent = top.map_or(0, |t| t.wrapping_sub(first) as usize);
                if sent < *min || sent > *max {
                    return Err(format!(
                        "step {i}: {sent} un-acked bytes sent in {during:?}, expected {min}..={max}"
                    ));
                }
                self.log.push(format!("burst: {sent} bytes un-acked"));
                Ok(())
            }
            Step::App(op, want) => {
                let r = self.target.app(self.script.sport, *op);
                self.mark = self.target.now();
                self.log
                    .push(format!("{:>8.1?}    app {op:?} -> {r:?}", self.mark));
                let ok = match (want, &r) {
                    (AppWant::Ok, AppResult::Err(_)) => false,
                    (AppWant::Ok, _) => true,
                    (AppWant::Bytes(n), AppResult::Bytes(m)) => n == m,
                    (AppWant::Eof, AppResult::Bytes(0)) => true,
                    (AppWant::WouldBlock, AppResult::WouldBlock) => true,
                    (AppWant::Reset, AppResult::Reset) => true,
                    _ => false,
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "step {i}: app {op:?} gave {r:?}, expected {want:?}"
                    ))
                }
            }
        }
    }

    /// Plays every step; on the first difference returns it with the exchange so far.
    pub fn play(mut self) -> Result<String, String> {
        let script = self.script;
        for (i, s) in script.steps.iter().enumerate() {
            if let Err(e) = self.step(i, s) {
                return Err(format!("{e}\n{}", self.log.join("\n")));
            }
        }
        let segs = self.log.iter().filter(|l| l.contains(" -> ")).count();
        Ok(format!(
            "{} steps, {segs} segments from the target as expected; last: {}",
            script.steps.len(),
            self.log.last().map_or("", |l| l.trim())
        ))
    }
}
