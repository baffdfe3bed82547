//! The reader against what our own capture writes, classic pcap from `pcap-file`'s
//! writer, hand-made oddities, and truncated or bit-flipped captures (proptest).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, TsResolution};

use super::fuzzing::fuzz_read_capture;
use super::*;
use crate::capture::Capture;

fn addrs() -> (SocketAddr, SocketAddr) {
    (
        "10.0.0.1:1000".parse().unwrap(),
        "10.0.0.2:2000".parse().unwrap(),
    )
}

/// Six packets on one interface: a UDP datagram and a TCP connection with data and FIN.
fn sample() -> Vec<u8> {
    let cap = Capture::new(Arc::new(|| Duration::from_millis(3)));
    let a = cap.interface("a");
    let (s, d) = addrs();
    a.udp(s, d, b"hello");
    let mut f = a.tcp_flow(s, d, true);
    f.sent(b"stream bytes");
    f.fin_out();
    cap.to_bytes()
}

/// The first packet of [`sample`], as raw IPv4.
fn first_ip_packet() -> Vec<u8> {
    read_capture(&sample()).unwrap()[0].data.clone()
}

#[test]
fn reads_back_what_capture_wrote() {
    let pkts = read_capture(&sample()).unwrap();
    assert_eq!(pkts.len(), 6); // udp, syn, syn-ack, ack, data, fin
    assert_eq!(pkts[0].iface_name.as_deref(), Some("a"));
    assert_eq!(pkts[0].linktype, 101);
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
    assert!(e.to_string().starts_with("truncated at packet 6"), "{e}");
    let e = read_capture(&full[..5]).unwrap_err();
    assert!(
        matches!(
            e,
            PcapReadError::Truncated {
                what: "block header",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn not_a_capture_shows_the_first_bytes() {
    let e = read_capture(b"this is not a capture").unwrap_err();
    assert_eq!(e, PcapReadError::NotACapture(b"this is ".to_vec()));
    assert!(e.to_string().starts_with("not a pcapng or pcap file"));
    assert!(matches!(
        read_capture(b"\x0a\x0d"),
        Err(PcapReadError::NotACapture(_))
    ));
}

/// A classic pcap, microseconds, snap length 64 with a packet cut by it (original
/// length larger than the snap length, which real captures with `-s` have).
#[test]
fn classic_pcap_reads_with_its_link_type_and_time() {
    let ip = first_ip_packet();
    let header = PcapHeader {
        snaplen: 64,
        datalink: DataLink::RAW,
        ts_resolution: TsResolution::MicroSecond,
        endianness: pcap_file::Endianness::Little,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    let ts = Duration::new(1_700_000_000, 123_456_000);
    w.write_packet(&PcapPacket::new(ts, ip.len() as u32, &ip))
        .unwrap();
    let mut bytes = w.into_writer();
    // A second packet cut at 8 bytes whose original length (1500) is over the snap length.
    let mut cut = Vec::new();
    for v in [1u32, 0, 8, 1500] {
        cut.extend_from_slice(&v.to_le_bytes());
    }
    cut.extend_from_slice(&ip[..8]);
    bytes.extend_from_slice(&cut);
    let pkts = read_capture(&bytes).unwrap();
    assert_eq!(pkts.len(), 2);
    assert_eq!(pkts[0].ts, ts);
    assert_eq!(pkts[0].linktype, 101);
    assert_eq!(pkts[0].iface_name, None);
    assert!(matches!(
        decode_transport(&pkts[0]).unwrap(),
        Transport::Udp { .. }
    ));
    assert_eq!(pkts[1].number, 2);
    assert_eq!(pkts[1].data, ip[..8]);
    let e = read_capture(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(
        matches!(
            e,
            PcapReadError::Truncated {
                packet: 2,
                what: "packet data",
                ..
            }
        ),
        "{e}"
    );
}

/// An interface without `if_tsresol` counts microseconds; a simple packet block has
/// no timestamp and is cut to its original length; an unknown interface is named.
#[test]
fn pcapng_time_scale_simple_packets_and_interfaces() {
    let ip = first_ip_packet();
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 0))
        .unwrap();
    // pcap-file writes the raw units field as nanoseconds: 2_500_000 units = 2.5 s in µs.
    let epb = EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::from_nanos(2_500_000),
        original_len: ip.len() as u32,
        data: Cow::Borrowed(&ip[..]),
        options: vec![],
    };
    let epb_at = w.get_ref().len();
    w.write_pcapng_block(epb).unwrap();
    let epb_bytes = w.get_ref()[epb_at..].to_vec();
    w.write_pcapng_block(SimplePacketBlock {
        original_len: 9,
        data: Cow::Borrowed(&ip[..12]),
    })
    .unwrap();
    let good = w.get_ref().clone();
    let pkts = read_capture(&good).unwrap();
    assert_eq!(pkts.len(), 2);
    assert_eq!(pkts[0].ts, Duration::from_millis(2500));
    assert_eq!(pkts[1].ts, Duration::ZERO);
    assert_eq!(pkts[1].data, ip[..9]);
    // The writer refuses an undescribed interface, so patch one in by hand.
    let mut bad = good;
    bad.extend_from_slice(&epb_bytes);
    let at = bad.len() - epb_bytes.len() + 8;
    bad[at..at + 4].copy_from_slice(&7u32.to_le_bytes());
    let e = read_capture(&bad).unwrap_err();
    assert_eq!(
        e,
        PcapReadError::UnknownInterface {
            packet: 3,
            iface: 7
        }
    );
}

#[test]
fn a_block_over_the_bound_is_refused_and_a_bad_length_is_malformed() {
    let full = sample();
    // The second block (the interface description) starts after the section header.
    let shb_len = u32::from_le_bytes(full[4..8].try_into().unwrap()) as usize;
    let mut bad = full.clone();
    bad[shb_len + 4..shb_len + 8].copy_from_slice(&13u32.to_le_bytes());
    let e = read_capture(&bad).unwrap_err();
    assert!(
        matches!(
            e,
            PcapReadError::Malformed {
                packet: 1,
                offset,
                ..
            } if offset == shb_len
        ),
        "{e}"
    );
    // A complete block longer than MAX_BLOCK: an unknown block type, padded out.
    let big = MAX_BLOCK + 16;
    let mut huge = full[..shb_len].to_vec();
    huge.extend_from_slice(&0x0bad_0000u32.to_le_bytes());
    huge.extend_from_slice(&(big as u32).to_le_bytes());
    huge.resize(shb_len + big - 4, 0);
    huge.extend_from_slice(&(big as u32).to_le_bytes());
    let e = read_capture(&huge).unwrap_err();
    assert!(
        matches!(
            e,
            PcapReadError::BadLength {
                what: "block length",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn link_layers_replay_decodes() {
    let ip = first_ip_packet();
    let with = |linktype, prefix: &[u8]| CapturedPacket {
        number: 1,
        iface: 0,
        iface_name: None,
        ts: Duration::ZERO,
        linktype,
        data: [prefix, &ip[..]].concat(),
    };
    for p in [with(113, &[0; 16]), with(0, &[2, 0, 0, 0]), with(228, &[])] {
        assert!(
            matches!(decode_transport(&p), Ok(Transport::Udp { .. })),
            "{}",
            p.linktype
        );
    }
    let mut eth = vec![0u8; 12];
    eth.extend_from_slice(&[0x08, 0x00]);
    assert!(matches!(
        decode_transport(&with(1, &eth)),
        Ok(Transport::Udp { .. })
    ));
    let short = CapturedPacket {
        data: vec![0; 3],
        ..with(108, &[])
    };
    assert_eq!(
        decode_transport(&short).unwrap_err().to_string(),
        "loopback header truncated"
    );
    assert_eq!(
        decode_transport(&with(147, &[])),
        Err(TransportError::UnsupportedLinkType(147))
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let mut d = data.clone();
        fuzz_read_capture(&d);
        if d.len() >= 4 { d[..4].copy_from_slice(&PCAPNG_MAGIC); }
        fuzz_read_capture(&d);
        if d.len() >= 4 { d[..4].copy_from_slice(&PCAP_MAGICS[0]); }
        fuzz_read_capture(&d);
    }

    /// Real captures cut anywhere and with bytes flipped anywhere: the reader answers
    /// (packets or an error naming one) and never panics.
    #[test]
    fn truncated_and_flipped_captures_never_panic(
        cut in 0usize..1000,
        flips in proptest::collection::vec((0usize..1000, 1u8..=255), 0..6),
        classic in proptest::bool::ANY,
    ) {
        let mut d = if classic { classic_sample() } else { sample() };
        for (at, x) in flips {
            let i = at % d.len();
            d[i] ^= x;
        }
        d.truncate(cut % (d.len() + 1));
        fuzz_read_capture(&d);
    }
}

/// [`sample`]'s packets in a classic pcap (nanoseconds, big endian).
fn classic_sample() -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::RAW,
        ts_resolution: TsResolution::NanoSecond,
        endianness: pcap_file::Endianness::Big,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for p in read_capture(&sample()).unwrap() {
        w.write_packet(&PcapPacket::new(p.ts, p.data.len() as u32, &p.data))
            .unwrap();
    }
    w.into_writer()
}
