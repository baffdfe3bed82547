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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::AsyncReadExt;
use tunnelbed_netio::Net;
use tunnelbed_socks5::Addr;

use crate::fault::FaultPlan;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::pong_common::{
    self as pc, AppSaw, Gauges, Header, Order, TargetLog, TargetMode, TargetSaw,
};
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
/// An application gives up on a stream after this long (it reports it as hung).
const STREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// What one application stream does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Request, finish, answer, finish; must end cleanly with intact bytes.
    Clean {
        order: Order,
        slow_app: bool,
        slow_target: bool,
    },
    /// The application sends part of its request, reads a little and drops the socket
    /// with the answer unread.
    AppAbort,
    /// The target resets after the header.
    TargetReset { finish: bool },
    /// The server's dial fails (closed port, or an unknown name).
    DialFail { unknown_host: bool },
}

impl Plan {
    fn kind(self) -> &'static str {
        match self {
            Plan::Clean { .. } => "clean",
            Plan::AppAbort => "app-abort",
            Plan::TargetReset { .. } => "target-reset",
            Plan::DialFail { .. } => "dial-fail",
        }
    }
}

struct Stream {
    plan: Plan,
    start: Duration,
    req: usize,
    resp: usize,
    chunks: Vec<(usize, Duration)>,
    think_ms: u16,
}

fn size(rng: &mut impl Rng) -> usize {
    match rng.gen_range(0..10) {
        0 => 0,
        1..=6 => rng.gen_range(1..8 * 1024),
        7 | 8 => rng.gen_range(8 * 1024..48 * 1024),
        _ => rng.gen_range(48 * 1024..160 * 1024),
    }
}

fn plan(ctx: &mut Ctx) -> Vec<Stream> {
    (0..STREAMS)
        .map(|_| {
            let r = &mut ctx.rng;
            let plan = match r.gen_range(0..100) {
                0..=5 => Plan::AppAbort,
                6..=11 => Plan::TargetReset {
                    finish: r.gen_bool(0.5),
                },
                12..=17 => Plan::DialFail {
                    unknown_host: r.gen_bool(0.3),
                },
                _ => Plan::Clean {
                    order: match r.gen_range(0..4) {
                        0 | 1 => Order::RequestFirst,
                        2 => Order::AnswerFirst,
                        _ => Order::Both,
                    },
                    slow_app: r.gen_bool(0.06),
                    slow_target: r.gen_bool(0.06),
                },
            };
            let (mut req, mut resp) = (size(r), size(r));
            match plan {
                Plan::TargetReset { .. } => req = req.max(1),
                Plan::AppAbort => {
                    req = req.max(64);
                    resp = resp.max(16 * 1024);
                }
                Plan::Clean { slow_app: true, .. } => resp = r.gen_range(256 * 1024..768 * 1024),
                _ => {}
            }
            let pace = if r.gen_bool(0.3) { 30 } else { 0 };
            let chunks = pc::write_plan(r, req, pace);
            Stream {
                plan,
                start: Duration::from_millis(r.gen_range(0..800)),
                req,
                resp,
                chunks,
                think_ms: r.gen_range(0..400),
            }
        })
        .collect()
}

#[derive(Default)]
struct Outcome {
    app: BTreeMap<u32, AppSaw>,
    intruder: Option<AppSaw>,
    server_end: Option<(i64, i64, i64)>,
    client_end: Option<(i64, i64, i64)>,
    cleanup_took: Duration,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let seed = ctx.seed;
    let streams = plan(ctx);
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
    let faults = if ctx.profile == "clean" {
        FaultPlan::new()
    } else {
        FaultPlan::new().swizzle(
            "local",
            "server",
            Duration::from_millis(300),
            Duration::from_millis(2500),
            Duration::from_millis(150),
            seed,
        )
    };
    let server_g = Gauges::default();
    let client_g = Gauges::default();
    let target_log: TargetLog = Arc::default();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let mut sim = ctx.builder(Duration::from_secs(600)).build();

    let (world, g) = (ctx.world.clone(), server_g.clone());
    sim.host("server", move || {
        vc::run_server(world.clone(), "server", "server".into(), g.clone())
    });
    let (world, ledger, log) = (ctx.world.clone(), ctx.ledger.clone(), target_log.clone());
    sim.host("target", move || {
        pc::run_target(world.clone(), "target", seed, ledger.clone(), log.clone())
    });
    let (world, g) = (ctx.world.clone(), client_g.clone());
    sim.host("local", move || {
        vc::run_client(world.clone(), "local", vc::USER, vc::SOCKS_PORT, g.clone())
    });
    // A second client whose user id the server does not know.
    let world = ctx.world.clone();
    sim.host("intruder", move || {
        vc::run_client(
            world.clone(),
            "intruder",
            vc::STRANGER,
            vc::SOCKS_PORT,
            Gauges::default(),
        )
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    let out = outcome.clone();
    let (sg, cg) = (server_g.clone(), client_g.clone());
    sim.client("app", async move {
        let net = world.net("app");
        let front = net.resolve("local", vc::SOCKS_PORT).await?[0];
        let intruder = net.resolve("intruder", vc::SOCKS_PORT).await?[0];
        let target = net.resolve("target", pc::TARGET_PORT).await?[0];
        let mut tasks = Vec::new();
        for (i, st) in streams.into_iter().enumerate() {
            let net = net.clone();
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(st.start).await;
                let tag = i as u32;
                let saw = tokio::time::timeout(
                    STREAM_TIMEOUT,
                    app_stream(
                        &net,
                        front,
                        target,
                        seed,
                        tag,
                        &st,
                        &ledger,
                        spoiled == Some(i),
                    ),
                )
                .await
                .unwrap_or(AppSaw::Hung);
                (tag, saw)
            }));
        }
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
        let since = now();
        loop {
            let (s, c) = (sg.get(), cg.get());
            let done = s == (0, 0, 0) && c.1 == 0;
            if done || now() > since + Duration::from_secs(60) {
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

    ctx.drive(&mut sim, &faults, Duration::from_secs(300));
    drop(sim);

    let o = outcome.lock().unwrap();
    let log = target_log.lock().unwrap().clone();
    let clean = plans
        .iter()
        .filter(|p| matches!(p, Plan::Clean { .. }))
        .count();
    ctx.check_flows(2 * clean);
    let mut wrong: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, p) in plans.iter().enumerate() {
        let tag = i as u32;
        let app = o.app.get(&tag);
        let tgt = log.get(&tag);
        let ended_empty = matches!(app, Some(AppSaw::Error(_)) | Some(AppSaw::Clean(0)));
        let ok = match p {
            Plan::Clean { .. } => {
                matches!(app, Some(AppSaw::Clean(_))) && tgt == Some(&TargetSaw::Complete)
            }
            Plan::AppAbort => {
                app == Some(&AppSaw::Aborted)
                    && matches!(tgt, Some(TargetSaw::Short(_) | TargetSaw::Error(..)))
            }
            Plan::TargetReset { .. } => ended_empty && tgt == Some(&TargetSaw::ResetSent),
            Plan::DialFail { .. } => ended_empty && tgt.is_none(),
        };
        if !ok {
            let key = format!("{} -> app {}", p.kind(), pc::saw_kind(app));
            let e = wrong.entry(key).or_insert((0, String::new()));
            e.0 += 1;
            if e.1.is_empty() {
                e.1 = format!("s{tag:03} {p:?}: app {app:?}, target {tgt:?}");
            }
        }
    }
    let n_wrong: usize = wrong.values().map(|w| w.0).sum();
    ctx.check(
        "ends-as-planned",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!(
                "{clean} clean intact; {} aborted by the app; {} failing ended with no answer byte",
                plans.iter().filter(|p| **p == Plan::AppAbort).count(),
                plans
                    .iter()
                    .filter(|p| matches!(p, Plan::TargetReset { .. } | Plan::DialFail { .. }))
                    .count()
            )
        } else {
            let parts: Vec<String> = wrong
                .iter()
                .map(|(k, (n, first))| format!("{n}x {k} (first: {first})"))
                .collect();
            format!("{n_wrong} of {STREAMS} streams: {}", parts.join("; "))
        },
    );
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

#[allow(clippy::too_many_arguments)]
async fn app_stream<N: Net>(
    net: &N,
    front: SocketAddr,
    target: SocketAddr,
    seed: u64,
    tag: u32,
    st: &Stream,
    ledger: &crate::ledger::FlowLedger,
    spoil: bool,
) -> AppSaw {
    let (dest, mode, slow_target, slow_app) = match st.plan {
        Plan::Clean {
            order,
            slow_app,
            slow_target,
        } => (
            Addr::Ip(target),
            TargetMode::Serve(order),
            slow_target,
            slow_app,
        ),
        Plan::AppAbort => (Addr::Ip(target), TargetMode::Abortee, false, false),
        Plan::TargetReset { .. } => (Addr::Ip(target), TargetMode::Reset, false, false),
        Plan::DialFail {
            unknown_host: false,
        } => (
            Addr::Ip(SocketAddr::new(target.ip(), pc::CLOSED_PORT)),
            TargetMode::Serve(Order::RequestFirst),
            false,
            false,
        ),
        Plan::DialFail { unknown_host: true } => (
            Addr::Domain(pc::UNKNOWN_HOST.into(), pc::TARGET_PORT),
            TargetMode::Serve(Order::RequestFirst),
            false,
            false,
        ),
    };
    let h = Header {
        tag,
        req: st.req as u32,
        resp: st.resp as u32,
        mode,
        slow_target,
        untracked: false,
        pace_ms: st.think_ms,
    };
    let body = pc::request_body(seed, tag, st.req);
    let s = match pc::socks_connect(net, front, &dest).await {
        Ok(s) => s,
        Err(e) => return AppSaw::Error(format!("connect: {e}")),
    };
    match st.plan {
        Plan::Clean { .. } => {
            ledger.sent(&pc::req_flow(tag), &body);
            let slow = slow_app.then(|| Duration::from_millis(2 + u64::from(tag % 5)));
            let (mut got, sent, recv) =
                pc::exchange(s, &h.encode(), &body, &st.chunks, true, slow).await;
            match (sent, recv) {
                (Ok(()), Ok(())) => {
                    if spoil && !got.is_empty() {
                        got[0] ^= 1;
                    }
                    let flow = pc::resp_flow(tag);
                    ledger.received(&flow, &got);
                    ledger.close(&flow);
                    AppSaw::Clean(got.len())
                }
                (s, r) => AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len())),
            }
        }
        Plan::AppAbort => {
            let half = st.req / 2;
            let (mut rd, mut wr) = tokio::io::split(s);
            let mut first = h.encode().to_vec();
            first.extend_from_slice(&body[..half]);
            if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut wr, &first).await {
                return AppSaw::Error(format!("write: {e}"));
            }
            let mut one = [0u8; 1];
            if let Err(e) = rd.read_exact(&mut one).await {
                return AppSaw::Error(format!("read: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop((rd, wr));
            AppSaw::Aborted
        }
        Plan::TargetReset { finish } => {
            let mut all = h.encode().to_vec();
            all.extend_from_slice(&body);
            let (got, sent, recv) = pc::exchange(s, &all, &[], &[], finish, None).await;
            verdict(got.len(), sent, recv)
        }
        Plan::DialFail { .. } => {
            let (got, sent, recv) =
                pc::exchange(s, &h.encode(), &body, &st.chunks, true, None).await;
            verdict(got.len(), sent, recv)
        }
    }
}

fn verdict(got: usize, sent: std::io::Result<()>, recv: std::io::Result<()>) -> AppSaw {
    match (sent, recv) {
        (Ok(()), Ok(())) => AppSaw::Clean(got),
        (s, r) => AppSaw::Error(format!("write {s:?}, read {r:?} after {got} B")),
    }
}
