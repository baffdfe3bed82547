//! `kcp-rpc`: many small request/response exchanges over one KCP session (message
//! sizes from 1 byte to a few segments), each answer checked against its request, with
//! per-request latency reported.

use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{self, ArqOptions, SessionEnd};
use tunnelbed_netio::Net;

use crate::fault::FaultPlan;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::fixture::random_bytes;
use crate::scenarios::kcp_common;
use crate::simnet::any;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "kcp-rpc",
    about: "300 small request/response exchanges over one KCP session (fast3), latency measured",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

const PORT: u16 = 4001;

async fn read_frame<S: AsyncReadExt + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > 1 << 20 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too long",
        ));
    }
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).await?;
    Ok(b)
}

fn frame(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let requests: Vec<Vec<u8>> = (0..300)
        .map(|_| {
            // Lengths drawn as i32, as they always were: a seed keeps its requests.
            let n: i32 = match ctx.rng.gen_range(0..4) {
                0 => ctx.rng.gen_range(1..16),
                1 | 2 => ctx.rng.gen_range(16..1200),
                _ => ctx.rng.gen_range(1200..5000),
            };
            random_bytes(&mut ctx.rng, n as usize)
        })
        .collect();
    let conv: u32 = ctx.rng.gen();
    let sabotage = ctx.sabotaged();
    let opts = ArqOptions {
        idle_timeout: Duration::from_secs(120),
        ..ArqOptions::default()
    };

    let mut sim = ctx.builder(Duration::from_secs(1200)).build();
    let world = ctx.world.clone();
    let sopts = opts.clone();
    sim.host("server", move || {
        let net = world.net("server");
        let trace = world.trace.clone();
        let opts = sopts.clone();
        async move {
            let mut srv =
                kcp_common::bind_server(&net, PORT, conv, KcpConfig::fast3(), trace, opts).await?;
            while let Some((mut s, _)) = srv.accept().await {
                tokio::spawn(async move {
                    let mut k = 0;
                    while let Ok(mut req) = read_frame(&mut s).await {
                        k += 1;
                        if sabotage && k == 7 {
                            req.push(0);
                        }
                        if s.write_all(&frame(&req)).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Ok(())
        }
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let latencies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lat = latencies.clone();
    sim.client("client", async move {
        let net = world.net("client");
        let server = net.resolve("server", PORT).await?[0];
        let kcp = Kcp::new(
            conv,
            &KcpConfig::fast3(),
            world.trace.clone(),
            "kcp[client]",
        );
        let (mut s, session) = arq::connect(&net, any(0), server, kcp, opts).await?;
        for (i, req) in requests.iter().enumerate() {
            let flow = format!("rpc-{i:03}");
            let t0 = tokio::time::Instant::now();
            ledger.sent(&flow, req);
            s.write_all(&frame(req)).await?;
            let resp = read_frame(&mut s).await?;
            ledger.received(&flow, &resp);
            ledger.close(&flow);
            lat.lock().unwrap().push(t0.elapsed().as_millis() as u64);
        }
        s.shutdown().await?;
        drop(s);
        let end = session.await?;
        if end != SessionEnd::Finished {
            return Err(format!("client session ended: {end}").into());
        }
        world.trace.transition(
            turmoil::sim_elapsed().unwrap_or_default(),
            "kcp-rpc",
            "exchanging",
            "done",
            format!("{} exchanges answered, session drained", requests.len()),
        );
        Ok(())
    });

    ctx.drive(&mut sim, &FaultPlan::new(), Duration::from_secs(900));
    ctx.check_flows(300);
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    if !l.is_empty() {
        ctx.metric("p50_ms", l[l.len() / 2]);
        ctx.metric("p99_ms", l[(l.len() * 99 / 100).min(l.len() - 1)]);
    }
    Ok(())
}
