//! `tcp-echo`: a harness scenario that proves stream capture and stalls. Clients open
//! concurrent connections, write random amounts in random chunks, half-close, and read
//! the echo back; the link is held and released (swizzle-clogging) on faulty profiles.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_netio::{Net, TcpListen};

use crate::clock::now;
use crate::fault::{FaultAction, FaultPlan};
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::fixture::random_bytes;
use crate::simnet::any;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "tcp-echo",
    about: "concurrent TCP echo streams with half-close under stalls (harness)",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 3,
    run,
};

const PORT: u16 = 9000;

/// One connection's data and its writes: (chunk size, pause before it).
type StreamPlan = (Vec<u8>, Vec<(usize, Duration)>);

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let conns = 16usize;
    let plans: Vec<StreamPlan> = (0..conns)
        .map(|_| {
            let n = ctx.rng.gen_range(0..=200_000usize);
            let data = random_bytes(&mut ctx.rng, n);
            // (chunk size, pause before it): paced writes spread each transfer over
            // the fault window so stalls hit streams mid-flight.
            let mut chunks = Vec::new();
            let mut left = n;
            while left > 0 {
                let c = ctx.rng.gen_range(1..=left.min(20_000));
                chunks.push((c, Duration::from_millis(ctx.rng.gen_range(0..150))));
                left -= c;
            }
            (data, chunks)
        })
        .collect();
    let sabotage = ctx.sabotaged();

    let faults = if ctx.profile == "clean" {
        FaultPlan::new()
    } else {
        FaultPlan::new()
            .swizzle(
                "client",
                "server",
                Duration::from_millis(50),
                Duration::from_millis(1500),
                Duration::from_millis(200),
                ctx.seed,
            )
            .at(
                Duration::from_millis(1600),
                FaultAction::Hold("client".into(), "server".into()),
            )
            .at(
                Duration::from_millis(2100),
                FaultAction::Release("client".into(), "server".into()),
            )
    };

    let live = Arc::new(AtomicI64::new(0));
    let mut sim = ctx.builder(Duration::from_secs(600)).build();
    let world = ctx.world.clone();
    let live_srv = live.clone();
    sim.host("server", move || {
        let net = world.net("server");
        let live = live_srv.clone();
        let trace = world.trace.clone();
        async move {
            let lsn = net.listen_tcp(any(PORT)).await?;
            loop {
                let (mut s, peer) = lsn.accept().await?;
                let live = live.clone();
                let trace = trace.clone();
                live.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let machine = format!("tcp-echo-server[{peer}]");
                    trace.transition(now(), machine.clone(), "listen", "established", "accept");
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut total = 0usize;
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if sabotage && total == 0 && n > 1 {
                                    buf[0] ^= 1;
                                }
                                total += n;
                                if s.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    trace.transition(
                        now(),
                        machine.clone(),
                        "established",
                        "close_wait",
                        "recv FIN",
                    );
                    let _ = s.shutdown().await;
                    trace.transition(
                        now(),
                        machine,
                        "close_wait",
                        "closed",
                        format!("echoed {total} B"),
                    );
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    sim.client("client", async move {
        let net = world.net("client");
        let server = net.resolve("server", PORT).await?[0];
        let mut tasks = Vec::new();
        for (i, (data, chunks)) in plans.into_iter().enumerate() {
            let net = net.clone();
            let ledger = ledger.clone();
            let trace = world.trace.clone();
            tasks.push(tokio::spawn(async move {
                let flow = format!("conn-{i:02}");
                let machine = format!("tcp-echo-client[{flow}]");
                let s = net.connect_tcp(server).await?;
                trace.transition(now(), machine.clone(), "closed", "established", "connect");
                let (mut rd, mut wr) = tokio::io::split(s);
                ledger.sent(&flow, &data);
                let writer = async {
                    let mut off = 0;
                    for (c, pause) in chunks {
                        tokio::time::sleep(pause).await;
                        wr.write_all(&data[off..off + c]).await?;
                        off += c;
                    }
                    wr.shutdown().await?;
                    Ok::<(), std::io::Error>(())
                };
                let reader = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = rd.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        ledger.received(&flow, &buf[..n]);
                    }
                    Ok::<(), std::io::Error>(())
                };
                let (w, r) = tokio::join!(writer, reader);
                w?;
                r?;
                ledger.close(&flow);
                trace.transition(now(), machine, "established", "closed", "echo complete");
                Ok::<(), std::io::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    });

    ctx.drive(&mut sim, &faults, Duration::from_secs(60));
    ctx.check_flows(conns);
    let left = live.load(Ordering::SeqCst);
    ctx.check(
        "no-leak-server",
        left == 0,
        format!("{left} server connections still open at the end"),
    );
    ctx.metric("bytes", ctx.ledger.total_received());
    Ok(())
}
