//! `vless-server-crash`: our VLESS server crashes in the middle of long transfers and
//! restarts a few seconds later. Streams through our client that are in flight when it
//! crashes must end visibly: with an error (the client resets the application when its
//! carrier breaks) or short of the length their header announced (VLESS has no way to
//! say "failed": a crashed server's carriers end like finished ones), never complete and
//! never hang. Requests while the server is down fail, or (when the carrier's connect
//! outlasts the outage) complete intact after the restart. After the restart the client
//! recovers on its own (one new carrier per request) and every request works.
//!
//! Invariants: integrity of every completed stream (hash per flow); in-flight streams
//! end visibly; requests during the outage fail or complete intact; after the restart
//! every request works; no leak (the client holds no carrier, the restarted server no
//! socket, every VLESS machine of the client and of the restarted server ended);
//! liveness.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tunnelbed_netio::Net;
use tunnelbed_socks5::Addr;

use crate::fault::{FaultAction, FaultPlan};
use crate::ledger::FlowLedger;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::pong_common::{
    self as pc, AppSaw, Gauges, Header, Order, TargetLog, TargetMode,
};
use crate::scenarios::vless_common as vc;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "vless-server-crash",
    about: "the VLESS server crashes mid-transfer and restarts: in-flight streams end visibly, later requests work",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

const PHASE_A: usize = 12;
const PHASE_B: usize = 16;
/// In flight at the crash: downloads (the target trickles) and uploads (the app does).
const DOWNLOADS: usize = 5;
const UPLOADS: usize = 4;
/// Requests made while the server is down.
const DURING: usize = 3;
/// Long transfers: 2 KiB pieces with a pause, far longer than the crash takes.
const PIECES: usize = 150;
const PIECE: usize = 2048;
const PIECE_PAUSE_MS: u16 = 50;
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

#[derive(Default)]
struct Outcome {
    phase_a: Vec<(u32, AppSaw)>,
    /// In flight: what the app saw and the answer length its header announced.
    in_flight: Vec<(u32, AppSaw, usize)>,
    /// Requests while the server was down: what the app saw, and whether a clean answer
    /// was exactly the target's.
    during: Vec<(u32, AppSaw, bool)>,
    phase_b: Vec<(u32, AppSaw)>,
    server_end: Option<(i64, i64, i64)>,
    client_end: Option<(i64, i64, i64)>,
    cleanup_took: Duration,
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let seed = ctx.seed;
    let crash_at = Duration::from_millis(3000 + ctx.rng.gen_range(0..1000));
    let down = Duration::from_millis(ctx.rng.gen_range(1000..4000));
    let bounce_at = crash_at + down;
    let mut sizes = |n: usize, max: usize| -> Vec<(usize, usize)> {
        (0..n)
            .map(|_| (ctx.rng.gen_range(0..max), ctx.rng.gen_range(1..2 * max)))
            .collect()
    };
    let sizes_a = sizes(PHASE_A, 16 * 1024);
    let sizes_b = sizes(PHASE_B, 64 * 1024);
    let sabotage = ctx.sabotaged();

    let server_g = Gauges::default();
    let client_g = Gauges::default();
    let target_log: TargetLog = Arc::default();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let boots = Arc::new(AtomicU32::new(0));
    let mut sim = ctx.builder(Duration::from_secs(600)).build();

    let (world, g, b) = (ctx.world.clone(), server_g.clone(), boots.clone());
    sim.host("server", move || {
        let n = b.fetch_add(1, Ordering::SeqCst);
        vc::run_server(world.clone(), "server", format!("server{n}"), g.clone())
    });
    let (world, ledger, log) = (ctx.world.clone(), ctx.ledger.clone(), target_log.clone());
    sim.host("target", move || {
        pc::run_target(world.clone(), "target", seed, ledger.clone(), log.clone())
    });
    let (world, g) = (ctx.world.clone(), client_g.clone());
    sim.host("local", move || {
        vc::run_client(world.clone(), "local", vc::USER, vc::SOCKS_PORT, g.clone())
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let out = outcome.clone();
    let (sg, cg) = (server_g.clone(), client_g.clone());
    sim.client("app", async move {
        let net = world.net("app");
        let front = net.resolve("local", vc::SOCKS_PORT).await?[0];
        let target = net.resolve("target", pc::TARGET_PORT).await?[0];
        // Phase A: short streams before the crash, all must work.
        let mut tasks = Vec::new();
        for (i, (req, resp)) in sizes_a.into_iter().enumerate() {
            let (net, ledger) = (net.clone(), ledger.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100 * i as u64)).await;
                let tag = i as u32;
                let spoil = sabotage && i == 0;
                (
                    tag,
                    clean_stream(&net, front, target, seed, tag, req, resp, &ledger, spoil).await,
                )
            }));
        }
        // Long transfers in flight when the server crashes.
        let mut flying = Vec::new();
        for k in 0..DOWNLOADS + UPLOADS {
            let net = net.clone();
            let tag = 1000 + k as u32;
            let upload = k >= DOWNLOADS;
            flying.push(tokio::spawn(async move {
                tokio::time::sleep(
                    crash_at.saturating_sub(Duration::from_millis(1500 - 100 * k as u64)),
                )
                .await;
                let (saw, announced) = long_stream(&net, front, target, seed, tag, upload).await;
                (tag, saw, announced)
            }));
        }
        // Requests while the server is down.
        let mut during = Vec::new();
        for k in 0..DURING {
            let net = net.clone();
            let tag = 2000 + k as u32;
            let at = crash_at + down * (k as u32 + 1) / (DURING as u32 + 2);
            during.push(tokio::spawn(async move {
                tokio::time::sleep(at.saturating_sub(now())).await;
                let h = Header {
                    tag,
                    req: 100,
                    resp: 100,
                    mode: TargetMode::Serve(Order::RequestFirst),
                    slow_target: false,
                    untracked: true,
                    pace_ms: 0,
                };
                let (saw, intact) = untracked_stream(&net, front, target, seed, h).await;
                (tag, saw, intact)
            }));
        }
        for t in tasks {
            let r = t.await?;
            out.lock().unwrap().phase_a.push(r);
        }
        for t in flying {
            let r = t.await?;
            out.lock().unwrap().in_flight.push(r);
        }
        for t in during {
            let r = t.await?;
            out.lock().unwrap().during.push(r);
        }
        // Phase B: after the restart every request works.
        tokio::time::sleep((bounce_at + Duration::from_millis(500)).saturating_sub(now())).await;
        let mut tasks = Vec::new();
        for (i, (req, resp)) in sizes_b.into_iter().enumerate() {
            let (net, ledger) = (net.clone(), ledger.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
                let tag = 3000 + i as u32;
                (
                    tag,
                    clean_stream(&net, front, target, seed, tag, req, resp, &ledger, false).await,
                )
            }));
        }
        for t in tasks {
            let r = t.await?;
            out.lock().unwrap().phase_b.push(r);
        }
        let since = now();
        loop {
            let (s, c) = (sg.get(), cg.get());
            if (s == (0, 0, 0) && c.1 == 0) || now() > since + Duration::from_secs(60) {
                let mut o = out.lock().unwrap();
                o.server_end = Some(s);
                o.client_end = Some(c);
                o.cleanup_took = now() - since;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    });

    let faults = FaultPlan::new()
        .at(crash_at, FaultAction::Crash("server".into()))
        .at(bounce_at, FaultAction::Bounce("server".into()));
    ctx.drive(&mut sim, &faults, Duration::from_secs(120));
    drop(sim);

    let o = outcome.lock().unwrap();
    ctx.check_flows(2 * (PHASE_A + PHASE_B));
    let not_clean = |v: &[(u32, AppSaw)]| -> Vec<String> {
        v.iter()
            .filter(|(_, s)| !matches!(s, AppSaw::Clean(_)))
            .map(|(t, s)| format!("s{t}: {s:?}"))
            .collect()
    };
    let bad_a = not_clean(&o.phase_a);
    ctx.check(
        "before-crash",
        o.phase_a.len() == PHASE_A && bad_a.is_empty(),
        format!(
            "{}/{PHASE_A} streams before the crash ended cleanly {bad_a:?}",
            o.phase_a.len() - bad_a.len()
        ),
    );
    let (mut errors, mut short, mut wrong) = (0usize, 0usize, Vec::new());
    for (tag, saw, announced) in &o.in_flight {
        match saw {
            AppSaw::Error(_) => errors += 1,
            AppSaw::Clean(n) if n < announced => short += 1,
            other => wrong.push(format!("s{tag}: {other:?} of {announced} B")),
        }
    }
    ctx.check(
        "in-flight-visible",
        o.in_flight.len() == DOWNLOADS + UPLOADS && wrong.is_empty(),
        format!(
            "{} streams in flight at the crash: {errors} reset at the application, {short} ended short of their length; wrong: {wrong:?}",
            o.in_flight.len()
        ),
    );
    // A request while the server is down fails, or (its carrier's connect outlasting
    // the outage) completes after the restart: intact then.
    let recovered = o
        .during
        .iter()
        .filter(|(_, s, intact)| *intact && *s == AppSaw::Clean(100))
        .count();
    let during_bad: Vec<String> = o
        .during
        .iter()
        .filter(|(_, s, intact)| {
            !(matches!(s, AppSaw::Error(_) | AppSaw::Clean(0))
                || (*intact && *s == AppSaw::Clean(100)))
        })
        .map(|(t, s, intact)| format!("s{t}: {s:?} (intact {intact})"))
        .collect();
    ctx.check(
        "during-outage",
        o.during.len() == DURING && during_bad.is_empty(),
        format!(
            "{} requests while the server was down: {} failed, {recovered} completed intact after the restart; wrong: {during_bad:?}",
            o.during.len(),
            o.during.len() - during_bad.len() - recovered
        ),
    );
    let bad_b = not_clean(&o.phase_b);
    ctx.check(
        "after-restart",
        o.phase_b.len() == PHASE_B && bad_b.is_empty(),
        format!(
            "{}/{PHASE_B} streams after the restart ended cleanly {bad_b:?}",
            o.phase_b.len() - bad_b.len()
        ),
    );
    let open = vc::unended(&ctx.world.trace, &["server0/"]);
    ctx.check(
        "no-leak-vless",
        o.server_end == Some((0, 0, 0)) && o.client_end.is_some_and(|c| c.1 == 0) && open.is_empty(),
        format!(
            "after {:.1}s: restarted server (carriers, target conns, udp sockets) {:?}; client carriers {:?}; unended machines {} {:?}",
            o.cleanup_took.as_secs_f64(),
            o.server_end,
            o.client_end.map(|c| c.1),
            open.len(),
            &open[..open.len().min(3)]
        ),
    );
    ctx.metric("crash_ms", crash_at.as_millis());
    ctx.metric("down_ms", down.as_millis());
    ctx.metric("in_flight_reset", errors);
    ctx.metric("in_flight_short", short);
    Ok(())
}

/// A request and an answer, both tracked in the ledger; must end cleanly.
#[allow(clippy::too_many_arguments)]
async fn clean_stream<N: Net>(
    net: &N,
    front: std::net::SocketAddr,
    target: std::net::SocketAddr,
    seed: u64,
    tag: u32,
    req: usize,
    resp: usize,
    ledger: &FlowLedger,
    spoil: bool,
) -> AppSaw {
    let h = Header {
        tag,
        req: req as u32,
        resp: resp as u32,
        mode: TargetMode::Serve(Order::RequestFirst),
        slow_target: false,
        untracked: false,
        pace_ms: 0,
    };
    let body = pc::request_body(seed, tag, req);
    let s = match pc::socks_connect(net, front, &Addr::Ip(target)).await {
        Ok(s) => s,
        Err(e) => return AppSaw::Error(format!("connect: {e}")),
    };
    ledger.sent(&pc::req_flow(tag), &body);
    let r = tokio::time::timeout(
        STREAM_TIMEOUT,
        pc::exchange(s, &h.encode(), &body, &[(req, Duration::ZERO)], true, None),
    )
    .await;
    match r {
        Ok((mut got, Ok(()), Ok(()))) => {
            if spoil && !got.is_empty() {
                got[0] ^= 1;
            }
            let flow = pc::resp_flow(tag);
            ledger.received(&flow, &got);
            ledger.close(&flow);
            AppSaw::Clean(got.len())
        }
        Ok((got, s, r)) => AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len())),
        Err(_) => AppSaw::Hung,
    }
}

/// A stream outside the ledger (its outcome is judged by the caller); also whether a
/// clean answer was exactly the target's.
async fn untracked_stream<N: Net>(
    net: &N,
    front: std::net::SocketAddr,
    target: std::net::SocketAddr,
    seed: u64,
    h: Header,
) -> (AppSaw, bool) {
    let body = pc::request_body(seed, h.tag, h.req as usize);
    let s = match pc::socks_connect(net, front, &Addr::Ip(target)).await {
        Ok(s) => s,
        Err(e) => return (AppSaw::Error(format!("connect: {e}")), false),
    };
    let r = tokio::time::timeout(
        STREAM_TIMEOUT,
        pc::exchange(
            s,
            &h.encode(),
            &body,
            &[(body.len(), Duration::ZERO)],
            true,
            None,
        ),
    )
    .await;
    match r {
        Ok((got, Ok(()), Ok(()))) => {
            let intact = got == pc::answer_body(seed, h.tag, h.resp as usize);
            (AppSaw::Clean(got.len()), intact)
        }
        Ok((got, s, r)) => (
            AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len())),
            false,
        ),
        Err(_) => (AppSaw::Hung, false),
    }
}

/// A download the target trickles, or an upload the application trickles, lasting far
/// past the crash. Returns what the app saw and the answer length it expects.
async fn long_stream<N: Net>(
    net: &N,
    front: std::net::SocketAddr,
    target: std::net::SocketAddr,
    seed: u64,
    tag: u32,
    upload: bool,
) -> (AppSaw, usize) {
    let (req, resp, mode) = if upload {
        (PIECES * PIECE, 64, TargetMode::Serve(Order::RequestFirst))
    } else {
        (16, PIECES * PIECE, TargetMode::Trickle)
    };
    let h = Header {
        tag,
        req: req as u32,
        resp: resp as u32,
        mode,
        slow_target: false,
        untracked: true,
        pace_ms: PIECE_PAUSE_MS,
    };
    let body = pc::request_body(seed, tag, req);
    let chunks: Vec<(usize, Duration)> = if upload {
        (0..PIECES)
            .map(|_| (PIECE, Duration::from_millis(u64::from(PIECE_PAUSE_MS))))
            .collect()
    } else {
        vec![(req, Duration::ZERO)]
    };
    let s = match pc::socks_connect(net, front, &Addr::Ip(target)).await {
        Ok(s) => s,
        Err(e) => return (AppSaw::Error(format!("connect: {e}")), resp),
    };
    let r = tokio::time::timeout(
        STREAM_TIMEOUT,
        pc::exchange(s, &h.encode(), &body, &chunks, true, None),
    )
    .await;
    let saw = match r {
        Ok((got, Ok(()), Ok(()))) => AppSaw::Clean(got.len()),
        Ok((got, s, r)) => AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len())),
        Err(_) => AppSaw::Hung,
    };
    (saw, resp)
}
