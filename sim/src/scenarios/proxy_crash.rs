//! The fixture of the crash-and-restart scenarios of a SOCKS5-fronted proxy
//! (`pong-remote-crash`, `vless-server-crash`): the seeded crash window and phase sizes,
//! the fault plan that crashes the proxy's server host and brings it back, the phases of
//! short request-answer streams before and after, the long trickled transfers in flight
//! at the crash, and the phase verdict. What the proxy must do with its in-flight streams
//! (pong: fail loudly; VLESS: end visibly) is each scenario's own check.

use std::time::Duration;

use rand::Rng;
use tokio::task::JoinHandle;
use tunnelbed_netio::Net;
use tunnelbed_socks5::Addr;

use crate::fault::{FaultAction, FaultPlan};
use crate::ledger::FlowLedger;
use crate::realtcp::TcpMode;
use crate::scenarios::fixture::now;
use crate::scenarios::pong_common::{self as pc, AppSaw, Header, Order, TargetMode};
use crate::scenarios::proxy_streams::{note_addrs, AppAddrs, Endpoints};

/// A crash-scenario stream that has not ended after this long is reported as hung.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Long transfers are this many pieces ...
pub const PIECES: usize = 150;
/// ... of this many bytes ...
pub const PIECE: usize = 2048;
/// ... with this pause after each: 7.5 s, far longer than the crash takes.
pub const PIECE_PAUSE: Duration = Duration::from_millis(50);

/// When the server host crashes (3-4 s in) and how long it stays down (1-4 s), drawn in
/// this order from `rng`.
pub fn crash_window(rng: &mut impl Rng) -> (Duration, Duration) {
    let crash_at = Duration::from_millis(3000 + rng.gen_range(0..1000));
    let down = Duration::from_millis(rng.gen_range(1000..4000));
    (crash_at, down)
}

/// How much later the server crashes with `--tcp real`. Phase A ends in well under a
/// second over turmoil's streams, but real TCP at 5% loss moves about 150 KB/s per
/// carrier (Reno's loss-bound rate at a 40-60 ms RTT), with retransmission timeouts on
/// top: `pong-remote-crash --seed 1 --profile lossy --tcp real` still had 18 of its 24
/// phase-A streams waiting for their end at the crash (3.4 s), and the long transfers
/// meant to be in flight at the crash then ran wholly after the restart.
pub const REAL_TCP_CRASH_DELAY: Duration = Duration::from_secs(20);

/// The crash time a run over `mode` uses: [`crash_window`]'s draw, later by
/// [`REAL_TCP_CRASH_DELAY`] over real TCP (the draws stay the same, so ideal runs keep
/// their traces).
pub fn crash_time(drawn: Duration, mode: TcpMode) -> Duration {
    match mode {
        TcpMode::Real => drawn + REAL_TCP_CRASH_DELAY,
        TcpMode::Ideal => drawn,
    }
}

/// The check detail's note on transfers whose stream opened only after the restart
/// (never in flight at the crash, so a clean end is right); empty when there are none.
pub fn opened_after_restart(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    format!(
        "; {} opened only after the restart and completed then ({})",
        names.len(),
        names.join(", ")
    )
}

/// `n` (request, answer) sizes: requests below `max`, answers from 1 to below `2 * max`.
pub fn sizes(rng: &mut impl Rng, n: usize, max: usize) -> Vec<(usize, usize)> {
    (0..n)
        .map(|_| (rng.gen_range(0..max), rng.gen_range(1..2 * max)))
        .collect()
}

/// Crashes `host` at `crash_at` and brings it back at `bounce_at`.
pub fn crash_and_restart(host: &str, crash_at: Duration, bounce_at: Duration) -> FaultPlan {
    FaultPlan::new()
        .at(crash_at, FaultAction::Crash(host.into()))
        .at(bounce_at, FaultAction::Bounce(host.into()))
}

/// One short request-answer stream through the front, the target answering after the
/// whole request. With a `ledger` both directions are tracked there (and `spoil` alters
/// the answer first: the integrity sabotage); without, the header marks it untracked and
/// the caller judges the answer it returns.
#[allow(clippy::too_many_arguments)]
pub async fn short_stream<N: Net>(
    net: &N,
    at: Endpoints,
    seed: u64,
    tag: u32,
    req: usize,
    resp: usize,
    ledger: Option<&FlowLedger>,
    spoil: bool,
    addrs: Option<&AppAddrs>,
) -> (AppSaw, Vec<u8>) {
    let h = Header {
        tag,
        req: req as u32,
        resp: resp as u32,
        mode: TargetMode::Serve(Order::RequestFirst),
        slow_target: false,
        untracked: ledger.is_none(),
        pace_ms: 0,
    };
    let body = pc::request_body(seed, tag, req);
    let connected = match addrs {
        Some(a) => {
            pc::socks_connect_noted(net, at.front, &Addr::Ip(at.target), note_addrs(a, tag)).await
        }
        None => pc::socks_connect(net, at.front, &Addr::Ip(at.target)).await,
    };
    let s = match connected {
        Ok(s) => s,
        Err(e) => return (AppSaw::Error(format!("connect: {e}")), Vec::new()),
    };
    if let Some(l) = ledger {
        l.sent(&pc::req_flow(tag), &body);
    }
    let chunks = [(req, Duration::ZERO)];
    let (mut got, sent, recv) = pc::exchange(s, &h.encode(), &body, &chunks, true, None).await;
    match (sent, recv) {
        (Ok(()), Ok(())) => {
            if spoil && !got.is_empty() {
                got[0] ^= 1;
            }
            if let Some(l) = ledger {
                let flow = pc::resp_flow(tag);
                l.received(&flow, &got);
                l.close(&flow);
            }
            (AppSaw::Clean(got.len()), got)
        }
        (s, r) => (
            AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len())),
            got,
        ),
    }
}

/// Starts a phase of tracked short streams: stream `i` has tag `first_tag + i`, the sizes
/// `sizes[i]`, starts `step * i` from now and is bounded by [`STREAM_TIMEOUT`]; the first
/// one is spoiled when `spoil_first`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_phase<N: Net>(
    net: &N,
    at: Endpoints,
    seed: u64,
    sizes: Vec<(usize, usize)>,
    first_tag: u32,
    step: Duration,
    ledger: &FlowLedger,
    spoil_first: bool,
) -> Vec<JoinHandle<(u32, AppSaw)>> {
    let mut tasks = Vec::new();
    for (i, (req, resp)) in sizes.into_iter().enumerate() {
        let (net, ledger) = (net.clone(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(step * i as u32).await;
            let tag = first_tag + i as u32;
            let spoil = spoil_first && i == 0;
            let r = tokio::time::timeout(
                STREAM_TIMEOUT,
                short_stream(&net, at, seed, tag, req, resp, Some(&ledger), spoil, None),
            )
            .await;
            (tag, r.map(|r| r.0).unwrap_or(AppSaw::Hung))
        }));
    }
    tasks
}

/// A long transfer through the front that lasts past the crash, bounded by
/// [`STREAM_TIMEOUT`]: a download the target trickles (the request is `ask` bytes) or an
/// upload the application trickles (the answer is 64 bytes). Returns what the application
/// saw, the answer length the header announced, and when the front's SOCKS5 reply came
/// (its way to the server was up; `None` if it never came).
pub async fn long_stream<N: Net>(
    net: &N,
    at: Endpoints,
    seed: u64,
    tag: u32,
    upload: bool,
    ask: usize,
    addrs: &AppAddrs,
) -> (AppSaw, usize, Option<Duration>) {
    let announced = if upload { 64 } else { PIECES * PIECE };
    let up = std::sync::Mutex::new(None);
    let r = tokio::time::timeout(
        STREAM_TIMEOUT,
        trickle(net, at, seed, tag, upload, ask, announced, addrs, &up),
    )
    .await;
    let up = *up.lock().unwrap();
    (r.unwrap_or(AppSaw::Hung), announced, up)
}

/// The body of [`long_stream`].
#[allow(clippy::too_many_arguments)]
async fn trickle<N: Net>(
    net: &N,
    at: Endpoints,
    seed: u64,
    tag: u32,
    upload: bool,
    ask: usize,
    resp: usize,
    addrs: &AppAddrs,
    up: &std::sync::Mutex<Option<Duration>>,
) -> AppSaw {
    let (req, mode) = if upload {
        (PIECES * PIECE, TargetMode::Serve(Order::RequestFirst))
    } else {
        (ask, TargetMode::Trickle)
    };
    let h = Header {
        tag,
        req: req as u32,
        resp: resp as u32,
        mode,
        slow_target: false,
        untracked: true,
        pace_ms: PIECE_PAUSE.as_millis() as u16,
    };
    let noted = note_addrs(addrs, tag);
    let s = match pc::socks_connect_noted(net, at.front, &Addr::Ip(at.target), noted).await {
        Ok(s) => s,
        Err(e) => return AppSaw::Error(format!("connect: {e}")),
    };
    *up.lock().unwrap() = Some(now());
    let body = pc::request_body(seed, tag, req);
    let chunks = if upload {
        vec![(PIECE, PIECE_PAUSE); PIECES]
    } else {
        vec![(req, Duration::ZERO)]
    };
    let (got, sent, recv) = pc::exchange(s, &h.encode(), &body, &chunks, true, None).await;
    match (sent, recv) {
        (Ok(()), Ok(())) => AppSaw::Clean(got.len()),
        (s, r) => AppSaw::Error(format!("write {s:?}, read {r:?} after {} B", got.len())),
    }
}

/// The streams of `v` that did not end cleanly, as `s{tag}: {what the app saw}`.
pub fn not_clean(v: &[(u32, AppSaw)]) -> Vec<String> {
    v.iter()
        .filter(|(_, s)| !matches!(s, AppSaw::Clean(_)))
        .map(|(t, s)| format!("s{t}: {s:?}"))
        .collect()
}

/// The verdict on a phase that must work: all `n` streams of `v` ended cleanly. Returns
/// whether they did and the detail (`when` says which phase: "before the crash").
pub fn phase_clean(v: &[(u32, AppSaw)], n: usize, when: &str) -> (bool, String) {
    let bad = not_clean(v);
    (
        v.len() == n && bad.is_empty(),
        format!(
            "{}/{n} streams {when} ended cleanly {bad:?}",
            v.len() - bad.len()
        ),
    )
}

/// An untracked short stream bounded by [`STREAM_TIMEOUT`] (a request while the server is
/// down): what the application saw, and whether it ended cleanly with exactly the
/// target's answer. Its connection's addresses go into `addrs` (for the reset log).
#[allow(clippy::too_many_arguments)]
pub async fn judged_stream<N: Net>(
    net: &N,
    at: Endpoints,
    seed: u64,
    tag: u32,
    req: usize,
    resp: usize,
    addrs: &AppAddrs,
) -> (AppSaw, bool) {
    let r = tokio::time::timeout(
        STREAM_TIMEOUT,
        short_stream(net, at, seed, tag, req, resp, None, false, Some(addrs)),
    )
    .await;
    match r {
        Ok((saw, got)) => {
            let intact = matches!(saw, AppSaw::Clean(_)) && got == pc::answer_body(seed, tag, resp);
            (saw, intact)
        }
        Err(_) => (AppSaw::Hung, false),
    }
}
