//! A target's connections as the verdict needs them: those still waiting on their dialer
//! when a run ends, and whether the dialer's reset was lost on the way, and those the
//! target never accepted. Over real TCP a reset is never retransmitted, and a target
//! that only reads sends nothing that would draw another, so when the link loses every
//! copy the target waits, as a kernel target would, until its own timeout; the run's
//! reset log ([`crate::realtcp::resets`]) tells that wait from a dialer that never reset
//! (a hang). And a dial reset before the target's side of the handshake completed (the
//! dialer's last ACK lost) never reaches the target's application at all, as with a
//! kernel. Used by `h2tunnel-streams`, whose target counts the client resets it sees.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use tunnelbed_netio::TcpConn;

use crate::realtcp::resets::ResetCount;

/// One target connection that has not stopped waiting on its dialer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// The dialer's address.
    pub peer: SocketAddr,
    /// The target's address.
    pub me: SocketAddr,
    /// The scenario's stream index, once the stream's header arrived.
    pub stream: Option<u32>,
}

/// A target's connections in a run.
#[derive(Debug, Default)]
pub struct TargetConns {
    /// The connections still waiting on their dialer, by accept order.
    waiting: BTreeMap<usize, Wait>,
    /// Every dialer address the target accepted a connection from.
    accepted: BTreeSet<SocketAddr>,
}

/// [`TargetConns`], shared by the target's connection tasks.
pub type Waiting = Arc<Mutex<TargetConns>>;

/// Notes a target connection in [`Waiting`] while it lives; dropping it (the target
/// stopped waiting: it read the request, saw the reset, or failed) forgets the entry.
pub struct TargetWait {
    map: Waiting,
    n: usize,
}

impl TargetWait {
    /// Notes connection `n` (its accept order) on `s`. A stream whose addresses are
    /// unknown is not noted (a simulator stream always knows them).
    pub fn new<S: TcpConn>(map: &Waiting, n: usize, s: &S) -> Self {
        if let (Ok(peer), Ok(me)) = (s.peer_addr(), s.local_addr()) {
            let mut g = lock(map);
            g.accepted.insert(peer);
            g.waiting.insert(
                n,
                Wait {
                    peer,
                    me,
                    stream: None,
                },
            );
        }
        Self {
            map: map.clone(),
            n,
        }
    }

    /// The connection carries the scenario's stream `i` (its header arrived).
    pub fn stream(&self, i: u32) {
        if let Some(w) = lock(&self.map).waiting.get_mut(&self.n) {
            w.stream = Some(i);
        }
    }
}

impl Drop for TargetWait {
    fn drop(&mut self) {
        lock(&self.map).waiting.remove(&self.n);
    }
}

fn lock(map: &Waiting) -> std::sync::MutexGuard<'_, TargetConns> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the targets still waiting at the end of a run mean.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WaitVerdict {
    /// Waits the dialer ended with a reset whose every copy the link lost, on streams
    /// meant to be reset (or whose header never arrived): (label, reset copies sent).
    pub lost: Vec<(String, u32)>,
    /// Any other wait: no reset sent, a reset that arrived, or a stream not meant to be
    /// reset. A failure.
    pub hung: Vec<String>,
    /// Streams meant to be reset whose dial the target never accepted: the dialer reset
    /// it before the target's side of the handshake completed.
    pub unaccepted: Vec<String>,
}

impl WaitVerdict {
    /// The detail for the check (empty when no target waited).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if !self.lost.is_empty() {
            let list: Vec<String> = self
                .lost
                .iter()
                .map(|(l, n)| format!("{l} ({n} sent)"))
                .collect();
            out += &format!(
                "; {} targets still reading: the dialer reset them and the link lost every copy ({})",
                self.lost.len(),
                list.join(", ")
            );
        }
        if !self.unaccepted.is_empty() {
            out += &format!(
                "; {} reset before the target's handshake completed, never accepted: {}",
                self.unaccepted.len(),
                self.unaccepted.join(", ")
            );
        }
        if !self.hung.is_empty() {
            out += &format!(
                "; {} targets left waiting with no lost reset to explain it: {}",
                self.hung.len(),
                self.hung.join(", ")
            );
        }
        out
    }
}

/// Judges a target's connections at the end of a run: `reset_dials` holds the streams
/// the dialer is meant to reset, each with the address it dialed from (as the proxy
/// reported it); `resets(from, to)` reads the run's reset log. A wait whose stream header
/// never arrived counts as a reset stream when its reset was lost (the dialer reset it
/// before the header crossed).
pub fn judge_waits(
    conns: &TargetConns,
    reset_dials: &BTreeMap<u32, SocketAddr>,
    resets: impl Fn(SocketAddrV4, SocketAddrV4) -> ResetCount,
) -> WaitVerdict {
    let mut v = WaitVerdict::default();
    for (i, from) in reset_dials {
        if !conns.accepted.contains(from) {
            v.unaccepted.push(format!("s{i:03}"));
        }
    }
    let may_reset = |i: u32| reset_dials.contains_key(&i);
    for w in conns.waiting.values() {
        let label = match w.stream {
            Some(i) => format!("s{i:03}"),
            None => format!("{} (no header)", w.peer),
        };
        let r = match (w.peer, w.me) {
            (SocketAddr::V4(peer), SocketAddr::V4(me)) => resets(peer, me),
            _ => ResetCount::default(),
        };
        if r.all_lost() && w.stream.is_none_or(&may_reset) {
            v.lost.push((label, r.sent));
        } else {
            v.hung.push(label);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(port: u16, stream: Option<u32>) -> Wait {
        Wait {
            peer: SocketAddr::from(([10, 0, 0, 1], port)),
            me: SocketAddr::from(([10, 0, 0, 2], 80)),
            stream,
        }
    }

    #[test]
    fn a_wait_is_excused_only_by_a_lost_reset_and_an_unaccepted_dial_is_named() {
        let waiting: BTreeMap<usize, Wait> = [
            (0, wait(1, Some(4))), // reset stream, every copy lost: excused
            (1, wait(2, Some(5))), // not a reset stream: a hang even with a lost reset
            (2, wait(3, None)),    // no header yet, reset lost: excused
            (3, wait(4, Some(4))), // reset arrived: a hang
            (4, wait(5, Some(4))), // never reset: a hang
        ]
        .into_iter()
        .collect();
        let accepted = waiting.values().map(|w| w.peer).collect();
        let conns = TargetConns { waiting, accepted };
        // Stream 4 is meant to be reset, and so is 6, whose dial was never accepted.
        let reset_dials = [
            (4, SocketAddr::from(([10, 0, 0, 1], 1))),
            (6, SocketAddr::from(([10, 0, 0, 1], 9))),
        ]
        .into_iter()
        .collect();
        let v = judge_waits(&conns, &reset_dials, |from, _| match from.port() {
            1..=3 => ResetCount {
                sent: 3,
                arrived: 0,
            },
            4 => ResetCount {
                sent: 3,
                arrived: 1,
            },
            _ => ResetCount::default(),
        });
        assert_eq!(
            v.lost,
            vec![
                ("s004".to_string(), 3),
                ("10.0.0.1:3 (no header)".to_string(), 3)
            ]
        );
        assert_eq!(v.hung, vec!["s005", "s004", "s004"]);
        assert_eq!(v.unaccepted, vec!["s006"]);
        assert!(v
            .summary()
            .contains("1 reset before the target's handshake completed"));
        assert!(v.summary().contains("2 targets still reading"));
        assert!(v.summary().contains("3 targets left waiting"));
        assert_eq!(WaitVerdict::default().summary(), "");
    }
}
