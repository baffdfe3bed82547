//! KCP reassembly for replay: one direction of a UDP flow becomes the byte stream the
//! receiving application read (stream mode), from the PUSH segments in sequence order.
//! Retransmitted and duplicated copies are counted and dropped; a hole ends the stream.

use std::collections::BTreeMap;
use std::time::Duration;

use tunnelbed_kcp::wire::{Segment, CMD_ACK, CMD_PUSH};

use super::flows::{DatagramFlow, MAX_STREAM_BYTES};

/// One direction of a KCP session, reassembled.
#[derive(Clone, Debug, Default)]
pub struct KcpDirection {
    /// Conversation id of the first segment.
    pub conv: u32,
    /// Payload bytes in sequence order, up to the first missing segment.
    pub bytes: Vec<u8>,
    /// (offset into `bytes`, packet number, time) where each segment's data starts. The
    /// time is when those bytes could first be delivered in order: the latest arrival of
    /// any segment up to this one (a retransmitted earlier segment holds later ones back).
    pub marks: Vec<(usize, usize, Duration)>,
    /// Distinct data segments seen.
    pub segments: usize,
    /// Copies of data segments seen more than once (retransmissions, duplicates).
    pub copies: usize,
    /// Acknowledgement segments seen.
    pub acks: usize,
    /// The first sequence number missing from the capture, when data after it exists.
    pub hole_at: Option<u32>,
    /// Data segments after the hole (not decoded further).
    pub after_hole: usize,
}

/// Whether a direction looks like KCP: its first datagram decodes as KCP segments.
pub fn looks_like_kcp(flow: &DatagramFlow) -> bool {
    flow.datagrams
        .first()
        .is_some_and(|(_, _, d)| Segment::decode_all(d).is_ok_and(|s| !s.is_empty()))
}

/// Reassembles one direction. A datagram that does not decode as KCP is an error that
/// names its packet.
pub fn reassemble(flow: &DatagramFlow) -> Result<KcpDirection, String> {
    let mut out = KcpDirection::default();
    let mut data: BTreeMap<u32, (usize, Duration, Vec<u8>)> = BTreeMap::new();
    let mut first_conv = None;
    for (number, ts, d) in &flow.datagrams {
        let segs = Segment::decode_all(d).map_err(|e| format!("packet {number}: not KCP: {e}"))?;
        for s in segs {
            first_conv.get_or_insert(s.conv);
            match s.cmd {
                CMD_PUSH => match data.entry(s.sn) {
                    std::collections::btree_map::Entry::Occupied(_) => out.copies += 1,
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert((*number, *ts, s.data));
                    }
                },
                CMD_ACK => out.acks += 1,
                _ => {}
            }
        }
    }
    out.conv = first_conv.unwrap_or(0);
    out.segments = data.len();
    // Sessions start at sn 0; a capture that began mid-session starts at its lowest sn.
    let mut next = data.keys().next().copied().unwrap_or(0);
    let mut it = data.into_iter().peekable();
    let mut deliverable = (0usize, Duration::ZERO);
    while let Some((sn, (number, ts, payload))) = it.next() {
        if sn != next {
            out.hole_at = Some(next);
            out.after_hole = 1 + it.count();
            break;
        }
        if out.bytes.len() + payload.len() > MAX_STREAM_BYTES {
            out.hole_at = Some(sn);
            out.after_hole = 1 + it.count();
            break;
        }
        if ts >= deliverable.1 {
            deliverable = (number, ts);
        }
        out.marks
            .push((out.bytes.len(), deliverable.0, deliverable.1));
        out.bytes.extend_from_slice(&payload);
        next = sn.wrapping_add(1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn push(sn: u32, data: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        Segment {
            conv: 9,
            cmd: CMD_PUSH,
            frg: 0,
            wnd: 128,
            ts: 0,
            sn,
            una: 0,
            data: data.to_vec(),
        }
        .encode(&mut b);
        b.to_vec()
    }

    #[test]
    fn orders_dedupes_and_stops_at_a_hole() {
        let ms = Duration::from_millis;
        let flow = DatagramFlow {
            datagrams: vec![
                (1, ms(1), push(1, b"world")),
                (2, ms(2), push(0, b"hello ")),
                (3, ms(3), push(1, b"world")),
                (4, ms(4), push(3, b"late")),
            ],
        };
        let r = reassemble(&flow).unwrap();
        assert_eq!(r.bytes, b"hello world");
        assert_eq!(r.copies, 1);
        assert_eq!(r.hole_at, Some(2));
        assert_eq!(r.after_hole, 1);
        assert_eq!(r.conv, 9);
    }

    #[test]
    fn garbage_names_the_packet() {
        let flow = DatagramFlow {
            datagrams: vec![(7, Duration::ZERO, vec![1, 2, 3])],
        };
        let e = reassemble(&flow).unwrap_err();
        assert!(e.starts_with("packet 7: not KCP"), "{e}");
    }
}
