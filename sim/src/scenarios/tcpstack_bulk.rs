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
use smoltcp::socket::tcp::State as SmolState;
use tunnelbed_netio::IpNet;
use tunnelbed_tcpstack::serve::Service;
use tunnelbed_tcpstack::StackConfig;

use super::tcpstack_common::{
    link_cfg, now, serve_host, stack_connections, SmolClient, StackSlot, SERVER,
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

/// One client connection's progress.
struct Conn {
    flow: String,
    data: Vec<u8>,
    sent: usize,
    fin_sent: bool,
    got: Vec<u8>,
    done: bool,
    state: SmolState,
}

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
            conns.push(Conn {
                flow,
                data,
                sent: 0,
                fin_sent: false,
                got: Vec::new(),
                done: false,
                state: SmolState::SynSent,
            });
        }
        let mut buf = vec![0u8; 64 * 1024];
        while conns.iter().any(|k| !k.done) {
            c.poll();
            for (k, h) in conns.iter_mut().zip(&handles) {
                if k.done {
                    continue;
                }
                let s = c.socket(*h);
                while s.can_send() && k.sent < k.data.len() {
                    k.sent += s.send_slice(&k.data[k.sent..]).unwrap_or(0);
                }
                if k.sent == k.data.len() && !k.fin_sent && s.may_send() {
                    s.close();
                    k.fin_sent = true;
                }
                while s.can_recv() {
                    let n = s.recv_slice(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    k.got.extend_from_slice(&buf[..n]);
                }
                let st = s.state();
                if st != k.state {
                    world.trace.transition(
                        now(),
                        format!("smoltcp[{}]", k.flow),
                        format!("{}", k.state),
                        format!("{st}"),
                        "socket state",
                    );
                    k.state = st;
                }
                // Done at the echo's end (our FIN read), or when the connection died.
                let ended = k.fin_sent && !s.may_recv() && !s.can_recv();
                if ended || st == SmolState::Closed {
                    ledger.received(&k.flow, &k.got);
                    if ended {
                        ledger.close(&k.flow);
                    }
                    k.done = true;
                }
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
