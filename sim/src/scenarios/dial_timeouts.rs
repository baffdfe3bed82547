//! Streams that failed before their first answer byte because a TCP dial on their path
//! gave up (real TCP only). Under 15-20% loss every SYN or SYN-ACK of a dial can be lost
//! within the dialer's 10 s timeout, as with a kernel; the proxy then fails the stream
//! loudly, which is right, while the plan wanted it to work. The verdict excuses such a
//! stream only with evidence from the TCP stacks' ledger ([`AbandonedDial`]): a carrier
//! dial that gave up (the local's SOCKS5 reply 1, or a direct stream's "timed out"), or a
//! dial to a target that gave up, one stream per abandoned dial, and only when the target
//! never saw the stream. Anything else still fails.

use std::collections::BTreeMap;

use crate::realtcp::resets::AbandonedDial;
use crate::scenarios::pong_common::{AppSaw, TargetSaw};

/// Why one stream is excused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialCause {
    /// A carrier dial to the proxy's far end gave up.
    Carrier(AbandonedDial),
    /// The far end's dial to the target gave up.
    Target(AbandonedDial),
}

/// The streams excused so far and what is left to excuse them with.
#[derive(Debug)]
pub struct DialTimeouts {
    carriers: Vec<AbandonedDial>,
    targets: Vec<AbandonedDial>,
    per_carrier: usize,
    /// Excused streams by tag, with the dial that explains each.
    pub excused: BTreeMap<u32, DialCause>,
}

impl DialTimeouts {
    /// Sorts the run's abandoned `dials` into carrier dials (to `carrier_port`) and the
    /// rest (to targets); one carrier dial may explain up to `per_carrier` streams (those
    /// that waited on it), a target dial one.
    pub fn new(dials: &[AbandonedDial], carrier_port: u16, per_carrier: usize) -> Self {
        let (carriers, targets) = dials.iter().partition(|d| d.to.port() == carrier_port);
        Self {
            carriers,
            targets,
            per_carrier,
            excused: BTreeMap::new(),
        }
    }

    /// Whether stream `tag` (what its application and its target saw) failed because of
    /// a dial that gave up; if so it is counted against one. Call in tag order.
    pub fn excuse(&mut self, tag: u32, app: Option<&AppSaw>, target: Option<&TargetSaw>) -> bool {
        let Some(AppSaw::Error(e)) = app else {
            return false;
        };
        if target.is_some() {
            return false;
        }
        let before_any_byte = e.starts_with("connect:") || e.ends_with("after 0 B");
        if !before_any_byte {
            return false;
        }
        let carrier = e.contains("SOCKS5 reply 1") || e.contains("timed out");
        let cause = if carrier {
            let used = self
                .excused
                .values()
                .filter(|c| matches!(c, DialCause::Carrier(_)))
                .count();
            if used >= self.carriers.len() * self.per_carrier {
                return false;
            }
            DialCause::Carrier(self.carriers[used / self.per_carrier.max(1)])
        } else {
            let used = self
                .excused
                .values()
                .filter(|c| matches!(c, DialCause::Target(_)))
                .count();
            let Some(d) = self.targets.get(used) else {
                return false;
            };
            DialCause::Target(*d)
        };
        self.excused.insert(tag, cause);
        true
    }

    /// The detail for a verdict (empty when nothing was excused).
    pub fn summary(&self) -> String {
        if self.excused.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self
            .excused
            .iter()
            .map(|(t, c)| match c {
                DialCause::Carrier(d) => format!(
                    "s{t:03} (carrier dial {} -> {} gave up at {:.1} s)",
                    d.from,
                    d.to,
                    d.at.as_secs_f64()
                ),
                DialCause::Target(d) => format!(
                    "s{t:03} (target dial {} -> {} gave up at {:.1} s)",
                    d.from,
                    d.to,
                    d.at.as_secs_f64()
                ),
            })
            .collect();
        format!(
            "; {} streams failed before any byte because a TCP dial on their path timed out on the link: {}",
            self.excused.len(),
            list.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;
    use std::time::Duration;

    fn dial(port: u16) -> AbandonedDial {
        AbandonedDial {
            from: "192.168.0.4:50000".parse::<SocketAddrV4>().unwrap(),
            to: SocketAddrV4::new([192, 168, 0, 1].into(), port),
            at: Duration::from_secs(12),
        }
    }

    fn err(s: &str) -> AppSaw {
        AppSaw::Error(s.into())
    }

    #[test]
    fn only_failures_before_any_byte_with_a_dial_to_blame_are_excused() {
        let reset0 = err("write Ok(()), read Err(reset) after 0 B");
        let reply1 = err("connect: SOCKS5 reply 1");
        // No abandoned dial: nothing is excused.
        let mut none = DialTimeouts::new(&[], 7001, 30);
        assert!(!none.excuse(1, Some(&reset0), None));
        assert!(!none.excuse(2, Some(&reply1), None));
        // A target dial excuses one stream that got nothing and that the target never saw.
        let mut t = DialTimeouts::new(&[dial(8000)], 7001, 30);
        assert!(!t.excuse(1, Some(&reset0), Some(&TargetSaw::Complete)));
        assert!(!t.excuse(2, Some(&err("read Err(reset) after 10 B")), None));
        assert!(!t.excuse(3, Some(&AppSaw::Hung), None));
        assert!(!t.excuse(4, Some(&reply1), None), "no carrier dial gave up");
        assert!(t.excuse(5, Some(&reset0), None));
        assert!(
            !t.excuse(6, Some(&reset0), None),
            "one stream per target dial"
        );
        // A carrier dial excuses the streams waiting on it, up to the carrier's share.
        let mut c = DialTimeouts::new(&[dial(7001)], 7001, 2);
        assert!(c.excuse(1, Some(&reply1), None));
        assert!(c.excuse(
            2,
            Some(&err("write Err(carrier timed out) after 0 B")),
            None
        ));
        assert!(!c.excuse(3, Some(&reply1), None));
        assert!(c.summary().contains("2 streams failed before any byte"));
        assert_eq!(none.summary(), "");
    }
}
