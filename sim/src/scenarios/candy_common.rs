//! What the Candy scenarios share: a member host (the client role, as the binary runs it,
//! with an in-memory virtual interface whose other end is the host's IP endpoint that
//! answers ICMP echo and UDP echo on port 7 like a kernel), the numbered requests the
//! members send each other through the VPN, and the resend-until-answered exchange.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tunnelbed_candy::client::{AddrMode, ClientConfig};
use tunnelbed_candy::connect::{run_client, ConnectConfig, ConnectError, OpenLink, Status};
use tunnelbed_candy::serve::{serve_with, server_handle, ServeConfig, ServerHandle};
use tunnelbed_candy::server::ServerConfig;
use tunnelbed_candy::ws::{UnixClock, WsUrl};
use tunnelbed_netio::capture::CAPTURE_EPOCH;
use tunnelbed_netio::iplink::echo::{self, parse_icmp_echo, parse_ipv4, parse_udp};
use tunnelbed_netio::iplink::mem::{ip_link_pair, MemIpLink};
use tunnelbed_netio::iplink::CapturedIpLink;
use tunnelbed_netio::{CaptureIface, IpLink, IpLinkConfig, IpLinkError, Net, Trace};

use crate::simnet::{any, HostNet, SimWorld};

/// The virtual interfaces' MTU.
pub const MTU: usize = 1400;
/// The endpoints' UDP echo port.
pub const UDP_PORT: u16 = 7;
/// The requesters' UDP source port.
pub const CLIENT_PORT: u16 = 40_000;
/// The requesters' ICMP echo identifier.
pub const ICMP_IDENT: u16 = 0x0c0c;

/// The server configuration every Candy scenario runs: `password`, DHCP from `pool`
/// (a CIDR), the seeded server RNG, the simulated clock, a 10 s handshake bound, unmasked
/// client frames accepted, no TLS. Scenarios change fields (queue caps) on the result.
pub fn serve_config(password: &[u8], pool: &str, seed: u64) -> Result<ServeConfig, String> {
    Ok(ServeConfig {
        server: ServerConfig {
            password: password.to_vec(),
            pool: Some(pool.parse().map_err(|e| format!("{e}"))?),
            seed,
            ..ServerConfig::default()
        },
        clock: clock(),
        handshake_timeout: Duration::from_secs(10),
        accept_unmasked: true,
        tls: None,
    })
}

/// The Unix time inside the simulation (the capture epoch plus simulated time).
pub fn clock() -> UnixClock {
    Arc::new(|| CAPTURE_EPOCH + turmoil::sim_elapsed().unwrap_or_default())
}

/// The Unix time at the start of the run.
pub fn epoch() -> Duration {
    CAPTURE_EPOCH
}

pub use super::fixture::now;

/// The Candy server's WebSocket port in every scenario.
pub const SERVER_PORT: u16 = 8080;

/// Runs the Candy server role on host `server` of `sim` with `cfg` (each incarnation
/// after a restart starts afresh from it), and hands every started server's handle to
/// `started` (the scenarios keep it to read the server's routes and queues).
pub fn host_server(
    sim: &mut turmoil::Sim<'_>,
    world: &SimWorld,
    cfg: ServeConfig,
    started: impl Fn(Arc<ServerHandle>) + Clone + 'static,
) {
    let world = world.clone();
    sim.host("server", move || {
        let net = world.net("server");
        let guard = world.crash_guard("server");
        let trace = world.trace.clone();
        let (cfg, started) = (cfg.clone(), started.clone());
        async move {
            let _guard = guard;
            let h = server_handle(&cfg, trace)?;
            let lsn = net.listen_tcp(any(SERVER_PORT)).await?;
            started(h.clone());
            serve_with(lsn, h).await?;
            Ok(())
        }
    });
}

/// Opens the client's virtual interface as an in-memory pair: the client role gets one
/// end (recorded into the host's capture), the host's endpoint the other.
pub struct MemOpener {
    iface: Option<CaptureIface>,
    to_endpoint: mpsc::UnboundedSender<(Ipv4Addr, MemIpLink)>,
}

impl OpenLink for MemOpener {
    type Link = CapturedIpLink<MemIpLink>;
    async fn open(&self, cfg: IpLinkConfig) -> Result<Self::Link, IpLinkError> {
        let addr = cfg.addr.ok_or(IpLinkError::InvalidConfig("no address"))?;
        let (vpn, host) = ip_link_pair(&cfg.name, "kernel", cfg.mtu, 1024);
        self.to_endpoint
            .send((addr.addr, host))
            .map_err(|_| IpLinkError::Closed)?;
        Ok(CapturedIpLink::new(vpn, self.iface.clone()))
    }
}

/// Request `i` from `me` to `peer`: UDP (even) or ICMP echo (odd), carrying `i` and `payload`.
pub fn request(me: Ipv4Addr, peer: Ipv4Addr, i: usize, payload: &[u8]) -> Option<Vec<u8>> {
    let mut body = (i as u32).to_be_bytes().to_vec();
    body.extend_from_slice(payload);
    let id = i as u16;
    if i.is_multiple_of(2) {
        echo::build_udp(me, CLIENT_PORT, peer, UDP_PORT, id, &body)
    } else {
        echo::build_icmp_echo(me, peer, 8, ICMP_IDENT, id, id, &body)
    }
}

/// The number and payload of an answer from `peer` to `me`.
pub fn reply(packet: &[u8], me: Ipv4Addr, peer: Ipv4Addr) -> Option<(u32, Vec<u8>)> {
    let v = parse_ipv4(packet).filter(|v| v.src == peer && v.dst == me)?;
    let body = if let Some((UDP_PORT, CLIENT_PORT, d)) = parse_udp(&v) {
        d
    } else if let Some((0, ICMP_IDENT, _, d)) = parse_icmp_echo(&v) {
        d
    } else {
        return None;
    };
    let n: [u8; 4] = body.get(..4)?.try_into().ok()?;
    Some((u32::from_be_bytes(n), body[4..].to_vec()))
}

/// The endpoint's answer to `p` (ICMP echo request, or UDP to port 7) for `me`; when
/// tampering, the payload's last byte comes back flipped with valid checksums, so only
/// the integrity check can catch it.
pub fn serve(p: &[u8], me: Ipv4Addr, tamper: bool) -> Option<Vec<u8>> {
    let v = parse_ipv4(p).filter(|v| v.dst == me)?;
    let flip = |d: &[u8]| {
        let mut d = d.to_vec();
        if tamper {
            if let Some(last) = d.last_mut() {
                *last ^= 0xff;
            }
        }
        d
    };
    if let Some((sport, UDP_PORT, d)) = parse_udp(&v) {
        return echo::build_udp(me, UDP_PORT, v.src, sport, v.id, &flip(d));
    }
    if let Some((8, ident, seq, d)) = parse_icmp_echo(&v) {
        return echo::build_icmp_echo(me, v.src, 0, ident, seq, v.id, &flip(d));
    }
    None
}

/// The role's settings for a simulated member: DHCP, the simulator's deterministic
/// WebSocket handshake, the interface `candy0`.
pub fn member_config(
    password: &[u8],
    vmac: [u8; 16],
    seed: u64,
    server: &str,
    port: u16,
) -> ConnectConfig {
    let mut client = ClientConfig::new(password, vmac, AddrMode::Dhcp(None));
    client.seed = seed;
    ConnectConfig {
        client,
        server: WsUrl::plain(server, port),
        link_name: "candy0".into(),
        mtu: MTU,
        clock: clock(),
        connect_timeout: Duration::from_secs(10),
        unmasked_seed: Some(seed),
        tls: None,
    }
}

/// A running member: its address, its side of the interface, the answers to its own
/// requests, and the tasks to stop at the end.
pub struct Member {
    /// The address DHCP gave.
    pub me: Ipv4Addr,
    /// The host's end of the virtual interface.
    pub link: Arc<MemIpLink>,
    /// Packets for this host that are not requests (answers to our requests).
    pub replies: mpsc::UnboundedReceiver<Vec<u8>>,
    /// The stack side of the member's TCP (when asked for): TCP packets for the
    /// member's address arrive here, and what a stack sends here leaves by the VPN.
    pub tcp: Option<MemIpLink>,
    /// The endpoint task.
    pub endpoint: JoinHandle<()>,
    /// Moves the TCP side's packets to the VPN.
    pub tcp_pump: Option<JoinHandle<()>>,
    /// The client role.
    pub role: JoinHandle<Result<(), ConnectError>>,
}

impl Member {
    /// Stops the endpoint and the role (the carrier closes).
    pub fn stop(&self) {
        self.endpoint.abort();
        if let Some(p) = &self.tcp_pump {
            p.abort();
        }
        self.role.abort();
    }
}

/// Whether `p` is an IPv4 packet carrying TCP.
fn is_tcp(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b >> 4 == 4) && p.get(9) == Some(&6)
}

/// Starts the client role on `net` with `cfg` and, once it has its address, the host's
/// endpoint; `tamper(n)` says whether the endpoint's `n`th answer is spoiled (the
/// integrity sabotage). Status changes go to `status`. With `tcp`, TCP packets go to
/// [`Member::tcp`] instead (for a TCP stack to sit on).
pub async fn start_member(
    net: HostNet,
    cfg: ConnectConfig,
    trace: Trace,
    status: mpsc::UnboundedSender<Status>,
    tamper: impl Fn(u64) -> bool + Send + 'static,
    tcp: bool,
) -> Result<Member, Box<dyn std::error::Error>> {
    let (to_ep, mut from_opener) = mpsc::unbounded_channel();
    let opener = MemOpener {
        iface: net.iface().cloned(),
        to_endpoint: to_ep,
    };
    let role = tokio::spawn(run_client(net, opener, cfg, trace, status));
    let (me, link) = from_opener
        .recv()
        .await
        .ok_or("the client never opened its link")?;
    let link = Arc::new(link);
    let (replies_tx, replies) = mpsc::unbounded_channel::<Vec<u8>>();
    let (tcp_ep, tcp_side) = if tcp {
        let (a, b) = ip_link_pair("tcp-endpoint", "tcp-stack", MTU, 1024);
        (Some(Arc::new(a)), Some(b))
    } else {
        (None, None)
    };
    let tcp_pump = tcp_ep.clone().map(|t| {
        let out = link.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MTU];
            while let Ok(n) = t.recv(&mut buf).await {
                let _ = out.send(&buf[..n]).await;
            }
        })
    });
    let ep = link.clone();
    let endpoint = tokio::spawn(async move {
        let mut buf = vec![0u8; MTU];
        let mut answered = 0u64;
        loop {
            let Ok(n) = ep.recv(&mut buf).await else {
                return;
            };
            let p = &buf[..n];
            if let Some(t) = tcp_ep.as_ref().filter(|_| is_tcp(p)) {
                let _ = t.send(p).await;
                continue;
            }
            // Requests to port 7 and echo requests are answered; everything else
            // (answers to our own requests) goes to the requester.
            match serve(p, me, tamper(answered)) {
                Some(r) => {
                    answered += 1;
                    let _ = ep.send(&r).await;
                }
                None => {
                    let _ = replies_tx.send(p.to_vec());
                }
            }
        }
    });
    Ok(Member {
        me,
        link,
        replies,
        tcp: tcp_side,
        endpoint,
        tcp_pump,
        role,
    })
}

/// How one exchange ended.
pub enum Exchange {
    /// The answer's payload.
    Answered(Vec<u8>),
    /// No answer within the give-up time (the flow failed).
    GaveUp,
}

/// Sends request `k` (`payload`) from `m` to `peer` and resends it every `resend` until
/// the answer comes or `give_up` has passed; `on_resend` is called before each resend.
pub async fn exchange(
    m: &mut Member,
    peer: Ipv4Addr,
    k: usize,
    payload: &[u8],
    resend: Duration,
    give_up: Duration,
    mut on_resend: impl FnMut(),
) -> Result<Exchange, Box<dyn std::error::Error>> {
    let packet = request(m.me, peer, k, payload).ok_or("request too large")?;
    let end = tokio::time::Instant::now() + give_up;
    let mut first = true;
    loop {
        if !first {
            on_resend();
        }
        first = false;
        m.link.send(&packet).await?;
        let deadline = (tokio::time::Instant::now() + resend).min(end);
        loop {
            match tokio::time::timeout_at(deadline, m.replies.recv()).await {
                Err(_) if deadline >= end => return Ok(Exchange::GaveUp),
                Err(_) => break,
                Ok(None) => return Err("endpoint stopped".into()),
                Ok(Some(p)) => {
                    if let Some((_, data)) = reply(&p, m.me, peer).filter(|(n, _)| *n as usize == k)
                    {
                        return Ok(Exchange::Answered(data));
                    }
                }
            }
        }
    }
}

/// The members' virtual addresses, published by each member as its DHCP answer arrives.
pub type AddrTable = tokio::sync::watch::Sender<BTreeMap<usize, Ipv4Addr>>;

/// Member `i`'s virtual address, once it is published. Cannot wait past the run: the
/// table is kept by the scenario, and the simulation's own deadline ends every host.
pub async fn address_of(addrs: &AddrTable, i: usize) -> Result<Ipv4Addr, &'static str> {
    let mut rx = addrs.subscribe();
    let table = rx
        .wait_for(|a| a.contains_key(&i))
        .await
        .map_err(|_| "address table gone")?;
    table.get(&i).copied().ok_or("no peer address")
}
