//! `tcpstack-many`: our TCP stack's echo role under many connections and hostile
//! clients, with smoltcp as the active client over simulated IP links:
//!
//! - a SYN flood (100 SYNs) from spoofed addresses (nobody answers the SYN-ACKs)
//!   beyond the listener's SYN backlog (64 here): the backlog caps it, and the
//!   half-open entries expire (after 30 s; with 5 s, a handshake whose SYN-ACKs were
//!   lost for 5 s completed just after its entry expired and was reset: swarm seeds
//!   75 and 78);
//! - 120 echo connections, staggered over 3 s, each checked by hash (the ledger);
//! - 10 clients that vanish mid-transfer (once all are established with part of their
//!   upload acknowledged, or on a bad link once each has been, their link goes away:
//!   no RST, no FIN; the echo's idle bound of 120 s and the stack's retransmission
//!   limit must clear them; with 30 s, echo connections whose smoltcp RTO had grown to
//!   10 s during the flood were cut, with 60 s one whose segment was lost at seven
//!   resends in a row);
//! - 10 clients that abort (RST) with data in flight.
//!
//! Afterwards our stack's table must be empty: nothing leaks, whatever the peers did.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rand::Rng;
use smoltcp::iface::SocketHandle;
use tunnelbed_netio::IpNet;
use tunnelbed_tcpstack::serve::Service;
use tunnelbed_tcpstack::wire::{Ipv4Header, PROTO_TCP};
use tunnelbed_tcpstack::StackConfig;
use tunnelbed_tcpstack::{Packet, TcpFlags, TcpHeader, TcpOptions};

use super::tcpstack_common::{
    link_cfg, now, serve_host, stack_connections, SmolClient, StackSlot, SERVER,
};
use crate::fault::FaultPlan;
use crate::ledger::payload;
use crate::scenario::{Ctx, Scenario};

/// The echo's idle bound: `tunnelbed tcpstack serve`'s default. With 60 s a client
/// whose first data segment was lost at seven of smoltcp's resends in a row (10 s apart,
/// its maximum; 16% loss) was cut before the eighth arrived (swarm seed 40): a bound
/// shorter than the client's own retry span judges the link, not the stack.
const ECHO_IDLE: Duration = Duration::from_secs(120);

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "tcpstack-many",
    about: "120 echo connections to our TCP stack, a SYN flood past the backlog, vanishing and aborting clients",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 3,
    run,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 8, 1, 2);
const VANISHER: Ipv4Addr = Ipv4Addr::new(10, 8, 1, 3);
const NORMAL: usize = 120;
const VANISH: usize = 10;
const ABORT: usize = 10;
const FLOOD: usize = 100;

/// A spoofed SYN from 10.8.9.x (an address no link owns).
fn flood_syn(i: usize) -> Option<Vec<u8>> {
    let src = Ipv4Addr::new(10, 8, 9, (i % 250) as u8 + 1);
    let p = Packet {
        ip: Ipv4Header {
            src,
            dst: *SERVER.ip(),
            protocol: PROTO_TCP,
            ttl: 64,
            tos: 0,
            ident: i as u16,
            dont_fragment: true,
        },
        tcp: TcpHeader {
            src_port: 1024 + i as u16,
            dst_port: SERVER.port(),
            seq: 7_000_000 + i as u32,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 65535,
            urgent: 0,
            options: TcpOptions {
                mss: Some(1200),
                ..TcpOptions::default()
            },
        },
        payload: &[],
    };
    let mut b = BytesMut::new();
    p.encode(&mut b).ok()?;
    Some(b.to_vec())
}

struct Echo {
    flow: String,
    start: Duration,
    data: Vec<u8>,
    h: Option<SocketHandle>,
    sent: usize,
    fin_sent: bool,
    got: Vec<u8>,
    done: bool,
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mtu = ctx.params.mtu;
    let seed = ctx.seed;
    let plans: Vec<(Duration, usize)> = (0..NORMAL)
        .map(|_| {
            (
                Duration::from_millis(ctx.rng.gen_range(0..3000)),
                ctx.rng.gen_range(0..=8000),
            )
        })
        .collect();
    let isn_seed: u64 = ctx.rng.gen();
    let smol_seed: u64 = ctx.rng.gen();
    let sabotage = ctx.sabotaged();
    let slot: StackSlot = Arc::new(Mutex::new(None));
    let result = Arc::new(Mutex::new(None::<(usize, (usize, usize))>));

    let mut sim = ctx.builder(Duration::from_secs(900)).build();
    serve_host(
        &mut sim,
        &ctx.world,
        mtu,
        StackConfig {
            isn_seed,
            syn_backlog: 64,
            ..StackConfig::default()
        },
        ECHO_IDLE,
        Service::Echo,
        slot.clone(),
    );

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let slot_c = slot.clone();
    let result_c = result.clone();
    sim.client("client", async move {
        let net = world.net("client");
        let mut c = SmolClient::new(
            net.open_ip_link(link_cfg(CLIENT, mtu)).await?,
            CLIENT,
            smol_seed,
        );
        let mut v = Some(SmolClient::new(
            net.open_ip_link(link_cfg(VANISHER, mtu)).await?,
            VANISHER,
            smol_seed ^ 1,
        ));
        // The flood first: the backlog fills with connections nobody completes.
        for i in 0..FLOOD {
            if let Some(p) = flood_syn(i) {
                c.send_raw(&p).await?;
            }
        }
        world.trace.transition(
            now(),
            "tcpstack-many",
            "start",
            "flooded",
            format!("{FLOOD} spoofed SYNs"),
        );
        let mut echoes: Vec<Echo> = plans
            .iter()
            .enumerate()
            .map(|(i, (start, n))| {
                let flow = format!("echo-{i:03}");
                let data = payload(seed, i as u64, *n);
                if sabotage && i == 7 && !data.is_empty() {
                    let mut told = data.clone();
                    told[0] ^= 0xff;
                    ledger.sent(&flow, &told);
                } else {
                    ledger.sent(&flow, &data);
                }
                Echo {
                    flow,
                    start: *start,
                    data,
                    h: None,
                    sent: 0,
                    fin_sent: false,
                    got: Vec::new(),
                    done: false,
                }
            })
            .collect();
        // Vanishing clients upload and never read; their link goes away at 4 s.
        let big = payload(seed, 999, 64 * 1024);
        let mut vanishers = Vec::new();
        if let Some(vc) = v.as_mut() {
            for i in 0..VANISH {
                vanishers.push((
                    vc.connect(SERVER, 30_000 + i as u16, 16 * 1024)?,
                    0usize,
                    false,
                ));
            }
        }
        // Aborting clients upload and reset the connection with data in flight.
        let mut aborters = Vec::new();
        for i in 0..ABORT {
            aborters.push((
                c.connect(SERVER, 20_000 + i as u16, 64 * 1024)?,
                0usize,
                false,
            ));
        }
        let t0 = now();
        // (how many had been mid-transfer, how many still were) when the link went.
        let mut vanished_mid = (0, 0);
        let mut buf = vec![0u8; 16 * 1024];
        while echoes.iter().any(|e| !e.done) || aborters.iter().any(|a| !a.2) || v.is_some() {
            c.poll();
            let t = now() - t0;
            for (i, e) in echoes.iter_mut().enumerate() {
                if e.done || t < e.start {
                    continue;
                }
                let h = match e.h {
                    Some(h) => h,
                    None => {
                        let h = c.connect(SERVER, 40_000 + i as u16, 16 * 1024)?;
                        e.h = Some(h);
                        h
                    }
                };
                let s = c.socket(h);
                while s.can_send() && e.sent < e.data.len() {
                    e.sent += s.send_slice(&e.data[e.sent..]).unwrap_or(0);
                }
                if e.sent == e.data.len() && !e.fin_sent && s.may_send() {
                    s.close();
                    e.fin_sent = true;
                }
                while s.can_recv() {
                    let n = s.recv_slice(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    e.got.extend_from_slice(&buf[..n]);
                }
                let ended = e.fin_sent && !s.may_recv() && !s.can_recv();
                if ended || s.state() == smoltcp::socket::tcp::State::Closed {
                    ledger.received(&e.flow, &e.got);
                    if ended {
                        ledger.close(&e.flow);
                    }
                    e.done = true;
                }
            }
            for a in aborters.iter_mut() {
                if a.2 {
                    continue;
                }
                let s = c.socket(a.0);
                while s.can_send() && a.1 < big.len() {
                    a.1 += s.send_slice(&big[a.1..]).unwrap_or(0);
                }
                // Reset once some data went out and more is still queued (in flight).
                if a.1 > 8 * 1024 && s.send_queue() > 0 {
                    s.abort();
                    a.2 = true;
                } else if s.state() == smoltcp::socket::tcp::State::Closed {
                    a.2 = true;
                }
            }
            if let Some(vc) = v.as_mut() {
                vc.drain_rx().await?;
                vc.poll();
                let mut mid = 0;
                for (h, sent, was_mid) in vanishers.iter_mut() {
                    let s = vc.socket(*h);
                    while s.can_send() && *sent < big.len() {
                        *sent += s.send_slice(&big[*sent..]).unwrap_or(0);
                    }
                    // Mid-transfer: established, part of the upload acknowledged.
                    if s.state() == smoltcp::socket::tcp::State::Established
                        && *sent > s.send_queue() + 4096
                    {
                        mid += 1;
                        *was_mid = true;
                    }
                }
                vc.flush().await?;
                // Usually all are mid-transfer at once. On a bad link one handshake can
                // finish after the echo's idle bound has already closed the others
                // (they never read, so their echoes stall): then the link goes once each
                // has been mid-transfer, with those still open (swarm seed 375).
                let been = vanishers.iter().filter(|v| v.2).count();
                if been == VANISH || t >= Duration::from_secs(300) {
                    // Gone without a word: the link (and its address's route) is dropped.
                    vanished_mid = (been, mid);
                    v = None;
                    world.trace.transition(
                        now(),
                        "tcpstack-many",
                        "running",
                        "vanished",
                        format!("{mid} of {VANISH} clients' link dropped mid-transfer"),
                    );
                }
            }
            c.step(Duration::from_millis(20)).await?;
        }
        drop(v);
        let until = now() + Duration::from_secs(300);
        while now() < until && stack_connections(&slot_c) != Some(0) {
            c.step(Duration::from_millis(50)).await?;
        }
        *result_c.lock().unwrap_or_else(|e| e.into_inner()) = Some((
            stack_connections(&slot_c).unwrap_or(usize::MAX),
            vanished_mid,
        ));
        Ok(())
    });

    ctx.drive(&mut sim, &FaultPlan::new(), Duration::from_secs(800));
    ctx.check_flows(NORMAL);
    let r = *result.lock().unwrap_or_else(|e| e.into_inner());
    ctx.check(
        "stack-empty",
        matches!(r, Some((0, _))),
        match r {
            Some((0, _)) => "our stack's connection table emptied".to_string(),
            Some((n, _)) => format!("{n} connections left in our stack"),
            None => "the client never got to the end".to_string(),
        },
    );
    let (been, mid) = r.map_or((0, 0), |x| x.1);
    ctx.check(
        "vanished-mid-transfer",
        been == VANISH && mid > 0,
        if mid == been {
            format!("{mid} of {VANISH} vanishing clients were mid-transfer when their link went")
        } else {
            format!(
                "{been} of {VANISH} vanishing clients reached mid-transfer; {mid} still were when \
                 their link went (the echo's idle bound had closed the others)"
            )
        },
    );
    if let Some(st) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let s = st.stats();
        ctx.check(
            "syn-backlog",
            s.syn_dropped > 0,
            format!("{} SYNs dropped at the full backlog", s.syn_dropped),
        );
        ctx.metric("syn-dropped", s.syn_dropped);
        ctx.metric("rst-received", s.rst_received);
        ctx.metric("retransmits", s.retransmits);
    }
    let stats = ctx.world.link.stats();
    ctx.metric("packets", stats.sent);
    ctx.metric("dropped", stats.dropped());
    ctx.metric("no-route", ctx.world.ip_routes.stats().no_route);
    Ok(())
}
