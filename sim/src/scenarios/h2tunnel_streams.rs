//! `h2tunnel-streams`: 200 concurrent streams through one vproxy tunnel over KCP, with
//! random request and response sizes, half-closes (each request ends with FIN before
//! the response comes back), resets from the client mid-request and from the server
//! before answering. Every completed stream's bytes are checked both ways; every reset
//! stream must be reported to the application as a reset, never as a clean end.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_netio::Net;

use crate::fault::FaultPlan;
use crate::ledger::payload;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::h2t_common;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "h2tunnel-streams",
    about: "200 concurrent h2tunnel streams over KCP: random sizes, half-closes, resets both ways",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

const PORT: u16 = 4100;
const STREAMS: usize = 200;

/// What a stream does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Request, FIN, response, FIN.
    Complete = 0,
    /// The client resets after sending part of its request.
    ClientReset = 1,
    /// The server resets after reading the header.
    ServerReset = 2,
}

/// Header each stream starts with: index, request length, response length, mode.
const HEADER: usize = 13;

fn header(i: u32, req: u32, resp: u32, mode: Mode) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&i.to_be_bytes());
    h[4..8].copy_from_slice(&req.to_be_bytes());
    h[8..12].copy_from_slice(&resp.to_be_bytes());
    h[12] = mode as u8;
    h
}

fn size(rng: &mut impl Rng) -> usize {
    match rng.gen_range(0..10) {
        0 => 0,
        1..=6 => rng.gen_range(1..16 * 1024),
        7 | 8 => rng.gen_range(16 * 1024..96 * 1024),
        _ => rng.gen_range(96 * 1024..256 * 1024),
    }
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let seed = ctx.seed;
    let plan: Vec<(usize, usize, Mode, u64)> = (0..STREAMS)
        .map(|_| {
            let mode = match ctx.rng.gen_range(0..10) {
                0 => Mode::ClientReset,
                1 => Mode::ServerReset,
                _ => Mode::Complete,
            };
            let start_ms = ctx.rng.gen_range(0..2000);
            (size(&mut ctx.rng), size(&mut ctx.rng), mode, start_ms)
        })
        .collect();
    let expect_client_resets = plan.iter().filter(|p| p.2 == Mode::ClientReset).count();
    let expect_server_resets = plan.iter().filter(|p| p.2 == Mode::ServerReset).count();
    let complete = plan.iter().filter(|p| p.2 == Mode::Complete).count();
    let sabotage = ctx.sabotaged();

    let server_saw_reset = Arc::new(AtomicUsize::new(0));
    let client_saw_reset = Arc::new(AtomicUsize::new(0));
    let live = Arc::new(AtomicUsize::new(0));

    let mut sim = ctx.builder(Duration::from_secs(900)).build();
    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let seen = server_saw_reset.clone();
    let live_srv = live.clone();
    sim.host("server", move || {
        let net = world.net("server");
        let ledger = ledger.clone();
        let seen = seen.clone();
        let spoiled = Arc::new(AtomicBool::new(false));
        let handle = move |mut s: tunnelbed_h2tunnel::TunnelStream| {
            let ledger = ledger.clone();
            let seen = seen.clone();
            let spoiled = spoiled.clone();
            async move {
                let mut h = [0u8; HEADER];
                if let Err(e) = s.read_exact(&mut h).await {
                    if e.kind() == std::io::ErrorKind::ConnectionReset {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
                let i = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                let resp = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
                let req_flow = format!("s{i:03}-req");
                if h[12] == Mode::ServerReset as u8 {
                    s.reset();
                    return;
                }
                let mut got = Vec::new();
                match s.read_to_end(&mut got).await {
                    Ok(_) => {
                        if sabotage && !got.is_empty() && !spoiled.swap(true, Ordering::SeqCst) {
                            got[0] ^= 1;
                        }
                        ledger.received(&req_flow, &got);
                        ledger.close(&req_flow);
                    }
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::ConnectionReset {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                        return;
                    }
                }
                let body = payload(seed, 1_000_000 + u64::from(i), resp);
                ledger.sent(&format!("s{i:03}-resp"), &body);
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            }
        };
        let trace = world.trace.clone();
        let live = live_srv.clone();
        async move {
            h2t_common::serve(
                net,
                PORT,
                trace,
                h2t_common::arq_options(Duration::from_secs(60)),
                live,
                handle,
            )
            .await?;
            Ok(())
        }
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let seen = client_saw_reset.clone();
    sim.client("client", async move {
        let net = world.net("client");
        let server = net.resolve("server", PORT).await?[0];
        let (tunnel, _) = h2t_common::connect_ready(
            &net,
            server,
            world.trace.clone(),
            h2t_common::arq_options(Duration::from_secs(60)),
            "h2t[client]",
            1,
            10,
        )
        .await?;
        let mut tasks = Vec::new();
        for (i, (req, resp, mode, start_ms)) in plan.into_iter().enumerate() {
            let opener = tunnel.opener.clone();
            let ledger = ledger.clone();
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(start_ms)).await;
                let s = opener.open().await?;
                let (mut rd, mut wr) = tokio::io::split(s);
                let i = i as u32;
                let body = payload(seed, u64::from(i), req);
                let req_flow = format!("s{i:03}-req");
                wr.write_all(&header(i, req as u32, resp as u32, mode))
                    .await?;
                if mode == Mode::ClientReset {
                    wr.write_all(&body[..body.len() / 2]).await?;
                    rd.unsplit(wr).reset();
                    return Ok::<(), std::io::Error>(());
                }
                let send = async {
                    if mode == Mode::Complete {
                        ledger.sent(&req_flow, &body);
                    }
                    wr.write_all(&body).await?;
                    wr.shutdown().await
                };
                let recv = async {
                    let mut got = Vec::new();
                    rd.read_to_end(&mut got).await.map(|_| got)
                };
                let (sent, got) = tokio::join!(send, recv);
                match (mode, sent, got) {
                    (Mode::Complete, Ok(()), Ok(got)) => {
                        let flow = format!("s{i:03}-resp");
                        ledger.received(&flow, &got);
                        ledger.close(&flow);
                        Ok(())
                    }
                    (Mode::ServerReset, _, Err(e))
                        if e.kind() == std::io::ErrorKind::ConnectionReset =>
                    {
                        seen.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                    (mode, sent, got) => Err(std::io::Error::other(format!(
                        "stream {i} ({mode:?}): send {:?}, receive {:?}",
                        sent.err(),
                        got.map(|g| g.len())
                    ))),
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    });

    ctx.drive(&mut sim, &FaultPlan::new(), Duration::from_secs(600));
    ctx.check_flows(2 * complete);
    let cs = client_saw_reset.load(Ordering::SeqCst);
    let ss = server_saw_reset.load(Ordering::SeqCst);
    ctx.check(
        "resets-reported",
        cs == expect_server_resets && ss == expect_client_resets,
        format!(
            "server resets seen by the client {cs}/{expect_server_resets}, \
             client resets seen by the server {ss}/{expect_client_resets}"
        ),
    );
    ctx.metric("streams", STREAMS);
    ctx.metric("complete", complete);
    Ok(())
}
