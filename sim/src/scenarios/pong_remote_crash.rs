//! `pong-remote-crash`: the remote host crashes in the middle of long transfers and
//! restarts a few seconds later. Applications (SOCKS5 through the front, and streams
//! opened on the pool inside the local process) with streams in flight must get an
//! error, never a clean short end; requests during the outage fail or succeed intact;
//! the local notices its carriers died, drops them from the pool, opens new ones after
//! the restart, and every later request works.
//!
//! Invariants: integrity of every completed stream (hash per flow); in-flight streams
//! fail loudly; requests during the outage never end short and clean; after the restart
//! every request works on new carriers; the pool keeps no dead carrier (each old
//! connection ended, and the pool's carriers are exactly the restarted remote's); no
//! leak (pool, remote sockets, every pong stream and connection in the trace);
//! liveness after the restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tunnelbed_netio::Net;

use crate::ledger::FlowLedger;
use crate::realtcp::TcpMode;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::fixture::now;
use crate::scenarios::lost_resets::LostResets;
use crate::scenarios::pong_common::{
    self as pc, AppSaw, Gauges, Header, Order, PoolSlot, TargetLog, TargetMode,
};
use crate::scenarios::proxy_crash::{self as pcr, PIECE, PIECES, PIECE_PAUSE, STREAM_TIMEOUT};
use crate::scenarios::proxy_streams::{AppAddrs, Endpoints};

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "pong-remote-crash",
    about: "the pong remote crashes mid-transfer and restarts: in-flight streams error, the pool redials, later requests work",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

const MAX_PER_CARRIER: usize = 8;
const IDLE_CLOSE: Duration = Duration::from_secs(2);
const PHASE_A: usize = 24;
const PHASE_B: usize = 30;
/// In flight at the crash: SOCKS5 downloads, SOCKS5 uploads, and downloads on the pool.
const DOWNLOADS: usize = 5;
const UPLOADS: usize = 5;
const DIRECT: usize = 4;
/// Requests made while the remote is down.
const DURING: usize = 4;
/// How long the pool's and the remote's carrier counts may take to agree after phase B
/// (a close in flight on the link, its FIN resent after a loss).
const COUNTS_SETTLE: Duration = Duration::from_secs(5);
/// With `--tcp real`, the long transfers start this long before the crash (they last
/// `PIECES` x `PIECE_PAUSE`, 7.5 s); over turmoil's streams they start right after
/// phase A, as before. 4 s, as in vless-server-crash: a carrier whose SYN is lost twice
/// comes up 3 s in (at 2 s, swarm seeds 12 and 14 had every transfer's carrier come up
/// only after the restart, so the crash met none of them).
const LONG_LEAD: Duration = Duration::from_secs(4);

#[derive(Default)]
struct Outcome {
    phase_a: Vec<(u32, AppSaw)>,
    in_flight: Vec<(String, AppSaw)>,
    during: Vec<(u32, AppSaw, bool)>,
    phase_b: Vec<(u32, AppSaw)>,
    /// Carriers opened before the crash, and the pool's numbers after phase B.
    opened_before: u64,
    after_b: Option<(usize, u64, i64)>,
    pool_end: Option<(usize, usize)>,
    remote_end: Option<(i64, i64, i64)>,
    cleanup_took: Duration,
    crash_seen: Option<Duration>,
}

/// What the in-process applications saw (direct streams on the pool).
type DirectLog = Arc<Mutex<BTreeMap<String, AppSaw>>>;

/// When each in-flight transfer's stream opened (its carrier was up), by name.
type UpLog = Arc<Mutex<BTreeMap<String, Duration>>>;

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let seed = ctx.seed;
    let (crash_at, down) = pcr::crash_window(&mut ctx.rng);
    // Phase A must end before the crash. Over real TCP it can take far longer than over
    // turmoil's streams (see `pcr::REAL_TCP_CRASH_DELAY`), so there the crash comes later.
    let real_tcp = ctx.world.tcp_mode() == TcpMode::Real;
    let crash_at = pcr::crash_time(crash_at, ctx.world.tcp_mode());
    let bounce_at = crash_at + down;
    let sizes_a = pcr::sizes(&mut ctx.rng, PHASE_A, 16 * 1024);
    let sizes_b = pcr::sizes(&mut ctx.rng, PHASE_B, 64 * 1024);
    let sabotage = ctx.sabotaged();

    let gauges = Gauges::default();
    let target_log: TargetLog = Arc::default();
    let slot: PoolSlot<pc::LocalNet> = Arc::default();
    let direct: DirectLog = Arc::default();
    let up_log: UpLog = Arc::default();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let incarnation = Arc::new(AtomicU32::new(0));

    let mut sim = ctx.builder(Duration::from_secs(600)).build();

    let (world, g, inc) = (ctx.world.clone(), gauges.clone(), incarnation.clone());
    sim.host("remote", move || {
        let n = inc.fetch_add(1, Ordering::SeqCst);
        pc::run_remote(world.clone(), "remote", format!("remote{n}"), g.clone())
    });
    pc::host_target(&mut sim, &ctx.world, seed, &ctx.ledger, &target_log);
    let (world, s, dlog, ledger, ups) = (
        ctx.world.clone(),
        slot.clone(),
        direct.clone(),
        ctx.ledger.clone(),
        up_log.clone(),
    );
    sim.host("local", move || {
        let apps = direct_apps(
            s.clone(),
            seed,
            crash_at,
            bounce_at,
            dlog.clone(),
            ups.clone(),
            ledger.clone(),
        );
        // Phase A's short requests must all work: over real TCP a carrier's connect
        // gets three SYN tries (pong-streams keeps 3 s and excuses what it costs).
        let mut cfg = pc::pool_config(MAX_PER_CARRIER, IDLE_CLOSE);
        cfg.connect_timeout = world.tcp_mode().connect_bound(cfg.connect_timeout);
        let local = pc::run_local(world.clone(), "local", cfg, s.clone());
        async move {
            tokio::spawn(apps);
            local.await
        }
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let out = outcome.clone();
    let g = gauges.clone();
    let dlog = direct.clone();
    let ups = up_log.clone();
    let app_addrs = AppAddrs::default();
    let addrs = app_addrs.clone();
    sim.client("app", async move {
        let net = world.net("app");
        let front = net.resolve("local", pc::SOCKS_PORT).await?[0];
        let target = net.resolve("target", pc::TARGET_PORT).await?[0];
        let pool = {
            while pc::pool_of(&slot).is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            pc::pool_of(&slot).ok_or("no pool")?
        };
        let at = Endpoints { front, target };
        // Phase A: short streams before the crash, all must work.
        let step = Duration::from_millis(10);
        let tasks = pcr::spawn_phase(&net, at, seed, sizes_a, 0, step, &ledger, sabotage);
        for t in tasks {
            let r = t.await?;
            out.lock().unwrap().phase_a.push(r);
        }
        out.lock().unwrap().opened_before = pool.stats().await.carriers_opened;
        if real_tcp {
            // Phase A ended well before the later crash: start the long transfers
            // shortly before it, so they are in flight when it comes.
            tokio::time::sleep(crash_at.saturating_sub(LONG_LEAD).saturating_sub(now())).await;
        }
        // Long transfers in flight when the remote crashes.
        let mut long = Vec::new();
        for k in 0..DOWNLOADS + UPLOADS {
            let net = net.clone();
            let ups = ups.clone();
            let addrs = addrs.clone();
            long.push(tokio::spawn(async move {
                let upload = k >= DOWNLOADS;
                let tag = long_tag(k);
                let name = long_name(k);
                let (saw, _, up) = pcr::long_stream(&net, at, seed, tag, upload, 0, &addrs).await;
                if let Some(t) = up {
                    ups.lock().unwrap().insert(name.clone(), t);
                }
                (name, saw)
            }));
        }
        // Requests while the remote is down.
        let mut during = Vec::new();
        for k in 0..DURING {
            let net = net.clone();
            let addrs = addrs.clone();
            during.push(tokio::spawn(async move {
                let when = crash_at + Duration::from_millis(500 + 300 * k as u64);
                tokio::time::sleep(when.saturating_sub(now())).await;
                let tag = 2000 + k as u32;
                let (req, resp) = (3000 + 100 * k, 5000 + 100 * k);
                let (saw, intact) =
                    pcr::judged_stream(&net, at, seed, tag, req, resp, &addrs).await;
                (tag, saw, intact)
            }));
        }
        // When does the local notice? The pool's carriers from before are gone.
        let crash_seen = tokio::spawn({
            let pool = pool.clone();
            async move {
                tokio::time::sleep(crash_at.saturating_sub(now())).await;
                loop {
                    let st = pool.stats().await;
                    if st.connections == 0 || now() > crash_at + STREAM_TIMEOUT {
                        return now();
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        for t in long {
            let r = t.await?;
            out.lock().unwrap().in_flight.push(r);
        }
        for t in during {
            let r = t.await?;
            out.lock().unwrap().during.push(r);
        }
        out.lock().unwrap().crash_seen = Some(crash_seen.await?);
        // Phase B: after the restart every request works.
        tokio::time::sleep((bounce_at + Duration::from_millis(500)).saturating_sub(now())).await;
        let tasks = pcr::spawn_phase(&net, at, seed, sizes_b, 3000, step, &ledger, false);
        for t in tasks {
            let r = t.await?;
            out.lock().unwrap().phase_b.push(r);
        }
        while dlog.lock().unwrap().len() < 2 * DIRECT {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        {
            // A carrier the pool closed this instant is still the remote's until the
            // close crosses the link (a link delay, more when its FIN is lost): counts
            // that differ are read again for up to `COUNTS_SETTLE` before they count.
            let settle_by = now() + COUNTS_SETTLE;
            let (st, remote_carriers) = loop {
                let st = pool.stats().await;
                let remote_carriers = g.get().0;
                if st.connections as i64 == remote_carriers || now() >= settle_by {
                    break (st, remote_carriers);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            out.lock().unwrap().after_b =
                Some((st.connections, st.carriers_opened, remote_carriers));
        }
        // Cleanup: idle carriers close, the remote lets go of everything.
        let (st, remote, took) = pc::drained(&pool, &g, 30 * IDLE_CLOSE).await;
        let mut o = out.lock().unwrap();
        o.pool_end = Some((st.live_streams, st.connections));
        o.remote_end = Some(remote);
        o.cleanup_took = took;
        Ok(())
    });

    let faults = pcr::crash_and_restart("remote", crash_at, bounce_at);
    ctx.drive(&mut sim, &faults, Duration::from_secs(120));
    drop(sim);

    let o = outcome.lock().unwrap();
    let d = direct.lock().unwrap().clone();
    ctx.check_flows(2 * (PHASE_A + PHASE_B + DIRECT));

    let (ok, detail) = pcr::phase_clean(&o.phase_a, PHASE_A, "before the crash");
    ctx.check("before-crash", ok, detail);

    // In flight at the crash: every one fails loudly.
    let mut silent = Vec::new();
    let mut errors = 0;
    let in_flight = o.in_flight.iter().cloned().chain(
        d.iter()
            .filter(|(k, _)| k.starts_with("direct"))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let ups = up_log.lock().unwrap().clone();
    let mut after_restart = Vec::new();
    let mut total = 0;
    // A SOCKS5 download the local reset (its carrier died at the restart, or its idle
    // bound) whose every reset copy the link lost waits for the application's own
    // bound, as a kernel peer would: visible, when the run's reset log shows it (real
    // TCP only; swarm seed 26).
    let mut lost = LostResets::new("local", STREAM_TIMEOUT);
    let addrs = app_addrs.lock().unwrap().clone();
    let tags: BTreeMap<String, u32> = (0..DOWNLOADS + UPLOADS)
        .map(|k| (long_name(k), long_tag(k)))
        .collect();
    for (name, saw) in in_flight {
        total += 1;
        let up = ups.get(&name).copied();
        let saw = match tags.get(&name) {
            Some(&tag) => lost
                .judge(ctx, &addrs, tag, true, Some(&saw))
                .unwrap_or(saw),
            None => saw,
        };
        match saw {
            AppSaw::Error(_) => errors += 1,
            // Its stream opened only after the restart (a new carrier whose SYNs were
            // lost until the remote was back): never in flight at the crash, and a clean
            // end is then right (real TCP at heavy loss: swarm seed 2).
            AppSaw::Clean(_) if up.is_some_and(|t| t >= bounce_at) => after_restart.push(name),
            other => silent.push(format!("{name}: {}", pc::saw_kind(Some(&other)))),
        }
    }
    let late = format!(
        "{}{}",
        pcr::opened_after_restart(&after_restart),
        lost.summary()
    );
    ctx.check(
        "in-flight-fail-loudly",
        // At least one must really have been in flight, or the crash tested nothing.
        silent.is_empty() && total == DOWNLOADS + UPLOADS + DIRECT && errors > 0,
        if silent.is_empty() {
            format!("{errors}/{total} streams in flight at the crash reported an error{late}")
        } else {
            format!(
                "{} of {total} did not fail loudly: {}{late}",
                silent.len(),
                silent.join("; ")
            )
        },
    );
    // A request the local reset during the outage (its carrier was dead) whose every
    // reset copy the link lost waits to its bound: visible by the reset log (swarm 39).
    let mut lost_during = LostResets::new("local", STREAM_TIMEOUT);
    let during: Vec<(u32, AppSaw, bool)> = o
        .during
        .iter()
        .map(|(t, saw, intact)| {
            let saw = lost_during
                .judge(ctx, &addrs, *t, true, Some(saw))
                .unwrap_or_else(|| saw.clone());
            (*t, saw, *intact)
        })
        .collect();
    let bad_during: Vec<String> = during
        .iter()
        .filter(|(_, saw, intact)| {
            // Fine: it failed loudly, or it worked with the whole answer intact.
            let ok =
                matches!(saw, AppSaw::Error(_)) || (matches!(saw, AppSaw::Clean(_)) && *intact);
            !ok
        })
        .map(|(t, saw, _)| format!("s{t}: {saw:?}"))
        .collect();
    ctx.check(
        "during-outage",
        bad_during.is_empty() && during.len() == DURING,
        format!(
            "{} requests during the outage: {} failed, {} worked intact {bad_during:?}{}",
            during.len(),
            during
                .iter()
                .filter(|x| matches!(x.1, AppSaw::Error(_)))
                .count(),
            during
                .iter()
                .filter(|x| matches!(x.1, AppSaw::Clean(_)) && x.2)
                .count(),
            lost_during.summary()
        ),
    );

    // After the restart: every request works, on new carriers.
    let mut bad_b = pcr::not_clean(&o.phase_b);
    bad_b.extend(
        d.iter()
            .filter(|(k, s)| k.starts_with("after") && !matches!(s, AppSaw::Clean(_)))
            .map(|(k, s)| format!("{k}: {s:?}")),
    );
    let (conns_b, opened_b, remote_b) = o.after_b.unwrap_or((usize::MAX, 0, -1));
    ctx.check(
        "recovered",
        bad_b.is_empty() && o.phase_b.len() == PHASE_B && opened_b > o.opened_before,
        format!(
            "{}/{PHASE_B} streams and {DIRECT} pool streams after the restart {bad_b:?}; carriers opened {} before the crash, {opened_b} in all",
            o.phase_b.len() - bad_b.len().min(o.phase_b.len()),
            o.opened_before
        ),
    );
    // The pool keeps no dead carrier: every connection from before the crash ended soon
    // after it, and after phase B the pool holds exactly the carriers the restarted
    // remote serves. "Soon" over turmoil's streams is 5 s: the crash breaks them at once.
    // Over real TCP a carrier whose streams only read sends nothing the restarted host
    // could answer with a reset, and the dead host sends nothing at all: only the local's
    // idle bound ends its streams (`LOCAL_IDLE` after their last byte), and the pool then
    // closes it once idle (`IDLE_CLOSE`, checked each second).
    let dead_within = match ctx.world.tcp_mode() {
        TcpMode::Ideal => Duration::from_secs(5),
        TcpMode::Real => Duration::from_secs(5) + pc::LOCAL_IDLE + IDLE_CLOSE,
    };
    let mut late = Vec::new();
    let mut old = 0;
    let mut slowest = Duration::ZERO;
    for (m, (born, closed)) in conn_lives(&ctx.world.trace, "local/") {
        if born >= crash_at {
            continue;
        }
        old += 1;
        match closed {
            Some(t) if t >= crash_at && t <= crash_at + dead_within => {
                slowest = slowest.max(t - crash_at);
            }
            Some(t) if t < crash_at => {}
            other => late.push(format!("{m} closed at {other:?}")),
        }
    }
    let seen = o.crash_seen.unwrap_or_default();
    ctx.check(
        "pool-drops-dead",
        late.is_empty() && conns_b as i64 == remote_b,
        format!(
            "{old} carriers from before the crash ended within {:.3}s of it (bound {:.0}s; pool empty after {:.3}s); \
             after the restart the pool holds {conns_b} carriers, the remote serves {remote_b} {late:?}",
            slowest.as_secs_f64(),
            dead_within.as_secs_f64(),
            seen.saturating_sub(crash_at).as_secs_f64()
        ),
    );

    let last = format!(
        "remote{}/",
        incarnation.load(Ordering::SeqCst).saturating_sub(1)
    );
    let (streams_open, conns_open) = pc::unended(&ctx.world.trace, &["local/", &last]);
    ctx.check(
        "no-leak-pong",
        o.pool_end == Some((0, 0))
            && o.remote_end == Some((0, 0, 0))
            && streams_open.is_empty()
            && conns_open.is_empty(),
        format!(
            "after {:.1}s: pool (live streams, carriers) {:?}; remote (carriers, target conns, udp sockets) {:?}; \
             unended streams {} {:?}; open connections {:?}",
            o.cleanup_took.as_secs_f64(),
            o.pool_end,
            o.remote_end,
            streams_open.len(),
            &streams_open[..streams_open.len().min(3)],
            &conns_open[..conns_open.len().min(3)]
        ),
    );
    ctx.metric("crash_at_ms", crash_at.as_millis());
    ctx.metric("down_ms", down.as_millis());
    ctx.metric("carriers_opened", opened_b);
    Ok(())
}

/// The `k`th long transfer's tag: downloads first, then uploads.
fn long_tag(k: usize) -> u32 {
    1000 + k as u32
}

/// The `k`th long transfer's name in the verdict.
fn long_name(k: usize) -> String {
    let kind = if k >= DOWNLOADS { "upload" } else { "download" };
    format!("{kind} s{}", long_tag(k))
}

/// Per pong connection whose id starts with `prefix`: when it first appears in the trace
/// and when it closed.
fn conn_lives(
    trace: &tunnelbed_netio::Trace,
    prefix: &str,
) -> BTreeMap<String, (Duration, Option<Duration>)> {
    let mut out: BTreeMap<String, (Duration, Option<Duration>)> = BTreeMap::new();
    for t in trace.snapshot() {
        let m = t.machine.as_ref();
        let Some(rest) = m.strip_prefix(prefix) else {
            continue;
        };
        if rest.contains('/') {
            continue; // a stream
        }
        let e = out.entry(m.to_string()).or_insert((t.at, None));
        if t.to == "closed" {
            e.1 = Some(t.at);
        }
    }
    out
}

/// Applications inside the local process: downloads on the pool that are in flight at
/// the crash (`direct s{tag}`), then requests after the restart (`after s{tag}`).
async fn direct_apps(
    slot: PoolSlot<pc::LocalNet>,
    seed: u64,
    crash_at: Duration,
    bounce_at: Duration,
    log: DirectLog,
    ups: UpLog,
    ledger: FlowLedger,
) {
    let Some(pool) = pc::pool_of(&slot) else {
        return;
    };
    let dest = || tunnelbed_pong::Address::Domain("target".into(), pc::TARGET_PORT);
    let mut tasks = Vec::new();
    for k in 0..DIRECT {
        let (pool, log, ups) = (pool.clone(), log.clone(), ups.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(crash_at.saturating_sub(Duration::from_millis(1500))).await;
            let tag = 4000 + k as u32;
            let h = Header {
                tag,
                req: 0,
                resp: (PIECES * PIECE) as u32,
                mode: TargetMode::Trickle,
                slow_target: false,
                untracked: true,
                pace_ms: PIECE_PAUSE.as_millis() as u16,
            };
            let up = Mutex::new(None);
            let r = tokio::time::timeout(
                STREAM_TIMEOUT,
                pc::direct_exchange_noted(&pool, dest(), &h.encode(), &[], None, &up),
            )
            .await;
            if let Some(t) = *up.lock().unwrap() {
                ups.lock().unwrap().insert(format!("direct s{tag}"), t);
            }
            let saw = match r {
                Ok((got, Ok(()), Ok(()))) => AppSaw::Clean(got.len()),
                Ok((got, s, r)) => {
                    AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len()))
                }
                Err(_) => AppSaw::Hung,
            };
            log.lock().unwrap().insert(format!("direct s{tag}"), saw);
        }));
    }
    for k in 0..DIRECT {
        let (pool, log, ledger) = (pool.clone(), log.clone(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            let at = bounce_at + Duration::from_millis(700 + 50 * k as u64);
            tokio::time::sleep(at.saturating_sub(now())).await;
            let tag = 5000 + k as u32;
            let (req, resp) = (4096 * (k + 1), 20_000 * (k + 1));
            let h = Header {
                tag,
                req: req as u32,
                resp: resp as u32,
                mode: TargetMode::Serve(Order::Both),
                slow_target: false,
                untracked: false,
                pace_ms: 0,
            };
            let body = pc::request_body(seed, tag, req);
            ledger.sent(&pc::req_flow(tag), &body);
            let r = tokio::time::timeout(
                STREAM_TIMEOUT,
                pc::direct_exchange(&pool, dest(), &h.encode(), &body, None),
            )
            .await;
            let saw = match r {
                Ok((got, Ok(()), Ok(()))) => {
                    let flow = pc::resp_flow(tag);
                    ledger.received(&flow, &got);
                    ledger.close(&flow);
                    AppSaw::Clean(got.len())
                }
                Ok((got, s, r)) => {
                    AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len()))
                }
                Err(_) => AppSaw::Hung,
            };
            log.lock().unwrap().insert(format!("after s{tag}"), saw);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
