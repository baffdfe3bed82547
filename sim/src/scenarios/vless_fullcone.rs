//! `vless-fullcone`: VLESS v1's full-cone UDP, hole-punching style. An application
//! behind our VLESS client (SOCKS5 UDP ASSOCIATE) contacts `peer1` and `peer4` only;
//! `peer1` tells `peer2` and `peer3` the address the datagram came from (the server's
//! mapped port), and they send to it first, unsolicited. Their datagrams must reach the
//! application with their own addresses (through the CRUMFURS channel), the application
//! answers each, and every answer must leave the server from the same mapped port; so
//! must the datagrams to `peer4`, a second destination nobody introduced (the server's
//! default mapping rule is endpoint-independent; the seed's literal rule 3 would dial a
//! new port for it). Datagrams are resent until answered, since the link model may drop
//! them. When the application ends its association, every carrier connection must close.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, TcpListen, UdpSock};
use tunnelbed_socks5::handshake;
use tunnelbed_socks5::{Addr, UdpHeader};
use tunnelbed_vless::cone::{ConeConfig, MappingRule};
use tunnelbed_vless::serve::{serve, ServerConfig};
use tunnelbed_vless::server::ServerSessionConfig;
use tunnelbed_vless::socks::{serve_socks, ClientConfig};
use tunnelbed_vless::wire::Version;

use crate::fault::FaultPlan;
use crate::scenario::{Ctx, Scenario};
use crate::simnet::any;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "vless-fullcone",
    about: "VLESS v1 full-cone UDP: peers the application never contacted send first and are answered from the same server port, which a second destination also sees",
    profiles: &["clean", "lossy"],
    default_seeds: 3,
    run,
};

const USER: [u8; 16] = [0x5d; 16];
const SERVER_PORT: u16 = 443;
const SOCKS_PORT: u16 = 1080;
const PEER_PORT: u16 = 7000;
const RESEND: Duration = Duration::from_millis(300);

/// Where each peer saw the client's datagrams come from.
type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<SocketAddr>>>>;

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut sim = ctx.builder(Duration::from_secs(600)).build();
    let mapped: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let seen: Seen = Arc::new(Mutex::new(BTreeMap::new()));
    let app_saw: Arc<Mutex<BTreeMap<String, SocketAddr>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let done = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    // The peers' real addresses, as the application resolves them.
    let peer_addrs: Arc<Mutex<BTreeMap<String, SocketAddr>>> =
        Arc::new(Mutex::new(BTreeMap::new()));

    let world = ctx.world.clone();
    sim.host("server", move || {
        let net = world.net("server");
        let trace = world.trace.clone();
        async move {
            let lsn = net.listen_tcp(any(SERVER_PORT)).await?;
            let cfg = ServerConfig {
                session: ServerSessionConfig {
                    users: vec![USER],
                    version: Version::V1,
                    ..ServerSessionConfig::default()
                },
                // The library's default (full cone), spelled out: the check below needs it.
                cone: ConeConfig {
                    mapping: MappingRule::Independent,
                    ..ConeConfig::default()
                },
                ..ServerConfig::default()
            };
            serve(
                net,
                lsn,
                CarrierKind::Tcp,
                None,
                cfg,
                trace,
                "server".into(),
            )
            .await?;
            Ok(())
        }
    });

    let world = ctx.world.clone();
    sim.host("local", move || {
        let net = world.net("local");
        let trace = world.trace.clone();
        async move {
            let lsn = net.listen_tcp(any(SOCKS_PORT)).await?;
            let url: CarrierUrl = format!("tcp://server:{SERVER_PORT}")
                .parse()
                .map_err(std::io::Error::other)?;
            let _ = TcpListen::local_addr(&lsn)?;
            serve_socks(net, lsn, ClientConfig::new(url, USER, Version::V1), trace).await?;
            Ok(())
        }
    });

    // peer1 and peer4: answer whoever writes; peer1 publishes the first source it sees.
    for name in ["peer1", "peer4"] {
        let (world, m, s) = (ctx.world.clone(), mapped.clone(), seen.clone());
        sim.host(name, move || {
            let net = world.net(name);
            let (m, s) = (m.clone(), s.clone());
            async move {
                let sock = net.bind_udp(any(PEER_PORT)).await?;
                let mut buf = vec![0u8; 2048];
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await?;
                    if buf[..n].starts_with(b"hello") {
                        s.lock()
                            .unwrap()
                            .entry(name.into())
                            .or_default()
                            .insert(from);
                        if name == "peer1" {
                            m.lock().unwrap().get_or_insert(from);
                        }
                        sock.send_to(b"welcome", from).await?;
                    }
                }
            }
        });
    }

    // peer2, peer3: punch the published address until answered. Under --sabotage the
    // answers are recorded with a flipped byte (the integrity check must notice).
    let sabotage = ctx.sabotaged();
    for (i, flag) in done.iter().enumerate() {
        let name = format!("peer{}", i + 2);
        let (world, m, s, flag) = (
            ctx.world.clone(),
            mapped.clone(),
            seen.clone(),
            flag.clone(),
        );
        let ledger = ctx.ledger.clone();
        sim.client(name.clone(), async move {
            let net = world.net(&name);
            let sock = net.bind_udp(any(PEER_PORT)).await?;
            let mut buf = vec![0u8; 2048];
            let target = loop {
                if let Some(a) = *m.lock().unwrap() {
                    break a;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let punch = format!("punch from {name}");
            let want = format!("answer to {name}");
            loop {
                sock.send_to(punch.as_bytes(), target).await?;
                let deadline = tokio::time::Instant::now() + RESEND;
                while let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
                {
                    let (n, from) = r?;
                    s.lock()
                        .unwrap()
                        .entry(name.clone())
                        .or_default()
                        .insert(from);
                    if buf[..n] == *want.as_bytes() {
                        let flow = format!("answer-{name}");
                        if sabotage {
                            buf[0] ^= 0xff;
                        }
                        ledger.received(&flow, &buf[..n]);
                        ledger.close(&flow);
                        flag.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                }
            }
        });
    }

    // The application behind the VLESS client.
    let (world, saw, flags) = (ctx.world.clone(), app_saw.clone(), done.clone());
    let addrs = peer_addrs.clone();
    let ledger = ctx.ledger.clone();
    sim.client("app", async move {
        let net = world.net("app");
        let front = net.resolve("local", SOCKS_PORT).await?[0];
        let peer1 = net.resolve("peer1", PEER_PORT).await?[0];
        let peer4 = net.resolve("peer4", PEER_PORT).await?[0];
        for p in ["peer2", "peer3"] {
            let a = net.resolve(p, PEER_PORT).await?[0];
            addrs.lock().unwrap().insert(p.to_string(), a);
        }
        let mut ctl = net.connect_tcp(front).await?;
        let (code, bound) = handshake::udp_associate(&mut ctl, &handshake::unspecified()).await?;
        let Addr::Ip(bound) = bound else {
            return Err(std::io::Error::other("relay address is a name").into());
        };
        if code != 0 {
            return Err(std::io::Error::other(format!("UDP ASSOCIATE reply {code}")).into());
        }
        let relay = SocketAddr::new(front.ip(), bound.port());
        let sock = net.bind_udp(any(0)).await?;
        let send = |to: SocketAddr, p: &[u8]| {
            let mut out = BytesMut::new();
            let _ = UdpHeader { addr: Addr::Ip(to) }.encode(p, &mut out);
            out
        };
        // peer4 is contacted once peer1 has answered: a second destination of a mapping
        // that already exists.
        let mut welcomed: BTreeSet<SocketAddr> = BTreeSet::new();
        let mut answered: BTreeSet<SocketAddr> = BTreeSet::new();
        let mut buf = vec![0u8; 4096];
        while !(flags.iter().all(|f| f.load(Ordering::Relaxed)) && welcomed.contains(&peer4)) {
            if !welcomed.contains(&peer1) {
                sock.send_to(&send(peer1, b"hello"), relay).await?;
            } else if !welcomed.contains(&peer4) {
                sock.send_to(&send(peer4, b"hello"), relay).await?;
            }
            let deadline = tokio::time::Instant::now() + RESEND;
            while let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                let (n, _) = r?;
                let Ok(Some((h, p))) = UdpHeader::decode(&buf[..n]) else {
                    continue;
                };
                let Addr::Ip(src) = h.addr else { continue };
                if p == b"welcome" && (src == peer1 || src == peer4) {
                    welcomed.insert(src);
                } else if let Some(name) = p.strip_prefix(b"punch from ") {
                    let name = String::from_utf8_lossy(name).to_string();
                    saw.lock().unwrap().insert(name.clone(), src);
                    let answer = format!("answer to {name}");
                    if answered.insert(src) {
                        ledger.sent(&format!("answer-{name}"), answer.as_bytes());
                    }
                    sock.send_to(&send(src, answer.as_bytes()), relay).await?;
                }
            }
        }
        drop(ctl);
        // Let the client and server close every carrier before the run ends (an end
        // with connections open would leave their teardown order to the runtime).
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    });

    ctx.drive(&mut sim, &FaultPlan::new(), Duration::from_secs(300));
    ctx.check_flows(2);

    let mapped = *mapped.lock().unwrap();
    let seen = seen.lock().unwrap().clone();
    let ports: BTreeSet<SocketAddr> = seen.values().flatten().copied().collect();
    let same = mapped.is_some() && ports.len() == 1 && ports.iter().next() == mapped.as_ref();
    ctx.check(
        "same-mapping",
        same && seen.len() == 4,
        format!(
            "{} peers saw the client from {:?} (first contact mapped to {mapped:?})",
            seen.len(),
            ports
        ),
    );
    let saw = app_saw.lock().unwrap().clone();
    let real = peer_addrs.lock().unwrap().clone();
    let truthful = ["peer2", "peer3"]
        .iter()
        .all(|p| saw.contains_key(*p) && saw.get(*p) == real.get(*p));
    ctx.check(
        "true-source",
        truthful,
        format!("the application saw unsolicited datagrams from {saw:?}"),
    );
    // No leak: every server-side connection machine ended (closed or rejected).
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for t in ctx.world.trace.snapshot() {
        if t.machine.starts_with("vless-server[") {
            last.insert(t.machine.to_string(), t.to.to_string());
        }
    }
    let open: Vec<&String> = last
        .iter()
        .filter(|(_, to)| *to != "closed" && *to != "rejected")
        .map(|(m, _)| m)
        .collect();
    ctx.check(
        "carriers-closed",
        !last.is_empty() && open.is_empty(),
        format!("{} server connections, still open: {open:?}", last.len()),
    );
    let stats = ctx.world.link.stats();
    ctx.metric("datagrams", stats.sent);
    ctx.metric("dropped", stats.dropped());
    Ok(())
}
