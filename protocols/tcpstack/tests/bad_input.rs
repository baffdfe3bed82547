//! Crafted bad input against a healthy connection: every row is fed to a stack holding
//! an established connection with data both ways in flight, and must leave that
//! connection exactly as it was (state, sequence numbers, buffers). The table of what
//! each row got back is snapshotted and copied into the README.

mod common;

use std::fmt::Write as _;

use common::*;
use tunnelbed_tcpstack::wire::checksum;
use tunnelbed_tcpstack::{State, TcpFlags};

fn fix_ip(b: &mut [u8]) {
    let hl = (usize::from(b[0] & 0x0f) * 4).min(b.len());
    b[10] = 0;
    b[11] = 0;
    let s = checksum::fold(checksum::add(0, &b[..hl]));
    b[10..12].copy_from_slice(&s.to_be_bytes());
}

fn fix_tcp(b: &mut [u8]) {
    let hl = usize::from(b[0] & 0x0f) * 4;
    let seg_len = b.len() - hl;
    b[hl + 16] = 0;
    b[hl + 17] = 0;
    let src = [b[12], b[13], b[14], b[15]].into();
    let dst = [b[16], b[17], b[18], b[19]].into();
    let sum = checksum::add(
        checksum::pseudo_header(src, dst, 6, seg_len as u16),
        &b[hl..],
    );
    let s = checksum::fold(sum);
    b[hl + 16..hl + 18].copy_from_slice(&s.to_be_bytes());
}

/// A data segment for the healthy connection, as bytes to corrupt.
fn healthy_data() -> Vec<u8> {
    Seg::data(PEER_ISN + 1 + 10, OUR_ISN + 1, b"evil").bytes()
}

/// The healthy connection's data segment with options bytes replaced by `opts` (a
/// multiple of 4 long), checksums fixed, so only the options are wrong.
fn with_options(opts: &[u8]) -> Vec<u8> {
    let mut s = Seg::ack(PEER_ISN + 1 + 10, OUR_ISN + 1);
    s.tcp.options.mss = Some(1460);
    s.tcp.options.timestamps = Some((1, 2)); // room: 4 + 10 -> 16 bytes of options
    let mut b = s.bytes();
    assert!(opts.len() <= 16);
    b[40..40 + opts.len()].copy_from_slice(opts);
    for x in &mut b[40 + opts.len()..56] {
        *x = 1; // NOP
    }
    fix_tcp(&mut b);
    b
}

struct Row {
    name: &'static str,
    bytes: Vec<u8>,
}

fn rows() -> Vec<Row> {
    let mut v = Vec::new();
    let mut push = |name, bytes| v.push(Row { name, bytes });

    let mut b = healthy_data();
    let n = b.len();
    b[n - 1] ^= 0xff;
    push("TCP checksum wrong", b);

    let mut b = healthy_data();
    b[8] = 3; // TTL changed, IP checksum not fixed
    push("IPv4 header checksum wrong", b);

    push(
        "truncated IPv4 header (12 bytes)",
        healthy_data()[..12].to_vec(),
    );

    let mut b = healthy_data()[..30].to_vec();
    b[2..4].copy_from_slice(&30u16.to_be_bytes());
    fix_ip(&mut b);
    push("truncated TCP header (total length 30)", b);

    let mut b = healthy_data();
    b[0] = 0x44;
    fix_ip(&mut b);
    push("IHL 4 (below 5 words)", b);

    let mut b = healthy_data();
    let t = (b.len() + 100) as u16;
    b[2..4].copy_from_slice(&t.to_be_bytes());
    fix_ip(&mut b);
    push("total length beyond the bytes", b);

    let mut b = healthy_data();
    b[32] = 0xf0; // data offset 60 bytes > segment
    fix_tcp(&mut b);
    push("TCP data offset past the segment", b);

    let mut b = healthy_data();
    b[32] = 0x40; // data offset 16 bytes < 20
    fix_tcp(&mut b);
    push("TCP data offset below 5 words", b);

    push("option length 0", with_options(&[30, 0, 0, 0]));
    push("option length 1", with_options(&[2, 1, 0, 0]));
    push("MSS option with length 3", with_options(&[2, 3, 5, 1]));
    push(
        "window scale option with length 4",
        with_options(&[3, 4, 7, 1]),
    );
    push(
        "option running past the header",
        with_options(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8, 10]),
    );
    push(
        "option kind with no length byte",
        with_options(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]),
    );

    let mut b = healthy_data();
    b[6] = 0x20; // more fragments
    fix_ip(&mut b);
    push("IPv4 fragment (MF set)", b);

    let mut b = healthy_data();
    b[7] = 0x10; // offset 16
    fix_ip(&mut b);
    push("IPv4 fragment (offset 128)", b);

    let mut b = healthy_data();
    b[9] = 17;
    fix_ip(&mut b);
    push("UDP, not TCP", b);

    let mut b = healthy_data();
    b[0] = 0x65;
    push("IP version 6", b);

    push("empty packet", Vec::new());

    push(
        "RST far out of the window",
        Seg::rst(PEER_ISN + 1 + 50_000_000).bytes(),
    );
    push(
        "RST in the window, not exact",
        Seg::rst(PEER_ISN + 1 + 3).bytes(),
    );
    push(
        "RST|ACK in the window, not exact",
        Seg::flags(TcpFlags::RST | TcpFlags::ACK, PEER_ISN + 100, OUR_ISN + 1).bytes(),
    );
    push("SYN on the established tuple", Seg::syn(77).bytes());
    push(
        "SYN|ACK on the established tuple",
        Seg::flags(TcpFlags::SYN | TcpFlags::ACK, 77, OUR_ISN + 1).bytes(),
    );
    push(
        "ACK of data never sent",
        Seg::ack(PEER_ISN + 1 + 10, OUR_ISN + 1 + 1_000_000).bytes(),
    );
    push(
        "old duplicate data (before what we acked)",
        Seg::data(PEER_ISN + 1 - 100, OUR_ISN + 1, &[0; 50]).bytes(),
    );
    push(
        "data beyond the window",
        Seg::data(PEER_ISN + 1 + 10_000_000, OUR_ISN + 1, &[0; 50]).bytes(),
    );
    push(
        "data without the ACK flag",
        Seg::flags(TcpFlags::PSH, PEER_ISN + 1 + 10, 0).bytes(),
    );
    push(
        "segment with no flags",
        Seg::flags(TcpFlags(0), PEER_ISN + 1 + 10, 0).bytes(),
    );
    push(
        "ACK for an unknown connection",
        Seg::ack(1, 2).sport(40999).bytes(),
    );
    push(
        "FIN for an unknown connection",
        Seg::flags(TcpFlags::FIN, 1, 0).sport(40999).bytes(),
    );
    push(
        "RST for an unknown connection",
        Seg::rst(1).sport(40999).bytes(),
    );
    push(
        "SYN to a port with no listener",
        Seg::syn(1).dport(81).bytes(),
    );
    let mut s = Seg::syn(1);
    s.src = std::net::SocketAddrV4::new(std::net::Ipv4Addr::BROADCAST, PEER_PORT);
    push("SYN from a broadcast source", s.bytes());
    let mut s = Seg::syn(1);
    s.src.set_port(0);
    s.tcp.src_port = 0;
    push("SYN from port 0", s.bytes());
    v
}

#[test]
fn bad_input_changes_no_healthy_connection() {
    let mut s = Script::new(config());
    let c = s.establish();
    // Healthy state: 10 bytes from the peer unread, 500 of ours un-acked.
    s.send(&Seg::data(PEER_ISN + 1, OUR_ISN + 1, &[1; 10]))
        .unwrap();
    s.write(c, &[2; 500]).unwrap();
    s.take();
    s.events();
    let before = s.stack.info(c).unwrap();
    assert_eq!(before.state, State::Established);
    let mut table = String::from("| case | handle_input | stack sent |\n|---|---|---|\n");
    for row in rows() {
        let r = s.stack.handle_input(s.now, &row.bytes);
        let sent: Vec<String> = s
            .take()
            .iter()
            .map(|o| {
                let to_healthy =
                    o.tcp.src_port == PORT && o.tcp.dst_port == PEER_PORT && o.ip.dst == PEER;
                format!(
                    "{} {}",
                    o.tcp.flags,
                    if to_healthy {
                        "(healthy tuple)"
                    } else {
                        "(to the stray's tuple)"
                    }
                )
            })
            .collect();
        let result = match &r {
            Ok(()) => "decoded".to_string(),
            Err(e) => format!("refused: {e}"),
        };
        let cell = |x: &str| x.replace('|', "\\|");
        let _ = writeln!(
            table,
            "| {} | {} | {} |",
            cell(row.name),
            result,
            cell(&if sent.is_empty() {
                "nothing".to_string()
            } else {
                sent.join(", ")
            })
        );
        let after = s.stack.info(c).unwrap();
        assert_eq!(
            after, before,
            "row {:?} changed the healthy connection",
            row.name
        );
        assert!(s.events().is_empty(), "row {:?} raised an event", row.name);
    }
    assert_eq!(
        s.stack.connection_count(),
        1,
        "no connection created or lost"
    );
    // And the healthy connection still works: read, get acked, finish.
    let mut b = [0u8; 64];
    assert_eq!(s.read(c, &mut b), Ok(10));
    s.send(&Seg::ack(PEER_ISN + 11, OUR_ISN + 501)).unwrap();
    assert_eq!(s.stack.unacked(c), 0);
    s.send(&Seg::fin(PEER_ISN + 11, OUR_ISN + 501)).unwrap();
    assert_eq!(s.stack.state(c), Some(State::CloseWait));
    let stats = s.stack.stats();
    assert!(stats.bad_packets >= 19, "{stats:?}");
    insta::assert_snapshot!(table);
}
