//! pong connections in reassembled TCP flows: the connection header, every frame, and a
//! timeline per stream (destination, data counts with SHA-256 prefixes, finish, close,
//! rst with its code), both directions merged by capture time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use sha2::Digest;

use super::stream_log::{line, render_connection, StreamLog};
use tunnelbed_pong::wire::{Body, Frame, RawFrame, CONN_HEADER_LEN};

/// One frame (or a framing error) and when the packet completing it was captured
/// (public for `tunnelbed plot ladder`, which draws the same frames).
pub struct At {
    /// Capture time of the packet holding the frame's last byte.
    pub ts: Duration,
    /// That packet's number.
    pub packet: usize,
    /// The frame, an unknown type byte (stream id, type, error), or why the byte stream
    /// cannot be framed.
    pub frame: Result<Result<Frame, (u32, u8, String)>, String>,
}

/// Whether a local -> remote byte stream starts like pong: version 0, a 16-byte client
/// id, then a complete, well-formed connect or relay frame with an odd id. (A stream of
/// 17 bytes starting with 0 is not enough: application data looks like that too.)
pub fn is_pong(bytes: &[u8]) -> bool {
    if bytes.len() < CONN_HEADER_LEN || bytes[0] != 0 {
        return false;
    }
    match Frame::decode(&bytes[CONN_HEADER_LEN..]) {
        Ok(Some((f, _))) => {
            f.stream_id % 2 == 1 && matches!(f.body, Body::Connect(_) | Body::Relay(_))
        }
        Ok(None) | Err(_) => false,
    }
}

fn mark(marks: &[(usize, usize, Duration)], last: usize) -> (usize, Duration) {
    let i = marks.partition_point(|m| m.0 <= last).saturating_sub(1);
    marks
        .get(i)
        .map(|m| (m.1, m.2))
        .unwrap_or((0, Duration::ZERO))
}

/// Splits `bytes` (starting at `skip`) into frames; returns them and the trailing bytes
/// of an incomplete frame.
pub fn frames(bytes: &[u8], skip: usize, marks: &[(usize, usize, Duration)]) -> (Vec<At>, usize) {
    let mut out = Vec::new();
    let mut off = skip.min(bytes.len());
    while off < bytes.len() {
        match RawFrame::decode(&bytes[off..]) {
            Ok(None) => break,
            Ok(Some((raw, n))) => {
                let (packet, ts) = mark(marks, off + n - 1);
                let frame =
                    Frame::parse(&raw).map_err(|e| (raw.stream_id, raw.kind, e.to_string()));
                out.push(At {
                    ts,
                    packet,
                    frame: Ok(frame),
                });
                off += n;
            }
            Err(e) => {
                let (packet, ts) = mark(marks, off);
                out.push(At {
                    ts,
                    packet,
                    frame: Err(e.to_string()),
                });
                return (out, 0);
            }
        }
    }
    (out, bytes.len() - off)
}

/// Renders one pong connection: `a` is the local's direction (with the header), `b` the
/// remote's. Times are relative to `base`.
pub fn timeline(
    a: (&[u8], &[(usize, usize, Duration)]),
    b: (&[u8], &[(usize, usize, Duration)]),
    base: Duration,
) -> String {
    let mut out = String::new();
    if a.0.len() >= CONN_HEADER_LEN {
        let _ = writeln!(
            out,
            "  -> header v{} client id {}",
            a.0[0],
            hex::encode(&a.0[1..CONN_HEADER_LEN])
        );
    }
    let (fa, ta) = frames(a.0, CONN_HEADER_LEN, a.1);
    let (fb, tb) = frames(b.0, 0, b.1);
    if fb.is_empty() && b.0.is_empty() {
        let _ = writeln!(out, "  <- nothing (the remote never wrote)");
    }
    // Merge by time without reordering within a direction.
    let mut all: Vec<(usize, &At)> = Vec::with_capacity(fa.len() + fb.len());
    let (mut i, mut j) = (0, 0);
    while i < fa.len() || j < fb.len() {
        let take_a = match (fa.get(i), fb.get(j)) {
            (Some(x), Some(y)) => x.ts <= y.ts,
            (Some(_), None) => true,
            _ => false,
        };
        if take_a {
            all.push((0, &fa[i]));
            i += 1;
        } else {
            all.push((1, &fb[j]));
            j += 1;
        }
    }
    let mut conn = Vec::new();
    let mut streams: BTreeMap<u32, StreamLog> = BTreeMap::new();
    for (d, at) in all {
        let ts = at.ts.saturating_sub(base);
        let f = match &at.frame {
            Err(e) => {
                conn.push(line(
                    ts,
                    d,
                    &format!("FRAMING ERROR in packet {}: {e}", at.packet),
                ));
                continue;
            }
            Ok(Err((sid, kind, e))) => {
                let s = streams.entry(*sid).or_default();
                s.flush_run("data");
                s.lines.push(line(ts, d, &format!("type {kind:#04x}: {e}")));
                continue;
            }
            Ok(Ok(f)) => f,
        };
        let s = streams.entry(f.stream_id).or_default();
        s.frames[d] += 1;
        let what = match &f.body {
            Body::Data(p) => {
                s.bytes[d] += p.len() as u64;
                s.hash[d].update(p);
                match &mut s.run {
                    Some((_, rd, count, bytes)) if *rd == d => {
                        *count += 1;
                        *bytes += p.len() as u64;
                    }
                    _ => {
                        s.flush_run("data");
                        s.run = Some((ts, d, 1, p.len() as u64));
                    }
                }
                continue;
            }
            Body::Connect(a) => format!("connect {a}"),
            Body::Relay(a) => format!("relay (udp) {a}"),
            Body::Bind(p) => format!("bind ({} B payload)", p.len()),
            Body::Associate(p) => format!("associate ({} B payload)", p.len()),
            Body::Set(p) => format!("set ({} B payload)", p.len()),
            Body::Finish(_) => "finish (half close)".to_string(),
            Body::Close(_) => "close".to_string(),
            Body::Rst(None) => "rst (no code)".to_string(),
            Body::Rst(Some(i)) => format!("rst {i}"),
        };
        s.flush_run("data");
        s.lines.push(line(ts, d, &what));
    }
    render_connection(&mut out, &conn, [ta, tb], streams, "data");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tunnelbed_pong::wire::{encode_raw, frame_type, Address, ConnHeader};

    fn conn() -> (Vec<u8>, Vec<u8>) {
        let mut a = BytesMut::new();
        ConnHeader {
            client_id: *b"0123456789abcdef",
        }
        .encode(&mut a);
        let mut p = BytesMut::new();
        Address::Domain("example.test".into(), 80)
            .encode(&mut p)
            .unwrap();
        encode_raw(&mut a, 1, frame_type::CONNECT, &p).unwrap();
        encode_raw(&mut a, 1, frame_type::DATA, b"GET /").unwrap();
        encode_raw(&mut a, 1, frame_type::DATA, b" HTTP/1.0\r\n\r\n").unwrap();
        encode_raw(&mut a, 1, frame_type::FINISH, b"").unwrap();
        encode_raw(&mut a, 3, frame_type::CONNECT, &p).unwrap();
        let mut b = BytesMut::new();
        encode_raw(&mut b, 1, frame_type::DATA, b"HTTP/1.0 200 OK\r\n\r\nhi").unwrap();
        encode_raw(&mut b, 1, frame_type::CLOSE, b"").unwrap();
        encode_raw(&mut b, 3, frame_type::RST, b"\x05refused by dst").unwrap();
        (a.to_vec(), b.to_vec())
    }

    #[test]
    fn recognises_and_renders_a_connection() {
        let (a, b) = conn();
        assert!(is_pong(&a));
        assert!(!is_pong(&b));
        assert!(!is_pong(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(
            !is_pong(&[0; CONN_HEADER_LEN]),
            "17 bytes of data are not a carrier"
        );
        let m = [(0, 1, Duration::from_millis(5))];
        let n = [(0, 2, Duration::from_millis(9))];
        let out = timeline((&a, &m), (&b, &n), Duration::ZERO);
        assert!(out.contains("header v0 client id 30313233"), "{out}");
        assert!(out.contains("connect example.test:80"), "{out}");
        assert!(out.contains("data x2 (18 B)"), "{out}");
        assert!(out.contains("finish (half close)"), "{out}");
        assert!(out.contains("rst code 5 \"refused by dst\""), "{out}");
        assert!(out.contains("2 streams"), "{out}");
    }

    #[test]
    fn framing_errors_and_truncation_are_reported_not_panics() {
        let (mut a, _) = conn();
        a.extend_from_slice(&[0, 3, 0, 0]);
        let out = timeline((&a, &[]), (&[], &[]), Duration::ZERO);
        assert!(out.contains("FRAMING ERROR"), "{out}");
        let (a, _) = conn();
        for cut in 0..a.len() {
            let _ = is_pong(&a[..cut]);
            let _ = timeline((&a[..cut], &[]), (&[], &[]), Duration::ZERO);
        }
    }
}
