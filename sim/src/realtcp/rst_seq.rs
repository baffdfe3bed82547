//! [`SendEdge`]: which sequence number a host's reset carries. A peer takes a reset only
//! when its sequence number falls in the peer's receive window, and drops it otherwise;
//! smoltcp's choice misses both ways. It builds a reset from the next sequence number it
//! would send, which a retransmission rewinds below what it sent: a peer that already
//! acknowledged more drops it (seen on `pong-streams --seed 172 --profile swarm --tcp
//! real`: the remote's reset carried 56473, the target had acknowledged 57272 and read
//! on for good). Without a rewind it is the highest sequence number sent, as a kernel's
//! is, which a peer that lost the bytes before it and sits a whole window behind drops
//! too (seed 288: 72446 against a target at 6911 with a 65535-byte window, one byte past
//! its edge; the target kept acknowledging 6911). The glue notes per connection the
//! highest sequence number sent and the peer's newest ACK and window. The peer's window
//! starts somewhere between that ACK and the highest sent, so the highest sent is sure
//! to fall in it when it lies below the ACK plus the window: the reset then carries it.
//! Otherwise nothing is sure, and the reset carries the peer's newest ACK, where a peer
//! that stopped moving (it acknowledges the same number over and over) is waiting.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket, TcpSeqNumber};

/// One connection as the glue saw it.
#[derive(Debug, Default, Clone, Copy)]
struct Edge {
    /// The end of the highest segment we sent.
    sent_max: Option<TcpSeqNumber>,
    /// The peer's newest ACK and the window it advertised with it (unscaled: the real
    /// TCP stacks here never scale).
    peer: Option<(TcpSeqNumber, usize)>,
}

/// Connections tracked at most; past it the lowest-keyed is forgotten (its reset then
/// keeps smoltcp's number). A host here has a few hundred connections in a run.
const MAX_TRACKED: usize = 16_384;

/// Per connection (our address, the peer's), what [`SendEdge::outgoing`] needs.
#[derive(Debug, Default)]
pub struct SendEdge {
    conns: BTreeMap<Key, Edge>,
}

/// A connection as (source, destination) of a segment.
type Key = (SocketAddrV4, SocketAddrV4);

/// The TCP segment in IPv4 packet `p`, with its connection.
fn tcp_of(p: &[u8]) -> Option<(TcpPacket<&[u8]>, Key)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let payload = &p[ip.header_len() as usize..usize::from(ip.total_len()).min(p.len())];
    let t = TcpPacket::new_checked(payload).ok()?;
    let key = (
        SocketAddrV4::new(src, t.src_port()),
        SocketAddrV4::new(dst, t.dst_port()),
    );
    Some((t, key))
}

impl SendEdge {
    /// The entry of `key`, made room for under [`MAX_TRACKED`].
    fn entry(&mut self, key: Key) -> &mut Edge {
        if !self.conns.contains_key(&key) && self.conns.len() >= MAX_TRACKED {
            self.conns.pop_first();
        }
        self.conns.entry(key).or_default()
    }

    /// Notes incoming IPv4 packet `p` (the peer's ACK and window).
    pub fn incoming(&mut self, p: &[u8]) {
        let Some((t, (from, to))) = tcp_of(p) else {
            return;
        };
        if t.rst() || !t.ack() {
            return;
        }
        let (ack, win) = (t.ack_number(), usize::from(t.window_len()));
        let e = self.entry((to, from));
        match e.peer {
            Some((a, _)) if a > ack => {}
            _ => e.peer = Some((ack, win)),
        }
    }

    /// Notes outgoing IPv4 packet `p`. A reset forgets its connection and is rewritten
    /// (checksum refilled) to carry the highest sequence number sent where the peer's
    /// window surely holds it, or else the peer's newest ACK (see the module notes);
    /// returns whether it was rewritten. Packets that are not IPv4 TCP pass unnoted.
    pub fn outgoing(&mut self, p: &mut [u8]) -> bool {
        let Some((t, key)) = tcp_of(p) else {
            return false;
        };
        if !t.rst() {
            let end = t.seq_number() + t.segment_len();
            let e = self.entry(key);
            match e.sent_max {
                Some(m) if m >= end => {}
                _ => e.sent_max = Some(end),
            }
            return false;
        }
        let seq = t.seq_number();
        let Some(e) = self.conns.remove(&key) else {
            return false;
        };
        let (Some(max), Some((ack, win))) = (e.sent_max, e.peer) else {
            return false;
        };
        let to = if max < ack + win { max } else { ack };
        if to == seq {
            return false;
        }
        let Ok(mut ip) = Ipv4Packet::new_checked(&mut p[..]) else {
            return false;
        };
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let Ok(mut t) = TcpPacket::new_checked(ip.payload_mut()) else {
            return false;
        };
        t.set_seq_number(to);
        t.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtcp::test_segment::{build, Seg};
    use smoltcp::wire::TcpControl;

    /// A segment from us (or the peer) with `seq`, `ack` and `window`.
    fn segment(
        from_us: bool,
        control: TcpControl,
        seq: i32,
        ack: i32,
        window: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let (us, peer) = (
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:8000".parse().unwrap(),
        );
        let (from, to) = if from_us { (us, peer) } else { (peer, us) };
        build(Seg {
            from,
            to,
            control,
            seq,
            ack,
            window,
            payload,
        })
    }

    fn seq_and_checksum_ok(p: &[u8]) -> (i32, bool) {
        let ip = Ipv4Packet::new_checked(p).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        let ok = t.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr()),
        );
        (t.seq_number().0, ok)
    }

    /// We sent 1000..1200 and resent from 1000; the peer's newest ACK is `ack` with
    /// `window`; then smoltcp's reset at 1050: where does it go out?
    fn reset_after(ack: i32, window: u16) -> (bool, i32) {
        let mut edge = SendEdge::default();
        let mut none = |p: Vec<u8>| {
            let mut p = p;
            assert!(!edge.outgoing(&mut p));
        };
        none(segment(true, TcpControl::None, 1000, 1, 1000, &[0; 100]));
        none(segment(true, TcpControl::None, 1100, 1, 1000, &[0; 100]));
        none(segment(true, TcpControl::None, 1000, 1, 1000, &[0; 50]));
        edge.incoming(&segment(false, TcpControl::None, 1, ack, window, &[]));
        // An older ACK arriving late does not move the peer back.
        edge.incoming(&segment(false, TcpControl::None, 1, ack - 10, 0, &[]));
        let mut rst = segment(true, TcpControl::Rst, 1050, 1, 1000, &[]);
        let lifted = edge.outgoing(&mut rst);
        let (seq, ok) = seq_and_checksum_ok(&rst);
        assert!(ok);
        // The connection is forgotten: a second reset passes as it is.
        let mut again = segment(true, TcpControl::Rst, 1050, 1, 1000, &[]);
        assert!(!edge.outgoing(&mut again));
        (lifted, seq)
    }

    #[test]
    fn a_reset_carries_the_highest_sequence_number_sent_where_the_window_holds_it_else_the_peers_ack(
    ) {
        // The peer acknowledged 1050 with room for 500 more: 1200 falls in its window.
        assert_eq!(reset_after(1050, 500), (true, 1200));
        // With room for 100 only, 1200 could lie past its window's edge: the peer's ACK.
        assert_eq!(reset_after(1040, 100), (true, 1040));
        // smoltcp's number when that is the peer's ACK already.
        assert_eq!(reset_after(1050, 100), (false, 1050));
    }

    #[test]
    fn a_reset_at_the_edge_a_stray_reset_and_other_packets_stay_as_they_are() {
        let mut edge = SendEdge::default();
        let mut fin = segment(true, TcpControl::Fin, 500, 1, 1000, &[0; 10]);
        assert!(!edge.outgoing(&mut fin));
        edge.incoming(&segment(false, TcpControl::None, 1, 500, 1000, &[]));
        // A FIN takes one sequence number: a reset at 511 is at the edge already.
        let mut rst = segment(true, TcpControl::Rst, 511, 1, 1000, &[]);
        let before = rst.clone();
        assert!(!edge.outgoing(&mut rst));
        assert_eq!(rst, before);
        // A reset on a connection we never sent on (an answer to a stray segment).
        let mut stray = segment(true, TcpControl::Rst, 5, 1, 0, &[]);
        assert!(!edge.outgoing(&mut stray));
        // Not TCP, or not IPv4 at all.
        assert!(!edge.outgoing(&mut [0x45u8, 0, 0, 20]));
        assert!(!edge.outgoing(&mut []));
        edge.incoming(&[0x45u8, 0, 0, 20]);
    }

    #[test]
    fn the_table_keeps_at_most_max_tracked_connections() {
        let mut edge = SendEdge::default();
        for port in 0..=MAX_TRACKED as u32 {
            let from = format!(
                "10.0.{}.{}:{}",
                port >> 16,
                (port >> 8) & 255,
                1000 + (port & 255)
            );
            let mut p = build(Seg {
                from: from.parse().unwrap(),
                to: "10.0.0.2:8000".parse().unwrap(),
                control: TcpControl::None,
                seq: 1,
                ack: 1,
                window: 100,
                payload: &[0; 4],
            });
            assert!(!edge.outgoing(&mut p));
        }
        assert_eq!(edge.conns.len(), MAX_TRACKED);
    }
}
