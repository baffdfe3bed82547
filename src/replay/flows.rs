//! Flow reassembly for `tunnelbed replay`: datagrams grouped per direction (taking the
//! receiver's view when a capture holds both ends), and TCP byte streams rebuilt per
//! direction from sequence numbers.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tunnelbed_netio::pcap_read::{decode_transport, read_capture, CapturedPacket, Transport};

/// One direction of a UDP flow.
#[derive(Clone, Debug, Default)]
pub struct DatagramFlow {
    /// (packet number, timestamp, payload) in capture order.
    pub datagrams: Vec<(usize, Duration, Vec<u8>)>,
}

/// One direction of a TCP connection, reassembled.
#[derive(Clone, Debug, Default)]
pub struct StreamFlow {
    /// Bytes in order.
    pub bytes: Vec<u8>,
    /// (offset into `bytes`, packet number, timestamp) for each segment that added data.
    pub marks: Vec<(usize, usize, Duration)>,
    /// A FIN was seen.
    pub fin: bool,
    /// A RST was seen.
    pub rst: bool,
    /// Bytes missing (gaps) — the capture lost segments.
    pub gaps: u64,
    isn: Option<u32>,
}

/// Everything reassembled from one capture.
#[derive(Debug, Default)]
pub struct Flows {
    /// UDP, keyed by (source, destination).
    pub udp: BTreeMap<(SocketAddr, SocketAddr), DatagramFlow>,
    /// TCP, keyed by (source, destination).
    pub tcp: BTreeMap<(SocketAddr, SocketAddr), StreamFlow>,
    /// Packets that were neither UDP nor TCP.
    pub other: usize,
    /// Packets read.
    pub packets: usize,
}

/// The most bytes reassembled per TCP direction (replay is for inspection, not bulk).
pub const MAX_STREAM_BYTES: usize = 256 * 1024 * 1024;

/// For captures with one interface per host (as the simulator writes them), a datagram
/// shows on its sender's interface and, if delivered, later on its receiver's. A datagram
/// seen on two interfaces therefore names its sender's interface: the earlier one. The
/// map says, per source address, which interface its copies are the sender's (majority
/// vote); empty for single-interface captures.
fn sender_interfaces(pkts: &[(CapturedPacket, Transport)]) -> BTreeMap<IpAddr, u32> {
    use std::hash::{Hash, Hasher};
    // (src, dst, payload hash) -> first (interface, time), and whether another interface saw it.
    let mut first: BTreeMap<(SocketAddr, SocketAddr, u64), (u32, Duration, bool)> = BTreeMap::new();
    for (p, t) in pkts {
        let Transport::Udp { src, dst, payload } = t else {
            continue;
        };
        let mut h = std::hash::DefaultHasher::new();
        payload.hash(&mut h);
        let e = first
            .entry((*src, *dst, h.finish()))
            .or_insert((p.iface, p.ts, false));
        if e.0 != p.iface {
            e.2 = true;
            if p.ts < e.1 {
                e.0 = p.iface;
                e.1 = p.ts;
            }
        }
    }
    let mut votes: BTreeMap<IpAddr, BTreeMap<u32, usize>> = BTreeMap::new();
    for ((src, _, _), (iface, _, both)) in first {
        if both {
            *votes.entry(src.ip()).or_default().entry(iface).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .filter_map(|(ip, v)| v.into_iter().max_by_key(|(_, n)| *n).map(|(i, _)| (ip, i)))
        .collect()
}

/// Reads a capture and reassembles its flows. Errors name the packet.
pub fn reassemble(bytes: &[u8]) -> Result<Flows, String> {
    let pkts = read_capture(bytes).map_err(|e| e.to_string())?;
    let mut decoded = Vec::with_capacity(pkts.len());
    for p in pkts {
        let t = decode_transport(&p).map_err(|e| format!("packet {}: malformed: {e}", p.number))?;
        decoded.push((p, t));
    }
    // With one interface per host, keep the receiver's copy of each datagram (what was
    // delivered); a datagram lost on the way shows only on its sender's interface.
    let sender = sender_interfaces(&decoded);
    let mut flows = Flows {
        packets: decoded.len(),
        ..Flows::default()
    };
    for (p, t) in decoded {
        match t {
            Transport::Udp { src, dst, payload } => {
                let from_sender = sender.get(&src.ip()) == Some(&p.iface);
                let receiver_known = sender.get(&dst.ip()).is_some_and(|i| *i != p.iface);
                if from_sender && receiver_known {
                    continue;
                }
                flows
                    .udp
                    .entry((src, dst))
                    .or_default()
                    .datagrams
                    .push((p.number, p.ts, payload));
            }
            Transport::Tcp {
                src,
                dst,
                seq,
                syn,
                fin,
                rst,
                payload,
                ..
            } => {
                let f = flows.tcp.entry((src, dst)).or_default();
                if syn {
                    f.isn = Some(seq);
                    continue;
                }
                let isn = *f.isn.get_or_insert(seq.wrapping_sub(1));
                let off = seq.wrapping_sub(isn).wrapping_sub(1) as usize;
                if !payload.is_empty() && off + payload.len() <= MAX_STREAM_BYTES {
                    if off > f.bytes.len() {
                        // A gap: the capture missed a segment. Keep offsets honest.
                        f.gaps += (off - f.bytes.len()) as u64;
                        f.bytes.resize(off, 0);
                    }
                    let end = off + payload.len();
                    if end > f.bytes.len() {
                        let new_from = f.bytes.len() - off.min(f.bytes.len());
                        let start = f.bytes.len();
                        f.bytes.extend_from_slice(&payload[new_from..]);
                        f.marks.push((start, p.number, p.ts));
                    }
                }
                f.fin |= fin;
                f.rst |= rst;
            }
            Transport::Other => flows.other += 1,
        }
    }
    Ok(flows)
}
