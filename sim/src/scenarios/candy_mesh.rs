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
use tunnelbed_candy::client::random_vmac;
use tunnelbed_candy::connect::Status;
use tunnelbed_candy::serve::ServerHandle;
use tunnelbed_netio::Net;

use crate::fault::{FaultAction, FaultPlan};
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::candy_common::{self as cc, Exchange};
use crate::scenarios::candy_tcp::{self, StackSlot};
use crate::scenarios::fixture::{random_bytes, random_payloads};

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
const PORT: u16 = cc::SERVER_PORT;
const PASSWORD: &[u8] = b"mesh";
/// Longer than any run: the mesh resends until answered (liveness bounds it).
const GIVE_UP: Duration = Duration::from_secs(10_000);
/// Our stack serves TCP echo behind this client's interface...
const TCP_SERVER: usize = 0;
/// ...and smoltcp connects to it from behind this one's.
const TCP_CLIENT: usize = 2;
/// TCP connections, and the most bytes each sends (and gets back).
const TCP_CONNS: usize = 3;
const TCP_MAX: usize = 48 * 1024;

/// Every client's address once DHCP gave it (host index -> address).
type Addrs = watch::Sender<BTreeMap<usize, Ipv4Addr>>;

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let max_len = 1200usize;
    let payloads: Vec<Vec<Vec<u8>>> = (0..CLIENTS)
        .map(|_| random_payloads(&mut ctx.rng, REQUESTS, max_len))
        .collect();
    let vmacs: Vec<[u8; 16]> = (0..CLIENTS).map(|_| random_vmac(&mut ctx.rng)).collect();
    let seeds: Vec<u64> = (0..=CLIENTS).map(|_| ctx.rng.gen()).collect();
    let tcp_payloads: Vec<(String, Vec<u8>)> = (0..TCP_CONNS)
        .map(|j| {
            let n = ctx.rng.gen_range(1..=TCP_MAX);
            let flow = format!("tcp-c{}-to-c{}-{j}", TCP_CLIENT + 1, TCP_SERVER + 1);
            (flow, random_bytes(&mut ctx.rng, n))
        })
        .collect();
    let (isn_seed, smol_seed): (u64, u64) = (ctx.rng.gen(), ctx.rng.gen());
    let stack: StackSlot = Arc::default();
    let stack_left: Arc<Mutex<Option<usize>>> = Arc::default();
    let sabotage = ctx.sabotaged();
    let resend = Duration::from_millis(500) + ctx.params.latency * 4 + ctx.params.jitter * 4;

    let mut sim = ctx.builder(Duration::from_secs(900)).build();
    let server: Arc<Mutex<Option<Arc<ServerHandle>>>> = Arc::default();
    let cfg =
        cc::serve_config(PASSWORD, "10.77.0.0/24", seeds[CLIENTS]).map_err(anyhow::Error::msg)?;
    let slot = server.clone();
    cc::host_server(&mut sim, &ctx.world, cfg, move |h| {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(h)
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
        let (stack, stack_left) = (stack.clone(), stack_left.clone());
        let tcp_payloads = if i == TCP_CLIENT {
            tcp_payloads.clone()
        } else {
            Vec::new()
        };
        let (vmac, seed) = (vmacs[i], seeds[i]);
        sim.client(name.clone(), async move {
            let net = world.net(&name);
            let _guard = world.crash_guard(&name);
            let cfg = cc::member_config(PASSWORD, vmac, seed, "server", PORT);
            let (status, mut status_rx) = mpsc::unbounded_channel();
            let drops = downs.clone();
            tokio::spawn(async move {
                while let Some(st) = status_rx.recv().await {
                    if st == Status::Down {
                        drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let tamper = move |answered: u64| sabotage && i == 0 && answered == 4;
            let tcp = i == TCP_SERVER || i == TCP_CLIENT;
            let trace = world.trace.clone();
            let mut m =
                cc::start_member(net.clone(), cfg, trace.clone(), status, tamper, tcp).await?;
            let me = m.me;
            let mut echo_task = None;
            if i == TCP_SERVER {
                let link = m.tcp.take().ok_or("no TCP side")?;
                let (st, task) =
                    candy_tcp::echo_server(link, me, isn_seed, trace.clone(), net.data_fault())?;
                *stack.lock().unwrap_or_else(|e| e.into_inner()) = Some(st);
                echo_task = Some(task);
            }
            addrs.send_modify(|a| {
                a.insert(i, me);
            });
            let tcp_flows = if i == TCP_CLIENT {
                let link = m.tcp.take().ok_or("no TCP side")?;
                let server_ip = cc::address_of(&addrs, TCP_SERVER).await?;
                // Connect once the server routes both ends and the echo server listens
                // (its address was published after it did).
                let routed = || {
                    slot_c
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                        .is_some_and(|h| h.is_routed(me) && h.is_routed(server_ip))
                };
                while !routed() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let ledger = ledger.clone();
                let stack = stack.clone();
                Some(tokio::spawn(candy_tcp::echo_client(
                    link,
                    me,
                    server_ip,
                    tcp_payloads,
                    smol_seed,
                    ledger,
                    trace.clone(),
                    stack,
                )))
            } else {
                None
            };
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
                let count = || {
                    resends.fetch_add(1, Ordering::Relaxed);
                };
                match cc::exchange(&mut m, peer, k, payload, resend, GIVE_UP, count).await? {
                    Exchange::Answered(data) => ledger.received(&flow, &data),
                    Exchange::GaveUp => {}
                }
                ledger.close(&flow);
            }
            if let Some(t) = tcp_flows {
                let left = t
                    .await
                    .map_err(|e| format!("TCP client: {e}"))?
                    .map_err(|e| format!("TCP client: {e}"))?;
                *stack_left.lock().unwrap_or_else(|e| e.into_inner()) = left;
            }
            // Keep answering until every client is done.
            done.send_modify(|d| *d += 1);
            let mut d = done.subscribe();
            d.wait_for(|d| *d >= CLIENTS)
                .await
                .map_err(|_| "done gone")?;
            m.stop();
            if let Some(t) = echo_task {
                t.abort();
            }
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
    ctx.check_flows(CLIENTS * REQUESTS + TCP_CONNS);
    let left = *stack_left.lock().unwrap_or_else(|e| e.into_inner());
    ctx.check(
        "stack-empty",
        left == Some(0),
        match left {
            Some(0) => "our stack's connection table emptied".to_string(),
            Some(n) => format!("{n} connections left in our stack"),
            None => "the TCP client never got to the end".to_string(),
        },
    );
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
