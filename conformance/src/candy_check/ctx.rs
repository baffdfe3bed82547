//! What a case body gets: the settings, a fake Candy client over a WebSocket, and fresh
//! virtual addresses so cases never disturb each other.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tunnelbed_candy::wire::{Auth, Dhcp, Message, Vmac};
use tunnelbed_candy::ws::{self, WsUrl};
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::BoxStream;
use tunnelbed_netio::iplink::echo::build_udp;
use tunnelbed_netio::Ipv4Cidr;

/// What to check and how.
#[derive(Clone)]
pub struct CheckConfig {
    /// The server under test.
    pub server: WsUrl,
    /// Its password.
    pub password: Vec<u8>,
    /// Where the checker's static addresses come from (the pool, when the server has
    /// one, is learned by DHCP instead for the DHCP cases).
    pub net: Ipv4Cidr,
    /// SHOULD-level cases count.
    pub strict: bool,
    /// How long each wait may take.
    pub wait: Duration,
    /// Case ids to run (all when empty).
    pub cases: Vec<&'static str>,
    /// Whom to trust for a `wss://` server (a `wss://` URL without it fails to connect).
    pub tls: Option<Arc<ClientTls>>,
}

impl CheckConfig {
    /// Defaults: addresses from 10.77.0.0/24, 3 s waits, not strict, every case.
    pub fn new(server: WsUrl, password: &[u8]) -> Self {
        Self {
            server,
            password: password.to_vec(),
            net: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 77, 0, 0),
                prefix: 24,
            },
            strict: false,
            wait: Duration::from_secs(3),
            cases: Vec::new(),
            tls: None,
        }
    }
}

/// What a case body gets.
pub struct Ctx {
    /// The settings.
    pub cfg: CheckConfig,
    /// The case id, for logs.
    pub id: &'static str,
    next: AtomicU32,
}

/// What a read saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// One binary message.
    Msg(Vec<u8>),
    /// The server closed the connection (or it failed).
    Closed,
    /// Nothing within the wait.
    Silent,
}

/// The Unix time now in seconds (the checker runs on a real clock).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fake client: a WebSocket to the server.
pub struct Peer {
    ws: WebSocketStream<BoxStream>,
    wait: Duration,
    /// The address it authenticated with.
    pub ip: Ipv4Addr,
}

impl Ctx {
    /// A context for case `id`; `index` spreads the cases' addresses apart.
    pub fn new(cfg: CheckConfig, id: &'static str, index: u32) -> Self {
        Self {
            cfg,
            id,
            next: AtomicU32::new(index * 6),
        }
    }

    /// The per-wait limit.
    pub fn wait(&self) -> Duration {
        self.cfg.wait
    }

    /// A fresh host address from the configured net, counting down from its top, so it
    /// stays clear of a DHCP pool's low addresses.
    pub fn fresh_ip(&self) -> Ipv4Addr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let size = 1u32 << (32 - u32::from(self.cfg.net.prefix.min(30)));
        let base = u32::from(self.cfg.net.addr) & u32::from(self.cfg.net.netmask());
        let off = size - 2 - (n % (size - 2));
        Ipv4Addr::from(base + off)
    }

    /// A random vmac in Candy's form (16 hex characters).
    pub fn vmac(&self) -> [u8; 16] {
        let mut r = rand_chacha::ChaCha8Rng::from_entropy();
        let hex = b"0123456789abcdef";
        let mut v = [0u8; 16];
        for b in &mut v {
            *b = hex[r.gen_range(0..16)];
        }
        v
    }

    /// Opens a WebSocket to the server.
    pub async fn connect(&self) -> Result<Peer, String> {
        let u = &self.cfg.server;
        let go = async {
            let tcp = TcpStream::connect((u.host.as_str(), u.port))
                .await
                .map_err(|e| format!("connect {}: {e}", u.to_url()))?;
            let _ = tcp.set_nodelay(true);
            let s: BoxStream = match (u.tls, &self.cfg.tls) {
                (false, _) => Box::new(tcp),
                (true, Some(t)) => Box::new(
                    t.connect(&u.host, tcp)
                        .await
                        .map_err(|e| format!("TLS handshake with {}: {e}", u.to_url()))?,
                ),
                (true, None) => {
                    return Err(format!("{}: wss:// needs a TLS trust setting", u.to_url()))
                }
            };
            ws::connect(s, &u.to_url(), 1 << 16)
                .await
                .map_err(|e| format!("websocket handshake with {}: {e}", u.to_url()))
        };
        let ws = tokio::time::timeout(self.wait(), go)
            .await
            .map_err(|_| format!("no websocket to {} within {:?}", u.to_url(), self.wait()))??;
        Ok(Peer {
            ws,
            wait: self.wait(),
            ip: Ipv4Addr::UNSPECIFIED,
        })
    }

    /// A VMAC message for `vmac`, now.
    pub fn vmac_msg(&self, vmac: [u8; 16]) -> Message {
        Message::Vmac(Vmac::new(&self.cfg.password, vmac, unix_now(), vec![]))
    }

    /// An AUTH for `ip` at `ts`.
    pub fn auth_msg(&self, ip: Ipv4Addr, ts: i64) -> Message {
        Message::Auth(Auth::new(&self.cfg.password, ip, ts, vec![]))
    }

    /// A DHCP request for `want`, now.
    pub fn dhcp_msg(&self, want: &str) -> Message {
        Message::Dhcp(Dhcp::new(&self.cfg.password, want, unix_now(), vec![]))
    }

    /// A connected client that sent VMAC and AUTH for a fresh address.
    pub async fn authed(&self) -> Result<Peer, String> {
        let ip = self.fresh_ip();
        self.authed_as(ip, self.vmac()).await
    }

    /// A connected client that sent VMAC and AUTH for `ip`.
    pub async fn authed_as(&self, ip: Ipv4Addr, vmac: [u8; 16]) -> Result<Peer, String> {
        let mut p = self.connect().await?;
        p.send(&self.vmac_msg(vmac)).await?;
        p.send(&self.auth_msg(ip, unix_now())).await?;
        p.ip = ip;
        Ok(p)
    }

    /// Proves both `from` and `to` are bound (their AUTH processed): `from` sends probes
    /// to `to` until one arrives (each AUTH goes on its own connection, so a packet sent
    /// right after the receiver's AUTH may be routed before that AUTH is).
    pub async fn bind(&self, from: &mut Peer, to: &mut Peer) -> Result<(), String> {
        let end = tokio::time::Instant::now() + self.wait() * 2;
        for i in 0u32.. {
            from.send(&forward(from.ip, to.ip, &format!("{PROBE}{i}")))
                .await?;
            let step = (tokio::time::Instant::now() + Duration::from_millis(100)).min(end);
            loop {
                match to.recv_raw_until(step).await {
                    Seen::Msg(b) if forward_text(&b).is_some_and(|t| t.starts_with(PROBE)) => {
                        return Ok(())
                    }
                    Seen::Msg(_) => {}
                    Seen::Closed => {
                        return Err(format!("{} was closed before it was bound", to.ip))
                    }
                    Seen::Silent => break,
                }
            }
            if tokio::time::Instant::now() >= end {
                break;
            }
        }
        Err(format!(
            "{} -> {}: no packet got through within {:?}",
            from.ip,
            to.ip,
            self.wait() * 2
        ))
    }

    /// Sends DHCP asking for `want` and returns the grant (after checking its hash).
    pub async fn dhcp(&self, p: &mut Peer, want: &str) -> Result<Option<Ipv4Cidr>, String> {
        p.send(&self.dhcp_msg(want)).await?;
        match p.recv().await {
            Seen::Msg(b) => match Message::decode(&b) {
                Ok(Message::Dhcp(d)) => {
                    if !d.check(&self.cfg.password) {
                        return Err(format!("DHCP answer {:?} has a bad hash", d.cidr));
                    }
                    d.cidr
                        .parse()
                        .map(Some)
                        .map_err(|_| format!("DHCP answer cidr {:?} does not parse", d.cidr))
                }
                other => Err(format!("expected a DHCP answer, got {other:?}")),
            },
            Seen::Closed => Ok(None),
            Seen::Silent => Err(format!("no DHCP answer within {:?}", self.wait())),
        }
    }
}

/// The payload prefix of binding probes.
pub const PROBE: &str = "probe:";

/// A FORWARD message carrying a UDP datagram `src` -> `dst` with `text` as payload.
pub fn forward(src: Ipv4Addr, dst: Ipv4Addr, text: &str) -> Message {
    let p = build_udp(src, 40000, dst, 40001, 7, text.as_bytes()).unwrap_or_default();
    Message::Forward(p)
}

/// The UDP payload of a FORWARD message, if it is one.
pub fn forward_text(b: &[u8]) -> Option<String> {
    let Ok(Message::Forward(p)) = Message::decode(b) else {
        return None;
    };
    let v = tunnelbed_netio::iplink::echo::parse_ipv4(&p)?;
    let (_, _, d) = tunnelbed_netio::iplink::echo::parse_udp(&v)?;
    Some(String::from_utf8_lossy(d).into_owned())
}

impl Peer {
    /// Sends one message.
    pub async fn send(&mut self, m: &Message) -> Result<(), String> {
        let b = m.to_bytes().map_err(|e| e.to_string())?;
        self.send_raw(b.to_vec()).await
    }

    /// Sends raw bytes as one binary message.
    pub async fn send_raw(&mut self, b: Vec<u8>) -> Result<(), String> {
        tokio::time::timeout(self.wait, self.ws.send(WsMessage::Binary(b.into())))
            .await
            .map_err(|_| "send blocked".to_string())?
            .map_err(|e| format!("send failed: {e}"))
    }

    /// The next binary message, a close, or silence within the wait.
    pub async fn recv(&mut self) -> Seen {
        self.recv_for(self.wait).await
    }

    /// Like [`Peer::recv`] with another wait. Late copies of binding probes
    /// ([`Ctx::bind`]) are skipped.
    pub async fn recv_for(&mut self, wait: Duration) -> Seen {
        let end = tokio::time::Instant::now() + wait;
        loop {
            match self.recv_raw_until(end).await {
                Seen::Msg(b) if forward_text(&b).is_some_and(|t| t.starts_with(PROBE)) => {}
                other => return other,
            }
        }
    }

    async fn recv_raw_until(&mut self, end: tokio::time::Instant) -> Seen {
        loop {
            match tokio::time::timeout_at(end, self.ws.next()).await {
                Err(_) => return Seen::Silent,
                Ok(Some(Ok(WsMessage::Binary(b)))) => return Seen::Msg(b.to_vec()),
                Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    return Seen::Closed
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits for a FORWARD whose payload is `text`; returns the payloads seen before it.
    pub async fn expect_text(&mut self, text: &str) -> Result<Vec<String>, String> {
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                Seen::Msg(b) => match forward_text(&b) {
                    Some(t) if t == text => return Ok(before),
                    Some(t) => before.push(t),
                    None => before.push(format!("non-FORWARD message of {} bytes", b.len())),
                },
                Seen::Closed => {
                    return Err(format!(
                        "{} was closed before {text:?} arrived (saw {before:?})",
                        self.ip
                    ))
                }
                Seen::Silent => {
                    return Err(format!(
                        "{text:?} did not reach {} within {:?} (saw {before:?})",
                        self.ip, self.wait
                    ))
                }
            }
        }
    }

    /// Waits for the next message and returns it raw.
    pub async fn expect_msg(&mut self, what: &str) -> Result<Vec<u8>, String> {
        match self.recv().await {
            Seen::Msg(b) => Ok(b),
            Seen::Closed => Err(format!("{} was closed before {what} arrived", self.ip)),
            Seen::Silent => Err(format!(
                "{what} did not reach {} within {:?}",
                self.ip, self.wait
            )),
        }
    }
}
