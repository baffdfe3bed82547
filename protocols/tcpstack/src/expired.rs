//! Half-open connections whose SYN_RCVD time ran out, remembered (bounded in number and
//! age) so that a handshake ACK arriving after the expiry still completes the
//! connection instead of being answered with a RST (see `Stack::revive`).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddrV4;
use std::time::Duration;

use crate::seq::Seq;
use crate::types::ListenerId;
use crate::wire::TcpHeader;

/// Most expired half-open connections remembered; the oldest is forgotten first.
const MAX_EXPIRED: usize = 1024;
/// How long after its expiry a half-open connection can still be completed.
const MAX_AGE: Duration = Duration::from_secs(120);

/// What a half-open connection agreed in its SYN and SYN-ACK: enough to rebuild it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HalfOpen {
    pub listener: ListenerId,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub iss: Seq,
    pub irs: Seq,
    pub mss: u16,
    pub snd_scale: u8,
    pub rcv_scale: u8,
    /// The peer's window from its SYN (unscaled, as SYNs are).
    pub snd_wnd: u32,
    /// When it expired.
    pub at: Duration,
}

type Tuple = (SocketAddrV4, SocketAddrV4);

/// The remembered expired half-open connections, by (local, remote).
#[derive(Default)]
pub(crate) struct ExpiredHalfOpen {
    by_tuple: BTreeMap<Tuple, HalfOpen>,
    order: VecDeque<(Tuple, Duration)>,
}

impl ExpiredHalfOpen {
    /// Remembers `h` (replacing an older entry of the same tuple).
    pub(crate) fn insert(&mut self, h: HalfOpen) {
        let t = (h.local, h.remote);
        self.by_tuple.insert(t, h);
        self.order.push_back((t, h.at));
        while self.order.len() > MAX_EXPIRED {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((t, at)) = self.order.pop_front() {
            // Only the entry this record was made for (a newer one of the same tuple has
            // its own record further back).
            if self.by_tuple.get(&t).is_some_and(|h| h.at == at) {
                self.by_tuple.remove(&t);
            }
        }
    }

    /// Takes the entry of (`local`, `remote`) when `tcp` is its handshake's ACK: ack =
    /// our ISN + 1 and seq = the peer's ISN + 1 (the first byte the peer sends). Entries
    /// older than the age bound are dropped on the way.
    pub(crate) fn take(
        &mut self,
        now: Duration,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        tcp: &TcpHeader,
    ) -> Option<HalfOpen> {
        while self
            .order
            .front()
            .is_some_and(|&(_, at)| now.saturating_sub(at) > MAX_AGE)
        {
            self.forget_oldest();
        }
        let h = self.by_tuple.get(&(local, remote))?;
        if Seq(tcp.ack) != h.iss.plus(1) || Seq(tcp.seq) != h.irs.plus(1) {
            return None;
        }
        self.by_tuple.remove(&(local, remote))
    }

    /// Entries remembered (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_tuple.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TcpFlags;
    use std::net::Ipv4Addr;

    fn h(port: u16, at: u64) -> HalfOpen {
        HalfOpen {
            listener: ListenerId(1),
            local: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7),
            remote: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), port),
            iss: Seq(100),
            irs: Seq(500),
            mss: 1360,
            snd_scale: 0,
            rcv_scale: 0,
            snd_wnd: 65535,
            at: Duration::from_secs(at),
        }
    }

    fn ack(seq: u32, ack: u32) -> TcpHeader {
        TcpHeader {
            seq,
            ack,
            flags: TcpFlags::ACK,
            ..TcpHeader::default()
        }
    }

    #[test]
    fn only_the_handshake_ack_takes_an_entry_and_only_once() {
        let mut e = ExpiredHalfOpen::default();
        let x = h(1000, 30);
        e.insert(x);
        let now = Duration::from_secs(40);
        assert_eq!(e.take(now, x.local, x.remote, &ack(501, 102)), None);
        assert_eq!(e.take(now, x.local, x.remote, &ack(502, 101)), None);
        assert_eq!(e.take(now, x.local, x.remote, &ack(501, 101)), Some(x));
        assert_eq!(e.take(now, x.local, x.remote, &ack(501, 101)), None);
    }

    #[test]
    fn entries_are_bounded_in_number_and_age() {
        let mut e = ExpiredHalfOpen::default();
        for i in 0..(MAX_EXPIRED as u16 + 10) {
            e.insert(h(1000 + i, 30));
        }
        assert_eq!(e.len(), MAX_EXPIRED);
        let first = h(1000, 30);
        let now = Duration::from_secs(31);
        assert_eq!(e.take(now, first.local, first.remote, &ack(501, 101)), None);
        let kept = h(1000 + MAX_EXPIRED as u16, 30);
        assert_eq!(
            e.take(now, kept.local, kept.remote, &ack(501, 101)),
            Some(kept)
        );
        let late = Duration::from_secs(30) + MAX_AGE + Duration::from_secs(1);
        let other = h(1020, 30);
        assert_eq!(
            e.take(late, other.local, other.remote, &ack(501, 101)),
            None
        );
        assert_eq!(e.len(), 0);
    }
}
