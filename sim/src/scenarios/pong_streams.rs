//! `pong-streams`: 300 concurrent streams from SOCKS5 applications through pong's local
//! (front + pool of tcp carriers, 30 streams per carrier) and remote to a target host,
//! with random request and answer sizes, half closes both ways (the target answers
//! before, after or while reading), slow readers on both ends, applications that abort,
//! targets that reset, dials that fail (a closed port, an unknown name), and a few UDP
//! ASSOCIATE exchanges carried as relay streams.
//!
//! Invariants: every clean stream's bytes match both ways (hash per flow); every stream
//! ends as planned (clean ones cleanly, failing ones with an error at the application,
//! never a clean end); nothing leaks (the pool has no live stream and no carrier once
//! idle, the remote holds no carrier, target connection or UDP socket, and every pong
//! stream and connection in the trace ended); everything finishes by the deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tunnelbed_netio::Net;
use tunnelbed_socks5::Addr;

use crate::realtcp::TcpMode;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::dial_timeouts::DialTimeouts;
use crate::scenarios::lost_resets::LostResets;
use crate::scenarios::pong_common::{
    self as pc, AppSaw, Gauges, Header, Order, PoolSlot, SlowStream, TargetLog, TargetMode,
    TargetSaw,
};
use crate::scenarios::proxy_streams::{
    self as ps, note_addrs, AppAddrs, Endpoints, FailingEnd, Plan, STREAM_TIMEOUT,
};

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "pong-streams",
    about: "300 SOCKS5 streams through pong local+remote: sizes, half-closes, resets, dial failures, slow readers, UDP",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

/// Registry entry of the same streams over `h3://` (HTTP/3 over QUIC): the carriers are
/// QUIC connections over the link model, so loss, reordering and stalls hit QUIC's own
/// recovery, and the capture shows the QUIC packets. TLS and QUIC randomness come from
/// the seed, so a run replays byte for byte.
pub const SCENARIO_H3: Scenario = Scenario {
    name: "pong-streams-h3",
    about: "pong-streams with h3:// carriers (HTTP/3 over QUIC over the link model)",
    profiles: &["clean", "lossy"],
    default_seeds: 2,
    run: run_h3,
};

/// The carrier a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carrier {
    Tcp,
    H3,
}

const STREAMS: usize = 300;
/// Streams to the slow-accepting target (tags from 20 000), HTTP/1.0 style.
const SLOW_STREAMS: usize = 40;
/// Tags of the slow target's streams start here.
const SLOW_TAG: u32 = 20_000;
/// Slow readers inside the local process, on pong streams directly.
const DIRECT: usize = 6;
const ASSOCIATIONS: u32 = 3;
const DATAGRAMS: u32 = 4;
const MAX_PER_CARRIER: usize = 30;
/// The tags of the direct slow readers start here (their flows are `s{tag}-req/resp`).
const DIRECT_TAG: u32 = 10_000;
const IDLE_CLOSE: Duration = Duration::from_secs(2);

fn slow_plan(ctx: &mut Ctx) -> (pc::SlowAccept, Vec<SlowStream>) {
    pc::slow_plan(&mut ctx.rng, SLOW_STREAMS, 0..600, ps::size)
}

#[derive(Default)]
struct Outcome {
    app: BTreeMap<u32, AppSaw>,
    /// The slow target's streams: what the application saw, and whether a clean answer
    /// was byte for byte the target's.
    slow: BTreeMap<u32, (AppSaw, bool)>,
    udp_answered: usize,
    udp_total: usize,
    udp_corrupt: usize,
    udp_errors: Vec<String>,
    /// (live streams, connections, carriers opened) at the end, after the idle close.
    pool_end: Option<(usize, usize, u64)>,
    /// Most carriers the pool held at once while streams ran.
    pool_peak: usize,
    remote_end: Option<(i64, i64, i64)>,
    cleanup_took: Duration,
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    run_over(ctx, Carrier::Tcp)
}

fn run_h3(ctx: &mut Ctx) -> anyhow::Result<()> {
    run_over(ctx, Carrier::H3)
}

fn run_over(ctx: &mut Ctx, carrier: Carrier) -> anyhow::Result<()> {
    let seed = ctx.seed;
    if carrier == Carrier::H3 {
        ctx.world.set_quic_seed(seed);
    }
    // Tries of 400 ms per UDP datagram. Over h3 or real TCP the carriers themselves see
    // the link's loss and reordering (ideal TCP carriers do not), so a relay datagram can
    // wait seconds behind a congested carrier's bulk data (pong has no priorities; on
    // swarm seed 106, 18.9% loss, a carrier's finishes took 9.4 s to cross): 60 s.
    let lossy_carrier = carrier == Carrier::H3 || ctx.world.tcp_mode() == TcpMode::Real;
    let udp_tries = if lossy_carrier { 150 } else { 40 };
    let streams = ps::plan(&mut ctx.rng, STREAMS, 0..600);
    let plans: Vec<Plan> = streams.iter().map(|s| s.plan).collect();
    let udp_sizes: Vec<Vec<usize>> = (0..ASSOCIATIONS)
        .map(|_| (0..DATAGRAMS).map(|_| ctx.rng.gen_range(8..1200)).collect())
        .collect();
    let (slow_cfg, slow_streams) = slow_plan(ctx);
    let slow_counts = pc::SlowLog::default();
    let sabotage = ctx.sabotaged();
    let faults = ps::carrier_stalls(&ctx.profile, "local", "remote", seed);

    let direct_plan: Arc<Vec<(usize, usize, u64)>> = Arc::new(
        (0..DIRECT)
            .map(|_| {
                (
                    ctx.rng.gen_range(1..16 * 1024),
                    ctx.rng.gen_range(400 * 1024..900 * 1024),
                    ctx.rng.gen_range(0..500),
                )
            })
            .collect(),
    );
    let direct: DirectLog = Arc::default();
    let gauges = Gauges::default();
    let target_log: TargetLog = Arc::default();
    let slot: PoolSlot<pc::LocalNet> = Arc::default();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let app_addrs: AppAddrs = Arc::default();

    // turmoil's sockets buffer without bound (their flow control counts segments, and a
    // smaller capacity can strand a FIN in the reorder buffer), so slow readers behind
    // the front only slow their own socket; the direct readers below read pong streams
    // slowly and so fill the per-stream buffers and hold their carrier's input.
    let mut sim = ctx.builder(Duration::from_secs(600)).build();

    let (world, g) = (ctx.world.clone(), gauges.clone());
    sim.host("remote", move || {
        let (world, g) = (world.clone(), g.clone());
        async move {
            match carrier {
                Carrier::Tcp => pc::run_remote(world, "remote", "remote".into(), g).await,
                Carrier::H3 => pc::run_remote_h3(world, "remote", "remote".into(), g, seed).await,
            }
        }
    });
    pc::host_target(&mut sim, &ctx.world, seed, &ctx.ledger, &target_log);
    let (world, ledger, log) = (ctx.world.clone(), ctx.ledger.clone(), target_log.clone());
    let counts = slow_counts.clone();
    sim.host("slow", move || {
        pc::run_slow_target(
            world.clone(),
            "slow",
            seed,
            ledger.clone(),
            log.clone(),
            slow_cfg,
            counts.clone(),
        )
    });
    let (world, s) = (ctx.world.clone(), slot.clone());
    let (ledger, direct_out) = (ctx.ledger.clone(), direct.clone());
    sim.host("local", move || {
        let readers = direct_readers(
            s.clone(),
            seed,
            direct_plan.clone(),
            ledger.clone(),
            direct_out.clone(),
        );
        let (cfg, tls) = match carrier {
            Carrier::Tcp => (
                pc::pool_config(MAX_PER_CARRIER, IDLE_CLOSE),
                Arc::new(tunnelbed_carrier::tls::ClientTls::insecure()),
            ),
            Carrier::H3 => (
                pc::pool_config_h3(MAX_PER_CARRIER, IDLE_CLOSE),
                pc::client_tls_h3(seed),
            ),
        };
        let local = pc::run_local_with(world.clone(), "local", cfg, s.clone(), tls);
        async move {
            tokio::spawn(readers);
            local.await
        }
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let out = outcome.clone();
    let g = gauges.clone();
    let direct_done = direct.clone();
    let addrs = app_addrs.clone();
    sim.client("app", async move {
        let net = world.net("app");
        let front = net.resolve("local", pc::SOCKS_PORT).await?[0];
        let target = net.resolve("target", pc::TARGET_PORT).await?[0];
        let echo = Addr::Ip(SocketAddr::new(target.ip(), pc::ECHO_PORT));
        let at = Endpoints { front, target };
        let tasks = ps::spawn_streams(&net, at, seed, streams, &ledger, &addrs, |i| {
            sabotage && i == 0
        });
        let slow_target = net.resolve("slow", pc::TARGET_PORT).await?[0];
        let mut slow_tasks = Vec::new();
        for (k, st) in slow_streams.into_iter().enumerate() {
            let net = net.clone();
            let addrs = addrs.clone();
            slow_tasks.push(tokio::spawn(async move {
                tokio::time::sleep(st.start).await;
                let tag = SLOW_TAG + k as u32;
                let r = tokio::time::timeout(
                    STREAM_TIMEOUT,
                    slow_stream(&net, front, slow_target, seed, tag, &st, &addrs),
                )
                .await
                .unwrap_or((AppSaw::Hung, false));
                (tag, r)
            }));
        }
        // A pool watcher: the carrier count while streams run.
        let watch_slot = slot.clone();
        let peak = tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(p) = pc::pool_of(&watch_slot) {
                    peak = peak.max(p.stats().await.connections);
                }
            }
            peak
        });
        let mut udp = Vec::new();
        for (a, sizes) in udp_sizes.into_iter().enumerate() {
            let net = net.clone();
            let ledger = ledger.clone();
            let echo = echo.clone();
            udp.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200 + 400 * a as u64)).await;
                let ds: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(k, n)| pc::datagram(seed, a as u32, k as u32, *n))
                    .collect();
                pc::udp_exchange(&net, front, echo, &ds, &ledger, &format!("u{a}"), udp_tries).await
            }));
        }
        for t in tasks {
            let (tag, saw) = t.await?;
            out.lock().unwrap().app.insert(tag, saw);
        }
        for t in slow_tasks {
            let (tag, r) = t.await?;
            out.lock().unwrap().slow.insert(tag, r);
        }
        for t in udp {
            let r = t.await?;
            let mut o = out.lock().unwrap();
            o.udp_total += DATAGRAMS as usize;
            match r {
                Ok((answered, corrupt)) => {
                    o.udp_answered += answered.iter().filter(|a| **a).count();
                    o.udp_corrupt += corrupt;
                }
                Err(e) => o.udp_errors.push(e.to_string()),
            }
        }
        out.lock().unwrap().pool_peak = peak.await?;
        while direct_done.lock().unwrap().len() < DIRECT {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Cleanup: streams end, idle carriers close, the remote lets go of everything.
        let pool = pc::pool_of(&slot).ok_or("the local never started")?;
        let (st, remote, took) = pc::drained(&pool, &g, 30 * IDLE_CLOSE).await;
        let mut o = out.lock().unwrap();
        o.pool_end = Some((st.live_streams, st.connections, st.carriers_opened));
        o.remote_end = Some(remote);
        o.cleanup_took = took;
        Ok(())
    });

    ctx.drive(&mut sim, &faults, Duration::from_secs(300));
    drop(sim);

    let o = outcome.lock().unwrap();
    let mut log = target_log.lock().unwrap().clone();
    let (clean, _, _) = ps::counts(&plans);
    let d = direct.lock().unwrap().clone();
    // Streams that failed before any byte because a TCP dial on their path gave up on
    // the link (real TCP at heavy loss; the stacks' ledger shows the dial).
    let mut dials = DialTimeouts::new(
        &ctx.world.tcp_resets().abandoned_dials(),
        pc::REMOTE_PORT,
        MAX_PER_CARRIER,
    );
    let mut excused_flows = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        let tag = i as u32;
        // A failing dial is what a dial-fail stream plans: no dial to blame there.
        if matches!(p, Plan::DialFail { .. }) {
            continue;
        }
        if dials.excuse(tag, o.app.get(&tag), log.get(&tag)) && matches!(p, Plan::Clean { .. }) {
            excused_flows.extend([pc::req_flow(tag), pc::resp_flow(tag)]);
        }
    }
    // The direct log is keyed by tag already (DIRECT_TAG + reader index).
    for (&tag, saw) in &d {
        if dials.excuse(tag, Some(saw), log.get(&tag)) {
            excused_flows.extend([pc::req_flow(tag), pc::resp_flow(tag)]);
        }
    }
    ctx.check_flows_except(
        2 * (clean + DIRECT) + (ASSOCIATIONS * DATAGRAMS) as usize,
        &excused_flows,
    );
    let bad: Vec<_> = d
        .iter()
        .filter(|(tag, saw)| !matches!(saw, AppSaw::Clean(_)) && !dials.excused.contains_key(tag))
        .collect();
    ctx.check(
        "slow-readers",
        d.len() == DIRECT && bad.is_empty(),
        format!(
            "{}/{DIRECT} direct slow readers ended cleanly {:?}",
            d.len() - bad.len(),
            bad
        ),
    );

    // Every stream ended as planned, at the application and at the target.
    // A failing stream whose application waited to its own bound counts as failing
    // loudly only if the local did reset its connection and the link lost every copy.
    let addrs = app_addrs.lock().unwrap().clone();
    let mut lost_resets = LostResets::new("local", STREAM_TIMEOUT);
    let judged = lost_resets.judge_all(ctx, &addrs, &plans, &o.app);
    let target_lost =
        ps::target_resets_lost(|a, b| ctx.world.tcp_resets().get(a, b), &plans, &mut log);
    let (ok, detail) =
        ps::ends_as_planned_except(&plans, &judged, &log, FailingEnd::Error, |tag| {
            dials.excused.contains_key(&tag)
        });
    ctx.check(
        "ends-as-planned",
        ok,
        format!(
            "{detail}{}{}{}",
            lost_resets.summary(),
            ps::target_lost_summary(&target_lost),
            dials.summary()
        ),
    );
    // The slow target: every stream ends, served ones intact, the others with an error
    // at the application (never a hang, never a clean end that is short or wrong).
    let (mut slow_clean, mut slow_failed, mut slow_bad) = (0usize, 0usize, Vec::new());
    for k in 0..SLOW_STREAMS as u32 {
        let tag = SLOW_TAG + k;
        let saw = o.slow.get(&tag);
        let judged = lost_resets.judge(ctx, &addrs, tag, true, saw.map(|s| &s.0));
        match saw {
            Some((AppSaw::Clean(_), true)) if log.get(&tag) == Some(&TargetSaw::Complete) => {
                slow_clean += 1
            }
            _ if matches!(judged, Some(AppSaw::Error(_))) => slow_failed += 1,
            other => {
                if slow_bad.len() < 3 {
                    slow_bad.push(format!("s{tag}: app {other:?}, target {:?}", log.get(&tag)));
                } else {
                    slow_bad.push(String::new());
                }
            }
        }
    }
    let (served, refused, lost) = (
        slow_counts.served.load(std::sync::atomic::Ordering::SeqCst),
        slow_counts
            .refused
            .load(std::sync::atomic::Ordering::SeqCst),
        slow_counts.lost.load(std::sync::atomic::Ordering::SeqCst),
    );
    ctx.check(
        "slow-target",
        slow_bad.is_empty(),
        format!(
            "{slow_cfg:?}: {slow_clean} answered intact, {slow_failed} failed at the application, \
             {} wrong or hung {:?}; target served {served}, refused {refused}, lost {lost}",
            slow_bad.len(),
            slow_bad
                .iter()
                .filter(|b| !b.is_empty())
                .collect::<Vec<_>>()
        ),
    );
    ctx.check(
        "udp-associate",
        o.udp_errors.is_empty() && o.udp_corrupt == 0 && o.udp_answered == o.udp_total,
        format!(
            "{}/{} datagrams echoed intact, {} altered, errors {:?}",
            o.udp_answered, o.udp_total, o.udp_corrupt, o.udp_errors
        ),
    );

    // No leak: the pool, the remote's sockets, and every pong machine in the trace.
    let (streams_open, conns_open) = pc::unended(&ctx.world.trace, &["local/", "remote/"]);
    let pool_ok = matches!(o.pool_end, Some((0, 0, _)));
    let remote_ok = o.remote_end == Some((0, 0, 0));
    ctx.check(
        "no-leak-pong",
        pool_ok && remote_ok && streams_open.is_empty() && conns_open.is_empty(),
        format!(
            "after {:.1}s: pool (live streams, carriers, opened) {:?}; remote (carriers, target conns, udp sockets) {:?}; \
             unended streams {} {:?}; open connections {:?}",
            o.cleanup_took.as_secs_f64(),
            o.pool_end,
            o.remote_end,
            streams_open.len(),
            &streams_open[..streams_open.len().min(3)],
            &conns_open[..conns_open.len().min(3)]
        ),
    );
    let opened = o.pool_end.map(|p| p.2).unwrap_or(0);
    ctx.check(
        "carriers",
        o.pool_peak >= 2 && opened >= 2,
        format!(
            "{opened} carriers opened, at most {} at once ({MAX_PER_CARRIER} streams per carrier)",
            o.pool_peak
        ),
    );
    ctx.metric("resets_lost", lost_resets.count() + target_lost.len());
    ctx.metric("dial_timeouts", dials.excused.len());
    ctx.metric("slow_answered", slow_clean);
    ctx.metric("slow_failed", slow_failed);
    ctx.metric("streams", STREAMS);
    ctx.metric("clean", clean);
    ctx.metric("carriers_opened", opened);
    ctx.metric("bytes", ctx.ledger.total_received());
    Ok(())
}

/// One HTTP/1.0-style exchange with the slow target: the request without a finish, the
/// answer read to the target's close. Returns what the application saw and whether a
/// clean answer was exactly the target's.
async fn slow_stream<N: Net>(
    net: &N,
    front: SocketAddr,
    target: SocketAddr,
    seed: u64,
    tag: u32,
    st: &SlowStream,
    addrs: &AppAddrs,
) -> (AppSaw, bool) {
    let h = st.header(tag);
    let body = pc::request_body(seed, tag, st.req);
    let s = match pc::socks_connect_noted(net, front, &Addr::Ip(target), note_addrs(addrs, tag))
        .await
    {
        Ok(s) => s,
        Err(e) => return (AppSaw::Error(format!("connect: {e}")), false),
    };
    let (got, sent, recv) = pc::exchange(
        s,
        &h.encode(),
        &body,
        &[(st.req, Duration::ZERO)],
        false,
        None,
    )
    .await;
    match (sent, recv) {
        (Ok(()), Ok(())) => {
            let intact = got == pc::answer_body(seed, tag, st.resp);
            (AppSaw::Clean(got.len()), intact)
        }
        (s, r) => (
            AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len())),
            false,
        ),
    }
}

/// What the direct readers saw, by stream tag ([`DIRECT_TAG`] + the reader's index).
type DirectLog = Arc<Mutex<BTreeMap<u32, AppSaw>>>;

/// Slow readers on pong streams opened on the pool itself (tags from 10 000): each reads a
/// large answer 4 KiB at a time with pauses, so its stream's buffer fills and its carrier
/// stops taking input until it reads on.
async fn direct_readers(
    slot: PoolSlot<pc::LocalNet>,
    seed: u64,
    plan: Arc<Vec<(usize, usize, u64)>>,
    ledger: crate::ledger::FlowLedger,
    log: DirectLog,
) {
    let Some(pool) = pc::pool_of(&slot) else {
        return;
    };
    let mut tasks = Vec::new();
    for (k, &(req, resp, start)) in plan.iter().enumerate() {
        let (pool, ledger, log) = (pool.clone(), ledger.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(start)).await;
            let tag = DIRECT_TAG + k as u32;
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
            ledger.sent(&pc::req_flow(tag), &body);
            let dest = tunnelbed_pong::Address::Domain("target".into(), pc::TARGET_PORT);
            let (got, sent, recv) = pc::direct_exchange(
                &pool,
                dest,
                &h.encode(),
                &body,
                Some(Duration::from_millis(3)),
            )
            .await;
            let saw = match (sent, recv) {
                (Ok(()), Ok(())) => {
                    let flow = pc::resp_flow(tag);
                    ledger.received(&flow, &got);
                    ledger.close(&flow);
                    AppSaw::Clean(got.len())
                }
                (s, r) => AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len())),
            };
            log.lock().unwrap().insert(tag, saw);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
