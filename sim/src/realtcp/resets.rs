//! [`ResetLog`]: how many TCP resets each host stack of a run sent per connection, and
//! how many of them reached the other end's stack. A reset is never retransmitted (a
//! kernel sends one; we send a few copies back to back, see `stack::drive`), so a peer
//! that only reads and sends nothing learns of a reset only if one copy arrives. With
//! this log a scenario can tell "the endpoint never reset the connection" (its bug) from
//! "it did and the link lost every copy" (what a kernel peer would also miss: only the
//! application's own timeout ends that wait).
//!
//! The same ledger keeps the dials an application gave up on before the handshake
//! completed ([`AbandonedDial`]): under heavy loss every SYN (or SYN-ACK) of a dial can be
//! lost within the dialer's timeout, as with a kernel, and a scenario tells such a
//! timeout from a proxy that never dialed.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smoltcp::wire::{IpProtocol, Ipv4Packet, TcpPacket};

/// The resets of one direction of one connection (sender's address, receiver's address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetCount {
    /// Reset segments the sender put on the link (every copy).
    pub sent: u32,
    /// Copies of the sender's first reset that the receiver's stack took in (handed to
    /// smoltcp). A later, different reset (one answering the peer's own close long after,
    /// say) is not the reset that ended the connection and is not counted.
    pub arrived: u32,
}

impl ResetCount {
    /// The sender reset the connection and the link lost every copy.
    pub fn all_lost(self) -> bool {
        self.sent > 0 && self.arrived == 0
    }
}

/// A dial the application dropped while its SYN was still unanswered (its own connect
/// timeout ran out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbandonedDial {
    /// The dialer's address.
    pub from: SocketAddrV4,
    /// The address it dialed.
    pub to: SocketAddrV4,
    /// When it gave up (simulated time).
    pub at: Duration,
}

#[derive(Default)]
struct Ledger {
    resets: BTreeMap<Direction, ResetCount>,
    /// Each direction's first reset: what a copy of it carries.
    first: BTreeMap<Direction, RstSig>,
    abandoned: Vec<AbandonedDial>,
}

/// The run's reset ledger, shared by every host stack (see the module notes).
#[derive(Clone, Default)]
pub struct ResetLog(Arc<Mutex<Ledger>>);

impl ResetLog {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a dial given up before its handshake completed.
    pub fn note_abandoned_dial(&self, d: AbandonedDial) {
        self.ledger().abandoned.push(d);
    }

    /// The dials given up so far, in the order they were.
    pub fn abandoned_dials(&self) -> Vec<AbandonedDial> {
        self.ledger().abandoned.clone()
    }

    /// Counts a reset segment put on the link (`p` is the IPv4 packet; others are ignored).
    pub fn note_sent(&self, p: &[u8]) {
        if let Some((k, sig)) = rst_of(p) {
            let mut l = self.ledger();
            l.first.entry(k).or_insert(sig);
            l.resets.entry(k).or_default().sent += 1;
        }
    }

    /// Counts a reset segment a stack took in (`p` is the IPv4 packet; others are ignored).
    pub fn note_arrived(&self, p: &[u8]) {
        if let Some((k, sig)) = rst_of(p) {
            let mut l = self.ledger();
            if l.first.get(&k).is_none_or(|f| *f == sig) {
                l.resets.entry(k).or_default().arrived += 1;
            }
        }
    }

    /// The resets `from` sent to `to` so far.
    pub fn get(&self, from: SocketAddrV4, to: SocketAddrV4) -> ResetCount {
        self.ledger()
            .resets
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }
}

/// (source, destination) of `p` if it is an IPv4 TCP segment with RST set.
pub fn rst_tuple(p: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4)> {
    rst_of(p).map(|(k, _)| k)
}

/// One direction of a connection: (sender, receiver).
type Direction = (SocketAddrV4, SocketAddrV4);

/// What tells one reset of a connection from another: (sequence, acknowledgment, ACK flag).
type RstSig = (u32, u32, bool);

/// A reset's direction and signature.
fn rst_of(p: &[u8]) -> Option<(Direction, RstSig)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let t = TcpPacket::new_checked(ip.payload()).ok()?;
    t.rst().then(|| {
        (
            (
                SocketAddrV4::new(ip.src_addr(), t.src_port()),
                SocketAddrV4::new(ip.dst_addr(), t.dst_port()),
            ),
            (t.seq_number().0 as u32, t.ack_number().0 as u32, t.ack()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtcp::test_segment::{build, Seg};
    use smoltcp::wire::TcpControl;

    fn segment(control: TcpControl) -> Vec<u8> {
        segment_acking(control, 4854)
    }

    fn segment_acking(control: TcpControl, ack: i32) -> Vec<u8> {
        build(Seg {
            from: "10.0.0.1:1080".parse().unwrap(),
            to: "10.0.0.2:50000".parse().unwrap(),
            control,
            seq: 13,
            ack,
            window: 0,
            payload: &[],
        })
    }

    #[test]
    fn counts_resets_per_direction_and_ignores_other_segments() {
        let log = ResetLog::default();
        let (rst, fin) = (segment(TcpControl::Rst), segment(TcpControl::Fin));
        let (a, b) = rst_tuple(&rst).expect("a reset");
        assert_eq!(a, "10.0.0.1:1080".parse().unwrap());
        assert_eq!(b, "10.0.0.2:50000".parse().unwrap());
        assert_eq!(rst_tuple(&fin), None);
        assert_eq!(rst_tuple(&rst[..10]), None);
        for _ in 0..3 {
            log.note_sent(&rst);
        }
        log.note_sent(&fin);
        assert!(log.get(a, b).all_lost());
        assert_eq!(log.get(b, a), ResetCount::default());
        log.note_arrived(&rst);
        assert_eq!(
            log.get(a, b),
            ResetCount {
                sent: 3,
                arrived: 1
            }
        );
        assert!(!log.get(a, b).all_lost());
    }

    /// Seed 2 s070 (swarm, with the orphan deadline): every copy of the local's reset was
    /// lost; 100 s later the application's own close drew a fresh reset in answer, which
    /// arrived. The reset that ended the stream was still lost.
    #[test]
    fn a_later_answering_reset_does_not_count_as_the_first_one_arriving() {
        let log = ResetLog::default();
        let first = segment(TcpControl::Rst);
        let (a, b) = rst_tuple(&first).expect("a reset");
        for _ in 0..3 {
            log.note_sent(&first);
        }
        let answer = segment_acking(TcpControl::Rst, 4855);
        log.note_sent(&answer);
        log.note_arrived(&answer);
        assert!(log.get(a, b).all_lost(), "{:?}", log.get(a, b));
        log.note_arrived(&first);
        assert!(!log.get(a, b).all_lost());
    }
}
