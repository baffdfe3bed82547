//! The fixture of the SOCKS5-fronted proxy stream scenarios (`pong-streams`, `vless-tcp`):
//! a seeded plan of mixed application streams (clean exchanges with half closes in every
//! order and slow readers on both ends, applications that abort, targets that reset,
//! dials that fail), the application that plays one planned stream through the proxy's
//! SOCKS5 front to the target of [`pong_common`](super::pong_common), and the verdict on
//! whether every stream ended as planned. The proxy's hosts, its gauges and a scenario's
//! own extras stay in the scenario, which is then mostly its plan and its verdict.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tunnelbed_netio::Net;
use tunnelbed_socks5::Addr;

use crate::fault::FaultPlan;
use crate::ledger::FlowLedger;
use crate::realtcp::resets::ResetCount;
use crate::scenarios::pong_common::{self as pc, AppSaw, Header, Order, TargetMode, TargetSaw};

/// An application gives up on a stream after this long (it reports it as hung).
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// What one application stream does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Request, finish, answer, finish; must end cleanly with intact bytes.
    Clean {
        /// Whether the target answers before, after or while it reads.
        order: Order,
        /// The application reads the answer slowly.
        slow_app: bool,
        /// The target reads the request slowly.
        slow_target: bool,
    },
    /// The application sends part of its request, reads a little and drops the socket
    /// with the answer unread.
    AppAbort,
    /// The target resets after the header. `finish`: the application half-closes after
    /// its request (else it waits for the answer).
    TargetReset {
        /// Whether the application half-closes after its request.
        finish: bool,
    },
    /// The proxy's dial fails (closed port, or an unknown name).
    DialFail {
        /// An unknown name instead of a closed port.
        unknown_host: bool,
    },
}

impl Plan {
    /// A short description for failure summaries.
    pub fn kind(self) -> String {
        match self {
            Plan::Clean { .. } => "clean".into(),
            Plan::AppAbort => "app-abort".into(),
            Plan::TargetReset { finish } => format!(
                "target-reset ({})",
                if finish {
                    "app half-closed"
                } else {
                    "app waiting"
                }
            ),
            Plan::DialFail { unknown_host } => format!(
                "dial-fail ({})",
                if unknown_host {
                    "unknown host"
                } else {
                    "closed port"
                }
            ),
        }
    }

    /// Whether the stream is meant to fail (a target reset or a failed dial).
    pub fn fails(self) -> bool {
        matches!(self, Plan::TargetReset { .. } | Plan::DialFail { .. })
    }
}

/// One planned stream.
pub struct Stream {
    /// What it does.
    pub plan: Plan,
    /// When the application opens it.
    pub start: Duration,
    /// Request bytes after the header.
    pub req: usize,
    /// Answer bytes.
    pub resp: usize,
    /// How the application writes the request: (bytes, pause before).
    pub chunks: Vec<(usize, Duration)>,
    /// The target's think time before it answers.
    pub think_ms: u16,
}

/// A request or answer size: mostly small, some up to 160 KiB.
pub fn size(rng: &mut impl Rng) -> usize {
    match rng.gen_range(0..10) {
        0 => 0,
        1..=6 => rng.gen_range(1..8 * 1024),
        7 | 8 => rng.gen_range(8 * 1024..48 * 1024),
        _ => rng.gen_range(48 * 1024..160 * 1024),
    }
}

/// Plans `n` streams from `rng`, each opened at a time drawn from `start_ms`: 6% aborted
/// by the application, 6% reset by the target, 6% with a failing dial, the rest clean.
pub fn plan(rng: &mut impl Rng, n: usize, start_ms: Range<u64>) -> Vec<Stream> {
    (0..n)
        .map(|_| {
            let r = &mut *rng;
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
                // The reset and the abort need request bytes behind the header and an
                // answer to leave unread.
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
                start: Duration::from_millis(r.gen_range(start_ms.clone())),
                req,
                resp,
                chunks,
                think_ms: r.gen_range(0..400),
            }
        })
        .collect()
}

/// Carrier stalls between the proxy's `client` and `server` hosts while the streams run
/// (none on the clean profile).
pub fn carrier_stalls(profile: &str, client: &str, server: &str, seed: u64) -> FaultPlan {
    if profile == "clean" {
        FaultPlan::new()
    } else {
        FaultPlan::new().swizzle(
            client,
            server,
            Duration::from_millis(300),
            Duration::from_millis(2500),
            Duration::from_millis(150),
            seed,
        )
    }
}

/// Where the applications reach the proxy and the target.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    /// The proxy's SOCKS5 front.
    pub front: SocketAddr,
    /// The target's TCP service.
    pub target: SocketAddr,
}

/// Starts one application task per planned stream (stream `i` is tag `i`), each at its
/// start time and bounded by [`STREAM_TIMEOUT`]; `spoil(i)` says whether stream `i`'s
/// answer is altered before the ledger sees it (the integrity sabotage).
pub fn spawn_streams<N: Net>(
    net: &N,
    at: Endpoints,
    seed: u64,
    streams: Vec<Stream>,
    ledger: &FlowLedger,
    addrs: &AppAddrs,
    spoil: impl Fn(usize) -> bool,
) -> Vec<JoinHandle<(u32, AppSaw)>> {
    let mut tasks = Vec::new();
    for (i, st) in streams.into_iter().enumerate() {
        let net = net.clone();
        let ledger = ledger.clone();
        let addrs = addrs.clone();
        let spoil = spoil(i);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(st.start).await;
            let tag = i as u32;
            let saw = tokio::time::timeout(
                STREAM_TIMEOUT,
                app_stream(&net, at, seed, tag, &st, &ledger, &addrs, spoil),
            )
            .await
            .unwrap_or(AppSaw::Hung);
            (tag, saw)
        }));
    }
    tasks
}

/// Each application connection's (own, front's) addresses, per stream tag: a verdict
/// can then look the connection up in the run's real-TCP logs.
pub type AppAddrs = Arc<Mutex<BTreeMap<u32, (SocketAddr, SocketAddr)>>>;

/// Records stream `tag`'s addresses in `addrs` once its connection is up.
pub fn note_addrs(addrs: &AppAddrs, tag: u32) -> impl FnOnce((SocketAddr, SocketAddr)) + '_ {
    move |a| {
        addrs.lock().unwrap().insert(tag, a);
    }
}

/// Plays one planned stream through the front; clean streams go through the ledger.
#[allow(clippy::too_many_arguments)]
async fn app_stream<N: Net>(
    net: &N,
    at: Endpoints,
    seed: u64,
    tag: u32,
    st: &Stream,
    ledger: &FlowLedger,
    addrs: &AppAddrs,
    spoil: bool,
) -> AppSaw {
    let target = at.target;
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
    let s = match pc::socks_connect_noted(net, at.front, &dest, note_addrs(addrs, tag)).await {
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
            if let Err(e) = wr.write_all(&first).await {
                return AppSaw::Error(format!("write: {e}"));
            }
            let mut one = [0u8; 1];
            if let Err(e) = rd.read_exact(&mut one).await {
                return AppSaw::Error(format!("read: {e}"));
            }
            // More of the answer arrives meanwhile; dropping the socket with it unread
            // resets the connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop((rd, wr));
            AppSaw::Aborted
        }
        Plan::TargetReset { finish } => {
            // Header and request in one write, so the target's first read leaves request
            // bytes unread.
            let mut all = h.encode().to_vec();
            all.extend_from_slice(&body);
            let (got, sent, recv) = pc::exchange(s, &all, &[], &[], finish, None).await;
            ended(got.len(), sent, recv)
        }
        Plan::DialFail { .. } => {
            let (got, sent, recv) =
                pc::exchange(s, &h.encode(), &body, &st.chunks, true, None).await;
            ended(got.len(), sent, recv)
        }
    }
}

/// What the application saw of an exchange that got `got` answer bytes.
fn ended(got: usize, sent: std::io::Result<()>, recv: std::io::Result<()>) -> AppSaw {
    match (sent, recv) {
        (Ok(()), Ok(())) => AppSaw::Clean(got),
        (s, r) => AppSaw::Error(format!("write {s:?}, read {r:?} after {got} B")),
    }
}

/// How a failing stream (a target reset, a failed dial) may end at the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailingEnd {
    /// Only with an error (the proxy carries resets and dial failures: pong).
    Error,
    /// With an error or a clean end that brought no answer byte (the proxy can only end
    /// its carrier: VLESS).
    ErrorOrEmpty,
}

/// Judges every planned stream by what the application (`app`, by tag) and the target
/// (`log`) saw: clean streams complete at both ends, aborted ones short or failed at the
/// target, failing ones end as `failing` allows with the target reset or never dialed.
/// Returns whether all ended as planned, and the detail: the counts, or per kind of wrong
/// end how many and the first one.
pub fn ends_as_planned(
    plans: &[Plan],
    app: &BTreeMap<u32, AppSaw>,
    log: &BTreeMap<u32, TargetSaw>,
    failing: FailingEnd,
) -> (bool, String) {
    ends_as_planned_except(plans, app, log, failing, |_| false)
}

/// [`ends_as_planned`] for the streams that `excused` (by tag) does not name: streams
/// the caller explained with evidence of their own (see
/// [`super::dial_timeouts::DialTimeouts`]).
pub fn ends_as_planned_except(
    plans: &[Plan],
    app: &BTreeMap<u32, AppSaw>,
    log: &BTreeMap<u32, TargetSaw>,
    failing: FailingEnd,
    excused: impl Fn(u32) -> bool,
) -> (bool, String) {
    let mut wrong: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, p) in plans.iter().enumerate() {
        let tag = i as u32;
        if excused(tag) {
            continue;
        }
        let app = app.get(&tag);
        let tgt = log.get(&tag);
        let failed = match failing {
            FailingEnd::Error => matches!(app, Some(AppSaw::Error(_))),
            FailingEnd::ErrorOrEmpty => {
                matches!(app, Some(AppSaw::Error(_)) | Some(AppSaw::Clean(0)))
            }
        };
        let ok = match p {
            Plan::Clean { .. } => {
                matches!(app, Some(AppSaw::Clean(_))) && tgt == Some(&TargetSaw::Complete)
            }
            Plan::AppAbort => {
                app == Some(&AppSaw::Aborted)
                    && matches!(tgt, Some(TargetSaw::Short(_) | TargetSaw::Error(..)))
            }
            Plan::TargetReset { .. } => failed && tgt == Some(&TargetSaw::ResetSent),
            Plan::DialFail { .. } => failed && tgt.is_none(),
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
    if wrong.is_empty() {
        let (clean, aborted, fail) = counts(plans);
        let detail = match failing {
            FailingEnd::Error => format!(
                "{clean} clean, {aborted} aborted by the app, {fail} failing with an error at the app"
            ),
            FailingEnd::ErrorOrEmpty => format!(
                "{clean} clean intact; {aborted} aborted by the app; {fail} failing ended with no answer byte"
            ),
        };
        return (true, detail);
    }
    let n_wrong: usize = wrong.values().map(|w| w.0).sum();
    let parts: Vec<String> = wrong
        .iter()
        .map(|(k, (n, first))| format!("{n}x {k} (first: {first})"))
        .collect();
    let detail = format!("{n_wrong} of {} streams: {}", plans.len(), parts.join("; "));
    (false, detail)
}

/// The application-abort streams whose target still waited on its request when the run
/// ended although the dialer (the proxy's remote end) had reset the connection: every
/// copy of that reset was lost on the link (real TCP only: a reset is never resent, and
/// a target that has answered and only reads sends nothing that would draw another; a
/// kernel target waits the same way, until its own timeout). Their entries in `log`
/// become a read error that names the lost resets, as the verdict counts it; returns
/// (tag, reset copies sent) for each. A target left waiting with no reset sent, or with
/// one that arrived, stays `Waiting` and fails the verdict.
pub fn target_resets_lost(
    resets: impl Fn(SocketAddrV4, SocketAddrV4) -> ResetCount,
    plans: &[Plan],
    log: &mut BTreeMap<u32, TargetSaw>,
) -> Vec<(u32, u32)> {
    let mut lost = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        let tag = i as u32;
        if *p != Plan::AppAbort {
            continue;
        }
        let Some(TargetSaw::Waiting {
            peer: SocketAddr::V4(peer),
            me: SocketAddr::V4(me),
        }) = log.get(&tag).cloned()
        else {
            continue;
        };
        let r = resets(peer, me);
        if r.all_lost() {
            let why = format!(
                "still reading: the remote sent {} resets, none arrived",
                r.sent
            );
            log.insert(tag, TargetSaw::Error(0, why));
            lost.push((tag, r.sent));
        }
    }
    lost
}

/// The detail for a verdict of [`target_resets_lost`]'s streams (empty when none).
pub fn target_lost_summary(lost: &[(u32, u32)]) -> String {
    if lost.is_empty() {
        return String::new();
    }
    let list: Vec<String> = lost
        .iter()
        .map(|(t, n)| format!("s{t:03} ({n} sent)"))
        .collect();
    format!(
        "; {} aborted streams left their target reading: the remote reset them and the link lost every copy ({})",
        lost.len(),
        list.join(", ")
    )
}

/// How many of `plans` are clean, aborted by the application, and meant to fail.
pub fn counts(plans: &[Plan]) -> (usize, usize, usize) {
    let clean = plans
        .iter()
        .filter(|p| matches!(p, Plan::Clean { .. }))
        .count();
    let aborted = plans.iter().filter(|p| **p == Plan::AppAbort).count();
    let failing = plans.iter().filter(|p| p.fails()).count();
    (clean, aborted, failing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: Plan = Plan::Clean {
        order: Order::RequestFirst,
        slow_app: false,
        slow_target: false,
    };
    const DIAL: Plan = Plan::DialFail {
        unknown_host: false,
    };

    fn judge(app: &[AppSaw], tgt: &[Option<TargetSaw>], failing: FailingEnd) -> (bool, String) {
        let plans = [CLEAN, DIAL];
        let app: BTreeMap<u32, AppSaw> =
            app.iter().cloned().zip(0..).map(|(a, i)| (i, a)).collect();
        let log: BTreeMap<u32, TargetSaw> = tgt
            .iter()
            .zip(0..)
            .filter_map(|(t, i)| t.clone().map(|t| (i, t)))
            .collect();
        ends_as_planned(&plans, &app, &log, failing)
    }

    #[test]
    fn a_failed_dial_may_end_empty_only_where_the_proxy_cannot_say_failed() {
        let complete = [Some(TargetSaw::Complete), None];
        let empty = [AppSaw::Clean(10), AppSaw::Clean(0)];
        let (ok, detail) = judge(&empty, &complete, FailingEnd::ErrorOrEmpty);
        assert!(ok, "{detail}");
        assert_eq!(
            detail,
            "1 clean intact; 0 aborted by the app; 1 failing ended with no answer byte"
        );
        let (ok, detail) = judge(&empty, &complete, FailingEnd::Error);
        assert!(!ok);
        assert!(
            detail.starts_with(
                "1 of 2 streams: 1x dial-fail (closed port) -> app clean end with no answer"
            ),
            "{detail}"
        );
        let errored = [AppSaw::Clean(10), AppSaw::Error("refused".into())];
        assert!(judge(&errored, &complete, FailingEnd::Error).0);
    }

    #[test]
    fn a_clean_stream_must_complete_at_both_ends_and_a_failing_one_must_not_be_dialed() {
        let errored = [AppSaw::Clean(10), AppSaw::Error("refused".into())];
        let short = [Some(TargetSaw::Short(3)), None];
        assert!(!judge(&errored, &short, FailingEnd::Error).0);
        let hung = [AppSaw::Hung, AppSaw::Error("refused".into())];
        let complete = [Some(TargetSaw::Complete), None];
        assert!(!judge(&hung, &complete, FailingEnd::Error).0);
        let dialed = [Some(TargetSaw::Complete), Some(TargetSaw::Complete)];
        assert!(!judge(&errored, &dialed, FailingEnd::ErrorOrEmpty).0);
    }

    #[test]
    fn an_aborted_streams_target_left_reading_passes_only_when_every_reset_was_lost() {
        let plans = [Plan::AppAbort, Plan::AppAbort, Plan::AppAbort, CLEAN];
        let waiting = |port: u16| TargetSaw::Waiting {
            peer: SocketAddr::from(([192, 168, 0, 1], port)),
            me: SocketAddr::from(([192, 168, 0, 2], 8000)),
        };
        // s000: three copies sent, none arrived; s001: one arrived; s002: none sent;
        // s003 is clean and waiting (never excused).
        let resets = |peer: SocketAddrV4, _me: SocketAddrV4| match peer.port() {
            1 | 4 => ResetCount {
                sent: 3,
                arrived: 0,
            },
            2 => ResetCount {
                sent: 3,
                arrived: 1,
            },
            _ => ResetCount::default(),
        };
        let mut log: BTreeMap<u32, TargetSaw> =
            (0..4).map(|t| (t, waiting(t as u16 + 1))).collect();
        let lost = target_resets_lost(resets, &plans, &mut log);
        assert_eq!(lost, vec![(0, 3)]);
        assert!(
            matches!(&log[&0], TargetSaw::Error(0, why) if why.contains("3 resets, none arrived"))
        );
        for t in 1..4 {
            assert_eq!(log[&t], waiting(t as u16 + 1), "s{t}");
        }
        let app: BTreeMap<u32, AppSaw> = (0..3).map(|t| (t, AppSaw::Aborted)).collect();
        let (ok, detail) = ends_as_planned(&plans[..3], &app, &log, FailingEnd::Error);
        assert!(!ok);
        assert!(detail.starts_with("2 of 3 streams"), "{detail}");
        assert!(target_lost_summary(&lost).contains("1 aborted streams left their target reading"),);
        assert_eq!(target_lost_summary(&[]), "");
    }
}
