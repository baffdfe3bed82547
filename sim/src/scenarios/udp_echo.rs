//! `udp-echo`: a harness scenario that proves the datagram link model and capture. A
//! client sends numbered requests of random sizes, retrying on timeout, to an echo
//! server; every request must come back intact.

use std::time::Duration;

use tunnelbed_netio::{Net, UdpSock};

use crate::clock::now;
use crate::fault::FaultPlan;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::fixture::random_payloads;
use crate::simnet::any;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "udp-echo",
    about: "numbered UDP requests echoed through the link model, a partition and a server crash (harness)",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 3,
    run,
};

const PORT: u16 = 9000;
const WORKERS: usize = 8;

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let requests: usize = 200;
    let max_len = ctx.params.mtu.saturating_sub(4).clamp(1, 1200);
    let payloads = random_payloads(&mut ctx.rng, requests, max_len);
    // Generous per-attempt timeout: two base latencies, the jitter, and queueing slack.
    let timeout = ctx.params.latency * 2 + ctx.params.jitter * 2 + Duration::from_millis(100);
    let sabotage = ctx.sabotaged();

    let mut sim = ctx.builder(Duration::from_secs(600)).build();
    let world = ctx.world.clone();
    sim.host("server", move || {
        let net = world.net("server");
        async move {
            let sock = net.bind_udp(any(PORT)).await?;
            let mut buf = vec![0u8; 65_536];
            let mut echoed = 0u64;
            loop {
                let (n, from) = sock.recv_from(&mut buf).await?;
                echoed += 1;
                if sabotage && echoed == 17 && n > 4 {
                    buf[n - 1] ^= 0xff;
                }
                sock.send_to(&buf[..n], from).await?;
            }
        }
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    sim.client("client", async move {
        let net = world.net("client");
        let server = net.resolve("server", PORT).await?[0];
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let mine: Vec<(usize, Vec<u8>)> = payloads
                .iter()
                .enumerate()
                .filter(|(i, _)| i % WORKERS == w)
                .map(|(i, p)| (i, p.clone()))
                .collect();
            let sock = net.bind_udp(any(10_000 + w as u16)).await?;
            let ledger = ledger.clone();
            let trace = world.trace.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                for (i, payload) in mine {
                    let flow = format!("req-{i:04}");
                    let mut msg = (i as u32).to_be_bytes().to_vec();
                    msg.extend_from_slice(&payload);
                    ledger.sent(&flow, &payload);
                    let machine = format!("udp-echo[{flow}]");
                    trace.transition(now(), machine.clone(), "idle", "waiting", "send");
                    let mut attempts = 0u32;
                    'retry: loop {
                        attempts += 1;
                        sock.send_to(&msg, server).await?;
                        let deadline = tokio::time::Instant::now() + timeout;
                        loop {
                            let got =
                                tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
                            match got {
                                Err(_) => continue 'retry,
                                Ok(r) => {
                                    let (n, _) = r?;
                                    if n >= 4 && buf[..4] == msg[..4] {
                                        ledger.received(&flow, &buf[4..n]);
                                        ledger.close(&flow);
                                        break 'retry;
                                    }
                                    // A late echo of an earlier request (or a duplicate): skip.
                                }
                            }
                        }
                    }
                    trace.transition(
                        now(),
                        machine,
                        "waiting",
                        "done",
                        format!("echoed after {attempts} attempt(s)"),
                    );
                }
                Ok::<(), std::io::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    });

    // On faulty profiles: a two-way partition, then a server crash and restart; the
    // client's retries must carry every request through both.
    let faults = if ctx.profile == "clean" {
        FaultPlan::new()
    } else {
        FaultPlan::partition_then_restart("client", "server")
    };
    ctx.drive(&mut sim, &faults, Duration::from_secs(300));
    ctx.check_flows(requests);
    let stats = ctx.world.link.stats();
    ctx.metric("datagrams", stats.sent);
    ctx.metric("dropped", stats.dropped());
    Ok(())
}
