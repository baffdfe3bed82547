//! Candy connections in reassembled TCP flows: the WebSocket upgrade, every WebSocket
//! frame, the Candy message in each binary frame, and the IPv4 packet inside every
//! FORWARD (addresses, protocol, ports or ICMP type), both directions merged by capture
//! time. Framing stops at the first frame it cannot read and says why.

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use tunnelbed_candy::wire::Message;

/// One direction's reassembled bytes with (offset, packet, time) marks.
type Stream<'a> = (&'a [u8], &'a [(usize, usize, Duration)]);

/// Longest WebSocket payload decoded (larger ones end the decode: not a Candy carrier).
const MAX_FRAME: u64 = 1 << 20;

/// Whether a client -> server byte stream starts with a WebSocket upgrade request.
pub fn is_websocket(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    let Some(end) = find(head, b"\r\n\r\n") else {
        return false;
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    text.starts_with("get ") && text.contains("upgrade: websocket")
}

/// Whether a client -> server byte stream is a Candy carrier: a WebSocket whose first
/// frame is a binary VMAC or DHCP message, as every Candy client starts (VLESS over
/// WebSocket starts with a version byte, 0 or 1, which is not either).
pub fn is_candy(bytes: &[u8]) -> bool {
    if !is_websocket(bytes) {
        return false;
    }
    match frames(bytes).0.first() {
        Some((
            _,
            Frame::Ws {
                opcode: 2, payload, ..
            },
        )) => matches!(
            Message::decode(payload),
            Ok(Message::Vmac(_)) | Ok(Message::Dhcp(_))
        ),
        _ => false,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The capture time of the packet that brought byte `at`.
fn time_of(marks: &[(usize, usize, Duration)], at: usize) -> Duration {
    let i = marks.partition_point(|m| m.0 <= at).saturating_sub(1);
    marks.get(i).map(|m| m.2).unwrap_or_default()
}

/// One WebSocket frame: opcode and (unmasked) payload, or why framing stopped.
enum Frame {
    Ws {
        opcode: u8,
        fin: bool,
        payload: Vec<u8>,
    },
    Broken(String),
}

/// Splits `bytes` (after the HTTP header) into frames: (offset of the frame's last byte,
/// frame). Returns the frames and the bytes of an incomplete last frame.
fn frames(bytes: &[u8]) -> (Vec<(usize, Frame)>, usize) {
    let mut out = Vec::new();
    let Some(h) = find(bytes, b"\r\n\r\n") else {
        return (out, bytes.len());
    };
    let mut i = h + 4;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.len() < 2 {
            return (out, rest.len());
        }
        let (b0, b1) = (rest[0], rest[1]);
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 if rest.len() >= 4 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            126 | 127 => return (out, rest.len()),
            n => (u64::from(n), 2),
        };
        if len > MAX_FRAME {
            out.push((
                i,
                Frame::Broken(format!("a frame of {len} bytes: not a Candy carrier")),
            ));
            return (out, 0);
        }
        let key = if masked {
            let Some(k) = rest.get(at..at + 4) else {
                return (out, rest.len());
            };
            at += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        let len = len as usize;
        let Some(p) = rest.get(at..at + len) else {
            return (out, rest.len());
        };
        let mut payload = p.to_vec();
        if let Some(k) = key {
            for (j, b) in payload.iter_mut().enumerate() {
                *b ^= k[j % 4];
            }
        }
        out.push((
            i + at + len - 1,
            Frame::Ws {
                opcode: b0 & 0x0f,
                fin: b0 & 0x80 != 0,
                payload,
            },
        ));
        i += at + len;
    }
    (out, 0)
}

/// A one-line summary of an IPv4 packet.
pub fn ip_summary(p: &[u8]) -> String {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return format!("not IPv4 ({} B)", p.len());
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let body = p.get(ihl..total.min(p.len())).unwrap_or(&[]);
    let port = |o: usize| body.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let what = match p[9] {
        1 => match body.first() {
            Some(0) => "ICMP echo reply".to_string(),
            Some(8) => "ICMP echo request".to_string(),
            Some(t) => format!("ICMP type {t}"),
            None => "ICMP (truncated)".to_string(),
        },
        17 => match (port(0), port(2)) {
            (Some(s), Some(d)) => {
                format!("UDP {s} -> {d}, {} B data", body.len().saturating_sub(8))
            }
            _ => "UDP (truncated)".to_string(),
        },
        6 => match (port(0), port(2), body.get(12), body.get(13)) {
            (Some(s), Some(d), Some(off), Some(fl)) => {
                let names = [
                    (0x02, "SYN"),
                    (0x10, "ACK"),
                    (0x01, "FIN"),
                    (0x04, "RST"),
                    (0x08, "PSH"),
                ];
                let flags: Vec<&str> = names
                    .iter()
                    .filter(|(b, _)| fl & b != 0)
                    .map(|(_, n)| *n)
                    .collect();
                let data = body.len().saturating_sub(usize::from(off >> 4) * 4);
                format!("TCP {s} -> {d} [{}], {data} B data", flags.join(","))
            }
            _ => "TCP (truncated)".to_string(),
        },
        n => format!("protocol {n}"),
    };
    format!("{src} -> {dst} {what} ({total} B)")
}

/// A one-line summary of a Candy message.
pub fn message_summary(b: &[u8]) -> String {
    let m = match Message::decode(b) {
        Ok(m) => m,
        Err(e) => {
            let kind = b.first().map_or("empty".into(), |t| format!("type {t}"));
            return format!("not a Candy message ({kind}, {} B): {e}", b.len());
        }
    };
    match m {
        Message::Auth(a) => format!("AUTH {} ts {}{}", a.ip, a.timestamp, pad(a.confusion.len())),
        Message::Forward(p) => format!("FORWARD {}", ip_summary(&p)),
        Message::Dhcp(d) => format!(
            "DHCP {} ts {}{}",
            d.cidr,
            d.timestamp,
            pad(d.confusion.len())
        ),
        Message::PeerInfo(p) => format!("PEER INFO {} -> {}: {}:{}", p.src, p.dst, p.ip, p.port),
        Message::Vmac(v) => format!(
            "VMAC {} ts {}{}",
            String::from_utf8_lossy(&v.vmac),
            v.timestamp,
            pad(v.confusion.len())
        ),
        Message::Discovery(d) => format!("DISCOVERY {} -> {}", d.src, d.dst),
        Message::Route(r) => format!("ROUTE {} entries", r.entries.len()),
        Message::General(g) => match g.as_lan_address() {
            Some((ip, port)) => format!("GENERAL LAN address {} -> {}: {ip}:{port}", g.src, g.dst),
            None => format!(
                "GENERAL subtype {} {} -> {}, {} B",
                g.subtype,
                g.src,
                g.dst,
                g.data.len()
            ),
        },
    }
}

fn pad(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" (+{n} B confusion)")
    }
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        0 => "continuation",
        1 => "text",
        2 => "binary",
        8 => "close",
        9 => "ping",
        10 => "pong",
        _ => "reserved opcode",
    }
}

/// The timeline of one Candy connection: the client's direction (`->`, starting with
/// the upgrade request) and the server's, merged by capture time.
pub fn timeline(client: Stream<'_>, server: Stream<'_>, base: Duration) -> String {
    let mut lines: Vec<(Duration, usize, String)> = Vec::new();
    let mut counts = [[0usize; 2]; 2];
    let mut trailing = [0usize; 2];
    for (dir, (bytes, marks)) in [client, server].into_iter().enumerate() {
        if let Some(h) = find(bytes, b"\r\n\r\n") {
            let first = String::from_utf8_lossy(&bytes[..h]);
            let first = first.lines().next().unwrap_or_default().to_string();
            lines.push((time_of(marks, h), dir, format!("HTTP {first}")));
        }
        let (fs, t) = frames(bytes);
        trailing[dir] = t;
        for (end, f) in fs {
            let ts = time_of(marks, end);
            let what = match f {
                Frame::Ws {
                    opcode: 2,
                    fin: true,
                    payload,
                } => {
                    counts[dir][0] += 1;
                    message_summary(&payload)
                }
                Frame::Ws {
                    opcode,
                    fin,
                    payload,
                } => {
                    counts[dir][1] += 1;
                    format!(
                        "websocket {}{} ({} B)",
                        opcode_name(opcode),
                        if fin { "" } else { ", not final" },
                        payload.len()
                    )
                }
                Frame::Broken(why) => why,
            };
            lines.push((ts, dir, what));
        }
    }
    lines.sort_by_key(|l| (l.0, l.1));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  -> {} Candy messages, {} other frames; <- {} Candy messages, {} other frames",
        counts[0][0], counts[0][1], counts[1][0], counts[1][1]
    );
    for (d, t) in trailing.iter().enumerate() {
        if *t > 0 {
            let _ = writeln!(
                s,
                "  {} {t} trailing bytes of an incomplete frame",
                if d == 0 { "->" } else { "<-" }
            );
        }
    }
    for (ts, dir, what) in lines {
        let _ = writeln!(
            s,
            "  {:>10.3}s {} {what}",
            ts.saturating_sub(base).as_secs_f64(),
            if dir == 0 { "->" } else { "<-" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnelbed_candy::wire::{Auth, Message};

    fn frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if mask.is_some() { 0x80 } else { 0 };
        if payload.len() < 126 {
            f.push(m | payload.len() as u8);
        } else {
            f.push(m | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    #[test]
    fn decodes_upgrade_frames_messages_and_inner_packets() {
        let auth = Message::Auth(Auth::new(b"pw", Ipv4Addr::new(10, 0, 0, 2), 7, vec![1, 2]))
            .to_bytes()
            .unwrap();
        let udp = tunnelbed_netio::iplink::echo::build_udp(
            Ipv4Addr::new(10, 0, 0, 2),
            40000,
            Ipv4Addr::new(10, 0, 0, 3),
            7,
            1,
            &[9; 200],
        )
        .unwrap();
        let mut fwd = vec![1u8];
        fwd.extend_from_slice(&udp);
        let mut c = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec();
        c.extend(frame(&auth, Some([1, 2, 3, 4])));
        c.extend(frame(&fwd, None));
        c.extend_from_slice(&[0x82, 0x05, 1]); // incomplete
        let s = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        assert!(is_websocket(&c));
        assert!(!is_websocket(&s));
        assert!(!is_candy(&c), "starts with AUTH, not VMAC");
        let m = [(0, 1, Duration::from_millis(5))];
        let out = timeline((&c, &m), (&s, &m), Duration::ZERO);
        assert!(out.contains("-> 2 Candy messages"), "{out}");
        assert!(out.contains("AUTH 10.0.0.2 ts 7 (+2 B confusion)"), "{out}");
        assert!(
            out.contains("FORWARD 10.0.0.2 -> 10.0.0.3 UDP 40000 -> 7, 200 B data (228 B)"),
            "{out}"
        );
        assert!(
            out.contains("HTTP HTTP/1.1 101 Switching Protocols"),
            "{out}"
        );
        assert!(out.contains("-> 3 trailing bytes"), "{out}");
    }

    #[test]
    fn garbage_never_panics() {
        let mut c = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec();
        for n in 0..300u32 {
            c.push((n.wrapping_mul(2654435761) >> 7) as u8);
            let _ = timeline((&c, &[]), (&[], &[]), Duration::ZERO);
        }
        let mut huge = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec();
        huge.extend_from_slice(&[0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let out = timeline((&huge, &[]), (&[], &[]), Duration::ZERO);
        assert!(out.contains("not a Candy carrier"), "{out}");
        assert_eq!(
            message_summary(&[0x77]).split(':').next(),
            Some("not a Candy message (type 119, 1 B)")
        );
    }
}
