//! h2tunnel frames in a reassembled byte stream, and the per-stream timeline of one
//! connection (both directions merged by time).

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::Digest;

use super::stream_log::{line, render_connection, StreamLog};
use tunnelbed_h2tunnel::wire::{FrameError, Message, RawFrame, HANDSHAKE};

/// One decoded frame and when the packet that completed it was captured.
#[derive(Clone, Debug)]
pub struct FrameAt {
    /// Capture time of the packet holding the frame's last byte.
    pub ts: Duration,
    /// That packet's number.
    pub packet: usize,
    /// The frame, or why it breaks the protocol.
    pub msg: Result<Message, FrameError>,
}

/// Whether a byte stream starts with the h2tunnel handshake.
pub fn is_h2tunnel(bytes: &[u8]) -> bool {
    bytes.starts_with(&HANDSHAKE)
}

/// Decodes every frame of `bytes`; `marks` are (offset, packet, time) of the segments
/// the bytes came in. Returns the frames and how many trailing bytes were incomplete.
pub fn frames(bytes: &[u8], marks: &[(usize, usize, Duration)]) -> (Vec<FrameAt>, usize) {
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let (msg, n) = match RawFrame::parse(&bytes[off..]) {
            Ok(None) => break,
            Ok(Some((f, n))) => (
                if f.is_handshake() {
                    Ok(Message::Handshake)
                } else {
                    Message::from_frame(&f)
                },
                n,
            ),
            Err(e) => (Err(e), bytes.len() - off),
        };
        let last = off + n - 1;
        let i = marks.partition_point(|m| m.0 <= last).saturating_sub(1);
        let (_, packet, ts) = marks.get(i).copied().unwrap_or((0, 0, Duration::ZERO));
        let stop = msg.is_err();
        out.push(FrameAt { ts, packet, msg });
        off += n;
        if stop {
            return (out, 0);
        }
    }
    (out, bytes.len() - off)
}

/// Renders one connection's frames (direction 0 is `->`) as a connection-level log and a
/// timeline per stream, with byte counts and SHA-256 prefixes of each direction's data.
/// Times are printed relative to `base` (the capture's first packet).
pub fn timeline(dirs: [&[FrameAt]; 2], trailing: [usize; 2], base: Duration) -> String {
    // Merge the two directions by time, never reordering frames within a direction.
    let mut all: Vec<(usize, &FrameAt)> = Vec::with_capacity(dirs[0].len() + dirs[1].len());
    let (mut i, mut j) = (0, 0);
    while i < dirs[0].len() || j < dirs[1].len() {
        let take_a = match (dirs[0].get(i), dirs[1].get(j)) {
            (Some(a), Some(b)) => a.ts <= b.ts,
            (Some(_), None) => true,
            _ => false,
        };
        if take_a {
            all.push((0, &dirs[0][i]));
            i += 1;
        } else {
            all.push((1, &dirs[1][j]));
            j += 1;
        }
    }
    let mut conn = Vec::new();
    let mut streams: BTreeMap<u32, StreamLog> = BTreeMap::new();
    for (d, f) in all {
        let m = match &f.msg {
            Err(e) => {
                conn.push(line(
                    f.ts,
                    d,
                    &format!("PROTOCOL ERROR in packet {}: {e}", f.packet),
                ));
                continue;
            }
            Ok(m) => m,
        };
        let (sid, what) = match m {
            Message::Handshake => (None, "handshake (SETTINGS)".to_string()),
            Message::Keepalive { id } => (None, format!("keepalive {id}")),
            Message::KeepaliveAck { id } => (None, format!("keepalive ack {id}")),
            Message::Shutdown { reason } => (None, format!("shutdown (GOAWAY): {reason}")),
            Message::Ignored => (None, "ignored frame".to_string()),
            Message::Syn { sid } => (Some(*sid), "SYN / SYN-ACK".to_string()),
            Message::Rst { sid } => (Some(*sid), "RST".to_string()),
            Message::Data { sid, payload, fin } => {
                let s = streams.entry(*sid).or_default();
                s.bytes[d] += payload.len() as u64;
                s.hash[d].update(payload);
                if !payload.is_empty() && !fin {
                    match &mut s.run {
                        Some((_, rd, count, bytes)) if *rd == d => {
                            *count += 1;
                            *bytes += payload.len() as u64;
                        }
                        _ => {
                            s.flush_run("DATA");
                            s.run = Some((f.ts.saturating_sub(base), d, 1, payload.len() as u64));
                        }
                    }
                    continue;
                }
                let what = match (payload.is_empty(), fin) {
                    (true, _) => "FIN".to_string(),
                    (false, _) => format!("PSH-FIN {} B", payload.len()),
                };
                (Some(*sid), what)
            }
        };
        match sid {
            None => conn.push(line(f.ts.saturating_sub(base), d, &what)),
            Some(sid) => {
                let s = streams.entry(sid).or_default();
                s.flush_run("DATA");
                s.lines.push(line(f.ts.saturating_sub(base), d, &what));
            }
        }
    }
    let mut out = String::new();
    render_connection(&mut out, &conn, trailing, streams, "DATA");
    out
}
