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

/// For captures with one interface per host, the address every packet on an interface
/// shares: that host's own address.
fn interface_addresses(pkts: &[(CapturedPacket, Transport)]) -> BTreeMap<u32, IpAddr> {
    let mut seen: BTreeMap<u32, BTreeMap<IpAddr, usize>> = BTreeMap::new();
    let mut totals: BTreeMap<u32, usize> = BTreeMap::new();
    for (p, t) in pkts {
        let (s, d) = match t {
            Transport::Udp { src, dst, .. } | Transport::Tcp { src, dst, .. } => {
                (src.ip(), dst.ip())
            }
            Transport::Other => continue,
        };
        *totals.entry(p.iface).or_default() += 1;
        let m = seen.entry(p.iface).or_default();
        *m.entry(s).or_default() += 1;
        if d != s {
            *m.entry(d).or_default() += 1;
        }
    }
    let mut out = BTreeMap::new();
    for (iface, counts) in seen {
        let total = totals[&iface];
        let mut all: Vec<_> = counts.into_iter().filter(|(_, c)| *c == total).collect();
        if all.len() == 1 {
            out.insert(iface, all.remove(0).0);
        }
    }
    out
}

/// Reads a capture and reassembles its flows. Errors name the packet.
pub fn reassemble(bytes: &[u8]) -> Result<Flows, String> {
    let pkts = read_capture(bytes).map_err(|e| e.to_string())?;
    let mut decoded = Vec::with_capacity(pkts.len());
    for p in pkts {
        let t = decode_transport(&p).map_err(|e| format!("packet {}: malformed: {e}", p.number))?;
        decoded.push((p, t));
    }
    let own = interface_addresses(&decoded);
    // With several interfaces, a datagram shows on its sender's and its receiver's:
    // keep the receiver's copy (what was delivered).
    let multi = own.len() > 1;
    let mut flows = Flows {
        packets: decoded.len(),
        ..Flows::default()
    };
    for (p, t) in decoded {
        match t {
            Transport::Udp { src, dst, payload } => {
                if multi && own.get(&p.iface).is_some_and(|ip| *ip != dst.ip()) {
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
            } => {
                let f = flows.tcp.entry((src, dst)).or_default();
                if syn {
                    f.isn = Some(seq);
                    continue;
                }
                let isn = *f.isn.get_or_insert(seq.wrapping_sub(1));
                let off = seq.wrapping_sub(isn).wrapping_sub(1) as usize;
                if !payload.is_empty() {
                    if off > f.bytes.len() {
                        // A gap: the capture missed a segment. Keep offsets honest.
                        f.gaps += (off - f.bytes.len()) as u64;
                        f.bytes.resize(off, 0);
                    }
                    let end = off + payload.len();
                    if end > f.bytes.len() && end <= MAX_STREAM_BYTES {
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
