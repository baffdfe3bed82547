//! The Candy client as a sans-IO machine for one client across reconnects: the driver
//! opens a WebSocket when told ([`ClientEvent::Connect`]), reports it with
//! [`Client::handle_connected`], hands in every message from the server and every packet
//! from the virtual interface, and sends what [`Client::poll_transmit`] yields.
//!
//! Sequence on each connection: VMAC -> DHCP (asking for the address it had, when it
//! uses DHCP) -> the server's DHCP answer -> AUTH -> up: packets flow both ways. After
//! [`ClientConfig::keepalive`] without input it asks for a WebSocket ping; after
//! [`ClientConfig::dead_after`] without input it drops the connection. A lost connection
//! is retried after a backoff that doubles up to [`ClientConfig::backoff_max`] (with
//! jitter from the seeded RNG), and the vmac and the last address are kept, so a
//! reconnect gets the same address. `now` is the Unix time as a `Duration` (the
//! timestamps of VMAC, DHCP and AUTH come from it).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tunnelbed_netio::iplink::check_ipv4;
use tunnelbed_netio::{Ipv4Cidr, Trace};

use crate::wire::{self, Auth, Dhcp, Message, RouteEntry, Vmac};

/// How the client gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrMode {
    /// A fixed address (no DHCP).
    Static(Ipv4Cidr),
    /// Ask the server; the first request asks for this address (if any).
    Dhcp(Option<Ipv4Cidr>),
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The shared password.
    pub password: Vec<u8>,
    /// The client's vmac (16 bytes; Candy writes 16 lowercase hex characters).
    pub vmac: [u8; 16],
    /// Static address or DHCP.
    pub addr: AddrMode,
    /// Ask for a ping after this long without input.
    pub keepalive: Duration,
    /// Drop the connection after this long without input.
    pub dead_after: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// An up connection that lasted this long resets the backoff.
    pub stable_after: Duration,
    /// Seed of the jitter and confusion RNG.
    pub seed: u64,
}

impl ClientConfig {
    /// Defaults for `password`, `vmac` and `addr`: Candy's 15 s keepalive, 45 s to
    /// declare the server gone, reconnects after 1 s doubling to 30 s.
    pub fn new(password: &[u8], vmac: [u8; 16], addr: AddrMode) -> Self {
        Self {
            password: password.to_vec(),
            vmac,
            addr,
            keepalive: Duration::from_secs(15),
            dead_after: Duration::from_secs(45),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            seed: 0,
        }
    }
}

/// What the driver must do besides sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Open a WebSocket to the server, then call [`Client::handle_connected`] (or
    /// [`Client::handle_disconnected`] if it fails).
    Connect,
    /// Send a WebSocket ping.
    Ping,
    /// Close the WebSocket (the server went silent); then report it disconnected.
    Drop,
    /// The address is known (first time, or changed): configure the interface with it.
    Up(Ipv4Cidr),
    /// A packet for the virtual interface.
    Packet(Vec<u8>),
    /// Routes the server pushed.
    Routes(Vec<RouteEntry>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting to reconnect at the given time.
    Backoff(Duration),
    /// The driver is opening the WebSocket.
    Connecting,
    /// VMAC and DHCP sent; waiting for the answer.
    AwaitDhcp,
    /// AUTH sent: packets flow.
    Up,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::Backoff(_) => "backoff",
            Self::Connecting => "connecting",
            Self::AwaitDhcp => "await-dhcp",
            Self::Up => "up",
        }
    }
}

/// Counters for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connections made.
    pub connects: u64,
    /// Packets sent to the server.
    pub sent: u64,
    /// Packets delivered to the interface.
    pub delivered: u64,
    /// Packets dropped (not up, not IPv4).
    pub dropped: u64,
}

/// The client machine (see the module notes).
pub struct Client {
    cfg: ClientConfig,
    state: State,
    addr: Option<Ipv4Cidr>,
    /// The address the interface was last told about.
    announced: Option<Ipv4Cidr>,
    last_input: Duration,
    ping_asked: bool,
    up_since: Duration,
    failures: u32,
    transmits: VecDeque<Bytes>,
    events: VecDeque<ClientEvent>,
    rng: ChaCha8Rng,
    trace: Trace,
    name: String,
    stats: ClientStats,
}

fn unix_secs(now: Duration) -> i64 {
    i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
}

impl Client {
    /// A client that connects at once; `name` labels its trace records.
    pub fn new(cfg: ClientConfig, name: &str, trace: Trace) -> Self {
        let addr = match cfg.addr {
            AddrMode::Static(c) => Some(c),
            AddrMode::Dhcp(want) => want,
        };
        let mut c = Self {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            state: State::Connecting,
            addr,
            announced: None,
            last_input: Duration::ZERO,
            ping_asked: false,
            up_since: Duration::ZERO,
            failures: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            trace,
            name: format!("candy-client[{name}]"),
            stats: ClientStats::default(),
        };
        c.events.push_back(ClientEvent::Connect);
        c
    }

    fn set(&mut self, now: Duration, to: State, cause: impl Into<String>) {
        let from = self.state;
        self.state = to;
        self.trace
            .transition(now, self.name.clone(), from.name(), to.name(), cause.into());
    }

    /// The address in use (or asked for).
    pub fn addr(&self) -> Option<Ipv4Cidr> {
        self.addr
    }

    /// Whether packets flow.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// The counters so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    fn push(&mut self, m: Message) {
        if let Ok(b) = m.to_bytes() {
            self.transmits.push_back(b.freeze());
        }
    }

    /// The WebSocket is open: send VMAC, then DHCP or AUTH.
    pub fn handle_connected(&mut self, now: Duration) {
        if self.state != State::Connecting {
            return;
        }
        self.stats.connects += 1;
        self.last_input = now;
        self.ping_asked = false;
        let ts = unix_secs(now);
        let c = wire::confusion(&mut self.rng);
        self.push(Message::Vmac(Vmac::new(
            &self.cfg.password,
            self.cfg.vmac,
            ts,
            c,
        )));
        match self.cfg.addr {
            AddrMode::Static(cidr) => self.go_up(now, cidr, "connected, static address"),
            AddrMode::Dhcp(_) => {
                let want = self
                    .addr
                    .map_or_else(|| "0.0.0.0/0".to_string(), |a| a.to_string());
                let c = wire::confusion(&mut self.rng);
                self.push(Message::Dhcp(Dhcp::new(&self.cfg.password, &want, ts, c)));
                self.set(
                    now,
                    State::AwaitDhcp,
                    format!("connected, DHCP asks {want}"),
                );
            }
        }
    }

    fn go_up(&mut self, now: Duration, cidr: Ipv4Cidr, cause: &str) {
        let c = wire::confusion(&mut self.rng);
        self.push(Message::Auth(Auth::new(
            &self.cfg.password,
            cidr.addr,
            unix_secs(now),
            c,
        )));
        self.addr = Some(cidr);
        self.up_since = now;
        if self.announced != Some(cidr) {
            self.announced = Some(cidr);
            self.events.push_back(ClientEvent::Up(cidr));
        }
        self.set(now, State::Up, format!("{cause}; AUTH {cidr}"));
    }

    /// One message from the server.
    pub fn handle_input(&mut self, now: Duration, msg: &[u8]) {
        self.handle_activity(now);
        let Ok(m) = Message::decode(msg) else {
            self.stats.dropped += 1;
            return;
        };
        match m {
            Message::Forward(p) if self.state == State::Up => {
                if check_ipv4(&p).is_ok() {
                    self.stats.delivered += 1;
                    self.events.push_back(ClientEvent::Packet(p));
                } else {
                    self.stats.dropped += 1;
                }
            }
            Message::Dhcp(d) if self.state == State::AwaitDhcp => {
                let grant = d.cidr.parse::<Ipv4Cidr>().ok();
                match grant.filter(|_| d.check(&self.cfg.password)) {
                    Some(g) if !g.addr.is_unspecified() => {
                        self.go_up(now, g, &format!("DHCP granted {g}"))
                    }
                    _ => {
                        self.set(now, State::Connecting, "bad DHCP answer");
                        self.events.push_back(ClientEvent::Drop);
                    }
                }
            }
            Message::Route(r) if self.state == State::Up => {
                self.events.push_back(ClientEvent::Routes(r.entries));
            }
            _ => self.stats.dropped += 1,
        }
    }

    /// Any frame from the server (a pong too): the connection is alive.
    pub fn handle_activity(&mut self, now: Duration) {
        self.last_input = now;
        self.ping_asked = false;
    }

    /// A packet from the virtual interface: sent as FORWARD when up, else dropped.
    pub fn handle_packet(&mut self, _now: Duration, packet: &[u8]) {
        if self.state != State::Up || check_ipv4(packet).is_err() {
            self.stats.dropped += 1;
            return;
        }
        let mut b = bytes::BytesMut::with_capacity(packet.len() + 1);
        b.extend_from_slice(&[wire::kind::FORWARD]);
        b.extend_from_slice(packet);
        self.stats.sent += 1;
        self.transmits.push_back(b.freeze());
    }

    /// The WebSocket is gone (or could not be opened): wait, then connect again.
    pub fn handle_disconnected(&mut self, now: Duration) {
        if matches!(self.state, State::Backoff(_)) {
            return;
        }
        if self.state == State::Up && now >= self.up_since + self.cfg.stable_after {
            self.failures = 0;
        }
        let exp = self.failures.min(16);
        let base = self
            .cfg
            .backoff_min
            .saturating_mul(1u32 << exp)
            .min(self.cfg.backoff_max);
        // Up to a quarter more, so clients that lost one server do not return in step.
        let jitter_ms = self.rng.gen_range(0..=base.as_millis() as u64 / 4);
        let delay = base + Duration::from_millis(jitter_ms);
        self.failures = self.failures.saturating_add(1);
        self.transmits.clear();
        self.set(
            now,
            State::Backoff(now + delay),
            format!("disconnected, retry in {}ms", delay.as_millis()),
        );
    }

    /// Reconnects, pings and drops a silent connection.
    pub fn handle_timeout(&mut self, now: Duration) {
        match self.state {
            State::Backoff(at) if now >= at => {
                self.set(now, State::Connecting, "backoff over");
                self.events.push_back(ClientEvent::Connect);
            }
            State::AwaitDhcp | State::Up => {
                if now >= self.last_input + self.cfg.dead_after {
                    self.events.push_back(ClientEvent::Drop);
                    self.handle_disconnected(now);
                } else if !self.ping_asked && now >= self.last_input + self.cfg.keepalive {
                    self.ping_asked = true;
                    self.events.push_back(ClientEvent::Ping);
                }
            }
            _ => {}
        }
    }

    /// When [`Client::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.state {
            State::Backoff(at) => Some(at),
            State::Connecting => None,
            State::AwaitDhcp | State::Up => {
                let dead = self.last_input + self.cfg.dead_after;
                if self.ping_asked {
                    Some(dead)
                } else {
                    Some((self.last_input + self.cfg.keepalive).min(dead))
                }
            }
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// The next thing the driver must do.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

/// The vmac from its text: 16 characters taken as bytes (Candy's form, e.g.
/// `0123456789abcdef`), or 32 hex digits giving 16 bytes.
pub fn parse_vmac(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    let mut v = [0u8; 16];
    if b.len() == 16 && b.iter().all(u8::is_ascii_graphic) {
        v.copy_from_slice(b);
        return Some(v);
    }
    if b.len() == 32 {
        for (i, out) in v.iter_mut().enumerate() {
            let hi = (b[2 * i] as char).to_digit(16)?;
            let lo = (b[2 * i + 1] as char).to_digit(16)?;
            *out = (hi * 16 + lo) as u8;
        }
        return Some(v);
    }
    None
}

/// A random vmac in Candy's form: 16 lowercase hex characters.
pub fn random_vmac(rng: &mut impl Rng) -> [u8; 16] {
    let hex = b"0123456789abcdef";
    let mut v = [0u8; 16];
    for b in &mut v {
        *b = hex[rng.gen_range(0..16)];
    }
    v
}

/// Whether `dst` is for every client (limited broadcast or multicast).
pub fn is_group(dst: Ipv4Addr) -> bool {
    dst == wire::BROADCAST || dst.is_multicast()
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
