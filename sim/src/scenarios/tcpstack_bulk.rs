//! `tcpstack-bulk`: our user-space TCP stack (the role behind `tunnelbed tcpstack serve
//! --echo`) against smoltcp as the active client, over simulated IP links (every
//! profile's loss, duplication, reordering, corruption, MTU and bandwidth apply to each
//! segment). Four connections at once upload up to 600 kB each, half-close, and read the
//! echo to its end; integrity by hash per connection, then our stack's table must empty
//! (no-leak inside the stack as well as in the ledger).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tunnelbed_netio::IpNet;
use tunnelbed_tcpstack::serve::Service;
use tunnelbed_tcpstack::StackConfig;

use super::tcpstack_common::{
    link_cfg, now, serve_host, stack_connections, EchoConn, SmolClient, StackSlot, SERVER,
};
use crate::fault::FaultPlan;
use crate::ledger::payload;
use crate::scenario::{Ctx, Scenario};

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "tcpstack-bulk",
    about: "smoltcp uploads to our TCP stack's echo and reads it back, 4 connections, half-closes, over the IP link",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 3,
    run,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 8, 1, 2);
const CONNS: usize = 4;

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mtu = ctx.params.mtu;
    let sizes: Vec<usize> = (0..CONNS)
        .map(|i| {
            if i == 0 {
                ctx.rng.gen_range(0..=2000)
            } else {
                ctx.rng.gen_range(1..=600_000)
            }
        })
        .collect();
    let isn_seed: u64 = ctx.rng.gen();
    let smol_seed: u64 = ctx.rng.gen();
    let seed = ctx.seed;
    let sabotage = ctx.sabotaged();
    let slot: StackSlot = Arc::new(Mutex::new(None));
    let lingered = Arc::new(Mutex::new(None::<usize>));

    let mut sim = ctx.builder(Duration::from_secs(900)).build();
    serve_host(
        &mut sim,
        &ctx.world,
        mtu,
        StackConfig {
            isn_seed,
            ..StackConfig::default()
        },
        Duration::from_secs(60),
        Service::Echo,
        slot.clone(),
    );

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let slot_c = slot.clone();
    let lingered_c = lingered.clone();
    sim.client("client", async move {
        let link = world
            .net("client")
            .open_ip_link(link_cfg(CLIENT, mtu))
            .await?;
        let mut c = SmolClient::new(link, CLIENT, smol_seed);
        let mut conns = Vec::new();
        let mut handles = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let flow = format!("tcpstack-{i}");
            let data = payload(seed, i as u64, *n);
            // The integrity sabotage: the ledger is told one byte other than was sent.
            if sabotage && i == 1 && !data.is_empty() {
                let mut told = data.clone();
                told[0] ^= 0xff;
                ledger.sent(&flow, &told);
            } else {
                ledger.sent(&flow, &data);
            }
            handles.push(c.connect(SERVER, 40_000 + i as u16, 256 * 1024)?);
            conns.push(EchoConn::new(flow, data));
        }
        let mut buf = vec![0u8; 64 * 1024];
        while conns.iter().any(|k| !k.done) {
            c.poll();
            for (k, h) in conns.iter_mut().zip(&handles) {
                k.pump(c.socket(*h), &mut buf, now(), &world.trace, &ledger);
            }
            c.step(Duration::from_millis(50)).await?;
        }
        // Linger: keep answering (ACKs to our FIN's retransmissions) until our stack's
        // table is empty, at most 120 s.
        let until = now() + Duration::from_secs(120);
        while now() < until && stack_connections(&slot_c) != Some(0) {
            c.step(Duration::from_millis(50)).await?;
        }
        *lingered_c.lock().unwrap_or_else(|e| e.into_inner()) = stack_connections(&slot_c);
        Ok(())
    });

    ctx.drive(&mut sim, &FaultPlan::new(), Duration::from_secs(800));
    ctx.check_flows(CONNS);
    let left = *lingered.lock().unwrap_or_else(|e| e.into_inner());
    ctx.check(
        "stack-empty",
        left == Some(0),
        match left {
            Some(0) => "our stack's connection table emptied".to_string(),
            Some(n) => format!("{n} connections left in our stack"),
            None => "the client never got to the end".to_string(),
        },
    );
    if let Some(st) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let s = st.stats();
        ctx.metric("retransmits", s.retransmits);
        ctx.metric("fast-retransmits", s.fast_retransmits);
    }
    let stats = ctx.world.link.stats();
    ctx.metric("packets", stats.sent);
    ctx.metric("dropped", stats.dropped());
    Ok(())
}
