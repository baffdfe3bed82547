//! `kcp-bulk`: 10 MB one way over KCP (vproxy's client and server presets, stream mode)
//! through the link model. The server hashes what it got and answers with the digest;
//! the client's session must then finish with everything acknowledged.

use std::time::Duration;

use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{self, ArqOptions, SessionEnd};
use tunnelbed_netio::Net;

use crate::fault::FaultPlan;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::kcp_common;
use crate::simnet::any;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "kcp-bulk",
    about: "10 MB one way over KCP (clientFast4 -> fast4), digest checked, session drained",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

const PORT: u16 = 4000;
/// Bytes sent.
pub const BULK_BYTES: usize = 10 * 1024 * 1024;

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut data = vec![0u8; BULK_BYTES];
    ctx.rng.fill_bytes(&mut data);
    let conv: u32 = ctx.rng.gen();
    let sabotage = ctx.sabotaged();
    let opts = ArqOptions {
        idle_timeout: Duration::from_secs(120),
        ..ArqOptions::default()
    };

    let mut sim = ctx.builder(Duration::from_secs(1200)).build();
    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let server_opts = opts.clone();
    sim.host("server", move || {
        let net = world.net("server");
        let trace = world.trace.clone();
        let ledger = ledger.clone();
        let opts = server_opts.clone();
        async move {
            let mut srv =
                kcp_common::bind_server(&net, PORT, conv, KcpConfig::fast4(), trace, opts).await?;
            while let Some((mut s, _peer)) = srv.accept().await {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    let mut len = [0u8; 8];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let total = u64::from_be_bytes(len) as usize;
                    let mut h = Sha256::new();
                    let mut got = 0usize;
                    let mut buf = vec![0u8; 64 * 1024];
                    while got < total {
                        let n = match s.read(&mut buf[..(total - got).min(64 * 1024)]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if sabotage && got == 0 {
                            buf[0] ^= 1;
                        }
                        h.update(&buf[..n]);
                        ledger.received("bulk", &buf[..n]);
                        got += n;
                    }
                    ledger.close("bulk");
                    let _ = s.write_all(&h.finalize()).await;
                    // Keep the stream open until the peer has our digest acknowledged.
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest).await;
                });
            }
            Ok(())
        }
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let copts = opts.clone();
    sim.client("client", async move {
        let net = world.net("client");
        let server = net.resolve("server", PORT).await?[0];
        let kcp = Kcp::new(
            conv,
            &KcpConfig::client_fast4(),
            world.trace.clone(),
            "kcp[client]",
        );
        let (mut s, session) = arq::connect(&net, any(0), server, kcp, copts).await?;
        let start = tokio::time::Instant::now();
        s.write_all(&(data.len() as u64).to_be_bytes()).await?;
        ledger.sent("bulk", &data);
        for chunk in data.chunks(64 * 1024) {
            s.write_all(chunk).await?;
        }
        let mut digest = [0u8; 32];
        s.read_exact(&mut digest).await?;
        let took = start.elapsed();
        let want: [u8; 32] = Sha256::digest(&data).into();
        if digest != want {
            return Err("server digest differs from what the client sent".into());
        }
        s.shutdown().await?;
        drop(s);
        let end = session.await?;
        if end != SessionEnd::Finished {
            return Err(format!("client session ended: {end}").into());
        }
        world.trace.transition(
            turmoil::sim_elapsed().unwrap_or_default(),
            "kcp-bulk",
            "transfer",
            "done",
            format!("{} bytes in {:.3}s", data.len(), took.as_secs_f64()),
        );
        Ok(())
    });

    let elapsed = ctx.drive(&mut sim, &FaultPlan::new(), Duration::from_secs(900));
    ctx.check_flows(1);
    let secs = elapsed.as_secs_f64().max(1e-9);
    ctx.metric(
        "goodput_MBps",
        format!("{:.2}", BULK_BYTES as f64 / secs / 1e6),
    );
    Ok(())
}
