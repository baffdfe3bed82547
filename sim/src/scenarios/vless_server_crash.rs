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

use tunnelbed_netio::Net;

use crate::realtcp::TcpMode;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::fixture::now;
use crate::scenarios::lost_resets::LostResets;
use crate::scenarios::pong_common::{self as pc, AppSaw, Gauges, TargetLog};
use crate::scenarios::proxy_crash as pcr;
use crate::scenarios::proxy_streams::{AppAddrs, Endpoints};
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
/// Request bytes of a long download (the target trickles the answer).
const DOWNLOAD_ASK: usize = 16;
/// The client's idle bound (`ClientConfig::idle_timeout`; v2ray's 300 s by default): a
/// crashed server sends nothing, not even a reset, so a download in flight at the crash
/// whose application only reads ends when its relay has been silent this long (as pong's
/// 20 s idle timeout does), well inside the application's own 60 s bound. Ideal TCP
/// ends those carriers at the crash; over real TCP (`--tcp real`) only this ends them.
const CLIENT_IDLE: Duration = Duration::from_secs(20);
/// How long before the crash the first long transfer starts over real TCP (1.5 s over
/// turmoil's streams): a SYN lost at 5% loss is resent after 1 s, then 2 s, and a carrier
/// that came up only after the restart would carry its transfer wholly past the crash
/// (`vless-server-crash --seed 0 --profile lossy --tcp real`: upload s1007 started 0.8 s
/// before the crash and ended clean).
const REAL_TCP_LEAD_MS: u64 = 4000;

#[derive(Default)]
struct Outcome {
    phase_a: Vec<(u32, AppSaw)>,
    /// In flight: what the app saw, the answer length its header announced, and when its
    /// carrier was up (the client's SOCKS5 reply).
    in_flight: Vec<(u32, AppSaw, usize, Option<Duration>)>,
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
    let (crash_at, down) = pcr::crash_window(&mut ctx.rng);
    // Phase A must end before the crash; over real TCP it takes far longer, so the crash
    // comes later (`pcr::REAL_TCP_CRASH_DELAY`).
    let real_tcp = ctx.world.tcp_mode() == TcpMode::Real;
    let crash_at = pcr::crash_time(crash_at, ctx.world.tcp_mode());
    let lead_ms = if real_tcp { REAL_TCP_LEAD_MS } else { 1500 };
    let bounce_at = crash_at + down;
    let sizes_a = pcr::sizes(&mut ctx.rng, PHASE_A, 16 * 1024);
    let sizes_b = pcr::sizes(&mut ctx.rng, PHASE_B, 64 * 1024);
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
    pc::host_target(&mut sim, &ctx.world, seed, &ctx.ledger, &target_log);
    vc::host_client(
        &mut sim,
        &ctx.world,
        "local",
        vc::USER,
        &client_g,
        CLIENT_IDLE,
    );

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let out = outcome.clone();
    let (sg, cg) = (server_g.clone(), client_g.clone());
    let app_addrs = AppAddrs::default();
    let addrs = app_addrs.clone();
    sim.client("app", async move {
        let net = world.net("app");
        let front = net.resolve("local", vc::SOCKS_PORT).await?[0];
        let target = net.resolve("target", pc::TARGET_PORT).await?[0];
        let at = Endpoints { front, target };
        // Phase A: short streams before the crash, all must work.
        let step = Duration::from_millis(100);
        let tasks = pcr::spawn_phase(&net, at, seed, sizes_a, 0, step, &ledger, sabotage);
        // Long transfers in flight when the server crashes.
        let mut flying = Vec::new();
        for k in 0..DOWNLOADS + UPLOADS {
            let net = net.clone();
            let addrs = addrs.clone();
            let tag = 1000 + k as u32;
            let upload = k >= DOWNLOADS;
            flying.push(tokio::spawn(async move {
                tokio::time::sleep(
                    crash_at.saturating_sub(Duration::from_millis(lead_ms - 100 * k as u64)),
                )
                .await;
                let (saw, announced, up) =
                    pcr::long_stream(&net, at, seed, tag, upload, DOWNLOAD_ASK, &addrs).await;
                (tag, saw, announced, up)
            }));
        }
        // Requests while the server is down.
        let mut during = Vec::new();
        for k in 0..DURING {
            let net = net.clone();
            let tag = 2000 + k as u32;
            let when = crash_at + down * (k as u32 + 1) / (DURING as u32 + 2);
            let addrs = addrs.clone();
            during.push(tokio::spawn(async move {
                tokio::time::sleep(when.saturating_sub(now())).await;
                let (saw, intact) = pcr::judged_stream(&net, at, seed, tag, 100, 100, &addrs).await;
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
        let step = Duration::from_millis(50);
        let tasks = pcr::spawn_phase(&net, at, seed, sizes_b, 3000, step, &ledger, false);
        for t in tasks {
            let r = t.await?;
            out.lock().unwrap().phase_b.push(r);
        }
        let (s, c, took) = vc::drained(&sg, &cg, Duration::from_secs(60)).await;
        let mut o = out.lock().unwrap();
        o.server_end = Some(s);
        o.client_end = Some(c);
        o.cleanup_took = took;
        Ok(())
    });

    let faults = pcr::crash_and_restart("server", crash_at, bounce_at);
    ctx.drive(&mut sim, &faults, Duration::from_secs(120));
    drop(sim);

    let o = outcome.lock().unwrap();
    ctx.check_flows(2 * (PHASE_A + PHASE_B));
    let (ok, detail) = pcr::phase_clean(&o.phase_a, PHASE_A, "before the crash");
    ctx.check("before-crash", ok, detail);
    let (mut errors, mut short, mut wrong) = (0usize, 0usize, Vec::new());
    // A download whose client reset it (its relay idle after the crash) and whose every
    // reset copy the link lost waits for the application's own bound, as a kernel peer
    // would: visible, when the run's reset log shows it (real TCP only).
    let mut lost = LostResets::new("client", pcr::STREAM_TIMEOUT);
    let addrs = app_addrs.lock().unwrap().clone();
    let mut after_restart = Vec::new();
    for (tag, saw, announced, up) in &o.in_flight {
        // Every in-flight stream is meant to fail (or end short).
        match &lost
            .judge(ctx, &addrs, *tag, true, Some(saw))
            .unwrap_or(AppSaw::Hung)
        {
            AppSaw::Error(_) => errors += 1,
            AppSaw::Clean(n) if n < announced => short += 1,
            // Its carrier came up only after the restart (every SYN before it lost or
            // unanswered), so it was never in flight at the crash: a request of the
            // outage, which may complete then.
            AppSaw::Clean(n) if n == announced && up.is_some_and(|t| t >= bounce_at) => {
                after_restart.push(format!("s{tag}"));
            }
            other => wrong.push(format!("s{tag}: {other:?} of {announced} B")),
        }
    }
    let lost = lost.summary();
    ctx.check(
        "in-flight-visible",
        // At least one must really have been in flight, or the crash tested nothing.
        o.in_flight.len() == DOWNLOADS + UPLOADS && wrong.is_empty() && errors + short > 0,
        format!(
            "{} streams in flight at the crash: {errors} reset at the application{lost}, {short} ended short of their length{}; wrong: {wrong:?}",
            o.in_flight.len(),
            pcr::opened_after_restart(&after_restart),
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
    let (ok, detail) = pcr::phase_clean(&o.phase_b, PHASE_B, "after the restart");
    ctx.check("after-restart", ok, detail);
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
