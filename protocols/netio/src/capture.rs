//! Packet capture into pcapng: one interface per host, LINKTYPE_RAW (IPv4/IPv6 packets),
//! nanosecond timestamps from a fixed epoch, little endian.
//!
//! Datagrams are recorded as IP/UDP on both the sender's and the receiver's interface
//! (so a lost datagram shows on one only). TCP byte streams are recorded as synthesized
//! TCP segments with consistent sequence and acknowledgement numbers (see [`TcpFlow`]),
//! each segment once, on the interface of the host that sent it, so Wireshark follows the
//! stream without spurious retransmissions. All checksums are computed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

/// The payload of a `ConnectionReset` error whose RST segment the sending side's capture
/// already recorded: a [`crate::CaptureNet`] stream that reads it records nothing more.
/// The simulator marks the resets it models (an aborting stream records its own RST);
/// on a real network the peer is not captured, so its RSTs are recorded when read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetRecorded;

impl fmt::Display for ResetRecorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset by peer")
    }
}

impl std::error::Error for ResetRecorded {}

/// Timestamps in captures are this far after 1970 plus the run's elapsed time, so the
/// same run gives the same bytes (2026-01-01T00:00:00Z).
pub const CAPTURE_EPOCH: Duration = Duration::from_secs(1_767_225_600);

/// Largest TCP payload per synthesized segment.
pub const SYNTH_MSS: usize = 1460;

/// Default cap on the in-memory capture, so a long run cannot exhaust memory.
pub const DEFAULT_CAPTURE_LIMIT: usize = 512 * 1024 * 1024;

/// Where capture timestamps come from (virtual time in simulation).
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

struct Inner {
    writer: PcapNgWriter<Vec<u8>>,
    interfaces: BTreeMap<String, u32>,
    packets: u64,
    dropped_over_limit: u64,
    limit: usize,
    /// While set, packets wait here (timestamp, interface, bytes) instead of being
    /// written: see [`Capture::begin_unordered`].
    held: Option<Vec<(Duration, u32, Vec<u8>)>>,
}

/// A pcapng capture being built in memory, shared by every socket that records into it.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Mutex<Inner>>,
    clock: Clock,
    sole: bool,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.lock();
        f.debug_struct("Capture")
            .field("packets", &i.packets)
            .field("bytes", &i.writer.get_ref().len())
            .finish()
    }
}

impl Capture {
    /// A new empty capture whose timestamps come from `clock`.
    pub fn new(clock: Clock) -> Self {
        Self::with_limit(clock, DEFAULT_CAPTURE_LIMIT)
    }

    /// Like [`Capture::new`] with a cap on the file size; packets past it are counted, not kept.
    pub fn with_limit(clock: Clock, limit: usize) -> Self {
        let writer = PcapNgWriter::with_endianness(Vec::new(), Endianness::Little)
            .expect("writing a section header into a Vec cannot fail");
        Self {
            inner: Arc::new(Mutex::new(Inner {
                writer,
                interfaces: BTreeMap::new(),
                packets: 0,
                dropped_over_limit: 0,
                limit,
                held: None,
            })),
            clock,
            sole: false,
        }
    }

    /// A capture that is the only observer of its connections (one real process, whose
    /// peers do not record into it): TCP flows record what they read as the peer's data
    /// segments and FIN, and accepted connections record their handshake, so the file
    /// holds both directions. In the simulator every host records into one capture and
    /// each segment is recorded once, by its sender.
    pub fn sole_observer(clock: Clock, limit: usize) -> Self {
        Self {
            sole: true,
            ..Self::with_limit(clock, limit)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The interface for `host`, created on first use (one per host).
    pub fn interface(&self, host: &str) -> CaptureIface {
        let mut i = self.lock();
        let next = i.interfaces.len() as u32;
        let id = match i.interfaces.get(host) {
            Some(id) => *id,
            None => {
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::RAW,
                    snaplen: 0,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned(host.to_string())),
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                };
                i.writer
                    .write_pcapng_block(idb)
                    .expect("writing into a Vec cannot fail");
                i.interfaces.insert(host.to_string(), next);
                next
            }
        };
        CaptureIface {
            cap: self.clone(),
            id,
        }
    }

    /// Starts a stretch in which packets are recorded in an order the recorder cannot
    /// make deterministic (e.g. the sockets of a crashed host closed by dropping its
    /// tasks, which tokio does in an order that depends on process-wide task ids). They
    /// are held and, at [`Capture::end_unordered`], written sorted by (timestamp,
    /// interface, bytes), so the file is the same whatever the order was.
    pub fn begin_unordered(&self) {
        self.lock().held.get_or_insert_with(Vec::new);
    }

    /// Ends the stretch begun by [`Capture::begin_unordered`]: writes what it held, sorted.
    pub fn end_unordered(&self) {
        let held = self.lock().held.take();
        if let Some(mut held) = held {
            held.sort();
            for (ts, iface, packet) in held {
                self.write_at(ts, iface, &packet);
            }
        }
    }

    fn write_packet(&self, iface: u32, packet: &[u8]) {
        let ts = CAPTURE_EPOCH + (self.clock)();
        if let Some(held) = self.lock().held.as_mut() {
            held.push((ts, iface, packet.to_vec()));
            return;
        }
        self.write_at(ts, iface, packet);
    }

    fn write_at(&self, ts: Duration, iface: u32, packet: &[u8]) {
        let mut i = self.lock();
        if i.writer.get_ref().len() + packet.len() + 64 > i.limit {
            i.dropped_over_limit += 1;
            return;
        }
        let epb = EnhancedPacketBlock {
            interface_id: iface,
            timestamp: ts,
            original_len: packet.len() as u32,
            data: Cow::Borrowed(packet),
            options: vec![],
        };
        i.writer
            .write_pcapng_block(epb)
            .expect("writing into a Vec cannot fail");
        i.packets += 1;
    }

    /// Number of packets recorded.
    pub fn packets(&self) -> u64 {
        self.lock().packets
    }

    /// Packets not kept because the capture reached its size cap.
    pub fn dropped_over_limit(&self) -> u64 {
        self.lock().dropped_over_limit
    }

    /// The pcapng file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.lock().writer.get_ref().clone()
    }
}

/// One host's interface in a [`Capture`].
#[derive(Clone, Debug)]
pub struct CaptureIface {
    cap: Capture,
    id: u32,
}

/// Turns an address pair into raw IP source/destination, mapping to IPv6 when mixed and
/// replacing an unspecified source with the destination's loopback-ish counterpart.
fn ip_pair(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    let src = if src.is_unspecified() {
        match dst {
            IpAddr::V4(d) if d.is_loopback() => dst,
            IpAddr::V6(d) if d.is_loopback() => dst,
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    } else {
        src
    };
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (src, dst),
        _ => (to_v6(src), to_v6(dst)),
    }
}

fn to_v6(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    }
}

fn ip_builder(src: IpAddr, dst: IpAddr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    match ip_pair(src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("ip_pair returns one family"),
    }
}

/// Largest UDP payload that fits one IPv4 packet.
const MAX_UDP_PAYLOAD: usize = 65_507;

impl CaptureIface {
    /// Records one UDP datagram as an IP/UDP packet (truncated to what fits one packet).
    pub fn udp(&self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let payload = &payload[..payload.len().min(MAX_UDP_PAYLOAD)];
        let b = ip_builder(src.ip(), dst.ip()).udp(src.port(), dst.port());
        let mut out = Vec::with_capacity(b.size(payload.len()));
        if b.write(&mut out, payload).is_ok() {
            self.cap.write_packet(self.id, &out);
        }
    }

    /// Records a raw IP packet as it is (protocols that carry IP, e.g. a TUN device).
    pub fn raw_ip(&self, packet: &[u8]) {
        self.cap.write_packet(self.id, packet);
    }

    /// Starts recording one TCP connection seen from this host. The connecting side
    /// records the whole three-way handshake, so each packet appears exactly once.
    pub fn tcp_flow(&self, local: SocketAddr, peer: SocketAddr, we_connected: bool) -> TcpFlow {
        let flow = TcpFlow {
            iface: self.clone(),
            local,
            peer,
            snd_nxt: isn(local, peer).wrapping_add(1),
            rcv_nxt: isn(peer, local).wrapping_add(1),
            fin_out: false,
            fin_in: false,
        };
        if we_connected || self.cap.sole {
            let (a, b) = if we_connected {
                (local, peer)
            } else {
                (peer, local)
            };
            let isn_a = isn(a, b);
            let isn_b = isn(b, a);
            flow.segment(a, b, isn_a, None, Flags::SYN, &[]);
            flow.segment(b, a, isn_b, Some(isn_a.wrapping_add(1)), Flags::SYN, &[]);
            flow.segment(
                a,
                b,
                isn_a.wrapping_add(1),
                Some(isn_b.wrapping_add(1)),
                Flags::NONE,
                &[],
            );
        }
        flow
    }
}

/// A deterministic initial sequence number for one direction of a connection, the same
/// on both hosts so their interfaces agree.
fn isn(from: SocketAddr, to: SocketAddr) -> u32 {
    // FNV-1a over the textual 4-tuple: stable across runs and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("{from}>{to}").bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[derive(Clone, Copy)]
struct Flags(u8);
impl Flags {
    const NONE: Flags = Flags(0);
    const SYN: Flags = Flags(1);
    const FIN: Flags = Flags(2);
    const RST: Flags = Flags(4);
    const PSH: Flags = Flags(8);
}

/// The synthesized TCP view of one connection from one host: sequence numbers advance
/// with the bytes written and read, so the capture follows like a real stream.
#[derive(Debug)]
pub struct TcpFlow {
    iface: CaptureIface,
    local: SocketAddr,
    peer: SocketAddr,
    snd_nxt: u32,
    rcv_nxt: u32,
    fin_out: bool,
    fin_in: bool,
}

impl TcpFlow {
    fn segment(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: Option<u32>,
        flags: Flags,
        payload: &[u8],
    ) {
        let mut b = ip_builder(src.ip(), dst.ip()).tcp(src.port(), dst.port(), seq, 65_535);
        if flags.0 & Flags::SYN.0 != 0 {
            b = b.syn();
        }
        if flags.0 & Flags::FIN.0 != 0 {
            b = b.fin();
        }
        if flags.0 & Flags::RST.0 != 0 {
            b = b.rst();
        }
        if flags.0 & Flags::PSH.0 != 0 {
            b = b.psh();
        }
        if let Some(a) = ack {
            b = b.ack(a);
        }
        let mut out = Vec::with_capacity(b.size(payload.len()));
        if b.write(&mut out, payload).is_ok() {
            self.iface.cap.write_packet(self.iface.id, &out);
        }
    }

    /// Bytes this host wrote to the stream.
    pub fn sent(&mut self, data: &[u8]) {
        for chunk in data.chunks(SYNTH_MSS) {
            self.segment(
                self.local,
                self.peer,
                self.snd_nxt,
                Some(self.rcv_nxt),
                Flags::PSH,
                chunk,
            );
            self.snd_nxt = self.snd_nxt.wrapping_add(chunk.len() as u32);
        }
    }

    /// Bytes this host read from the stream: recorded as our ACK (the data segments were
    /// recorded by the sender's interface, so each segment appears once in the capture),
    /// preceded by the peer's data segments when this capture is the sole observer.
    pub fn received(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.iface.cap.sole {
            let mut seq = self.rcv_nxt;
            for chunk in data.chunks(SYNTH_MSS) {
                self.segment(
                    self.peer,
                    self.local,
                    seq,
                    Some(self.snd_nxt),
                    Flags::PSH,
                    chunk,
                );
                seq = seq.wrapping_add(chunk.len() as u32);
            }
        }
        self.rcv_nxt = self.rcv_nxt.wrapping_add(data.len() as u32);
        self.segment(
            self.local,
            self.peer,
            self.snd_nxt,
            Some(self.rcv_nxt),
            Flags::NONE,
            &[],
        );
    }

    /// This host closed its sending side (FIN out).
    pub fn fin_out(&mut self) {
        if self.fin_out {
            return;
        }
        self.fin_out = true;
        self.segment(
            self.local,
            self.peer,
            self.snd_nxt,
            Some(self.rcv_nxt),
            Flags::FIN,
            &[],
        );
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
    }

    /// This host read end-of-stream: recorded as our ACK of the peer's FIN.
    pub fn fin_in(&mut self) {
        if self.fin_in {
            return;
        }
        self.fin_in = true;
        if self.iface.cap.sole {
            self.segment(
                self.peer,
                self.local,
                self.rcv_nxt,
                Some(self.snd_nxt),
                Flags::FIN,
                &[],
            );
        }
        self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        self.segment(
            self.local,
            self.peer,
            self.snd_nxt,
            Some(self.rcv_nxt),
            Flags::NONE,
            &[],
        );
    }

    /// The connection was reset; `by_peer` says which side sent the RST.
    pub fn reset(&mut self, by_peer: bool) {
        let (src, dst, seq) = if by_peer {
            (self.peer, self.local, self.rcv_nxt)
        } else {
            (self.local, self.peer, self.snd_nxt)
        };
        self.segment(src, dst, seq, None, Flags::RST, &[]);
        self.fin_out = true;
        self.fin_in = true;
    }

    /// The connection was reset by a RST that the sender's capture recorded (see
    /// [`ResetRecorded`]): the flow ends without a packet here, and no FIN follows.
    pub fn reset_recorded(&mut self) {
        self.fin_out = true;
        self.fin_in = true;
    }

    /// Whether both directions have ended.
    pub fn is_closed(&self) -> bool {
        self.fin_out && self.fin_in
    }

    /// Whether our sending side has been closed.
    pub fn fin_out_done(&self) -> bool {
        self.fin_out
    }
}
