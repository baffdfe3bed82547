//! The Candy server as a sans-IO machine over many connections: the driver reports
//! connections opening and closing, hands in each WebSocket message, and sends what
//! [`Server::poll_transmit`] yields; [`Server::poll_event`] says which connections to
//! close. Time (`now`) is the Unix time as a `Duration`: the timestamps of AUTH, DHCP
//! and VMAC are checked against it.
//!
//! Rules: VMAC (no auth needed) records the client's id; DHCP grants from the pool;
//! AUTH binds an address to the connection (a second AUTH for the address replaces the
//! older connection). A bad hash closes the connection silently; a timestamp outside the
//! replay window, or not newer than the last AUTH accepted for that address, is a replay
//! and closes it too. Anything but VMAC/DHCP/AUTH before AUTH closes it. FORWARD goes to
//! the owner of the destination (broadcast, multicast and the pool's directed broadcast:
//! to every other client) and is dropped when its source is not the sender's address;
//! PEER INFO, DISCOVERY and GENERAL are relayed with the same source check.
//!
//! Bounds: message size, clients, bytes queued toward each client. A client whose queue
//! is full (it reads too slowly) loses the messages for it (counted); the others are not
//! held up. A connection that does not authenticate in time is closed.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tunnelbed_netio::iplink::{check_ipv4, ipv4_addrs};
use tunnelbed_netio::{Ipv4Cidr, Trace};

use crate::pool::{Holder, Pool};
use crate::wire::{self, Dhcp, Message, BROADCAST};

/// A connection's number, chosen by the driver.
pub type ConnId = u64;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The shared password (may be empty).
    pub password: Vec<u8>,
    /// The DHCP pool; without one DHCP requests close the connection (as Candy does).
    pub pool: Option<Ipv4Cidr>,
    /// AUTH, DHCP and VMAC timestamps further than this from now are replays.
    pub replay_window: Duration,
    /// Longest message accepted; longer closes the connection.
    pub max_message: usize,
    /// Most connections at once; more are closed on arrival.
    pub max_clients: usize,
    /// Most bytes queued toward one client; what does not fit is dropped.
    pub max_queued: usize,
    /// A connection must authenticate within this time.
    pub auth_timeout: Duration,
    /// How long an address stays kept for its vmac after a DHCP grant or a disconnect.
    pub hold: Duration,
    /// Drop FORWARD packets whose source is not the sender's address (Candy <= 6.0.2).
    pub check_source: bool,
    /// Seed of the confusion padding of DHCP answers.
    pub seed: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            password: Vec::new(),
            pool: None,
            replay_window: Duration::from_secs(30),
            max_message: 4096,
            max_clients: 1024,
            max_queued: 1 << 20,
            auth_timeout: Duration::from_secs(30),
            hold: Duration::from_secs(120),
            check_source: true,
            seed: 0,
        }
    }
}

/// Why the server closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A hash did not match the password.
    BadHash,
    /// A timestamp outside the window, or an AUTH not newer than the last one.
    Replay,
    /// Not a Candy message.
    Malformed,
    /// Longer than the limit.
    TooLong,
    /// A message that needs AUTH first.
    Unauthenticated,
    /// DHCP without a pool, or the pool is full.
    NoAddress,
    /// AUTH for an address no client may have (0.0.0.0, broadcast, multicast, ...).
    BadAddress,
    /// Another connection authenticated with this connection's address.
    Replaced,
    /// Too many clients.
    Full,
    /// No AUTH in time.
    AuthTimeout,
}

impl CloseReason {
    /// Short name for traces and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadHash => "bad hash",
            Self::Replay => "replay",
            Self::Malformed => "malformed",
            Self::TooLong => "too long",
            Self::Unauthenticated => "unauthenticated",
            Self::NoAddress => "no address",
            Self::BadAddress => "bad address",
            Self::Replaced => "replaced",
            Self::Full => "server full",
            Self::AuthTimeout => "auth timeout",
        }
    }
}

/// What the driver must do besides sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// Close this connection without a word.
    Close(ConnId, CloseReason),
}

/// One message for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The connection.
    pub conn: ConnId,
    /// One WebSocket binary message.
    pub data: Bytes,
}

/// Counters of what the server did not deliver, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// FORWARD/PEER INFO/DISCOVERY/GENERAL whose source was not the sender's address.
    pub spoofed: u64,
    /// Messages to an address nobody has.
    pub no_route: u64,
    /// FORWARD payloads that are not well-formed IPv4.
    pub malformed_packets: u64,
    /// Messages dropped because the receiver's queue was full.
    pub slow_drops: u64,
    /// Messages relayed (one per receiving connection).
    pub relayed: u64,
    /// Connections closed for a bad hash.
    pub bad_hash: u64,
    /// Connections closed as replays.
    pub replays: u64,
}

#[derive(Clone, Debug)]
struct Conn {
    ip: Option<Ipv4Addr>,
    vmac: Option<[u8; 16]>,
    queued: usize,
    opened: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Hold {
    vmac: Option<[u8; 16]>,
    until: Duration,
}

/// The server machine (see the module notes).
pub struct Server {
    cfg: ServerConfig,
    pool: Option<Pool>,
    conns: BTreeMap<ConnId, Conn>,
    ips: BTreeMap<Ipv4Addr, ConnId>,
    holds: BTreeMap<Ipv4Addr, Hold>,
    last_auth: BTreeMap<Ipv4Addr, i64>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
    stats: ServerStats,
    rng: ChaCha8Rng,
    trace: Trace,
}

fn unix_secs(now: Duration) -> i64 {
    i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
}

impl Server {
    /// A server with `cfg`; fails when the pool is unusable.
    pub fn new(cfg: ServerConfig, trace: Trace) -> Result<Self, crate::pool::PoolError> {
        let pool = cfg.pool.map(Pool::new).transpose()?;
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            pool,
            conns: BTreeMap::new(),
            ips: BTreeMap::new(),
            holds: BTreeMap::new(),
            last_auth: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: ServerStats::default(),
            trace,
        })
    }

    fn machine(conn: ConnId) -> String {
        format!("candy-server[{conn}]")
    }

    fn state_name(c: &Conn) -> String {
        match c.ip {
            Some(ip) => format!("authed({ip})"),
            None => "open".into(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The connection that owns `ip`, if any.
    pub fn owner(&self, ip: Ipv4Addr) -> Option<ConnId> {
        self.ips.get(&ip).copied()
    }

    /// Bytes queued toward `conn` and not yet reported written.
    pub fn queued(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.queued)
    }

    /// A new connection; when the server is full it is closed at once.
    pub fn handle_connect(&mut self, now: Duration, conn: ConnId) {
        if self.conns.len() >= self.cfg.max_clients {
            self.trace.transition(
                now,
                Self::machine(conn),
                "new",
                "closed",
                CloseReason::Full.name(),
            );
            self.events
                .push_back(ServerEvent::Close(conn, CloseReason::Full));
            return;
        }
        self.conns.insert(
            conn,
            Conn {
                ip: None,
                vmac: None,
                queued: 0,
                opened: now,
            },
        );
        self.trace
            .transition(now, Self::machine(conn), "new", "open", "connected");
    }

    /// The driver wrote `n` bytes queued toward `conn`.
    pub fn handle_written(&mut self, conn: ConnId, n: usize) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queued = c.queued.saturating_sub(n);
        }
    }

    /// The connection is gone (closed by either side); its address is kept for its vmac
    /// for [`ServerConfig::hold`].
    pub fn handle_disconnect(&mut self, now: Duration, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(ip) = c.ip {
            if self.ips.get(&ip) == Some(&conn) {
                self.ips.remove(&ip);
                self.holds.insert(
                    ip,
                    Hold {
                        vmac: c.vmac,
                        until: now + self.cfg.hold,
                    },
                );
            }
        }
        self.trace.transition(
            now,
            Self::machine(conn),
            Self::state_name(&c),
            "gone",
            "disconnected",
        );
    }

    fn close(&mut self, now: Duration, conn: ConnId, why: CloseReason) {
        match why {
            CloseReason::BadHash => self.stats.bad_hash += 1,
            CloseReason::Replay => self.stats.replays += 1,
            _ => {}
        }
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(ip) = c.ip {
                if self.ips.get(&ip) == Some(&conn) {
                    self.ips.remove(&ip);
                    self.holds.insert(
                        ip,
                        Hold {
                            vmac: c.vmac,
                            until: now + self.cfg.hold,
                        },
                    );
                }
            }
            self.trace.transition(
                now,
                Self::machine(conn),
                Self::state_name(&c),
                "closed",
                why.name(),
            );
            self.events.push_back(ServerEvent::Close(conn, why));
        }
    }

    fn in_window(&self, now: Duration, ts: i64) -> bool {
        let w = i64::try_from(self.cfg.replay_window.as_secs()).unwrap_or(i64::MAX);
        unix_secs(now).abs_diff(ts) <= w.unsigned_abs()
    }

    fn send(&mut self, to: ConnId, data: &Bytes) {
        let Some(c) = self.conns.get_mut(&to) else {
            return;
        };
        if c.queued + data.len() > self.cfg.max_queued {
            self.stats.slow_drops += 1;
            return;
        }
        c.queued += data.len();
        self.stats.relayed += 1;
        self.transmits.push_back(Transmit {
            conn: to,
            data: data.clone(),
        });
    }

    fn fan_out(&mut self, from: ConnId, data: &Bytes) {
        let to: Vec<ConnId> = self.ips.values().copied().filter(|c| *c != from).collect();
        for c in to {
            self.send(c, data);
        }
    }

    fn is_broadcast(&self, dst: Ipv4Addr) -> bool {
        dst == BROADCAST
            || dst.is_multicast()
            || self.pool.as_ref().is_some_and(|p| p.broadcast() == dst)
    }

    /// Who holds `ip`: a connected client, or a hold that has not expired.
    fn holder(&self, now: Duration, ip: Ipv4Addr) -> Holder {
        if let Some(c) = self.ips.get(&ip).and_then(|c| self.conns.get(c)) {
            return Holder::Client(c.vmac);
        }
        match self.holds.get(&ip) {
            Some(h) if h.until > now => Holder::Client(h.vmac),
            _ => Holder::Free,
        }
    }

    /// One WebSocket message from `conn`.
    pub fn handle_input(&mut self, now: Duration, conn: ConnId, msg: &[u8]) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let authed = c.ip;
        if msg.len() > self.cfg.max_message {
            return self.close(now, conn, CloseReason::TooLong);
        }
        let m = match Message::decode(msg) {
            Ok(m) => m,
            Err(_) => return self.close(now, conn, CloseReason::Malformed),
        };
        match m {
            Message::Vmac(v) => {
                if !v.check(&self.cfg.password) {
                    return self.close(now, conn, CloseReason::BadHash);
                }
                if !self.in_window(now, v.timestamp) {
                    return self.close(now, conn, CloseReason::Replay);
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.vmac = Some(v.vmac);
                }
            }
            Message::Dhcp(d) => self.dhcp(now, conn, d),
            Message::Auth(a) => {
                if !a.check(&self.cfg.password) {
                    return self.close(now, conn, CloseReason::BadHash);
                }
                let newer = self.last_auth.get(&a.ip).is_none_or(|&t| a.timestamp > t);
                if !self.in_window(now, a.timestamp) || !newer {
                    return self.close(now, conn, CloseReason::Replay);
                }
                let bad = a.ip.is_unspecified()
                    || a.ip == BROADCAST
                    || a.ip.is_multicast()
                    || a.ip.is_loopback()
                    || self
                        .pool
                        .as_ref()
                        .is_some_and(|p| p.cidr().contains(a.ip) && !p.is_host(a.ip));
                if bad {
                    return self.close(now, conn, CloseReason::BadAddress);
                }
                self.auth(now, conn, a.ip, a.timestamp);
            }
            _ if authed.is_none() => self.close(now, conn, CloseReason::Unauthenticated),
            Message::Forward(p) => {
                let Some(me) = authed else { return };
                if check_ipv4(&p).is_err() {
                    self.stats.malformed_packets += 1;
                    return;
                }
                let Some((src, dst)) = ipv4_addrs(&p) else {
                    return;
                };
                if self.cfg.check_source && src != me {
                    self.stats.spoofed += 1;
                    return;
                }
                self.route(conn, dst, msg);
            }
            Message::PeerInfo(p) => self.relay(conn, authed, p.src, p.dst, msg, false),
            Message::Discovery(d) => self.relay(conn, authed, d.src, d.dst, msg, true),
            Message::General(g) => self.relay(conn, authed, g.src, g.dst, msg, true),
            // Only servers send routes; a client's ROUTE is ignored.
            Message::Route(_) => {}
        }
    }

    fn route(&mut self, from: ConnId, dst: Ipv4Addr, msg: &[u8]) {
        let data = Bytes::copy_from_slice(msg);
        if let Some(&to) = self.ips.get(&dst) {
            if to != from {
                self.send(to, &data);
            }
        } else if self.is_broadcast(dst) {
            self.fan_out(from, &data);
        } else {
            self.stats.no_route += 1;
        }
    }

    fn relay(
        &mut self,
        from: ConnId,
        me: Option<Ipv4Addr>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        msg: &[u8],
        broadcast: bool,
    ) {
        if me != Some(src) {
            self.stats.spoofed += 1;
            return;
        }
        let data = Bytes::copy_from_slice(msg);
        if broadcast && dst == BROADCAST {
            self.fan_out(from, &data);
        } else if let Some(&to) = self.ips.get(&dst) {
            if to != from {
                self.send(to, &data);
            }
        } else {
            self.stats.no_route += 1;
        }
    }

    fn auth(&mut self, now: Duration, conn: ConnId, ip: Ipv4Addr, ts: i64) {
        if let Some(old) = self.ips.get(&ip).copied().filter(|o| *o != conn) {
            self.close(now, old, CloseReason::Replaced);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let from = Self::state_name(c);
        if let Some(prev) = c.ip.replace(ip) {
            if prev != ip && self.ips.get(&prev) == Some(&conn) {
                self.ips.remove(&prev);
            }
        }
        self.ips.insert(ip, conn);
        self.holds.remove(&ip);
        self.last_auth.insert(ip, ts);
        self.trace.transition(
            now,
            Self::machine(conn),
            from,
            format!("authed({ip})"),
            "AUTH",
        );
    }

    fn dhcp(&mut self, now: Duration, conn: ConnId, d: Dhcp) {
        if !d.check(&self.cfg.password) {
            return self.close(now, conn, CloseReason::BadHash);
        }
        if !self.in_window(now, d.timestamp) {
            return self.close(now, conn, CloseReason::Replay);
        }
        let vmac = self.conns.get(&conn).and_then(|c| c.vmac);
        let requested = d.cidr.parse::<Ipv4Cidr>().ok().map(|c| c.addr);
        let holders: BTreeMap<Ipv4Addr, Holder> = self
            .ips
            .keys()
            .chain(self.holds.keys())
            .map(|a| (*a, self.holder(now, *a)))
            .collect();
        // The address this vmac already holds (its connection before a reconnect, or an
        // earlier grant): a client asking for no particular address gets it back.
        let previous = vmac.and_then(|v| {
            holders
                .iter()
                .find(|(_, h)| **h == Holder::Client(Some(v)))
                .map(|(a, _)| *a)
        });
        let Some(pool) = self.pool.as_mut() else {
            return self.close(now, conn, CloseReason::NoAddress);
        };
        let grant = pool.pick(requested, vmac, previous, |a| {
            holders.get(&a).copied().unwrap_or(Holder::Free)
        });
        let Some(grant) = grant else {
            return self.close(now, conn, CloseReason::NoAddress);
        };
        // Keep it for this client until it authenticates (or the hold ends).
        self.holds.insert(
            grant.addr,
            Hold {
                vmac,
                until: now + self.cfg.hold,
            },
        );
        let reply = Dhcp::new(
            &self.cfg.password,
            &grant.to_string(),
            unix_secs(now),
            wire::confusion(&mut self.rng),
        );
        let mut b = BytesMut::new();
        if Message::Dhcp(reply).encode(&mut b).is_ok() {
            self.send(conn, &b.freeze());
        }
        self.trace.transition(
            now,
            Self::machine(conn),
            "open",
            "open",
            format!("DHCP grant {grant} (asked {})", d.cidr),
        );
    }

    /// Closes connections that did not authenticate in time; forgets expired holds.
    pub fn handle_timeout(&mut self, now: Duration) {
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.ip.is_none() && now >= c.opened + self.cfg.auth_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.close(now, id, CloseReason::AuthTimeout);
        }
        self.holds.retain(|_, h| h.until > now);
        let w = i64::try_from(self.cfg.replay_window.as_secs()).unwrap_or(i64::MAX);
        let oldest = unix_secs(now).saturating_sub(w);
        // An AUTH older than the window fails the window check anyway.
        self.last_auth.retain(|_, t| *t >= oldest);
    }

    /// When [`Server::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let auth = self
            .conns
            .values()
            .filter(|c| c.ip.is_none())
            .map(|c| c.opened + self.cfg.auth_timeout)
            .min();
        let hold = self.holds.values().map(|h| h.until).min();
        auth.into_iter().chain(hold).min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next connection to close.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
