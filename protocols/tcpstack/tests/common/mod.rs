//! A scripted peer for the stack: it crafts segments from 10.0.0.2 to our stack at
//! 10.0.0.1:80, runs the stack's timers at chosen times, and logs every segment both
//! ways so tests can snapshot the exchange next to the transition trace.
#![allow(dead_code)]

pub(crate) mod link;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use tunnelbed_netio::Trace;
use tunnelbed_tcpstack::wire::{Ipv4Header, PROTO_TCP};
use tunnelbed_tcpstack::{
    ConnId, DecodeError, Event, ListenerId, Packet, Stack, StackConfig, StackError, TcpFlags,
    TcpHeader, TcpOptions,
};

/// Our stack's address.
pub(crate) const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The scripted peer's address.
pub(crate) const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The listening port.
pub(crate) const PORT: u16 = 80;
/// The peer's port.
pub(crate) const PEER_PORT: u16 = 40000;
/// Our ISN in scripts (fixed so logs are stable).
pub(crate) const OUR_ISN: u32 = 1000;
/// The peer's ISN in scripts.
pub(crate) const PEER_ISN: u32 = 5000;

/// A segment the peer sends.
#[derive(Clone, Debug)]
pub(crate) struct Seg {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub tcp: TcpHeader,
    pub payload: Vec<u8>,
}

impl Seg {
    fn new(flags: TcpFlags, seq: u32, ack: u32) -> Seg {
        Seg {
            src: SocketAddrV4::new(PEER, PEER_PORT),
            dst: SocketAddrV4::new(US, PORT),
            tcp: TcpHeader {
                src_port: PEER_PORT,
                dst_port: PORT,
                seq,
                ack,
                flags,
                window: 65535,
                urgent: 0,
                options: TcpOptions::default(),
            },
            payload: Vec::new(),
        }
    }
    /// SYN with MSS 1460 and window scale 7 (as Linux would offer).
    pub(crate) fn syn(seq: u32) -> Seg {
        let mut s = Seg::new(TcpFlags::SYN, seq, 0);
        s.tcp.options.mss = Some(1460);
        s.tcp.options.window_scale = Some(7);
        s
    }
    /// Bare ACK.
    pub(crate) fn ack(seq: u32, ack: u32) -> Seg {
        Seg::new(TcpFlags::ACK, seq, ack)
    }
    /// Data with ACK and PSH.
    pub(crate) fn data(seq: u32, ack: u32, d: &[u8]) -> Seg {
        let mut s = Seg::new(TcpFlags::ACK | TcpFlags::PSH, seq, ack);
        s.payload = d.to_vec();
        s
    }
    /// FIN|ACK.
    pub(crate) fn fin(seq: u32, ack: u32) -> Seg {
        Seg::new(TcpFlags::FIN | TcpFlags::ACK, seq, ack)
    }
    /// RST (no ACK).
    pub(crate) fn rst(seq: u32) -> Seg {
        Seg::new(TcpFlags::RST, seq, 0)
    }
    /// Any flags.
    pub(crate) fn flags(flags: TcpFlags, seq: u32, ack: u32) -> Seg {
        Seg::new(flags, seq, ack)
    }
    /// Sets the window field.
    pub(crate) fn win(mut self, w: u16) -> Seg {
        self.tcp.window = w;
        self
    }
    /// Removes the options.
    pub(crate) fn no_options(mut self) -> Seg {
        self.tcp.options = TcpOptions::default();
        self
    }
    /// From another peer port.
    pub(crate) fn sport(mut self, p: u16) -> Seg {
        self.src.set_port(p);
        self.tcp.src_port = p;
        self
    }
    /// To another local port.
    pub(crate) fn dport(mut self, p: u16) -> Seg {
        self.dst.set_port(p);
        self.tcp.dst_port = p;
        self
    }
    /// The raw IPv4 packet.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        Packet {
            ip: Ipv4Header {
                src: *self.src.ip(),
                dst: *self.dst.ip(),
                protocol: PROTO_TCP,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_fragment: true,
            },
            tcp: self.tcp,
            payload: &self.payload,
        }
        .to_bytes()
        .unwrap()
        .to_vec()
    }
}

/// A segment the stack sent.
#[derive(Clone, Debug)]
pub(crate) struct Out {
    pub ip: Ipv4Header,
    pub tcp: TcpHeader,
    pub payload: Vec<u8>,
}

/// One line for a segment: flags, numbers, length, options.
pub(crate) fn describe(tcp: &TcpHeader, len: usize) -> String {
    let mut s = format!(
        "{}:{} {} seq={} ack={} win={} len={}",
        tcp.src_port, tcp.dst_port, tcp.flags, tcp.seq, tcp.ack, tcp.window, len
    );
    let o = tcp.options;
    if let Some(m) = o.mss {
        let _ = write!(s, " mss={m}");
    }
    if let Some(w) = o.window_scale {
        let _ = write!(s, " ws={w}");
    }
    s
}

/// The scripted exchange.
pub(crate) struct Script {
    pub stack: Stack,
    pub trace: Trace,
    pub now: Duration,
    pub log: String,
    pub lid: ListenerId,
    pub sent: Vec<Out>,
}

/// The config scripts use: fixed ISN, vproxy's defaults otherwise.
pub(crate) fn config() -> StackConfig {
    StackConfig {
        fixed_isn: Some(OUR_ISN),
        ..StackConfig::default()
    }
}

impl Script {
    /// A stack listening on 10.0.0.1:80 with an accept backlog of 8.
    pub(crate) fn new(cfg: StackConfig) -> Script {
        let trace = Trace::recording();
        let mut stack = Stack::new(cfg, trace.clone());
        let lid = stack
            .listen(Duration::ZERO, SocketAddrV4::new(US, PORT), 8)
            .unwrap();
        Script {
            stack,
            trace,
            now: Duration::ZERO,
            log: String::new(),
            lid,
            sent: Vec::new(),
        }
    }

    /// Moves the clock to `ms` and runs due timers.
    pub(crate) fn at(&mut self, ms: u64) {
        self.now = Duration::from_millis(ms);
        self.stack.handle_timeout(self.now);
        self.drain();
    }

    /// The peer sends `s`.
    pub(crate) fn send(&mut self, s: &Seg) -> Result<(), DecodeError> {
        let _ = writeln!(
            self.log,
            "{:>7}ms <- {}",
            self.now.as_millis(),
            describe(&s.tcp, s.payload.len())
        );
        let r = self.stack.handle_input(self.now, &s.bytes());
        self.drain();
        r
    }

    /// The peer sends raw bytes (logged with `label`).
    pub(crate) fn send_raw(&mut self, b: &[u8], label: &str) -> Result<(), DecodeError> {
        let r = self.stack.handle_input(self.now, b);
        let _ = writeln!(
            self.log,
            "{:>7}ms <- raw {label}: {}",
            self.now.as_millis(),
            match &r {
                Ok(()) => "accepted".to_string(),
                Err(e) => format!("refused: {e}"),
            }
        );
        self.drain();
        r
    }

    /// Takes what the stack transmitted, logging it.
    pub(crate) fn drain(&mut self) {
        while let Some(b) = self.stack.poll_transmit() {
            let p = Packet::decode(&b).expect("our own packets decode");
            let _ = writeln!(
                self.log,
                "{:>7}ms -> {}",
                self.now.as_millis(),
                describe(&p.tcp, p.payload.len())
            );
            self.sent.push(Out {
                ip: p.ip,
                tcp: p.tcp,
                payload: p.payload.to_vec(),
            });
        }
    }

    /// Segments sent since the last call.
    pub(crate) fn take(&mut self) -> Vec<Out> {
        self.drain();
        std::mem::take(&mut self.sent)
    }

    /// Pending events.
    pub(crate) fn events(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Some(e) = self.stack.poll_event() {
            v.push(e);
        }
        v
    }

    /// Application write, logged; what it sends is drained.
    pub(crate) fn write(&mut self, c: ConnId, d: &[u8]) -> Result<usize, StackError> {
        let r = self.stack.write(self.now, c, d);
        self.note(&format!("appl: write {} bytes -> {r:?}", d.len()));
        self.drain();
        r
    }

    /// Application read, logged.
    pub(crate) fn read(&mut self, c: ConnId, b: &mut [u8]) -> Result<usize, StackError> {
        let r = self.stack.read(self.now, c, b);
        self.note(&format!("appl: read up to {} bytes -> {r:?}", b.len()));
        self.drain();
        r
    }

    /// Application shutdown, logged.
    pub(crate) fn shutdown(&mut self, c: ConnId) -> Result<(), StackError> {
        let r = self.stack.shutdown(self.now, c);
        self.note(&format!("appl: shutdown -> {r:?}"));
        self.drain();
        r
    }

    /// Application close, logged.
    pub(crate) fn close(&mut self, c: ConnId) -> Result<(), StackError> {
        let r = self.stack.close(self.now, c);
        self.note(&format!("appl: close -> {r:?}"));
        self.drain();
        r
    }

    /// Adds a note to the log.
    pub(crate) fn note(&mut self, s: &str) {
        let _ = writeln!(self.log, "{:>7}ms    # {s}", self.now.as_millis());
    }

    /// The log and the trace, for snapshots.
    pub(crate) fn render(&self) -> String {
        format!("{}\n--- transitions ---\n{}", self.log, self.trace.render())
    }

    /// Handshake with the peer's SYN options; returns the accepted handle.
    pub(crate) fn establish(&mut self) -> tunnelbed_tcpstack::ConnId {
        self.send(&Seg::syn(PEER_ISN)).unwrap();
        self.send(&Seg::ack(PEER_ISN + 1, OUR_ISN + 1)).unwrap();
        self.stack.accept(self.lid).expect("a connection to accept")
    }
}
