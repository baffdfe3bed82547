//! `candy-reconnect`: Candy's VPN through partitions and a server crash. A server with a
//! DHCP pool and three clients (the binary's client role, with short keepalive and
//! backoff settings); each client sends numbered requests (ICMP echo and UDP echo, as
//! in candy-mesh) to the next client's address for the whole run, resending on timeout.
//!
//! Faults, on every profile: c1 is partitioned from the server for 20 s (longer than
//! the client's dead-after, so it must notice, drop the carrier and reconnect with
//! backoff once the partition heals; the server still holds c1's stale connection, so
//! the address comes back only through the vmac), then the server crashes and restarts
//! with no state (every client reconnects and asks for its old address again).
//!
//! Invariants: integrity of every request (a request not answered within its give-up
//! time is a failed flow, loudly); no leak; liveness; every client keeps its address
//! (one interface address for the whole run, every AUTH with it, all distinct); every
//! client reconnected after the crash (c1 also after the partition) and had requests
//! answered after the faults settled; the servers saw no spoofing, bad hash, replay or
//! slow-client drop. On the clean profile nothing may be lost outside the fault windows:
//! a resend or a lost connection there fails the integrity check (the carriers are
//! reliable TCP, so that would be data the VPN lost).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, watch};
use tunnelbed_candy::client::random_vmac;
use tunnelbed_candy::connect::Status;
use tunnelbed_candy::serve::ServerHandle;
use tunnelbed_candy::server::ServerStats;
use tunnelbed_netio::Ipv4Cidr;

use crate::fault::{FaultAction, FaultPlan};
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::candy_common::{self as cc, Exchange};

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "candy-reconnect",
    about: "Candy VPN: a 20 s partition of one client and a server crash; clients reconnect with backoff, keep their addresses, flows recover",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

const CLIENTS: usize = 3;
const PORT: u16 = cc::SERVER_PORT;
const PASSWORD: &[u8] = b"reconnect";
const PARTITION_AT: Duration = Duration::from_secs(6);
const HEAL_AT: Duration = Duration::from_secs(26);
const CRASH_AT: Duration = Duration::from_secs(34);
const RESTART_AT: Duration = Duration::from_secs(38);
/// How long after a fault ends a client may still be away: dead-after, the longest
/// backoff with its jitter, a connect timeout, and a margin.
const SETTLE: Duration = Duration::from_secs(22);
/// Requests start until then: well past the last fault's settling time.
const SEND_UNTIL: Duration = Duration::from_secs(70);
/// The pause between one answered request and the next.
const PACE: Duration = Duration::from_millis(200);
/// A request unanswered this long has failed.
const GIVE_UP: Duration = Duration::from_secs(90);

const KEEPALIVE: Duration = Duration::from_secs(2);
const DEAD_AFTER: Duration = Duration::from_secs(6);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The times when client `c`'s traffic may be lost: from a fault hitting it until it
/// had time to come back.
fn windows(c: usize) -> Vec<(Duration, Duration)> {
    let mut w = vec![(CRASH_AT, RESTART_AT + SETTLE)];
    if c == 0 {
        w.push((PARTITION_AT, HEAL_AT + SETTLE));
    }
    w
}

fn excused(clients: &[usize], t: Duration) -> bool {
    clients
        .iter()
        .any(|c| windows(*c).iter().any(|(a, b)| t >= *a && t <= *b))
}

/// What one client lived through.
#[derive(Default)]
struct Log {
    /// Interface addresses the role configured (one unless the address changed).
    ups: Vec<Ipv4Cidr>,
    /// Every AUTH: when, and with which address.
    joins: Vec<(Duration, Ipv4Cidr)>,
    /// When a carrier was lost.
    downs: Vec<Duration>,
    /// Resends outside every fault window: (flow, when).
    unexcused: Vec<(String, Duration)>,
    /// Resends in all.
    resends: u64,
    /// Requests first sent after the faults settled and answered.
    answered_late: u64,
}

type Logs = Arc<Mutex<Vec<Log>>>;

fn with_log<T>(logs: &Logs, i: usize, f: impl FnOnce(&mut Log) -> T) -> T {
    let mut g = logs.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g[i])
}

fn current(servers: &Mutex<Vec<Arc<ServerHandle>>>) -> Option<Arc<ServerHandle>> {
    servers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last()
        .cloned()
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let vmacs: Vec<[u8; 16]> = (0..CLIENTS).map(|_| random_vmac(&mut ctx.rng)).collect();
    let seeds: Vec<u64> = (0..=CLIENTS).map(|_| ctx.rng.gen()).collect();
    let payload_seeds: Vec<u64> = (0..CLIENTS).map(|_| ctx.rng.gen()).collect();
    let sabotage = ctx.sabotaged();
    let resend = Duration::from_millis(500) + ctx.params.latency * 4 + ctx.params.jitter * 4;

    let mut sim = ctx.builder(Duration::from_secs(900)).build();
    // Every server instance in start order (a restart adds one).
    let servers: Arc<Mutex<Vec<Arc<ServerHandle>>>> = Arc::default();
    let cfg =
        cc::serve_config(PASSWORD, "10.78.0.0/24", seeds[CLIENTS]).map_err(anyhow::Error::msg)?;
    let slot = servers.clone();
    cc::host_server(&mut sim, &ctx.world, cfg, move |h| {
        slot.lock().unwrap_or_else(|e| e.into_inner()).push(h)
    });

    let logs: Logs = Arc::new(Mutex::new((0..CLIENTS).map(|_| Log::default()).collect()));
    let (addrs, _keep) = watch::channel(std::collections::BTreeMap::new());
    let addrs = Arc::new(addrs);
    let flows = Arc::new(AtomicUsize::new(0));
    let (done_tx, _done_rx) = watch::channel(0usize);
    let done = Arc::new(done_tx);
    for i in 0..CLIENTS {
        let name = format!("c{}", i + 1);
        let world = ctx.world.clone();
        let ledger = ctx.ledger.clone();
        let (addrs, done, flows, logs) = (addrs.clone(), done.clone(), flows.clone(), logs.clone());
        let servers = servers.clone();
        let (vmac, seed, pseed) = (vmacs[i], seeds[i], payload_seeds[i]);
        sim.client(name.clone(), async move {
            let net = world.net(&name);
            let _guard = world.crash_guard(&name);
            let mut cfg = cc::member_config(PASSWORD, vmac, seed, "server", PORT);
            cfg.client.keepalive = KEEPALIVE;
            cfg.client.dead_after = DEAD_AFTER;
            cfg.client.backoff_min = BACKOFF_MIN;
            cfg.client.backoff_max = BACKOFF_MAX;
            cfg.connect_timeout = CONNECT_TIMEOUT;
            let (status, mut status_rx) = mpsc::unbounded_channel();
            let slog = logs.clone();
            tokio::spawn(async move {
                while let Some(st) = status_rx.recv().await {
                    let t = cc::now();
                    with_log(&slog, i, |l| match st {
                        Status::Up(c) => l.ups.push(c),
                        Status::Joined(c) => l.joins.push((t, c)),
                        Status::Down => l.downs.push(t),
                    });
                }
            });
            let tamper = move |answered: u64| sabotage && i == 0 && answered == 4;
            let mut m =
                cc::start_member(net.clone(), cfg, world.trace.clone(), status, tamper, false)
                    .await?;
            let me = m.me;
            addrs.send_modify(|a| {
                a.insert(i, me);
            });
            let peer_i = (i + 1) % CLIENTS;
            let peer = cc::address_of(&addrs, peer_i).await?;
            // Start once the server routes both ends (the first requests must not race
            // the peer's AUTH: on the clean profile every resend outside the fault
            // windows counts as a loss).
            loop {
                let ready = current(&servers).is_some_and(|h| h.is_routed(me) && h.is_routed(peer));
                if ready {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(pseed);
            let mut k = 0usize;
            while cc::now() < SEND_UNTIL {
                let n = rng.gen_range(1..=1200usize);
                let payload: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                let flow = format!("{name}-to-c{}-{k:03}", peer_i + 1);
                flows.fetch_add(1, Ordering::Relaxed);
                ledger.sent(&flow, &payload);
                let t0 = cc::now();
                let (logs2, flow2) = (logs.clone(), flow.clone());
                let on_resend = move || {
                    let t = cc::now();
                    with_log(&logs2, i, |l| {
                        l.resends += 1;
                        if !excused(&[i, peer_i], t0) && !excused(&[i, peer_i], t) {
                            l.unexcused.push((flow2.clone(), t));
                        }
                    });
                };
                match cc::exchange(&mut m, peer, k, &payload, resend, GIVE_UP, on_resend).await? {
                    Exchange::Answered(data) => {
                        ledger.received(&flow, &data);
                        if t0 > RESTART_AT + SETTLE {
                            with_log(&logs, i, |l| l.answered_late += 1);
                        }
                    }
                    Exchange::GaveUp => {
                        tracing::warn!("{flow}: no answer within {GIVE_UP:?}");
                    }
                }
                ledger.close(&flow);
                k += 1;
                tokio::time::sleep(PACE).await;
            }
            // Keep answering until every client is done.
            done.send_modify(|d| *d += 1);
            let mut d = done.subscribe();
            d.wait_for(|d| *d >= CLIENTS)
                .await
                .map_err(|_| "done gone")?;
            m.stop();
            // Close every carrier inside the simulation (the server sees each client
            // leave), so nothing is torn down in the runtime's own order at the end.
            for _ in 0..1000 {
                if current(&servers).map_or(0, |h| h.connections()) == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        });
    }

    let mut faults = FaultPlan::new()
        .at(
            PARTITION_AT,
            FaultAction::Partition("c1".into(), "server".into()),
        )
        .at(HEAL_AT, FaultAction::Repair("c1".into(), "server".into()))
        .at(CRASH_AT, FaultAction::Crash("server".into()))
        .at(RESTART_AT, FaultAction::Bounce("server".into()));
    if ctx.profile != "clean" {
        // A stall of c2's carrier too (nothing lost, TCP is reliable).
        let ms = Duration::from_millis;
        faults = faults
            .at(ms(2000), FaultAction::Hold("c2".into(), "server".into()))
            .at(ms(3500), FaultAction::Release("c2".into(), "server".into()));
    }
    ctx.drive(&mut sim, &faults, Duration::from_secs(120));
    ctx.check_flows(flows.load(Ordering::Relaxed));

    let logs = std::mem::take(&mut *logs.lock().unwrap_or_else(|e| e.into_inner()));
    // Addresses: one interface address per client for the whole run, every AUTH with
    // it, and no two clients alike.
    let mut bad = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, l) in logs.iter().enumerate() {
        let changed = l.ups.len() != 1 || l.joins.iter().any(|(_, c)| Some(c) != l.ups.first());
        if changed {
            bad.push(format!(
                "c{}: interface {:?}, AUTHs {:?}",
                i + 1,
                l.ups.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                l.joins
                    .iter()
                    .map(|(_, c)| c.to_string())
                    .collect::<Vec<_>>()
            ));
        }
        if let Some(c) = l.ups.first() {
            if !seen.insert(c.addr) {
                bad.push(format!("c{}: {} taken twice", i + 1, c.addr));
            }
        }
    }
    let addrs_kept: Vec<String> = logs
        .iter()
        .map(|l| l.ups.first().map_or("-".into(), |c| c.addr.to_string()))
        .collect();
    ctx.check(
        "addresses-kept",
        bad.is_empty(),
        if bad.is_empty() {
            format!("every client kept its address: {}", addrs_kept.join(", "))
        } else {
            bad.join("; ")
        },
    );
    // Reconnects: every client joined again after the restart; c1 also after the
    // partition healed (and before the crash).
    let mut missing = Vec::new();
    for (i, l) in logs.iter().enumerate() {
        if !l.joins.iter().any(|(t, _)| *t >= RESTART_AT) {
            missing.push(format!("c{} never rejoined after the restart", i + 1));
        }
        if l.answered_late == 0 {
            missing.push(format!(
                "c{} had no request answered after the faults",
                i + 1
            ));
        }
    }
    let c1 = &logs[0];
    if !c1.joins.iter().any(|(t, _)| *t >= HEAL_AT && *t < CRASH_AT) {
        missing.push("c1 never rejoined after the partition".into());
    }
    if !c1.downs.iter().any(|t| *t >= PARTITION_AT && *t < HEAL_AT) {
        missing.push("c1 never noticed the partition".into());
    }
    let joins: Vec<String> = logs.iter().map(|l| l.joins.len().to_string()).collect();
    ctx.check(
        "reconnected",
        missing.is_empty(),
        if missing.is_empty() {
            format!("AUTHs per client: {}", joins.join(", "))
        } else {
            missing.join("; ")
        },
    );
    let stats: Vec<ServerStats> = servers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|h| h.stats())
        .collect();
    let sum = |f: fn(&ServerStats) -> u64| stats.iter().map(f).sum::<u64>();
    let (spoofed, bad_hash, replays, slow) = (
        sum(|s| s.spoofed),
        sum(|s| s.bad_hash),
        sum(|s| s.replays),
        sum(|s| s.slow_drops),
    );
    ctx.check(
        "server-clean",
        stats.len() == 2 && spoofed == 0 && bad_hash == 0 && replays == 0 && slow == 0,
        format!(
            "{} server instance(s) (2 expected); spoofed {spoofed}, bad-hash {bad_hash}, replays {replays}, slow-drops {slow}",
            stats.len()
        ),
    );
    if ctx.profile == "clean" {
        // Outside the fault windows the carriers are reliable TCP and nothing fails: a
        // resend there, or a lost connection, is data the VPN lost.
        let mut lost = Vec::new();
        for (i, l) in logs.iter().enumerate() {
            for t in &l.downs {
                if !excused(&[i], *t) {
                    lost.push(format!(
                        "c{} lost its carrier at {:.3}s",
                        i + 1,
                        t.as_secs_f64()
                    ));
                }
            }
            for (f, t) in &l.unexcused {
                lost.push(format!("{f} resent at {:.3}s", t.as_secs_f64()));
            }
        }
        ctx.check(
            "integrity",
            lost.is_empty(),
            if lost.is_empty() {
                "clean profile: nothing lost outside the fault windows".to_string()
            } else {
                format!(
                    "clean profile, outside the fault windows: {}",
                    lost.join("; ")
                )
            },
        );
    }
    let resends: u64 = logs.iter().map(|l| l.resends).sum();
    let downs: usize = logs.iter().map(|l| l.downs.len()).sum();
    ctx.metric("requests", flows.load(Ordering::Relaxed));
    ctx.metric("resends", resends);
    ctx.metric("carriers-lost", downs);
    ctx.metric("auths", joins.join("/"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_faults_of_each_client() {
        let s = Duration::from_secs;
        assert!(excused(&[0], s(10)));
        assert!(!excused(&[1], s(10)));
        assert!(excused(&[1, 0], s(10)));
        assert!(excused(&[2], s(35)));
        assert!(!excused(&[2], s(5)));
        assert!(!excused(&[2], RESTART_AT + SETTLE + s(1)));
    }
}
