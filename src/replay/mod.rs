//! `tunnelbed replay`: read a capture, reassemble KCP sessions and TCP flows, decode the
//! h2tunnel and pong frames inside, and print a timeline per stream.

pub mod candy;
pub mod flows;
pub mod h2t;
pub mod kcp;
pub mod pong;
pub mod stream_log;

use std::fmt::Write;
use std::net::SocketAddr;

pub use flows::{reassemble, Flows};

/// One direction's reassembled bytes with (offset, packet, time) marks.
type Stream<'a> = (&'a [u8], &'a [(usize, usize, std::time::Duration)]);

/// The full report for a capture: every UDP/TCP flow, KCP sessions reassembled, and the
/// h2tunnel timeline of every connection that carries the tunnel. Errors name a packet.
pub fn render(capture: &[u8]) -> Result<String, String> {
    let flows = reassemble(capture)?;
    let base = flows
        .udp
        .values()
        .filter_map(|f| f.datagrams.first().map(|d| d.1))
        .chain(
            flows
                .tcp
                .values()
                .filter_map(|f| f.marks.first().map(|m| m.2)),
        )
        .min()
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} packets: {} UDP directions, {} TCP directions, {} other packets",
        flows.packets,
        flows.udp.len(),
        flows.tcp.len(),
        flows.other
    );
    // UDP: pair the two directions of each flow, reassemble KCP where it is KCP.
    let mut kcp: std::collections::BTreeMap<(SocketAddr, SocketAddr), kcp::KcpDirection> =
        Default::default();
    for ((src, dst), f) in &flows.udp {
        let bytes: usize = f.datagrams.iter().map(|d| d.2.len()).sum();
        if !kcp::looks_like_kcp(f) {
            let _ = writeln!(
                s,
                "udp {src} -> {dst}: {} datagrams, {bytes} bytes (not KCP)",
                f.datagrams.len()
            );
            continue;
        }
        let k = kcp::reassemble(f)?;
        let _ = writeln!(
            s,
            "kcp {src} -> {dst} conv {}: {} datagrams, {} data segments (+{} copies), {} acks, {} bytes in order{}",
            k.conv,
            f.datagrams.len(),
            k.segments,
            k.copies,
            k.acks,
            k.bytes.len(),
            match k.hole_at {
                Some(sn) => format!("; sn {sn} missing from the capture, {} segments after it not decoded", k.after_hole),
                None => String::new(),
            }
        );
        kcp.insert((*src, *dst), k);
    }
    for ((src, dst), f) in &flows.tcp {
        let _ = writeln!(
            s,
            "tcp {src} -> {dst}: {} bytes{}{}{}",
            f.bytes.len(),
            if f.fin { ", FIN" } else { "" },
            if f.rst { ", RST" } else { "" },
            if f.gaps > 0 {
                format!(", {} bytes missing from the capture", f.gaps)
            } else {
                String::new()
            }
        );
    }
    // Connections carrying h2tunnel: the direction that starts with the handshake and
    // was seen first is `->` (the client's).
    let mut conns: Vec<(String, Stream<'_>, Stream<'_>)> = Vec::new();
    for ((src, dst), k) in &kcp {
        if !h2t::is_h2tunnel(&k.bytes) || src > dst {
            continue;
        }
        let back = kcp.get(&(*dst, *src));
        let (b, bm) = back
            .map(|b| (&b.bytes[..], &b.marks[..]))
            .unwrap_or((&[], &[]));
        conns.push((
            format!("kcp {src} <-> {dst}"),
            (&k.bytes, &k.marks),
            (b, bm),
        ));
    }
    for ((src, dst), f) in &flows.tcp {
        if !h2t::is_h2tunnel(&f.bytes) || src > dst {
            continue;
        }
        let back = flows.tcp.get(&(*dst, *src));
        let (b, bm) = back
            .map(|b| (&b.bytes[..], &b.marks[..]))
            .unwrap_or((&[], &[]));
        conns.push((
            format!("tcp {src} <-> {dst}"),
            (&f.bytes, &f.marks),
            (b, bm),
        ));
    }
    for (name, a, b) in conns {
        let (fa, ta) = h2t::frames(a.0, a.1);
        let (fb, tb) = h2t::frames(b.0, b.1);
        // The client sends the first handshake.
        let a_first = match (fa.first(), fb.first()) {
            (Some(x), Some(y)) => (x.ts, x.packet) <= (y.ts, y.packet),
            (_, None) => true,
            (None, Some(_)) => false,
        };
        let (dirs, trailing) = if a_first {
            ([&fa[..], &fb[..]], [ta, tb])
        } else {
            ([&fb[..], &fa[..]], [tb, ta])
        };
        let _ = writeln!(
            s,
            "\nh2tunnel over {name} (-> is the client's direction; times from the first packet)"
        );
        s.push_str(&h2t::timeline(dirs, trailing, base));
    }
    // pong connections: the local's direction starts with the connection header.
    for ((src, dst), f) in &flows.tcp {
        if !pong::is_pong(&f.bytes) {
            continue;
        }
        let back = flows.tcp.get(&(*dst, *src));
        let (b, bm) = back
            .map(|b| (&b.bytes[..], &b.marks[..]))
            .unwrap_or((&[], &[]));
        let _ = writeln!(
            s,
            "\npong over tcp {src} -> {dst} (-> is the local's direction; times from the first packet)"
        );
        s.push_str(&pong::timeline((&f.bytes, &f.marks), (b, bm), base));
    }
    // Candy carriers: WebSockets whose client starts with VMAC (or DHCP).
    for ((src, dst), f) in &flows.tcp {
        if !candy::is_candy(&f.bytes) {
            continue;
        }
        let back = flows.tcp.get(&(*dst, *src));
        let (b, bm) = back
            .map(|b| (&b.bytes[..], &b.marks[..]))
            .unwrap_or((&[], &[]));
        let _ = writeln!(
            s,
            "
candy over websocket tcp {src} -> {dst} (-> is the client's direction; times from the first packet)"
        );
        s.push_str(&candy::timeline((&f.bytes, &f.marks), (b, bm), base));
    }
    Ok(s)
}
