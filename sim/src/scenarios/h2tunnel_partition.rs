//! `h2tunnel-partition`: a two-way partition longer than the keepalive tolerance. The
//! client's tunnel must fail (keepalive timeout or the KCP session dying), streams in
//! flight must fail loudly (an error, never a short clean end), the client must
//! reconnect with a new KCP session once the partition heals, new streams must work, and
//! the server must end the tunnels whose client is gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_h2tunnel::Opener;
use tunnelbed_netio::Net;

use crate::clock::now;
use crate::fault::{FaultAction, FaultPlan};
use crate::ledger::payload;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::h2t_common;
use crate::simnet::{any, HostNet};

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "h2tunnel-partition",
    about: "a 60 s partition fails the tunnel; in-flight streams error, the client reconnects",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

const PORT: u16 = 4200;
const TARGET_PORT: u16 = 4201;
const PARTITION_AT: Duration = Duration::from_secs(20);
const HEAL_AT: Duration = Duration::from_secs(80);
/// KCP sessions with no datagram for this long end (so do their tunnels).
const IDLE: Duration = Duration::from_secs(30);
const IN_FLIGHT: usize = 6;

/// Sends `body` on a new stream and returns what came back before the end.
async fn echo(opener: &Opener, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let s = opener.open().await?;
    let (mut rd, mut wr) = tokio::io::split(s);
    let send = async {
        wr.write_all(body).await?;
        wr.shutdown().await
    };
    let recv = async {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.map(|_| got)
    };
    let (sent, got) = tokio::join!(send, recv);
    sent?;
    got
}

/// A stream that trickles 4 KiB every 250 ms for far longer than the partition takes to
/// arrive. Returns what came back (Ok only on a clean end) and how much was sent.
async fn trickle(opener: Opener, seed: u64, k: u64) -> (std::io::Result<Vec<u8>>, Vec<u8>) {
    let s = match opener.open().await {
        Ok(s) => s,
        Err(e) => return (Err(e), Vec::new()),
    };
    let (mut rd, mut wr) = tokio::io::split(s);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let send = async move {
        for c in 0..400u64 {
            let chunk = payload(seed, 9_000_000 + k * 1000 + c, 4096);
            wr.write_all(&chunk).await?;
            log.lock().unwrap().extend_from_slice(&chunk);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        wr.shutdown().await
    };
    let recv = async {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.map(|_| got)
    };
    let (_, got) = tokio::join!(send, recv);
    let sent = sent.lock().unwrap().clone();
    (got, sent)
}

async fn serve_echo(s: <HostNet as Net>::Stream) {
    let (mut rd, mut wr) = tokio::io::split(s);
    if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

#[derive(Default)]
struct Outcome {
    first_end: Option<(Duration, String)>,
    in_flight_errors: usize,
    in_flight_silent: Vec<String>,
    attempts: u32,
    reconnected_at: Option<Duration>,
    live_at_end: Option<usize>,
    cleanup_took: Duration,
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let seed = ctx.seed;
    let sizes_a: Vec<usize> = (0..20).map(|_| ctx.rng.gen_range(1..64 * 1024)).collect();
    let sizes_b: Vec<usize> = (0..20).map(|_| ctx.rng.gen_range(1..64 * 1024)).collect();
    let sabotage = ctx.sabotaged();
    let live = Arc::new(AtomicUsize::new(0));
    let outcome = Arc::new(Mutex::new(Outcome::default()));

    let mut sim = ctx.builder(Duration::from_secs(600)).build();
    let world = ctx.world.clone();
    let live_srv = live.clone();
    // The target behind the tunnel server echoes every connection.
    sim.host("target", move || {
        let net = world.net("target");
        async move {
            h2t_common::serve_target(net, TARGET_PORT, serve_echo).await?;
            Ok(())
        }
    });
    // The tunnel server: the code `tunnelbed h2tunnel server --forward` runs.
    let world = ctx.world.clone();
    sim.host("server", move || {
        let net = world.net("server");
        let trace = world.trace.clone();
        let live = live_srv.clone();
        async move {
            let target = net.resolve("target", TARGET_PORT).await?[0];
            h2t_common::serve(
                net,
                h2t_common::Over::Kcp.at(any(PORT)),
                h2t_common::Target::Forward(target),
                Duration::from_secs(300),
                trace,
                h2t_common::arq_options(IDLE),
                live,
            )
            .await?;
            Ok(())
        }
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let out = outcome.clone();
    let live_cli = live.clone();
    sim.client("client", async move {
        let net = world.net("client");
        let server = net.resolve("server", PORT).await?[0];
        let trace = world.trace.clone();
        let opts = h2t_common::arq_options(IDLE);
        let (first, first_attempts) = h2t_common::connect_ready(
            &net,
            h2t_common::Over::Kcp.at(server),
            trace.clone(),
            opts.clone(),
            "h2t[client]",
            1,
            10,
        )
        .await?;
        // Phase A: streams before the partition must all work.
        let mut tasks = Vec::new();
        for (i, n) in sizes_a.iter().enumerate() {
            let opener = first.opener.clone();
            let body = payload(seed, i as u64, *n);
            tasks.push(tokio::spawn(async move {
                let got = echo(&opener, &body).await;
                (body, got)
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let (body, got) = t.await?;
            let mut got = got.map_err(|e| format!("phase A stream {i}: {e}"))?;
            if sabotage && i == 0 && !got.is_empty() {
                got[0] ^= 1;
            }
            let flow = format!("a{i:02}");
            ledger.sent(&flow, &body);
            ledger.received(&flow, &got);
            ledger.close(&flow);
        }
        // Streams in flight when the partition starts.
        let trickles: Vec<_> = (0..IN_FLIGHT as u64)
            .map(|k| tokio::spawn(trickle(first.opener.clone(), seed, k)))
            .collect();
        let end = first.done.await?;
        out.lock().unwrap().first_end = Some((now(), end.to_string()));
        trace.transition(
            now(),
            "h2t[client]",
            "connected",
            "reconnecting",
            end.to_string(),
        );
        for t in trickles {
            let (got, sent) = t.await?;
            let mut o = out.lock().unwrap();
            match got {
                Err(_) => o.in_flight_errors += 1,
                Ok(g) if g == sent && !sent.is_empty() => {}
                Ok(g) => o.in_flight_silent.push(format!(
                    "clean end after {} of {} bytes",
                    g.len(),
                    sent.len()
                )),
            }
        }
        // Reconnect: a new KCP session and tunnel each time, until a probe gets through.
        let mut attempt = first_attempts;
        let second = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            attempt += 1;
            let t = h2t_common::connect(
                &net,
                h2t_common::Over::Kcp.at(server),
                trace.clone(),
                opts.clone(),
                format!("h2t[client#{attempt}]"),
            )
            .await?;
            let probe = payload(seed, 7_777, 1024);
            match tokio::time::timeout(Duration::from_secs(8), echo(&t.opener, &probe)).await {
                Ok(Ok(got)) if got == probe => break t,
                _ => t.done.abort(),
            }
        };
        {
            let mut o = out.lock().unwrap();
            o.attempts = attempt;
            o.reconnected_at = Some(now());
        }
        trace.transition(
            now(),
            "h2t[client]",
            "reconnecting",
            "connected",
            format!("attempt {attempt}"),
        );
        // Phase B: new streams on the new tunnel.
        let mut tasks = Vec::new();
        for (i, n) in sizes_b.iter().enumerate() {
            let opener = second.opener.clone();
            let body = payload(seed, 100 + i as u64, *n);
            tasks.push(tokio::spawn(async move {
                let got = echo(&opener, &body).await;
                (body, got)
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let (body, got) = t.await?;
            let got = got.map_err(|e| format!("phase B stream {i}: {e}"))?;
            let flow = format!("b{i:02}");
            ledger.sent(&flow, &body);
            ledger.received(&flow, &got);
            ledger.close(&flow);
        }
        // The server must end the tunnels whose client is gone: those of the old session
        // and of attempts that reached it late (stale KCP retransmissions can even start
        // a fresh session after the first one ended). Their KCP sessions go quiet, so
        // they end within a few idle timeouts.
        let since = now();
        let mut live_now = live_cli.load(Ordering::SeqCst);
        while live_now != 1 && now() < since + 4 * IDLE {
            tokio::time::sleep(Duration::from_millis(500)).await;
            live_now = live_cli.load(Ordering::SeqCst);
        }
        {
            let mut o = out.lock().unwrap();
            o.live_at_end = Some(live_now);
            o.cleanup_took = now() - since;
        }
        drop(second);
        Ok(())
    });

    let faults = FaultPlan::new()
        .at(
            PARTITION_AT,
            FaultAction::Partition("client".into(), "server".into()),
        )
        .at(
            HEAL_AT,
            FaultAction::Repair("client".into(), "server".into()),
        );
    ctx.drive(&mut sim, &faults, Duration::from_secs(240));
    ctx.check_flows(40);
    let o = outcome.lock().unwrap();
    match &o.first_end {
        Some((at, why)) => ctx.check(
            "tunnel-failed",
            *at > PARTITION_AT && *at < HEAL_AT,
            format!("first tunnel ended at {:.1}s: {why}", at.as_secs_f64()),
        ),
        None => ctx.check("tunnel-failed", false, "the first tunnel never ended"),
    }
    ctx.check(
        "in-flight-fail-loudly",
        o.in_flight_silent.is_empty() && o.in_flight_errors == IN_FLIGHT,
        if o.in_flight_silent.is_empty() {
            format!(
                "{}/{IN_FLIGHT} in-flight streams reported an error",
                o.in_flight_errors
            )
        } else {
            format!("silent truncation: {}", o.in_flight_silent.join("; "))
        },
    );
    match o.reconnected_at {
        Some(at) => ctx.check(
            "reconnected",
            at >= HEAL_AT,
            format!("after {} attempts, at {:.1}s", o.attempts, at.as_secs_f64()),
        ),
        None => ctx.check("reconnected", false, "never reconnected"),
    }
    ctx.check(
        "no-leak-server",
        o.live_at_end == Some(1),
        match o.live_at_end {
            Some(n) => format!(
                "{n} server tunnel(s) alive {:.1}s after phase B (want 1 within {}s)",
                o.cleanup_took.as_secs_f64(),
                4 * IDLE.as_secs()
            ),
            None => "never checked".to_string(),
        },
    );
    ctx.metric("reconnect_attempts", o.attempts);
    Ok(())
}
