//! `vless-tcp`: 200 SOCKS5 streams from applications through our VLESS client (`local`)
//! and server (`server`, one tcp carrier per stream) to a target host, over the link
//! model: random request and answer sizes, half closes both ways (the target answers
//! before, after or while reading), slow readers on both ends, applications that abort
//! (a reset towards the target), targets that reset, dials that fail (a closed port, an
//! unknown name), and a client with an unknown user id.
//!
//! VLESS has no way to carry a reset or a dial failure: the server ends the carrier,
//! and the application sees its stream end. So failing streams must end (an error or a
//! clean end) with no answer byte, never hang; clean streams must match byte for byte.
//!
//! Invariants: integrity (hash per flow); every stream ends as planned; the unknown user
//! is refused with nothing dialed; no leak (the server holds no carrier, target
//! connection or UDP socket, the client no carrier, every VLESS machine in the trace
//! ended); liveness.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tunnelbed_netio::Net;
use tunnelbed_socks5::Addr;

use crate::scenario::{Ctx, Scenario};
use crate::scenarios::lost_resets::LostResets;
use crate::scenarios::pong_common::{
    self as pc, AppSaw, Gauges, Header, Order, TargetLog, TargetMode,
};
use crate::scenarios::proxy_streams::{self as ps, Endpoints, FailingEnd, Plan, STREAM_TIMEOUT};
use crate::scenarios::vless_common as vc;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "vless-tcp",
    about: "200 SOCKS5 streams through our VLESS client and server: sizes, half-closes, resets, dial failures, slow readers, an unknown user",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

const STREAMS: usize = 200;
/// The client's idle bound (`ClientConfig::idle_timeout`, v2ray's 300 s by default),
/// inside the application's 120 s: over real TCP a carrier whose server reset it (a dial
/// that failed, with the request still unread) can lose every copy of that reset, and
/// the client, which has nothing left to send, would otherwise wait past the
/// application's bound (`vless-tcp --seed 7 --profile hostile --tcp real`, s062).
const CLIENT_IDLE: Duration = Duration::from_secs(60);
#[derive(Default)]
struct Outcome {
    app: BTreeMap<u32, AppSaw>,
    intruder: Option<AppSaw>,
    server_end: Option<(i64, i64, i64)>,
    client_end: Option<(i64, i64, i64)>,
    cleanup_took: Duration,
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let seed = ctx.seed;
    let streams = ps::plan(&mut ctx.rng, STREAMS, 0..800);
    let plans: Vec<Plan> = streams.iter().map(|s| s.plan).collect();
    // The integrity sabotage spoils the first clean stream's answer.
    let spoiled = ctx
        .sabotaged()
        .then(|| {
            streams
                .iter()
                .position(|s| matches!(s.plan, Plan::Clean { .. }) && s.resp > 0)
        })
        .flatten();
    let faults = ps::carrier_stalls(&ctx.profile, "local", "server", seed);
    let server_g = Gauges::default();
    let client_g = Gauges::default();
    let target_log: TargetLog = Arc::default();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let mut sim = ctx.builder(Duration::from_secs(600)).build();

    let (world, g) = (ctx.world.clone(), server_g.clone());
    sim.host("server", move || {
        vc::run_server(world.clone(), "server", "server".into(), g.clone())
    });
    pc::host_target(&mut sim, &ctx.world, seed, &ctx.ledger, &target_log);
    let idle = CLIENT_IDLE;
    vc::host_client(&mut sim, &ctx.world, "local", vc::USER, &client_g, idle);
    // A second client whose user id the server does not know.
    vc::host_client(
        &mut sim,
        &ctx.world,
        "intruder",
        vc::STRANGER,
        &Gauges::default(),
        idle,
    );

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let out = outcome.clone();
    let (sg, cg) = (server_g.clone(), client_g.clone());
    // Each application connection's addresses, for the lost-reset verdict.
    let app_addrs = ps::AppAddrs::default();
    let addrs = app_addrs.clone();
    sim.client("app", async move {
        let net = world.net("app");
        let front = net.resolve("local", vc::SOCKS_PORT).await?[0];
        let intruder = net.resolve("intruder", vc::SOCKS_PORT).await?[0];
        let target = net.resolve("target", pc::TARGET_PORT).await?[0];
        let at = Endpoints { front, target };
        let tasks = ps::spawn_streams(&net, at, seed, streams, &ledger, &addrs, |i| {
            spoiled == Some(i)
        });
        // The intruder's stream: refused by the server, so it ends with no answer.
        let intr = {
            let net = net.clone();
            tokio::spawn(async move {
                let h = Header {
                    tag: 30_000,
                    req: 10,
                    resp: 100,
                    mode: TargetMode::Serve(Order::RequestFirst),
                    slow_target: false,
                    untracked: true,
                    pace_ms: 0,
                };
                let s = match pc::socks_connect(&net, intruder, &Addr::Ip(target)).await {
                    Ok(s) => s,
                    Err(e) => return AppSaw::Error(format!("connect: {e}")),
                };
                let body = pc::request_body(seed, 30_000, 10);
                let r = tokio::time::timeout(
                    STREAM_TIMEOUT,
                    pc::exchange(s, &h.encode(), &body, &[(10, Duration::ZERO)], true, None),
                )
                .await;
                match r {
                    Ok((got, Ok(()), Ok(()))) => AppSaw::Clean(got.len()),
                    Ok((got, s, r)) => {
                        AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len()))
                    }
                    Err(_) => AppSaw::Hung,
                }
            })
        };
        for t in tasks {
            let (tag, saw) = t.await?;
            out.lock().unwrap().app.insert(tag, saw);
        }
        out.lock().unwrap().intruder = Some(intr.await?);
        // Cleanup: every carrier, target connection and socket goes away.
        let (s, c, took) = vc::drained(&sg, &cg, Duration::from_secs(60)).await;
        let mut o = out.lock().unwrap();
        o.server_end = Some(s);
        o.client_end = Some(c);
        o.cleanup_took = took;
        Ok(())
    });

    ctx.drive(&mut sim, &faults, Duration::from_secs(300));
    drop(sim);

    let o = outcome.lock().unwrap();
    let mut log = target_log.lock().unwrap().clone();
    let (clean, _, _) = ps::counts(&plans);
    ctx.check_flows(2 * clean);
    let target_lost =
        ps::target_resets_lost(|a, b| ctx.world.tcp_resets().get(a, b), &plans, &mut log);
    // A failing stream whose application waited to its own bound counts as ended only
    // if the client did reset its connection and the link lost every copy.
    let addrs = app_addrs.lock().unwrap().clone();
    let mut lost_resets = LostResets::new("client", STREAM_TIMEOUT);
    let judged = lost_resets.judge_all(ctx, &addrs, &plans, &o.app);
    let (ok, detail) = ps::ends_as_planned(&plans, &judged, &log, FailingEnd::ErrorOrEmpty);
    ctx.check(
        "ends-as-planned",
        ok,
        format!(
            "{detail}{}{}",
            lost_resets.summary(),
            ps::target_lost_summary(&target_lost)
        ),
    );
    ctx.metric("resets_lost", lost_resets.count() + target_lost.len());
    let refused = matches!(o.intruder, Some(AppSaw::Error(_)) | Some(AppSaw::Clean(0)))
        && !log.contains_key(&30_000);
    ctx.check(
        "unknown-user",
        refused,
        format!(
            "the unknown user's stream: app {:?}, target {:?}",
            o.intruder,
            log.get(&30_000)
        ),
    );
    let open = vc::unended(&ctx.world.trace, &[]);
    ctx.check(
        "no-leak-vless",
        o.server_end == Some((0, 0, 0))
            && o.client_end.is_some_and(|c| c.1 == 0)
            && open.is_empty(),
        format!(
            "after {:.1}s: server (carriers, target conns, udp sockets) {:?}; client carriers {:?}; unended machines {} {:?}",
            o.cleanup_took.as_secs_f64(),
            o.server_end,
            o.client_end.map(|c| c.1),
            open.len(),
            &open[..open.len().min(3)]
        ),
    );
    ctx.metric("streams", STREAMS);
    ctx.metric("clean", clean);
    ctx.metric("bytes", ctx.ledger.total_received());
    Ok(())
}
