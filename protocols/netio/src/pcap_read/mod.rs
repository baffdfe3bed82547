//! Reading captures back: a small, bounded pcapng and classic pcap reader that never
//! panics, and the IP/UDP/TCP decoding `tunnelbed replay` builds flows from. Errors name
//! the packet (1-based, as Wireshark counts) and the byte offset.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use thiserror::Error;

/// Largest block or packet accepted (pcapng allows more; real captures never need it).
pub const MAX_BLOCK: usize = 16 * 1024 * 1024;

/// Why a capture could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PcapReadError {
    /// Not a pcapng or pcap file.
    #[error("not a pcapng or pcap file (first bytes {0:02x?})")]
    NotACapture(Vec<u8>),
    /// The file ends inside a block or packet.
    #[error("truncated at packet {packet} (byte offset {offset}): {what}")]
    Truncated {
        /// 1-based packet number being read.
        packet: usize,
        /// Byte offset of the block.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A length field is impossible.
    #[error("bad {what} at packet {packet} (byte offset {offset}): {value}")]
    BadLength {
        /// 1-based packet number.
        packet: usize,
        /// Byte offset.
        offset: usize,
        /// Which field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A packet names an interface that was never described.
    #[error("packet {packet} names interface {iface}, which the file does not describe")]
    UnknownInterface {
        /// 1-based packet number.
        packet: usize,
        /// Interface id.
        iface: u32,
    },
}

/// One captured packet with its link type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedPacket {
    /// 1-based position among packets.
    pub number: usize,
    /// Interface index (0 for classic pcap).
    pub iface: u32,
    /// Interface name when the file gives one.
    pub iface_name: Option<String>,
    /// Timestamp since 1970.
    pub ts: Duration,
    /// Link-layer type (101 raw IP, 1 Ethernet, 113 Linux cooked, 0/108 loopback).
    pub linktype: u16,
    /// The captured bytes.
    pub data: Vec<u8>,
}

struct Iface {
    linktype: u16,
    name: Option<String>,
    ts_div: u64, // units per second
}

fn rd_u16(b: &[u8], le: bool) -> u16 {
    let a = [b[0], b[1]];
    if le {
        u16::from_le_bytes(a)
    } else {
        u16::from_be_bytes(a)
    }
}

fn rd_u32(b: &[u8], le: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    }
}

/// Reads every packet of a pcapng or classic pcap file held in memory.
pub fn read_capture(bytes: &[u8]) -> Result<Vec<CapturedPacket>, PcapReadError> {
    if bytes.len() >= 4 && bytes[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
        read_pcapng(bytes)
    } else if bytes.len() >= 4
        && matches!(
            bytes[..4],
            [0xd4, 0xc3, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0xc3, 0xd4]
                | [0x4d, 0x3c, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0x3c, 0x4d]
        )
    {
        read_pcap(bytes)
    } else {
        Err(PcapReadError::NotACapture(
            bytes.iter().take(8).copied().collect(),
        ))
    }
}

fn read_pcap(b: &[u8]) -> Result<Vec<CapturedPacket>, PcapReadError> {
    if b.len() < 24 {
        return Err(PcapReadError::Truncated {
            packet: 0,
            offset: 0,
            what: "pcap file header",
        });
    }
    let le = b[0] == 0xd4 || b[0] == 0x4d;
    let nanos = matches!(b[..4], [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d]);
    let linktype = (rd_u32(&b[20..24], le) & 0xffff) as u16;
    let mut off = 24;
    let mut out = Vec::new();
    while off < b.len() {
        let number = out.len() + 1;
        if b.len() - off < 16 {
            return Err(PcapReadError::Truncated {
                packet: number,
                offset: off,
                what: "packet header",
            });
        }
        let secs = rd_u32(&b[off..], le) as u64;
        let frac = rd_u32(&b[off + 4..], le) as u64;
        let caplen = rd_u32(&b[off + 8..], le) as usize;
        if caplen > MAX_BLOCK {
            return Err(PcapReadError::BadLength {
                packet: number,
                offset: off,
                what: "captured length",
                value: caplen as u64,
            });
        }
        let start = off + 16;
        if b.len() - start < caplen {
            return Err(PcapReadError::Truncated {
                packet: number,
                offset: off,
                what: "packet data",
            });
        }
        let ts = Duration::from_secs(secs)
            + if nanos {
                Duration::from_nanos(frac)
            } else {
                Duration::from_micros(frac)
            };
        out.push(CapturedPacket {
            number,
            iface: 0,
            iface_name: None,
            ts,
            linktype,
            data: b[start..start + caplen].to_vec(),
        });
        off = start + caplen;
    }
    Ok(out)
}

fn read_pcapng(b: &[u8]) -> Result<Vec<CapturedPacket>, PcapReadError> {
    let mut off = 0;
    let mut le = true;
    let mut ifaces: Vec<Iface> = Vec::new();
    let mut out = Vec::new();
    while off < b.len() {
        let number = out.len() + 1;
        if b.len() - off < 12 {
            return Err(PcapReadError::Truncated {
                packet: number,
                offset: off,
                what: "block header",
            });
        }
        let btype = &b[off..off + 4];
        if btype == [0x0a, 0x0d, 0x0d, 0x0a] {
            // Section header: the byte-order magic decides endianness for the section.
            le = b[off + 8..off + 12] == [0x4d, 0x3c, 0x2b, 0x1a];
            if !le && b[off + 8..off + 12] != [0x1a, 0x2b, 0x3c, 0x4d] {
                return Err(PcapReadError::BadLength {
                    packet: number,
                    offset: off,
                    what: "byte-order magic",
                    value: rd_u32(&b[off + 8..], true) as u64,
                });
            }
            ifaces.clear();
        }
        let btype = rd_u32(btype, le);
        let len = rd_u32(&b[off + 4..], le) as usize;
        if len < 12 || !len.is_multiple_of(4) || len > MAX_BLOCK {
            return Err(PcapReadError::BadLength {
                packet: number,
                offset: off,
                what: "block length",
                value: len as u64,
            });
        }
        if b.len() - off < len {
            return Err(PcapReadError::Truncated {
                packet: number,
                offset: off,
                what: "block body",
            });
        }
        let body = &b[off + 8..off + len - 4];
        match btype {
            1 => {
                if body.len() < 8 {
                    return Err(PcapReadError::Truncated {
                        packet: number,
                        offset: off,
                        what: "interface description",
                    });
                }
                let linktype = rd_u16(body, le);
                let (name, ts_div) = idb_options(&body[8..], le);
                ifaces.push(Iface {
                    linktype,
                    name,
                    ts_div,
                });
            }
            6 => {
                if body.len() < 20 {
                    return Err(PcapReadError::Truncated {
                        packet: number,
                        offset: off,
                        what: "enhanced packet header",
                    });
                }
                let iface = rd_u32(body, le);
                let hi = rd_u32(&body[4..], le) as u64;
                let lo = rd_u32(&body[8..], le) as u64;
                let caplen = rd_u32(&body[12..], le) as usize;
                if caplen > body.len() - 20 {
                    return Err(PcapReadError::BadLength {
                        packet: number,
                        offset: off,
                        what: "captured length",
                        value: caplen as u64,
                    });
                }
                let i = ifaces
                    .get(iface as usize)
                    .ok_or(PcapReadError::UnknownInterface {
                        packet: number,
                        iface,
                    })?;
                let units = (hi << 32) | lo;
                let ts = Duration::from_secs(units / i.ts_div)
                    + Duration::from_nanos(
                        ((units % i.ts_div) as u128 * 1_000_000_000 / i.ts_div as u128) as u64,
                    );
                out.push(CapturedPacket {
                    number,
                    iface,
                    iface_name: i.name.clone(),
                    ts,
                    linktype: i.linktype,
                    data: body[20..20 + caplen].to_vec(),
                });
            }
            3 => {
                // Simple packet block: interface 0, no timestamp.
                if body.len() < 4 {
                    return Err(PcapReadError::Truncated {
                        packet: number,
                        offset: off,
                        what: "simple packet",
                    });
                }
                let i = ifaces.first().ok_or(PcapReadError::UnknownInterface {
                    packet: number,
                    iface: 0,
                })?;
                let olen = rd_u32(body, le) as usize;
                let caplen = olen.min(body.len() - 4);
                out.push(CapturedPacket {
                    number,
                    iface: 0,
                    iface_name: i.name.clone(),
                    ts: Duration::ZERO,
                    linktype: i.linktype,
                    data: body[4..4 + caplen].to_vec(),
                });
            }
            _ => {} // section header, statistics, name resolution, custom: skipped
        }
        off += len;
    }
    Ok(out)
}

fn idb_options(mut o: &[u8], le: bool) -> (Option<String>, u64) {
    let mut name = None;
    let mut div = 1_000_000u64;
    while o.len() >= 4 {
        let code = rd_u16(o, le);
        let len = rd_u16(&o[2..], le) as usize;
        let padded = (len + 3) & !3;
        if code == 0 || o.len() < 4 + padded {
            break;
        }
        let v = &o[4..4 + len];
        match code {
            2 => name = Some(String::from_utf8_lossy(v).into_owned()),
            9 if len == 1 => {
                let r = v[0];
                let exp = (r & 0x7f) as u32;
                div = if r & 0x80 == 0 {
                    10u64.checked_pow(exp).unwrap_or(1_000_000_000)
                } else {
                    2u64.checked_pow(exp).unwrap_or(1 << 30)
                };
            }
            _ => {}
        }
        o = &o[4 + padded..];
    }
    (name, div.max(1))
}

/// What an IP packet carries, as far as replay cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram.
    Udp {
        /// Source.
        src: SocketAddr,
        /// Destination.
        dst: SocketAddr,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A TCP segment.
    Tcp {
        /// Source.
        src: SocketAddr,
        /// Destination.
        dst: SocketAddr,
        /// Sequence number.
        seq: u32,
        /// SYN flag.
        syn: bool,
        /// FIN flag.
        fin: bool,
        /// RST flag.
        rst: bool,
        /// Payload.
        payload: Vec<u8>,
    },
    /// Something else (other protocol, fragment, non-IP frame).
    Other,
}

/// Decodes the IP/UDP/TCP inside a captured packet according to its link type.
/// Returns a description of what was wrong when the packet is malformed.
pub fn decode_transport(p: &CapturedPacket) -> Result<Transport, String> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let sliced = match p.linktype {
        101 | 228 | 229 => SlicedPacket::from_ip(&p.data).map_err(|e| e.to_string())?,
        1 => SlicedPacket::from_ethernet(&p.data).map_err(|e| e.to_string())?,
        113 => {
            if p.data.len() < 16 {
                return Err("Linux cooked header truncated".into());
            }
            SlicedPacket::from_ip(&p.data[16..]).map_err(|e| e.to_string())?
        }
        0 | 108 => {
            if p.data.len() < 4 {
                return Err("loopback header truncated".into());
            }
            SlicedPacket::from_ip(&p.data[4..]).map_err(|e| e.to_string())?
        }
        other => return Err(format!("unsupported link type {other}")),
    };
    let (sip, dip): (IpAddr, IpAddr) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        Some(NetSlice::Ipv6(v6)) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return Ok(Transport::Other),
    };
    Ok(match &sliced.transport {
        Some(TransportSlice::Udp(u)) => Transport::Udp {
            src: SocketAddr::new(sip, u.source_port()),
            dst: SocketAddr::new(dip, u.destination_port()),
            payload: u.payload().to_vec(),
        },
        Some(TransportSlice::Tcp(t)) => Transport::Tcp {
            src: SocketAddr::new(sip, t.source_port()),
            dst: SocketAddr::new(dip, t.destination_port()),
            seq: t.sequence_number(),
            syn: t.syn(),
            fin: t.fin(),
            rst: t.rst(),
            payload: t.payload().to_vec(),
        },
        _ => Transport::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Capture;
    use std::sync::Arc;

    fn sample() -> Vec<u8> {
        let cap = Capture::new(Arc::new(|| Duration::from_millis(3)));
        let a = cap.interface("a");
        let s: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let d: SocketAddr = "10.0.0.2:2000".parse().unwrap();
        a.udp(s, d, b"hello");
        let mut f = a.tcp_flow(s, d, true);
        f.sent(b"stream bytes");
        f.fin_out();
        cap.to_bytes()
    }

    #[test]
    fn reads_back_what_capture_wrote() {
        let pkts = read_capture(&sample()).unwrap();
        assert_eq!(pkts.len(), 6); // udp, syn, syn-ack, ack, data, fin
        assert_eq!(pkts[0].iface_name.as_deref(), Some("a"));
        assert_eq!(
            pkts[0].ts,
            crate::capture::CAPTURE_EPOCH + Duration::from_millis(3)
        );
        match decode_transport(&pkts[0]).unwrap() {
            Transport::Udp { payload, .. } => assert_eq!(payload, b"hello"),
            t => panic!("{t:?}"),
        }
        match decode_transport(&pkts[4]).unwrap() {
            Transport::Tcp { payload, syn, .. } => {
                assert_eq!(payload, b"stream bytes");
                assert!(!syn);
            }
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn every_truncation_is_an_error_with_a_packet_number() {
        let full = sample();
        for cut in 1..full.len() {
            match read_capture(&full[..cut]) {
                Ok(p) => assert!(p.len() <= 6),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        let e = read_capture(&full[..full.len() - 3]).unwrap_err();
        assert!(
            matches!(e, PcapReadError::Truncated { packet: 6, .. }),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut d = data.clone();
            let _ = read_capture(&d);
            if d.len() >= 4 { d[..4].copy_from_slice(&[0x0a, 0x0d, 0x0d, 0x0a]); }
            if let Ok(pkts) = read_capture(&d) {
                for p in &pkts { let _ = decode_transport(p); }
            }
        }
    }
}
