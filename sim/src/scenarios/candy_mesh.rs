//! `candy-mesh`: Candy's VPN on the simulated network. A server with a DHCP pool and four
//! clients on hosts of their own, each client running the same role as the binary
//! (`tunnelbed_candy::connect::run_client`) with an in-memory virtual interface whose
//! other end is the host's IP endpoint (it answers ICMP echo and UDP echo on port 7 for
//! the client's address, as a kernel would). Every client sends numbered requests, ICMP
//! echo and UDP in turn, to the next client's DHCP address through the VPN, resending on
//! timeout, and each answer must come back intact (a flow per request). Outside the
//! clean profile one client's carrier is held for a while (a stall; TCP is reliable).
//! On the clean profile nothing may be lost at all: a lost connection, or a resend not
//! explained by a request racing its peer's AUTH, fails the integrity check.
//! The pcap shows the WebSocket frames between the hosts and, on each client host, the
//! inner IP packets of its virtual interface.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tunnelbed_candy::client::{random_vmac, AddrMode, ClientConfig};
use tunnelbed_candy::connect::{run_client, ConnectConfig, OpenLink, Status};
use tunnelbed_candy::serve::{serve_with, server_handle, ServeConfig, ServerHandle};
use tunnelbed_candy::server::ServerConfig;
use tunnelbed_candy::ws::{UnixClock, WsUrl};
use tunnelbed_netio::capture::CAPTURE_EPOCH;
use tunnelbed_netio::iplink::echo::{self, parse_icmp_echo, parse_ipv4, parse_udp};
use tunnelbed_netio::iplink::mem::{ip_link_pair, MemIpLink};
use tunnelbed_netio::iplink::CapturedIpLink;
use tunnelbed_netio::{CaptureIface, IpLink, IpLinkConfig, IpLinkError, Net};

use crate::fault::{FaultAction, FaultPlan};
use crate::scenario::{Ctx, Scenario};
use crate::simnet::any;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "candy-mesh",
    about: "Candy VPN: a server and four DHCP clients; ICMP and UDP echo between their virtual interfaces through the server",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 3,
    run,
};

const CLIENTS: usize = 4;
const REQUESTS: usize = 16;
const PORT: u16 = 8080;
const PASSWORD: &[u8] = b"mesh";
const MTU: usize = 1400;
const UDP_PORT: u16 = 7;
const CLIENT_PORT: u16 = 40_000;
const ICMP_IDENT: u16 = 0x0c0c;

fn clock() -> UnixClock {
    Arc::new(|| CAPTURE_EPOCH + turmoil::sim_elapsed().unwrap_or_default())
}

/// Opens the client's virtual interface as an in-memory pair: the client role gets one
/// end (recorded into the host's capture), the host's endpoint the other.
struct MemOpener {
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
fn request(me: Ipv4Addr, peer: Ipv4Addr, i: usize, payload: &[u8]) -> Option<Vec<u8>> {
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
fn reply(packet: &[u8], me: Ipv4Addr, peer: Ipv4Addr) -> Option<(u32, Vec<u8>)> {
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
fn serve(p: &[u8], me: Ipv4Addr, tamper: bool) -> Option<Vec<u8>> {
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

/// Every client's address once DHCP gave it (host index -> address).
type Addrs = watch::Sender<BTreeMap<usize, Ipv4Addr>>;

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let max_len = 1200usize;
    let payloads: Vec<Vec<Vec<u8>>> = (0..CLIENTS)
        .map(|_| {
            (0..REQUESTS)
                .map(|_| {
                    let n = ctx.rng.gen_range(1..=max_len);
                    (0..n).map(|_| ctx.rng.gen()).collect()
                })
                .collect()
        })
        .collect();
    let vmacs: Vec<[u8; 16]> = (0..CLIENTS).map(|_| random_vmac(&mut ctx.rng)).collect();
    let seeds: Vec<u64> = (0..=CLIENTS).map(|_| ctx.rng.gen()).collect();
    let sabotage = ctx.sabotaged();
    let resend = Duration::from_millis(500) + ctx.params.latency * 4 + ctx.params.jitter * 4;

    let mut sim = ctx.builder(Duration::from_secs(900)).build();
    let server: Arc<Mutex<Option<Arc<ServerHandle>>>> = Arc::default();
    let world = ctx.world.clone();
    let (slot, server_seed) = (server.clone(), seeds[CLIENTS]);
    sim.host("server", move || {
        let net = world.net("server");
        let guard = world.crash_guard("server");
        let trace = world.trace.clone();
        let slot = slot.clone();
        async move {
            let _guard = guard;
            let cfg = ServeConfig {
                server: ServerConfig {
                    password: PASSWORD.to_vec(),
                    pool: Some("10.77.0.0/24".parse().map_err(|e| format!("{e}"))?),
                    seed: server_seed,
                    ..ServerConfig::default()
                },
                clock: clock(),
                handshake_timeout: Duration::from_secs(10),
                accept_unmasked: true,
            };
            let h = server_handle(&cfg, trace)?;
            let lsn = net.listen_tcp(any(PORT)).await?;
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(h.clone());
            serve_with(lsn, h).await?;
            Ok(())
        }
    });

    let (addrs, _keep) = watch::channel(BTreeMap::new());
    let addrs: Arc<Addrs> = Arc::new(addrs);
    let resends = Arc::new(AtomicU64::new(0));
    let downs = Arc::new(AtomicU64::new(0));
    let (done_tx, _done_rx) = watch::channel(0usize);
    let done = Arc::new(done_tx);
    for (i, my_payloads) in payloads.into_iter().enumerate() {
        let name = format!("c{}", i + 1);
        let world = ctx.world.clone();
        let ledger = ctx.ledger.clone();
        let (addrs, done, resends) = (addrs.clone(), done.clone(), resends.clone());
        let downs = downs.clone();
        let slot_c = server.clone();
        let (vmac, seed) = (vmacs[i], seeds[i]);
        sim.client(name.clone(), async move {
            let net = world.net(&name);
            let _guard = world.crash_guard(&name);
            let (to_ep, mut from_opener) = mpsc::unbounded_channel();
            let opener = MemOpener {
                iface: net.iface().cloned(),
                to_endpoint: to_ep,
            };
            let mut client = ClientConfig::new(PASSWORD, vmac, AddrMode::Dhcp(None));
            client.seed = seed;
            let cfg = ConnectConfig {
                client,
                server: WsUrl {
                    host: "server".into(),
                    port: PORT,
                    path: "/".into(),
                },
                link_name: "candy0".into(),
                mtu: MTU,
                clock: clock(),
                connect_timeout: Duration::from_secs(10),
                unmasked_seed: Some(seed),
            };
            let (status, mut status_rx) = mpsc::unbounded_channel();
            let drops = downs.clone();
            tokio::spawn(async move {
                while let Some(st) = status_rx.recv().await {
                    if st == Status::Down {
                        drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let role = tokio::spawn(run_client(
                net.clone(),
                opener,
                cfg,
                world.trace.clone(),
                status,
            ));
            // The endpoint: the kernel side of the virtual interface.
            let (me, link) = from_opener
                .recv()
                .await
                .ok_or("the client never opened its link")?;
            addrs.send_modify(|m| {
                m.insert(i, me);
            });
            let link = Arc::new(link);
            let (replies_tx, mut replies) = mpsc::unbounded_channel::<Vec<u8>>();
            let ep = link.clone();
            let endpoint = tokio::spawn(async move {
                let mut buf = vec![0u8; MTU];
                let mut answered = 0u64;
                loop {
                    let Ok(n) = ep.recv(&mut buf).await else {
                        return;
                    };
                    let p = &buf[..n];
                    // Requests to port 7 and echo requests are answered; everything
                    // else (answers to our own requests) goes to the requester.
                    let tamper = sabotage && i == 0 && answered == 4;
                    match serve(p, me, tamper) {
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
            // The requester: to the next client.
            let peer_i = (i + 1) % CLIENTS;
            let mut rx = addrs.subscribe();
            let peer = *rx
                .wait_for(|m| m.contains_key(&peer_i))
                .await
                .map_err(|_| "address table gone")?
                .get(&peer_i)
                .ok_or("no peer address")?;
            for (k, payload) in my_payloads.iter().enumerate() {
                let flow = format!("{name}-to-c{}-{k:02}", peer_i + 1);
                ledger.sent(&flow, payload);
                let packet = request(me, peer, k, payload).ok_or("request too large")?;
                let mut first = true;
                'resend: loop {
                    if !first {
                        resends.fetch_add(1, Ordering::Relaxed);
                    }
                    first = false;
                    link.send(&packet).await?;
                    let deadline = tokio::time::Instant::now() + resend;
                    loop {
                        match tokio::time::timeout_at(deadline, replies.recv()).await {
                            Err(_) => continue 'resend,
                            Ok(None) => return Err("endpoint stopped".into()),
                            Ok(Some(p)) => {
                                if let Some((_, data)) =
                                    reply(&p, me, peer).filter(|(n, _)| *n as usize == k)
                                {
                                    ledger.received(&flow, &data);
                                    ledger.close(&flow);
                                    break 'resend;
                                }
                            }
                        }
                    }
                }
            }
            // Keep answering until every client is done.
            done.send_modify(|d| *d += 1);
            let mut d = done.subscribe();
            d.wait_for(|d| *d >= CLIENTS)
                .await
                .map_err(|_| "done gone")?;
            endpoint.abort();
            role.abort();
            // Close every carrier inside the simulation (the server sees each client
            // leave), so nothing is torn down in the runtime's own order at the end.
            for _ in 0..1000 {
                let open = slot_c
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map_or(0, |h| h.connections());
                if open == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        });
    }

    let faults = if ctx.profile == "clean" {
        FaultPlan::new()
    } else {
        let ms = Duration::from_millis;
        FaultPlan::new()
            .at(ms(100), FaultAction::Hold("c2".into(), "server".into()))
            .at(ms(900), FaultAction::Release("c2".into(), "server".into()))
    };
    ctx.drive(&mut sim, &faults, Duration::from_secs(300));
    ctx.check_flows(CLIENTS * REQUESTS);
    let s = server
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|h| h.stats())
        .unwrap_or_default();
    ctx.check(
        "server-clean",
        s.spoofed == 0 && s.bad_hash == 0 && s.replays == 0 && s.slow_drops == 0,
        format!(
            "relayed {}, no-route {}, spoofed {}, bad-hash {}, replays {}, slow-drops {}",
            s.relayed, s.no_route, s.spoofed, s.bad_hash, s.replays, s.slow_drops
        ),
    );
    let resent = resends.load(Ordering::Relaxed);
    if ctx.profile == "clean" {
        // Nothing fails on the clean profile and the carriers are reliable TCP: no client
        // may lose its connection, and the only packets a requester may resend are those
        // the server had no route for yet (a request racing its peer's AUTH). Anything
        // else is data the VPN's path lost (and recovered by timeouts).
        let lost = downs.load(Ordering::Relaxed);
        ctx.check(
            "integrity",
            resent <= s.no_route && lost == 0,
            format!(
                "clean profile: {lost} connection(s) lost, {resent} request(s) resent, {} dropped for no route yet",
                s.no_route
            ),
        );
    }
    ctx.metric("resends", resent);
    ctx.metric("relayed", s.relayed);
    ctx.metric("no-route", s.no_route);
    Ok(())
}
