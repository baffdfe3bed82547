//! The server's full-cone socket table for one user (seed 004), sans-IO.
//!
//! A map from remote address to the UDP socket that address is bound to. For a datagram
//! to D: reuse the socket that dialed D; else the socket D has sent to; else (the
//! [`MappingRule`]) reuse the user's socket, or dial a new one as the seed's rule 3 says.
//! Every source that sends to a socket joins the map with that socket. A mapping
//! lives for `timeout` after the last outbound datagram to its address (RFC 4787: at
//! least 2 minutes, refreshed by outbound traffic); a socket closes when no mapping
//! points at it any more. Sockets, mappings are bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tunnelbed_netio::Trace;

/// Names one socket of the table (the driver keeps the socket itself).
pub type SockId = u64;

/// Where a datagram to a destination no socket knows (neither dialed nor heard from)
/// leaves from: the seed's rule 3, or the reading that makes the table a full cone.
///
/// The seed calls its table full cone, but its rule 3 ("else dial a new one") gives every
/// destination nobody introduced a port of its own: RFC 4787 calls that
/// endpoint-dependent mapping, and `check fullcone` fails T1 and T4 on it. The default
/// keeps rules 1 and 2 and the learning rule, and only a user's first destination (per
/// address family) dials, so every destination sees one external port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MappingRule {
    /// Reuse the user's oldest socket of the destination's address family; dial only
    /// when there is none (endpoint-independent mapping, RFC 4787 REQ-1: full cone).
    #[default]
    Independent,
    /// The seed's literal rule 3: bind a new socket (endpoint-dependent mapping for
    /// destinations nobody introduced). Kept to compare with the seed's design.
    Seed,
}

impl MappingRule {
    /// Every rule with its command-line name.
    pub const ALL: [(&'static str, MappingRule); 2] = [
        ("independent", MappingRule::Independent),
        ("seed", MappingRule::Seed),
    ];

    /// The rule called `name` (`independent` or `seed`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
    }

    /// The command-line name of the rule.
    pub fn name(self) -> &'static str {
        match self {
            MappingRule::Independent => "independent",
            MappingRule::Seed => "seed",
        }
    }
}

/// Limits and timer of a table.
#[derive(Clone, Debug)]
pub struct ConeConfig {
    /// A mapping with no outbound traffic for this long is dropped (default 2 minutes).
    pub timeout: Duration,
    /// Most sockets one user may hold.
    pub max_sockets: usize,
    /// Most mappings (remote addresses) one user may hold.
    pub max_mappings: usize,
    /// Where a destination no socket knows leaves from (default: the user's socket,
    /// full cone; [`MappingRule::Seed`] dials a new one as the seed's rule 3 says).
    pub mapping: MappingRule,
}

impl Default for ConeConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            max_sockets: 64,
            max_mappings: 4096,
            mapping: MappingRule::default(),
        }
    }
}

/// Which socket an outbound datagram leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// An existing socket (it dialed this address before, or the address sent to it).
    Existing(SockId),
    /// No socket knows the address: bind this new one (then it is in the table).
    Dial(SockId),
    /// Over the socket or mapping limit: drop the datagram.
    Full,
}

/// What an inbound datagram did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// The source was already mapped (to this socket or another).
    Known,
    /// The source joined the table with this socket.
    New,
    /// The table is full: the source is not mapped.
    Full,
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    sock: SockId,
    last_out: Duration,
    dialed: bool,
}

/// One user's table.
#[derive(Debug)]
pub struct ConeTable {
    cfg: ConeConfig,
    name: String,
    trace: Trace,
    map: BTreeMap<SocketAddr, Mapping>,
    socks: BTreeMap<SockId, usize>,
    next: SockId,
}

impl ConeTable {
    /// An empty table; `name` labels its transitions (`cone[name]`).
    pub fn new(cfg: ConeConfig, trace: Trace, name: String) -> Self {
        Self {
            cfg,
            name,
            trace,
            map: BTreeMap::new(),
            socks: BTreeMap::new(),
            next: 0,
        }
    }

    fn note(&self, now: Duration, from: &str, to: String, cause: String) {
        if self.trace.is_enabled() {
            self.trace.transition(
                now,
                format!("cone[{}]", self.name),
                from.to_string(),
                to,
                cause,
            );
        }
    }

    /// Routes an outbound datagram to `dest` and refreshes its mapping.
    pub fn route(&mut self, now: Duration, dest: SocketAddr) -> Route {
        if let Some(m) = self.map.get_mut(&dest) {
            m.last_out = now;
            return Route::Existing(m.sock);
        }
        if self.map.len() >= self.cfg.max_mappings {
            self.note(now, "-", "full".into(), format!("no room to map {dest}"));
            return Route::Full;
        }
        if self.cfg.mapping == MappingRule::Independent {
            let same_family = self
                .map
                .iter()
                .filter(|(a, _)| a.is_ipv4() == dest.is_ipv4())
                .map(|(_, m)| m.sock)
                .min();
            if let Some(id) = same_family {
                if let Some(r) = self.socks.get_mut(&id) {
                    *r += 1;
                }
                self.map.insert(
                    dest,
                    Mapping {
                        sock: id,
                        last_out: now,
                        dialed: true,
                    },
                );
                self.note(
                    now,
                    &format!("s{id}"),
                    format!("s{id}"),
                    format!("reuse for {dest}"),
                );
                return Route::Existing(id);
            }
        }
        if self.socks.len() >= self.cfg.max_sockets {
            self.note(now, "-", "full".into(), format!("no room to dial {dest}"));
            return Route::Full;
        }
        let id = self.next;
        self.next += 1;
        self.socks.insert(id, 1);
        self.map.insert(
            dest,
            Mapping {
                sock: id,
                last_out: now,
                dialed: true,
            },
        );
        self.note(now, "-", format!("s{id}"), format!("dial {dest}"));
        Route::Dial(id)
    }

    /// The driver could not bind the socket `Route::Dial` asked for: forget it.
    pub fn dial_failed(&mut self, now: Duration, id: SockId) {
        self.map.retain(|_, m| m.sock != id);
        self.socks.remove(&id);
        self.note(now, &format!("s{id}"), "-".into(), "bind failed".into());
    }

    /// A datagram from `from` arrived on socket `id`: map the source to it if new.
    pub fn learn(&mut self, now: Duration, id: SockId, from: SocketAddr) -> Learn {
        if self.map.contains_key(&from) {
            return Learn::Known;
        }
        let Some(refs) = self.socks.get_mut(&id) else {
            return Learn::Full;
        };
        if self.map.len() >= self.cfg.max_mappings {
            return Learn::Full;
        }
        *refs += 1;
        self.map.insert(
            from,
            Mapping {
                sock: id,
                last_out: now,
                dialed: false,
            },
        );
        self.note(now, "-", format!("s{id}"), format!("learned {from}"));
        Learn::New
    }

    /// Drops mappings idle for the timeout; returns the sockets that no mapping uses any
    /// more (the driver closes them).
    pub fn handle_timeout(&mut self, now: Duration) -> Vec<SockId> {
        let t = self.cfg.timeout;
        let expired: Vec<SocketAddr> = self
            .map
            .iter()
            .filter(|(_, m)| now >= m.last_out.saturating_add(t))
            .map(|(a, _)| *a)
            .collect();
        let mut closed = Vec::new();
        for a in expired {
            let Some(m) = self.map.remove(&a) else {
                continue;
            };
            self.note(
                now,
                &format!("s{}", m.sock),
                "-".into(),
                format!(
                    "{} mapping {a} expired",
                    if m.dialed { "dialed" } else { "learned" }
                ),
            );
            if let Some(r) = self.socks.get_mut(&m.sock) {
                *r -= 1;
                if *r == 0 {
                    self.socks.remove(&m.sock);
                    closed.push(m.sock);
                }
            }
        }
        closed
    }

    /// When the next mapping expires.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.map
            .values()
            .map(|m| m.last_out.saturating_add(self.cfg.timeout))
            .min()
    }

    /// The socket `addr` is mapped to.
    pub fn socket_of(&self, addr: &SocketAddr) -> Option<SockId> {
        self.map.get(addr).map(|m| m.sock)
    }

    /// Live sockets.
    pub fn sockets(&self) -> usize {
        self.socks.len()
    }

    /// Live mappings.
    pub fn mappings(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn seed_rule() -> ConeConfig {
        ConeConfig {
            mapping: MappingRule::Seed,
            ..ConeConfig::default()
        }
    }

    #[test]
    fn default_is_full_cone() {
        assert_eq!(ConeConfig::default().mapping, MappingRule::Independent);
        for (name, rule) in MappingRule::ALL {
            assert_eq!(MappingRule::from_name(name), Some(rule));
            assert_eq!(rule.name(), name);
        }
        assert_eq!(MappingRule::from_name("full"), None);
    }

    #[test]
    fn seed_rules_in_order() {
        let mut t = ConeTable::new(seed_rule(), Trace::disabled(), "u".into());
        let s = Duration::from_secs;
        // 1. a new destination is dialed; sending again reuses that socket.
        assert_eq!(t.route(s(0), a("10.0.0.1:1")), Route::Dial(0));
        assert_eq!(t.route(s(1), a("10.0.0.1:1")), Route::Existing(0));
        // 2. a source that sent to socket 0 is reached from socket 0.
        assert_eq!(t.learn(s(2), 0, a("10.0.0.2:2")), Learn::New);
        assert_eq!(t.learn(s(2), 0, a("10.0.0.2:2")), Learn::Known);
        assert_eq!(t.route(s(3), a("10.0.0.2:2")), Route::Existing(0));
        // 3. anyone else: a new socket.
        assert_eq!(t.route(s(4), a("10.0.0.3:3")), Route::Dial(1));
        // A source already mapped keeps its first socket.
        assert_eq!(t.learn(s(5), 1, a("10.0.0.2:2")), Learn::Known);
        assert_eq!(t.socket_of(&a("10.0.0.2:2")), Some(0));
    }

    #[test]
    fn outbound_refreshes_and_sockets_close_with_their_last_mapping() {
        let cfg = ConeConfig {
            timeout: Duration::from_secs(120),
            ..ConeConfig::default()
        };
        let mut t = ConeTable::new(cfg, Trace::disabled(), "u".into());
        let s = Duration::from_secs;
        t.route(s(0), a("10.0.0.1:1"));
        t.learn(s(10), 0, a("10.0.0.2:2"));
        t.route(s(100), a("10.0.0.1:1")); // refresh
        assert_eq!(t.poll_timeout(), Some(s(130)));
        assert!(t.handle_timeout(s(129)).is_empty());
        assert!(t.handle_timeout(s(130)).is_empty(), "socket 0 still mapped");
        assert_eq!(t.mappings(), 1);
        assert_eq!(t.handle_timeout(s(220)), vec![0]);
        assert_eq!(t.sockets(), 0);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn independent_mapping_reuses_the_oldest_socket_per_family() {
        let mut t = ConeTable::new(ConeConfig::default(), Trace::disabled(), "u".into());
        let s = Duration::from_secs;
        assert_eq!(t.route(s(0), a("10.0.0.1:1")), Route::Dial(0));
        // Rule 2 and learning as the seed says: a source heard on socket 0 is mapped.
        assert_eq!(t.learn(s(0), 0, a("10.0.0.2:2")), Learn::New);
        assert_eq!(t.route(s(0), a("10.0.0.2:2")), Route::Existing(0));
        assert_eq!(t.route(s(1), a("10.0.0.3:3")), Route::Existing(0));
        assert_eq!(t.route(s(1), a("10.0.0.1:4")), Route::Existing(0));
        // IPv6 cannot leave from the IPv4 socket.
        assert_eq!(t.route(s(2), a("[::1]:5")), Route::Dial(1));
        assert_eq!(t.route(s(2), a("[::2]:5")), Route::Existing(1));
        assert_eq!(t.sockets(), 2);
        // The socket lives until its last mapping expires.
        t.route(s(100), a("10.0.0.3:3"));
        assert!(t.handle_timeout(s(200)).contains(&1));
        assert_eq!(t.socket_of(&a("10.0.0.3:3")), Some(0));
        assert_eq!(t.handle_timeout(s(220)), vec![0]);
    }

    #[test]
    fn bounded() {
        let cfg = ConeConfig {
            timeout: Duration::from_secs(120),
            max_sockets: 2,
            max_mappings: 3,
            ..seed_rule()
        };
        let mut t = ConeTable::new(cfg, Trace::disabled(), "u".into());
        let z = Duration::ZERO;
        assert_eq!(t.route(z, a("10.0.0.1:1")), Route::Dial(0));
        assert_eq!(t.route(z, a("10.0.0.1:2")), Route::Dial(1));
        assert_eq!(t.route(z, a("10.0.0.1:3")), Route::Full);
        assert_eq!(t.learn(z, 0, a("10.0.0.9:9")), Learn::New);
        assert_eq!(t.learn(z, 0, a("10.0.0.9:8")), Learn::Full);
        assert_eq!(
            t.learn(z, 7, a("10.0.0.9:7")),
            Learn::Full,
            "unknown socket"
        );
        t.dial_failed(z, 1);
        assert_eq!(t.sockets(), 1);
        assert_eq!(t.socket_of(&a("10.0.0.1:2")), None);
    }
}
