//! Fuzz bodies. They live here, not in `fuzz/`, so that a stable `cargo test` replays
//! the committed corpora (`corpora/tcpstack_packet`, `corpora/tcpstack_ops`) without
//! nightly or libFuzzer; the cargo-fuzz targets are one-line wrappers around them.
//!
//! Every run is bounded (operations, sizes and loops are capped) so that a slow input is
//! a real finding, not a long script.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;
use tunnelbed_netio::Trace;

use crate::wire::{Ipv4Header, Packet, TcpOptions, PROTO_TCP};
use crate::{ConnId, Stack, StackConfig, State, TcpFlags, TcpHeader};

/// Decodes `data` as a packet (and its parts); decoding must never panic, and what
/// decodes must re-encode to bytes that decode to the same packet.
pub fn fuzz_packet_decode(data: &[u8]) {
    if let Ok(p) = Packet::decode(data) {
        let mut b = BytesMut::new();
        p.encode(&mut b).expect("a decoded packet re-encodes");
        let again = Packet::decode(&b).expect("a re-encoded packet decodes");
        assert_eq!(again, p, "packet does not round-trip");
        assert!(
            b.len() <= data.len() + 40,
            "re-encoding grew past its options"
        );
    }
    if let Ok((h, payload)) = Ipv4Header::decode(data) {
        assert!(payload.len() <= data.len());
        let mut b = BytesMut::new();
        h.encode(payload.len(), &mut b).expect("fits");
        let (h2, _) = Ipv4Header::decode(&[&b[..], payload].concat()).expect("decodes");
        assert_eq!(h2, h);
    }
    let opts = &data[..data.len().min(40)];
    if let Ok(o) = TcpOptions::decode(opts) {
        let mut b = BytesMut::new();
        o.encode(&mut b);
        assert_eq!(TcpOptions::decode(&b), Ok(o));
    }
}

/// Start-up choices of a stack run.
#[derive(Arbitrary, Debug)]
struct Setup {
    isn: u32,
    peer_isn: u32,
    backlog: u8,
    syn_backlog: u8,
    recv_buffer: u16,
    send_buffer: u16,
    max_connections: u8,
}

/// One step of a stack run.
#[derive(Debug)]
enum Op {
    /// A well-formed segment from peer port `port` (numbers near what the stack expects).
    Seg {
        port: u8,
        flags: u8,
        seq_delta: i16,
        ack_delta: i16,
        len: u16,
        window: u16,
        mss: Option<u16>,
        ws: Option<u8>,
        to_other_port: bool,
    },
    /// The last built packet with one byte changed.
    Corrupt(u16, u8),
    /// Raw bytes.
    Raw(Vec<u8>),
    /// Time passes (ms), timers run.
    Advance(u16),
    /// The application accepts.
    Accept,
    /// The application reads on a handle.
    Read(u8, u16),
    /// The application writes on a handle.
    Write(u8, u16),
    /// The application shuts a handle down.
    Shutdown(u8),
    /// The application closes a handle.
    Close(u8),
    /// An active open to a peer port.
    Connect(u8),
    /// The listener is closed.
    CloseListener,
}

fn draw_op(u: &mut Unstructured<'_>) -> arbitrary::Result<Op> {
    let sel: u8 = u.arbitrary()?;
    Ok(match sel {
        0..=119 => Op::Seg {
            port: u.arbitrary()?,
            flags: u.arbitrary()?,
            seq_delta: u.arbitrary()?,
            ack_delta: u.arbitrary()?,
            len: u.arbitrary()?,
            window: u.arbitrary()?,
            mss: u.arbitrary()?,
            ws: u.arbitrary()?,
            to_other_port: u.ratio(1, 16)?,
        },
        120..=129 => Op::Corrupt(u.arbitrary()?, u.arbitrary()?),
        130..=134 => Op::Raw(u.arbitrary()?),
        135..=164 => Op::Advance(u.arbitrary()?),
        165..=179 => Op::Accept,
        180..=209 => Op::Read(u.arbitrary()?, u.arbitrary()?),
        210..=234 => Op::Write(u.arbitrary()?, u.arbitrary()?),
        235..=241 => Op::Shutdown(u.arbitrary()?),
        242..=248 => Op::Close(u.arbitrary()?),
        249..=253 => Op::Connect(u.arbitrary()?),
        _ => Op::CloseListener,
    })
}

/// Most operations per input.
const MAX_OPS: usize = 600;
/// Peer ports used (collide on purpose).
const PORTS: u8 = 6;

const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// What one [`fuzz_stack_ops`] run did, so tests can check that inputs reach the
/// machine's states and do not all stop at the first byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpsSummary {
    /// Operations applied.
    pub ops: usize,
    /// Connections accepted.
    pub accepted: usize,
    /// Bytes the application read.
    pub bytes_read: usize,
    /// RSTs the stack sent.
    pub rsts_sent: u64,
    /// Challenge ACKs the stack sent.
    pub challenge_acks: u64,
    /// Packets refused by the decoder.
    pub bad_packets: u64,
    /// A connection reached FIN_WAIT_2, CLOSE_WAIT or CLOSING.
    pub closing_states: bool,
    /// Retransmission timeouts that fired.
    pub retransmits: u64,
}

/// Per peer port: the peer's next sequence number and the highest of ours it saw.
#[derive(Default, Clone, Copy)]
struct PeerView {
    next: u32,
    ours: u32,
}

/// Runs an op sequence against a stack: crafted segments near the expected numbers,
/// corrupted and raw packets, time, and application calls. Checks: no panic; every
/// packet the stack sends decodes and goes to the peer; buffers, tables and queues stay
/// under their caps; timers make progress.
pub fn fuzz_stack_ops(data: &[u8]) {
    run_stack_ops(data);
}

/// [`fuzz_stack_ops`], returning what the run did (None: too short for a setup).
pub fn run_stack_ops(data: &[u8]) -> Option<OpsSummary> {
    let mut u = Unstructured::new(data);
    let setup = Setup::arbitrary(&mut u).ok()?;
    let cfg = StackConfig {
        fixed_isn: Some(setup.isn),
        syn_backlog: 1 + setup.syn_backlog as usize % 8,
        recv_buffer: 1 + setup.recv_buffer as usize * 4,
        send_buffer: 1 + setup.send_buffer as usize * 4,
        max_connections: 1 + setup.max_connections as usize % 16,
        ..StackConfig::default()
    };
    let mut s = Stack::new(cfg.clone(), Trace::disabled());
    let mut lid = s
        .listen(
            Duration::ZERO,
            SocketAddrV4::new(US, 80),
            1 + setup.backlog as usize % 8,
        )
        .ok();
    let mut now = Duration::ZERO;
    let mut handles: Vec<ConnId> = Vec::new();
    let mut peers: BTreeMap<u16, PeerView> = BTreeMap::new();
    let mut last: Vec<u8> = Vec::new();
    let mut sum = OpsSummary::default();
    let mut buf = vec![0u8; 70_000];
    let payload = vec![0x5au8; 70_000];

    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = draw_op(&mut u) else { break };
        sum.ops += 1;
        let pick = |h: &Vec<ConnId>, i: u8| h.get(i as usize % h.len().max(1)).copied();
        match op {
            Op::Seg {
                port,
                flags,
                seq_delta,
                ack_delta,
                len,
                window,
                mss,
                ws,
                to_other_port,
            } => {
                let pport = 40000 + u16::from(port % PORTS);
                let v = peers.entry(pport).or_insert(PeerView {
                    next: setup.peer_isn,
                    ours: setup.isn,
                });
                let f = TcpFlags(flags);
                let seq = v.next.wrapping_add(seq_delta as i32 as u32);
                let ack = v.ours.wrapping_add(ack_delta as i32 as u32 % 4096);
                let len = usize::from(len) % 3000;
                let tcp = TcpHeader {
                    src_port: pport,
                    dst_port: if to_other_port { 81 } else { 80 },
                    seq,
                    ack,
                    flags: f,
                    window,
                    urgent: 0,
                    options: TcpOptions {
                        mss,
                        window_scale: ws,
                        ..TcpOptions::default()
                    },
                };
                let p = Packet {
                    ip: Ipv4Header {
                        src: PEER,
                        dst: US,
                        protocol: PROTO_TCP,
                        ttl: 64,
                        tos: 0,
                        ident: 0,
                        dont_fragment: true,
                    },
                    tcp,
                    payload: &payload[..len],
                };
                if let Ok(b) = p.to_bytes() {
                    let consumed = len as u32
                        + u32::from(f.contains(TcpFlags::SYN))
                        + u32::from(f.contains(TcpFlags::FIN));
                    if seq_delta == 0 || f.contains(TcpFlags::SYN) {
                        v.next = seq.wrapping_add(consumed);
                    }
                    last = b.to_vec();
                    let _ = s.handle_input(now, &b);
                }
            }
            Op::Corrupt(at, x) => {
                if !last.is_empty() {
                    let i = at as usize % last.len();
                    last[i] ^= x.max(1);
                    if s.handle_input(now, &last).is_err() {
                        sum.bad_packets += 1;
                    }
                }
            }
            Op::Raw(b) => {
                let _ = s.handle_input(now, &b[..b.len().min(2000)]);
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
                s.handle_timeout(now);
            }
            Op::Accept => {
                if let Some(l) = lid {
                    if let Some(c) = s.accept(l) {
                        sum.accepted += 1;
                        handles.push(c);
                    }
                }
            }
            Op::Read(i, n) => {
                if let Some(c) = pick(&handles, i) {
                    let n = usize::from(n).min(buf.len());
                    if let Ok(got) = s.read(now, c, &mut buf[..n]) {
                        sum.bytes_read += got;
                    }
                }
            }
            Op::Write(i, n) => {
                if let Some(c) = pick(&handles, i) {
                    let _ = s.write(now, c, &payload[..usize::from(n)]);
                }
            }
            Op::Shutdown(i) => {
                if let Some(c) = pick(&handles, i) {
                    let _ = s.shutdown(now, c);
                }
            }
            Op::Close(i) => {
                if let Some(c) = pick(&handles, i) {
                    let _ = s.close(now, c);
                    handles.retain(|&h| h != c);
                }
            }
            Op::Connect(p) => {
                let local = SocketAddrV4::new(US, 50000 + u16::from(p % 4));
                let remote = SocketAddrV4::new(PEER, 40000 + u16::from(p % PORTS));
                if let Ok(c) = s.connect(now, local, remote) {
                    handles.push(c);
                }
            }
            Op::CloseListener => {
                if let Some(l) = lid.take() {
                    let _ = s.close_listener(now, l);
                }
            }
        }
        // What the stack sent: it decodes, goes to the peer, and teaches the peer model.
        let mut out = 0;
        while let Some(b) = s.poll_transmit() {
            out += 1;
            assert!(out <= 10_000, "unbounded output after one op");
            let p = Packet::decode(&b).expect("our own packet decodes");
            assert_eq!(p.ip.src, US);
            assert_eq!(p.ip.dst, PEER);
            assert!(p.payload.len() <= usize::from(cfg.mss));
            if let Some(v) = peers.get_mut(&p.tcp.dst_port) {
                let end = p
                    .tcp
                    .seq
                    .wrapping_add(p.payload.len() as u32)
                    .wrapping_add(u32::from(p.tcp.flags.contains(TcpFlags::SYN)))
                    .wrapping_add(u32::from(p.tcp.flags.contains(TcpFlags::FIN)));
                if (end.wrapping_sub(v.ours) as i32) > 0 {
                    v.ours = end;
                }
            }
        }
        while s.poll_event().is_some() {}
        // Bounds.
        assert!(s.connection_count() <= cfg.max_connections);
        for &c in &handles {
            assert!(s.readable(c) <= cfg.recv_buffer);
            assert!(s.unacked(c) <= cfg.send_buffer);
            if matches!(
                s.state(c),
                Some(State::FinWait2 | State::CloseWait | State::Closing)
            ) {
                sum.closing_states = true;
            }
        }
        if let Some(t) = s.poll_timeout() {
            assert!(
                t <= now + cfg.rto_max + cfg.syn_rcvd_timeout,
                "timer too far: {t:?}"
            );
        }
    }
    // Let every timer run out: the table must empty once the application closes all.
    for c in handles.drain(..) {
        let _ = s.close(now, c);
    }
    for _ in 0..64 {
        let Some(t) = s.poll_timeout() else { break };
        now = now.max(t);
        s.handle_timeout(now);
        while s.poll_transmit().is_some() {}
    }
    assert_eq!(
        s.poll_timeout(),
        None,
        "timers still pending after 64 rounds"
    );
    assert_eq!(
        s.connection_count(),
        s.listener_backlog_total(),
        "leaked connections"
    );
    let st = s.stats();
    sum.rsts_sent = st.rst_sent;
    sum.challenge_acks = st.challenge_acks;
    sum.bad_packets += st.bad_packets;
    sum.retransmits = st.retransmits;
    Some(sum)
}

/// Builds inputs in [`fuzz_stack_ops`]'s byte format, so seed corpora can walk the
/// machine through its states on purpose (random bytes rarely complete a handshake
/// and then read data).
#[derive(Clone, Debug, Default)]
pub struct OpsInput(pub Vec<u8>);

impl OpsInput {
    /// Starts an input: our ISN, the peer's ISN, roomy buffers and tables.
    pub fn new(isn: u32, peer_isn: u32) -> OpsInput {
        let mut b = Vec::new();
        b.extend_from_slice(&isn.to_le_bytes());
        b.extend_from_slice(&peer_isn.to_le_bytes());
        b.push(7); // accept backlog 8
        b.push(7); // SYN backlog 8
        b.extend_from_slice(&16_000u16.to_le_bytes()); // receive buffer 64001
        b.extend_from_slice(&16_000u16.to_le_bytes()); // send buffer 64001
        b.push(7); // 8 connections
        OpsInput(b)
    }

    /// A segment from peer port index `port` with `flags`, `len` payload bytes, at the
    /// peer's next sequence number plus `seq_delta`, acking our highest plus `ack_delta`.
    pub fn seg(
        mut self,
        port: u8,
        flags: TcpFlags,
        seq_delta: i16,
        ack_delta: i16,
        len: u16,
    ) -> Self {
        self.0.push(0);
        self.0.push(port);
        self.0.push(flags.0);
        self.0.extend_from_slice(&seq_delta.to_le_bytes());
        self.0.extend_from_slice(&ack_delta.to_le_bytes());
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&65535u16.to_le_bytes());
        self.0.push(1); // MSS present
        self.0.extend_from_slice(&1460u16.to_le_bytes());
        self.0.push(0); // no window scale
        self.0.push(1); // ratio draw: not the other port
        self
    }

    /// Time passes.
    pub fn advance(mut self, ms: u16) -> Self {
        self.0.push(135);
        self.0.extend_from_slice(&ms.to_le_bytes());
        self
    }

    /// The application accepts.
    pub fn accept(mut self) -> Self {
        self.0.push(165);
        self
    }

    /// The application reads up to `n` bytes on handle `i`.
    pub fn read(mut self, i: u8, n: u16) -> Self {
        self.0.extend_from_slice(&[180, i]);
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }

    /// The application writes `n` bytes on handle `i`.
    pub fn write(mut self, i: u8, n: u16) -> Self {
        self.0.extend_from_slice(&[210, i]);
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }

    /// The application shuts handle `i` down.
    pub fn shutdown(mut self, i: u8) -> Self {
        self.0.extend_from_slice(&[235, i]);
        self
    }

    /// The application closes handle `i`.
    pub fn close(mut self, i: u8) -> Self {
        self.0.extend_from_slice(&[242, i]);
        self
    }

    /// The last packet with byte `at` xored with `x`.
    pub fn corrupt(mut self, at: u16, x: u8) -> Self {
        self.0.push(120);
        self.0.extend_from_slice(&at.to_le_bytes());
        self.0.push(x);
        self
    }

    /// A complete handshake from peer port index `port`, accepted.
    pub fn handshake(self, port: u8) -> Self {
        self.seg(port, TcpFlags::SYN, 0, 0, 0)
            .seg(port, TcpFlags::ACK, 0, 0, 0)
            .accept()
    }
}

/// Hand-built inputs that reach every state and rule; the seed of the committed
/// `corpora/tcpstack_ops` (the fuzzer grows it from there).
pub fn ops_seeds() -> Vec<Vec<u8>> {
    let a = TcpFlags::ACK;
    let pa = TcpFlags::PSH | TcpFlags::ACK;
    let fa = TcpFlags::FIN | TcpFlags::ACK;
    vec![
        // Data in, read, delayed ACK, peer FIN, our shutdown, close.
        OpsInput::new(1000, 5000)
            .handshake(0)
            .seg(0, pa, 0, 0, 700)
            .read(0, 500)
            .advance(25)
            .read(0, 500)
            .seg(0, fa, 0, 0, 0)
            .read(0, 10)
            .shutdown(0)
            .seg(0, a, 0, 0, 0)
            .close(0)
            .0,
        // Data out, lost: retransmissions, then close with data pending and the reset.
        OpsInput::new(u32::MAX - 2000, u32::MAX - 10)
            .handshake(1)
            .write(0, 5000)
            .advance(200)
            .advance(400)
            .close(0)
            .advance(800)
            .advance(1600)
            .advance(3200)
            .advance(6400)
            .advance(12800)
            .advance(25600)
            .advance(51200)
            .0,
        // RFC 5961: RST in window, SYN on an established connection, then exact RST.
        OpsInput::new(7, 9)
            .handshake(2)
            .seg(2, TcpFlags::RST, 5, 0, 0)
            .seg(2, TcpFlags::SYN, 3, 0, 0)
            // (the harness moved the peer's next number past that SYN: back to exact)
            .seg(2, TcpFlags::RST, -4, 0, 0)
            .read(0, 10)
            .close(0)
            .0,
        // Our shutdown first: FIN_WAIT_1, FIN_WAIT_2, then their FIN: CLOSING with RST.
        OpsInput::new(300, 400)
            .handshake(3)
            .shutdown(0)
            .seg(3, a, 0, 0, 0)
            .seg(3, fa, 0, 0, 0)
            .read(0, 10)
            .close(0)
            .0,
        // Out of order, a hole filled, corrupted copies refused.
        OpsInput::new(50, 60)
            .handshake(4)
            .seg(4, pa, 100, 0, 100)
            .corrupt(30, 1)
            .seg(4, pa, 0, 0, 100)
            .read(0, 300)
            .seg(4, pa, 0, 0, 100)
            .corrupt(45, 0x80)
            .advance(30)
            .0,
    ]
}
