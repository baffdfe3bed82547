//! `candy-hostile`: Candy's VPN with an attacker among the hosts. Three honest clients
//! (the binary's client role) send numbered requests round the ring (ICMP and UDP echo,
//! as in candy-mesh) while a host `evil` speaks raw Candy messages to the server:
//!
//! 1. VMAC and AUTH with a wrong password, claiming c1's address;
//! 2. c1's AUTH replayed (the password's hash is right, the timestamp is c1's own, as a
//!    sniffer would have it); then an AUTH for c2 from two minutes ago;
//! 3. as an insider (it knows the password): DHCP asking for c1's address, then, with
//!    the address it got, FORWARD packets with c2's and c1's source addresses, and PEER
//!    INFO, DISCOVERY and GENERAL claiming honest sources;
//! 4. a flood of FORWARD packets to c1 and to the broadcast address, from its own
//!    address, bigger than the server's per-client queue;
//! 5. a message that is not Candy.
//!
//! Invariants: integrity and liveness of every honest request; no leak; the attacks
//! are refused (the wrong password, both replays and the garbage close their
//! connection; every spoofed message is counted and dropped, none reaches an honest
//! endpoint; the DHCP does not hand out c1's address; c1 and c2 keep the connection
//! that owns their address); the honest clients never lose their carrier and keep their
//! addresses. On the clean profile nothing honest may be resent, except on the flows
//! through c1 (the flood's target, whose queue the flood fills), once the flood began.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, watch};
use tunnelbed_candy::client::random_vmac;
use tunnelbed_candy::connect::Status;
use tunnelbed_candy::raw::{RawConn, Seen};
use tunnelbed_candy::serve::ServerHandle;
use tunnelbed_candy::server::ConnId;
use tunnelbed_candy::wire::{Auth, Dhcp, Discovery, General, Message, PeerInfo, Vmac, BROADCAST};
use tunnelbed_candy::ws::WsUrl;
use tunnelbed_netio::iplink::echo;
use tunnelbed_netio::Ipv4Cidr;

use crate::scenario::{Ctx, Scenario};
use crate::scenarios::candy_common::{self as cc, Exchange};
use crate::scenarios::fixture::random_payloads;
use crate::simnet::HostNet;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "candy-hostile",
    about: "Candy VPN under attack: wrong password, replayed AUTH, spoofed sources, a flood; the honest clients are unaffected",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 2,
    run,
};

const HONEST: usize = 3;
const REQUESTS: usize = 30;
const PORT: u16 = cc::SERVER_PORT;
const PASSWORD: &[u8] = b"hostile";
const PACE: Duration = Duration::from_millis(250);
const GIVE_UP: Duration = Duration::from_secs(60);
/// The server's per-client queue: the flood is several times this.
const MAX_QUEUED: usize = 128 * 1024;
const FLOOD: usize = 600;
const FLOOD_BROADCAST: usize = 40;
const FLOOD_LEN: usize = 1300;
/// Marks the payload of every spoofed packet (no honest endpoint may see it).
const SPOOF_MARK: &[u8] = b"EVIL-SPOOF";
/// Marks the flood's packets.
const FLOOD_MARK: &[u8] = b"EVIL-FLOOD";
/// How long the attacker waits for the server to close a refused connection.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn unix_now() -> i64 {
    i64::try_from(cc::clock()().as_secs()).unwrap_or(i64::MAX)
}

/// What the attacker saw and did.
#[derive(Default, Debug)]
struct Attack {
    /// Refused connections the server did not close: (attack, what happened).
    not_closed: Vec<&'static str>,
    /// Spoofed messages sent.
    spoofed_sent: u64,
    /// The address DHCP gave the insider.
    grant: Option<Ipv4Cidr>,
    /// Owners of c1's and c2's addresses before and after.
    owners_before: Vec<Option<ConnId>>,
    owners_after: Vec<Option<ConnId>>,
    /// Flood packets sent.
    flooded: u64,
    /// When the flood began (simulated time).
    flood_at: Option<Duration>,
    /// Steps that failed to run at all.
    errors: Vec<String>,
}

/// Honest client `i`'s record.
#[derive(Default)]
struct Log {
    ups: Vec<Ipv4Cidr>,
    joins: Vec<(Duration, Ipv4Cidr)>,
    downs: u64,
    /// Resends: (flow, requester, peer, when).
    resends: Vec<(String, usize, usize, Duration)>,
}

type Logs = Arc<Mutex<Vec<Log>>>;

fn with_log<T>(logs: &Logs, i: usize, f: impl FnOnce(&mut Log) -> T) -> T {
    let mut g = logs.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g[i])
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let payloads: Vec<Vec<Vec<u8>>> = (0..HONEST)
        .map(|_| random_payloads(&mut ctx.rng, REQUESTS, 1200))
        .collect();
    let vmacs: Vec<[u8; 16]> = (0..=HONEST).map(|_| random_vmac(&mut ctx.rng)).collect();
    let seeds: Vec<u64> = (0..=HONEST + 1).map(|_| ctx.rng.gen()).collect();
    let sabotage = ctx.sabotaged();
    let resend = Duration::from_millis(500) + ctx.params.latency * 4 + ctx.params.jitter * 4;

    let mut sim = ctx.builder(Duration::from_secs(900)).build();
    let server: Arc<Mutex<Option<Arc<ServerHandle>>>> = Arc::default();
    let mut cfg =
        cc::serve_config(PASSWORD, "10.79.0.0/24", seeds[HONEST]).map_err(anyhow::Error::msg)?;
    cfg.server.max_queued = MAX_QUEUED;
    let slot = server.clone();
    cc::host_server(&mut sim, &ctx.world, cfg, move |h| *lock(&slot) = Some(h));

    let logs: Logs = Arc::new(Mutex::new((0..HONEST).map(|_| Log::default()).collect()));
    let (addrs, _keep) = watch::channel(BTreeMap::<usize, Ipv4Addr>::new());
    let addrs = Arc::new(addrs);
    let spoof_seen = Arc::new(AtomicU64::new(0));
    let flood_seen = Arc::new(AtomicU64::new(0));
    // Honest clients done, then the attacker (the last to finish closes up).
    let (done_tx, _done_rx) = watch::channel(0usize);
    let done = Arc::new(done_tx);
    let attack: Arc<Mutex<Attack>> = Arc::default();

    for (i, my_payloads) in payloads.into_iter().enumerate() {
        let name = format!("c{}", i + 1);
        let world = ctx.world.clone();
        let ledger = ctx.ledger.clone();
        let (addrs, done, logs) = (addrs.clone(), done.clone(), logs.clone());
        let (spoof_seen, flood_seen) = (spoof_seen.clone(), flood_seen.clone());
        let slot = server.clone();
        let (vmac, seed) = (vmacs[i], seeds[i]);
        sim.client(name.clone(), async move {
            let net = world.net(&name);
            let _guard = world.crash_guard(&name);
            let cfg = cc::member_config(PASSWORD, vmac, seed, "server", PORT);
            let (status, mut status_rx) = mpsc::unbounded_channel();
            let slog = logs.clone();
            tokio::spawn(async move {
                while let Some(st) = status_rx.recv().await {
                    let t = cc::now();
                    with_log(&slog, i, |l| match st {
                        Status::Up(c) => l.ups.push(c),
                        Status::Joined(c) => l.joins.push((t, c)),
                        Status::Down => l.downs += 1,
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
            let peer_i = (i + 1) % HONEST;
            let peer = cc::address_of(&addrs, peer_i).await?;
            let srv = || lock(&slot).clone();
            while !srv().is_some_and(|h| h.is_routed(me) && h.is_routed(peer)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for (k, payload) in my_payloads.iter().enumerate() {
                let flow = format!("{name}-to-c{}-{k:02}", peer_i + 1);
                ledger.sent(&flow, payload);
                let (logs2, flow2) = (logs.clone(), flow.clone());
                let on_resend = move || {
                    let t = cc::now();
                    with_log(&logs2, i, |l| l.resends.push((flow2.clone(), i, peer_i, t)));
                };
                let r = cc::exchange(&mut m, peer, k, payload, resend, GIVE_UP, on_resend);
                // Packets that are neither requests for us nor answers to ours (the
                // flood, anything spoofed) are looked at here.
                let x = r.await?;
                while let Ok(p) = m.replies.try_recv() {
                    if contains(&p, SPOOF_MARK) {
                        spoof_seen.fetch_add(1, Ordering::Relaxed);
                    } else if contains(&p, FLOOD_MARK) {
                        flood_seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
                match x {
                    Exchange::Answered(data) => ledger.received(&flow, &data),
                    Exchange::GaveUp => tracing::warn!("{flow}: no answer within {GIVE_UP:?}"),
                }
                ledger.close(&flow);
                tokio::time::sleep(PACE).await;
            }
            done.send_modify(|d| *d += 1);
            let mut d = done.subscribe();
            d.wait_for(|d| *d > HONEST).await.map_err(|_| "done gone")?;
            // Spoofed packets may still be on the way: look at everything left.
            while let Ok(p) = m.replies.try_recv() {
                if contains(&p, SPOOF_MARK) {
                    spoof_seen.fetch_add(1, Ordering::Relaxed);
                }
            }
            m.stop();
            for _ in 0..1000 {
                if srv().map_or(0, |h| h.connections()) == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        });
    }

    {
        let world = ctx.world.clone();
        let (addrs, done, attack, slot) =
            (addrs.clone(), done.clone(), attack.clone(), server.clone());
        let logs = logs.clone();
        let (vmac, seed) = (vmacs[HONEST], seeds[HONEST + 1]);
        sim.client("evil", async move {
            let net = world.net("evil");
            let _guard = world.crash_guard("evil");
            let mut rx = addrs.subscribe();
            let honest = rx
                .wait_for(|a| a.len() == HONEST)
                .await
                .map_err(|_| "address table gone")?
                .clone();
            let srv = || lock(&slot).clone();
            while !srv().is_some_and(|h| honest.values().all(|ip| h.is_routed(*ip))) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let (c1, c2, c3) = (honest[&0], honest[&1], honest[&2]);
            lock(&attack).owners_before = [c1, c2]
                .iter()
                .map(|ip| srv().and_then(|h| h.owner(*ip)))
                .collect();
            // Let the honest traffic get going first.
            tokio::time::sleep(Duration::from_secs(1)).await;
            // c1's AUTH as a sniffer saw it: its timestamp is the second c1 joined in;
            // the attacker takes the second before that, certainly not newer.
            let joined = with_log(&logs, 0, |l| l.joins.first().map(|(t, _)| *t))
                .ok_or("c1 routed but never joined")?;
            let replay_ts = i64::try_from((cc::epoch() + joined).as_secs())? - 1;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let r = attacks(&net, &mut rng, vmac, [c1, c2, c3], replay_ts, &attack).await;
            if let Err(e) = r {
                lock(&attack).errors.push(e.to_string());
            }
            lock(&attack).owners_after = [c1, c2]
                .iter()
                .map(|ip| srv().and_then(|h| h.owner(*ip)))
                .collect();
            // The honest clients go on until they are done; then everyone stops.
            let mut d = done.subscribe();
            d.wait_for(|d| *d >= HONEST)
                .await
                .map_err(|_| "done gone")?;
            done.send_modify(|d| *d += 1);
            Ok(())
        });
    }

    ctx.drive(
        &mut sim,
        &crate::fault::FaultPlan::new(),
        Duration::from_secs(180),
    );
    ctx.check_flows(HONEST * REQUESTS);

    let a = std::mem::take(&mut *lock(&attack));
    let s = lock(&server)
        .as_ref()
        .map(|h| h.stats())
        .unwrap_or_default();
    let logs = std::mem::take(&mut *lock(&logs));
    let honest_addrs: Vec<Ipv4Addr> = logs
        .iter()
        .filter_map(|l| l.ups.first().map(|c| c.addr))
        .collect();
    let spoof_seen = spoof_seen.load(Ordering::Relaxed);
    let mut wrong = Vec::new();
    if !a.errors.is_empty() {
        wrong.push(format!("attack steps failed: {}", a.errors.join("; ")));
    }
    if !a.not_closed.is_empty() {
        wrong.push(format!("not closed: {}", a.not_closed.join(", ")));
    }
    if s.bad_hash != 1 || s.replays != 2 {
        wrong.push(format!(
            "bad-hash {} (1 expected), replays {} (2 expected)",
            s.bad_hash, s.replays
        ));
    }
    if s.spoofed != a.spoofed_sent || a.spoofed_sent == 0 {
        wrong.push(format!(
            "{} spoofed sent, {} counted by the server",
            a.spoofed_sent, s.spoofed
        ));
    }
    if spoof_seen > 0 {
        wrong.push(format!(
            "{spoof_seen} spoofed packet(s) reached honest endpoints"
        ));
    }
    match a.grant {
        Some(g) if !honest_addrs.contains(&g.addr) => {}
        g => wrong.push(format!(
            "the insider's DHCP gave {g:?}; honest: {honest_addrs:?}"
        )),
    }
    if a.owners_before.len() != 2
        || a.owners_before != a.owners_after
        || a.owners_before.iter().any(Option::is_none)
    {
        wrong.push(format!(
            "owners of c1/c2 before {:?}, after {:?}",
            a.owners_before, a.owners_after
        ));
    }
    ctx.check(
        "attacks-refused",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!(
                "bad-hash {}, replays {}, spoofed {} of {}, none seen; insider got {}",
                s.bad_hash,
                s.replays,
                s.spoofed,
                a.spoofed_sent,
                a.grant.map_or("-".into(), |g| g.to_string())
            )
        } else {
            wrong.join("; ")
        },
    );
    // The honest clients: one carrier each for the whole run, one address each.
    let mut hurt = Vec::new();
    for (i, l) in logs.iter().enumerate() {
        if l.downs > 0 || l.joins.len() != 1 || l.ups.len() != 1 {
            hurt.push(format!(
                "c{}: {} carrier(s) lost, {} AUTH(s), {} address(es)",
                i + 1,
                l.downs,
                l.joins.len(),
                l.ups.len()
            ));
        }
    }
    ctx.check(
        "honest-unaffected",
        hurt.is_empty(),
        if hurt.is_empty() {
            format!("honest addresses {honest_addrs:?}, no carrier lost")
        } else {
            hurt.join("; ")
        },
    );
    let resends: Vec<_> = logs
        .iter()
        .flat_map(|l| l.resends.iter().cloned())
        .collect();
    if ctx.profile == "clean" {
        // Carriers are reliable TCP: a resend is a loss, unless it is on a flow through
        // the flood's target once the flood began (its queue overflowed on purpose).
        let flood = a.flood_at.unwrap_or(Duration::MAX);
        let lost: Vec<String> = resends
            .iter()
            .filter(|(_, from, to, t)| !((*from == 0 || *to == 0) && *t >= flood))
            .map(|(f, _, _, t)| format!("{f} resent at {:.3}s", t.as_secs_f64()))
            .collect();
        ctx.check(
            "integrity",
            lost.is_empty(),
            if lost.is_empty() {
                format!(
                    "clean profile: {} resend(s), all on c1's flows during the flood",
                    resends.len()
                )
            } else {
                format!("clean profile: {}", lost.join("; "))
            },
        );
    }
    ctx.metric("resends", resends.len());
    ctx.metric("flooded", a.flooded);
    ctx.metric("flood-seen", flood_seen.load(Ordering::Relaxed));
    ctx.metric("slow-drops", s.slow_drops);
    ctx.metric("relayed", s.relayed);
    Ok(())
}

type BoxErr = Box<dyn std::error::Error>;

fn url() -> WsUrl {
    WsUrl::plain("server", PORT)
}

async fn open(net: &HostNet, rng: &mut ChaCha8Rng) -> Result<RawConn<HostNet>, BoxErr> {
    Ok(RawConn::open(net, &url(), Some(rng.gen()), Duration::from_secs(10)).await?)
}

/// Sends `msgs` on a new connection and records whether the server closed it.
async fn refused(
    net: &HostNet,
    rng: &mut ChaCha8Rng,
    what: &'static str,
    msgs: &[Message],
    attack: &Mutex<Attack>,
) -> Result<(), BoxErr> {
    let mut c = open(net, rng).await?;
    for m in msgs {
        c.feed(m).await?;
    }
    // A closed connection may refuse the flush already.
    let _ = c.flush().await;
    if !c.closed_within(CLOSE_WAIT).await {
        lock(attack).not_closed.push(what);
    }
    Ok(())
}

fn udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
    mark: &[u8],
    len: usize,
) -> Result<Message, BoxErr> {
    let mut body = mark.to_vec();
    body.resize(len.max(mark.len()), 0x5a);
    let p = echo::build_udp(src, 40_001, dst, dport, 1, &body).ok_or("packet too large")?;
    Ok(Message::Forward(p))
}

async fn attacks(
    net: &HostNet,
    rng: &mut ChaCha8Rng,
    vmac: [u8; 16],
    [c1, c2, c3]: [Ipv4Addr; 3],
    replay_ts: i64,
    attack: &Mutex<Attack>,
) -> Result<(), BoxErr> {
    let wrong = b"not-the-password";
    // 1. A wrong password, claiming c1's address.
    let now = unix_now();
    refused(
        net,
        rng,
        "wrong password",
        &[
            Message::Vmac(Vmac::new(wrong, vmac, now, Vec::new())),
            Message::Auth(Auth::new(wrong, c1, now, Vec::new())),
        ],
        attack,
    )
    .await?;
    // 2. c1's AUTH replayed (not newer than the one the server took from c1); then
    // one for c2 from two minutes ago.
    refused(
        net,
        rng,
        "replayed AUTH",
        &[Message::Auth(Auth::new(
            PASSWORD,
            c1,
            replay_ts,
            Vec::new(),
        ))],
        attack,
    )
    .await?;
    refused(
        net,
        rng,
        "old AUTH",
        &[Message::Auth(Auth::new(
            PASSWORD,
            c2,
            unix_now() - 120,
            Vec::new(),
        ))],
        attack,
    )
    .await?;
    // 3. An insider: asks for c1's address, takes what it gets, then spoofs.
    let mut c = open(net, rng).await?;
    let now = unix_now();
    c.feed(&Message::Vmac(Vmac::new(PASSWORD, vmac, now, Vec::new())))
        .await?;
    c.feed(&Message::Dhcp(Dhcp::new(
        PASSWORD,
        &format!("{c1}/24"),
        now,
        Vec::new(),
    )))
    .await?;
    c.flush().await?;
    let grant = loop {
        match c.recv(Duration::from_secs(10)).await {
            Seen::Message(b) => {
                if let Ok(Message::Dhcp(d)) = Message::decode(&b) {
                    break d
                        .cidr
                        .parse::<Ipv4Cidr>()
                        .map_err(|e| format!("grant: {e}"))?;
                }
            }
            s => return Err(format!("no DHCP answer: {s:?}").into()),
        }
    };
    lock(attack).grant = Some(grant);
    let me = grant.addr;
    c.send(&Message::Auth(Auth::new(
        PASSWORD,
        me,
        unix_now(),
        Vec::new(),
    )))
    .await?;
    let spoofs = vec![
        udp(c2, c3, cc::UDP_PORT, SPOOF_MARK, 64)?,
        udp(c1, c2, cc::UDP_PORT, SPOOF_MARK, 200)?,
        udp(c3, BROADCAST, cc::UDP_PORT, SPOOF_MARK, 64)?,
        Message::Forward(echo::build_icmp_echo(c2, c1, 8, 0x0e0e, 1, 1, SPOOF_MARK).ok_or("icmp")?),
        Message::PeerInfo(PeerInfo {
            src: c2,
            dst: c3,
            ip: Ipv4Addr::new(192, 0, 2, 1),
            port: 4242,
        }),
        Message::Discovery(Discovery {
            src: c1,
            dst: BROADCAST,
        }),
        Message::General(General::lan_address(
            c3,
            c1,
            Ipv4Addr::new(192, 0, 2, 2),
            4243,
        )),
    ];
    for m in &spoofs {
        c.feed(m).await?;
    }
    c.flush().await?;
    lock(attack).spoofed_sent = spoofs.len() as u64;
    // 4. The flood, from its own address: to c1, and some to everyone.
    lock(attack).flood_at = Some(cc::now());
    let to_c1 = udp(me, c1, 9, FLOOD_MARK, FLOOD_LEN)?;
    let to_all = udp(me, BROADCAST, 9, FLOOD_MARK, FLOOD_LEN)?;
    let mut sent = 0u64;
    for n in 0..FLOOD + FLOOD_BROADCAST {
        let m = if n % (FLOOD / FLOOD_BROADCAST + 1) == 0 {
            &to_all
        } else {
            &to_c1
        };
        c.feed(m).await?;
        sent += 1;
        if n % 32 == 31 {
            c.flush().await?;
        }
    }
    c.flush().await?;
    lock(attack).flooded = sent;
    // 5. Not Candy at all: the connection closes.
    c.feed_bytes(Bytes::from_static(&[0x77, 1, 2, 3])).await?;
    let _ = c.flush().await;
    if !c.closed_within(CLOSE_WAIT).await {
        lock(attack).not_closed.push("garbage");
    }
    Ok(())
}
