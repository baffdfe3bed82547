//! The IPv4/TCP codec: a SYN the Linux kernel sent (captured from a TUN device), property
//! round trips, etherparse as an independent check of our encoder, and every cut or
//! corrupted packet refused with an error.

use std::net::Ipv4Addr;

use bytes::BytesMut;
use proptest::prelude::*;
use tunnelbed_tcpstack::wire::{
    DecodeError, Ipv4Header, Packet, TcpFlags, TcpHeader, TcpOptions, PROTO_TCP,
};

/// A SYN from Linux 6.x (`connect()` to 10.7.0.2:8080 through a TUN device in a test
/// namespace), read from the TUN fd: MSS 1460, SACK-permitted, timestamps, NOP, WS 10.
const LINUX_SYN: &str = "4500003c2a3240004006fc790a0700010a070002b0cc1f907fe6e2b100000000a002faf01cb30000020405b40402080aa06048f3000000000103030a";

#[test]
fn linux_syn_decodes_and_reencodes_byte_for_byte() {
    let raw = hex::decode(LINUX_SYN).unwrap();
    let p = Packet::decode(&raw).unwrap();
    assert_eq!(p.ip.src, Ipv4Addr::new(10, 7, 0, 1));
    assert_eq!(p.ip.dst, Ipv4Addr::new(10, 7, 0, 2));
    assert_eq!(p.ip.ttl, 64);
    assert!(p.ip.dont_fragment);
    assert_eq!(p.tcp.src_port, 45260);
    assert_eq!(p.tcp.dst_port, 8080);
    assert_eq!(p.tcp.seq, 0x7fe6e2b1);
    assert_eq!(p.tcp.flags, TcpFlags::SYN);
    assert_eq!(p.tcp.window, 64240);
    assert_eq!(
        p.tcp.options,
        TcpOptions {
            mss: Some(1460),
            window_scale: Some(10),
            sack_permitted: true,
            timestamps: Some((0xa06048f3, 0)),
        }
    );
    assert!(p.payload.is_empty());
    // Linux orders its SYN options the way we encode them: same bytes, same checksums.
    assert_eq!(p.to_bytes().unwrap().to_vec(), raw);
}

#[test]
fn linux_syn_with_a_flipped_bit_is_refused() {
    let raw = hex::decode(LINUX_SYN).unwrap();
    for i in 0..raw.len() {
        let mut b = raw.clone();
        b[i] ^= 0x01;
        assert!(Packet::decode(&b).is_err(), "flip in byte {i} accepted");
    }
}

#[test]
fn every_cut_is_an_error() {
    let raw = hex::decode(LINUX_SYN).unwrap();
    for n in 0..raw.len() {
        assert!(Packet::decode(&raw[..n]).is_err(), "cut at {n} accepted");
    }
}

#[test]
fn fragments_and_other_protocols_are_refused() {
    let mut raw = hex::decode(LINUX_SYN).unwrap();
    // more-fragments flag, checksum fixed up so only the fragment rule can refuse it
    raw[6] |= 0x20;
    fix_ip_checksum(&mut raw);
    assert_eq!(Packet::decode(&raw), Err(DecodeError::Fragment));
    let mut raw = hex::decode(LINUX_SYN).unwrap();
    raw[9] = 17;
    fix_ip_checksum(&mut raw);
    assert_eq!(Packet::decode(&raw), Err(DecodeError::NotTcp(17)));
}

#[test]
fn ip_options_are_skipped() {
    // Rebuild the Linux SYN with 4 bytes of IP options (NOP NOP NOP EOL).
    let raw = hex::decode(LINUX_SYN).unwrap();
    let mut b = vec![0x46];
    b.extend_from_slice(&raw[1..20]);
    b.extend_from_slice(&[1, 1, 1, 0]);
    b.extend_from_slice(&raw[20..]);
    let total = b.len() as u16;
    b[2..4].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(&mut b);
    let p = Packet::decode(&b).unwrap();
    assert_eq!(p.tcp.options.mss, Some(1460));
}

#[test]
fn bytes_beyond_total_length_are_ignored() {
    let mut raw = hex::decode(LINUX_SYN).unwrap();
    raw.extend_from_slice(&[0xee; 6]);
    assert!(Packet::decode(&raw).is_ok());
}

fn fix_ip_checksum(b: &mut [u8]) {
    let hl = usize::from(b[0] & 0x0f) * 4;
    b[10] = 0;
    b[11] = 0;
    let s = tunnelbed_tcpstack::wire::checksum::fold(tunnelbed_tcpstack::wire::checksum::add(
        0,
        &b[..hl],
    ));
    b[10..12].copy_from_slice(&s.to_be_bytes());
}

fn arb_options() -> impl Strategy<Value = TcpOptions> {
    (
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u8>()),
        any::<bool>(),
        proptest::option::of(any::<(u32, u32)>()),
    )
        .prop_map(
            |(mss, window_scale, sack_permitted, timestamps)| TcpOptions {
                mss,
                window_scale,
                sack_permitted,
                timestamps,
            },
        )
}

fn arb_packet() -> impl Strategy<Value = (Ipv4Header, TcpHeader, Vec<u8>)> {
    let ip = (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(|(s, d, ttl, tos, ident, df)| Ipv4Header {
            src: s.into(),
            dst: d.into(),
            protocol: PROTO_TCP,
            ttl,
            tos,
            ident,
            dont_fragment: df,
        });
    let tcp = (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
        arb_options(),
    )
        .prop_map(
            |(sp, dp, seq, ack, flags, window, urgent, options)| TcpHeader {
                src_port: sp,
                dst_port: dp,
                seq,
                ack,
                flags: TcpFlags(flags),
                window,
                urgent,
                options,
            },
        );
    (ip, tcp, proptest::collection::vec(any::<u8>(), 0..1500))
}

proptest! {
    #[test]
    fn round_trip((ip, tcp, payload) in arb_packet()) {
        let p = Packet { ip, tcp, payload: &payload };
        let b = p.to_bytes().unwrap();
        let d = Packet::decode(&b).unwrap();
        prop_assert_eq!(d, p);
    }

    /// etherparse, written by others, parses what we encode and agrees on every field
    /// and on both checksums.
    #[test]
    fn etherparse_agrees((ip, tcp, payload) in arb_packet()) {
        let p = Packet { ip, tcp, payload: &payload };
        let b = p.to_bytes().unwrap();
        let (eip, rest) = etherparse::Ipv4Header::from_slice(&b).unwrap();
        prop_assert_eq!(eip.source, ip.src.octets());
        prop_assert_eq!(eip.destination, ip.dst.octets());
        prop_assert_eq!(eip.time_to_live, ip.ttl);
        prop_assert_eq!(eip.identification, ip.ident);
        prop_assert_eq!(eip.dont_fragment, ip.dont_fragment);
        prop_assert!(!eip.more_fragments);
        prop_assert_eq!(eip.protocol, etherparse::IpNumber::TCP);
        prop_assert_eq!(usize::from(eip.total_len), b.len());
        prop_assert_eq!(eip.header_checksum, eip.calc_header_checksum());
        let (etcp, epayload) = etherparse::TcpHeader::from_slice(rest).unwrap();
        prop_assert_eq!(etcp.source_port, tcp.src_port);
        prop_assert_eq!(etcp.destination_port, tcp.dst_port);
        prop_assert_eq!(etcp.sequence_number, tcp.seq);
        prop_assert_eq!(etcp.acknowledgment_number, tcp.ack);
        prop_assert_eq!(etcp.window_size, tcp.window);
        prop_assert_eq!(etcp.urgent_pointer, tcp.urgent);
        let f = tcp.flags.0;
        prop_assert_eq!(
            [etcp.fin, etcp.syn, etcp.rst, etcp.psh, etcp.ack, etcp.urg, etcp.ece, etcp.cwr],
            [f & 1 != 0, f & 2 != 0, f & 4 != 0, f & 8 != 0, f & 16 != 0, f & 32 != 0, f & 64 != 0, f & 128 != 0]
        );
        prop_assert_eq!(epayload, &payload[..]);
        prop_assert_eq!(etcp.checksum, etcp.calc_checksum_ipv4(&eip, epayload).unwrap());
        let mut seen = TcpOptions::default();
        for o in etcp.options_iterator() {
            use etherparse::TcpOptionElement as E;
            match o.unwrap() {
                E::MaximumSegmentSize(m) => seen.mss = Some(m),
                E::WindowScale(w) => seen.window_scale = Some(w),
                E::SelectiveAcknowledgementPermitted => seen.sack_permitted = true,
                E::Timestamp(a, b) => seen.timestamps = Some((a, b)),
                E::Noop => {}
                other => prop_assert!(false, "unexpected option {:?}", other),
            }
        }
        prop_assert_eq!(seen, tcp.options);
    }

    /// Whatever the bytes, decoding returns (no panic), and what decodes re-encodes to
    /// something that decodes to the same packet.
    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(p) = Packet::decode(&b) {
            let again = p.to_bytes().unwrap();
            prop_assert_eq!(Packet::decode(&again).unwrap(), p);
        }
    }

    /// Arbitrary option bytes inside a well-formed header: an error or options, never a panic.
    #[test]
    fn arbitrary_options_never_panic(opts in proptest::collection::vec(any::<u8>(), 0..=40)) {
        let _ = TcpOptions::decode(&opts);
        let mut b = BytesMut::new();
        if let Ok(o) = TcpOptions::decode(&opts) {
            o.encode(&mut b);
            prop_assert_eq!(TcpOptions::decode(&b).unwrap(), o);
        }
    }
}
