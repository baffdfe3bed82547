//! The KCP benchmark: our [`tunnelbed_kcp::Kcp`] against crate `kcp` (a Rust port of the
//! reference ikcp) over the same simulated links, with the same knobs, seeds and payload,
//! alternating which runs first; medians over repetitions and ratios ours/reference.

use std::fmt::Write as _;
use std::time::Duration;

use tunnelbed_sim::link::LinkParams;
use tunnelbed_sim::profile;

use super::kcp_port::{Knobs, OursArq, PortArq};
use super::link_loop::{transfer, Arq, Transfer, Workload};
use super::report::{opening, RunFacts};
use super::stats::{median, percentile};

/// Link profiles the benchmark knows, in the default order.
pub const PROFILES: &[&str] = &["clean", "loss1", "loss10", "reorder", "lossy", "hostile"];

/// The link parameters of a benchmark profile: the simulator's named profiles plus two
/// pure i.i.d. loss links (`loss1`, `loss10`: 20 ms one way, 1% / 10% loss, nothing else),
/// so loss recovery is measured without jitter, caps or duplication in the way, and
/// `reorder` (20 ms plus up to 20 ms jitter, no loss), where every retransmission is
/// spurious.
pub fn link_profile(name: &str) -> Option<LinkParams> {
    let iid = |loss: f64| LinkParams {
        latency: Duration::from_millis(20),
        loss,
        ..LinkParams::default()
    };
    match name {
        "loss1" => Some(iid(0.01)),
        "loss10" => Some(iid(0.10)),
        "reorder" => Some(LinkParams {
            jitter: Duration::from_millis(20),
            ..iid(0.0)
        }),
        "swarm" => None,
        n => profile::params(n, 0),
    }
}

/// The two implementations compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// tunnelbed's KCP (protocols/kcp).
    Ours,
    /// Crate `kcp` 0.6, the Rust port of ikcp.
    Reference,
}

impl Impl {
    /// Name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Impl::Ours => "tunnelbed-kcp (ours)",
            Impl::Reference => "crate kcp 0.6 (ref)",
        }
    }
}

/// Everything one benchmark invocation runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Knobs applied to both implementations.
    pub knobs: Knobs,
    /// Profiles by name, with their parameters.
    pub profiles: Vec<(String, LinkParams)>,
    /// Bytes per transfer.
    pub bytes: usize,
    /// Message (or write) size.
    pub msg_size: usize,
    /// Repetitions per profile and implementation (repetition r uses seed `seed + r`).
    pub reps: u32,
    /// First link seed.
    pub seed: u64,
    /// Virtual-time limit per transfer.
    pub limit: Duration,
}

impl Plan {
    /// Checks the plan before running anything, so mistakes fail fast with a clear message.
    pub fn validate(&self) -> anyhow::Result<()> {
        let k = &self.knobs;
        anyhow::ensure!(self.reps >= 1, "--reps must be at least 1");
        anyhow::ensure!(self.bytes >= 1, "--bytes must be at least 1");
        anyhow::ensure!(self.msg_size >= 1, "--size must be at least 1");
        anyhow::ensure!(k.mtu >= 50, "--mtu must be at least 50 (ikcp's minimum)");
        anyhow::ensure!(k.snd_wnd >= 1, "--snd-wnd must be at least 1");
        anyhow::ensure!(
            (10..=5000).contains(&k.interval),
            "--interval must be within 10..=5000 ms (ikcp clamps it; crate kcp too)"
        );
        if !k.stream {
            let frags = self.msg_size.div_ceil(k.mtu - 24);
            anyhow::ensure!(
                frags < 128,
                "--size {} needs {frags} fragments at mtu {}; message mode allows at most 127",
                self.msg_size,
                k.mtu
            );
        }
        for (name, p) in &self.profiles {
            anyhow::ensure!(
                k.mtu <= p.mtu,
                "--mtu {} is larger than profile {name}'s link MTU {}: every full datagram would be dropped",
                k.mtu,
                p.mtu
            );
        }
        Ok(())
    }

    /// Number of timed transfers (for a progress bar).
    pub fn runs(&self) -> u64 {
        self.profiles.len() as u64 * self.reps as u64 * 2
    }
}

/// One timed transfer.
#[derive(Clone, Debug)]
pub struct Run {
    /// Profile name.
    pub profile: String,
    /// Repetition index.
    pub rep: u32,
    /// Link seed.
    pub seed: u64,
    /// Implementation.
    pub imp: Impl,
    /// What happened.
    pub t: Transfer,
}

/// A deterministic, incompressible payload (splitmix64), the same for every run.
pub fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        v.extend_from_slice(&z.to_le_bytes());
    }
    v.truncate(len);
    v
}

const CONV: u32 = 0x7462_6b63;

fn one(imp: Impl, k: &Knobs, p: &LinkParams, seed: u64, w: &Workload) -> anyhow::Result<Transfer> {
    let t = match imp {
        Impl::Ours => {
            let (mut a, mut b) = (OursArq::new(CONV, k), OursArq::new(CONV, k));
            transfer(&mut a as &mut dyn Arq, &mut b, p, seed, w)
        }
        Impl::Reference => {
            let (mut a, mut b) = (PortArq::new(CONV, k)?, PortArq::new(CONV, k)?);
            transfer(&mut a as &mut dyn Arq, &mut b, p, seed, w)
        }
    };
    Ok(t)
}

/// Runs the plan: a short untimed warm-up of each implementation, then for every profile
/// and repetition both implementations on the same seed, alternating which goes first.
/// `progress` is told before each run what is about to run.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Vec<Run>> {
    plan.validate()?;
    let k = plan.knobs;
    let data = payload(plan.bytes);
    let mut w = Workload {
        payload: data,
        msg_size: plan.msg_size,
        message_mode: !k.stream,
        app_window: k.snd_wnd as usize,
        limit: plan.limit,
    };
    if let Some((_, p)) = plan.profiles.first() {
        let warm = Workload {
            payload: w.payload[..w.payload.len().min(1 << 20)].to_vec(),
            ..w.clone()
        };
        progress("warm-up");
        for imp in [Impl::Ours, Impl::Reference] {
            one(imp, &k, p, plan.seed, &warm)?;
        }
    }
    let mut runs = Vec::new();
    for (name, p) in &plan.profiles {
        for rep in 0..plan.reps {
            let seed = plan.seed + rep as u64;
            let order = if rep % 2 == 0 {
                [Impl::Ours, Impl::Reference]
            } else {
                [Impl::Reference, Impl::Ours]
            };
            for imp in order {
                progress(&format!("{name} rep {} {}", rep + 1, imp.label()));
                let t = one(imp, &k, p, seed, &w)?;
                runs.push(Run {
                    profile: name.clone(),
                    rep,
                    seed,
                    imp,
                    t,
                });
            }
        }
    }
    w.payload = Vec::new();
    Ok(runs)
}

/// Medians over the repetitions of one implementation on one profile.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Goodput, MB/s (10^6 bytes) of virtual time.
    pub goodput_mbs: f64,
    /// Median message latency, ms.
    pub p50_ms: f64,
    /// 99th-percentile message latency, ms.
    pub p99_ms: f64,
    /// Time inside the implementation (both ends) per MB delivered, ms.
    pub cpu_ms_per_mb: f64,
    /// Thread CPU of the whole run (harness included) per MB delivered, ms.
    pub run_cpu_ms_per_mb: Option<f64>,
    /// Datagrams the sender emitted per MB delivered.
    pub datagrams_per_mb: f64,
    /// Data segments sent again per MB delivered.
    pub retransmits_per_mb: f64,
    /// Runs that delivered everything intact.
    pub intact: u32,
    /// Runs.
    pub runs: u32,
}

/// The p-th percentile of a transfer's delivery latencies, in ms.
fn latency_ms(t: &Transfer, p: f64) -> f64 {
    let us: Vec<f64> = t.latencies_us.iter().map(|&u| u as f64).collect();
    percentile(&us, p) / 1e3
}

fn per_mb(d: Duration, bytes: u64) -> f64 {
    if bytes == 0 {
        f64::NAN
    } else {
        d.as_secs_f64() * 1e3 / (bytes as f64 / 1e6)
    }
}

/// Summarises the runs of `imp` on `profile`.
pub fn summarize(runs: &[Run], profile: &str, imp: Impl) -> Summary {
    let rs: Vec<&Run> = runs
        .iter()
        .filter(|r| r.profile == profile && r.imp == imp)
        .collect();
    let m = |f: &dyn Fn(&Run) -> f64| median(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
    let run_cpu: Vec<f64> = rs
        .iter()
        .filter_map(|r| r.t.run_cpu.map(|c| per_mb(c, r.t.bytes)))
        .collect();
    Summary {
        goodput_mbs: m(&|r| r.t.goodput() / 1e6),
        p50_ms: m(&|r| latency_ms(&r.t, 50.0)),
        p99_ms: m(&|r| latency_ms(&r.t, 99.0)),
        cpu_ms_per_mb: m(&|r| per_mb(r.t.impl_cpu(), r.t.bytes)),
        run_cpu_ms_per_mb: (run_cpu.len() == rs.len() && !rs.is_empty()).then(|| median(&run_cpu)),
        datagrams_per_mb: m(&|r| r.t.datagrams_ab as f64 / (r.t.bytes.max(1) as f64 / 1e6)),
        retransmits_per_mb: m(&|r| r.t.retransmits as f64 / (r.t.bytes.max(1) as f64 / 1e6)),
        intact: rs.iter().filter(|r| r.t.intact).count() as u32,
        runs: rs.len() as u32,
    }
}

/// Ours divided by reference, for one metric.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "n/a".into())
}

/// The results table (Markdown): per profile one row per implementation and a row of
/// ratios ours/reference.
pub fn table(plan: &Plan, runs: &[Run]) -> String {
    let mut s = String::new();
    s.push_str(
        "| profile | implementation | goodput (MB/s) | p50 latency (ms) | p99 latency (ms) | CPU in KCP (ms/MB) | run CPU (ms/MB) | datagrams sent/MB | retransmits/MB | intact |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (name, _) in &plan.profiles {
        let o = summarize(runs, name, Impl::Ours);
        let r = summarize(runs, name, Impl::Reference);
        for (imp, x) in [(Impl::Ours, &o), (Impl::Reference, &r)] {
            let _ = writeln!(
                s,
                "| {name} | {} | {:.2} | {:.1} | {:.1} | {:.2} | {} | {:.0} | {:.0} | {}/{} |",
                imp.label(),
                x.goodput_mbs,
                x.p50_ms,
                x.p99_ms,
                x.cpu_ms_per_mb,
                opt(x.run_cpu_ms_per_mb, 2),
                x.datagrams_per_mb,
                x.retransmits_per_mb,
                x.intact,
                x.runs
            );
        }
        let run_cpu = match (o.run_cpu_ms_per_mb, r.run_cpu_ms_per_mb) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {name} | **ours/ref** | **{}** | {} | {} | **{}** | {} | {} | {} | |",
            ratio(o.goodput_mbs, r.goodput_mbs),
            ratio(o.p50_ms, r.p50_ms),
            ratio(o.p99_ms, r.p99_ms),
            ratio(o.cpu_ms_per_mb, r.cpu_ms_per_mb),
            run_cpu,
            ratio(o.datagrams_per_mb, r.datagrams_per_mb),
            ratio(o.retransmits_per_mb, r.retransmits_per_mb),
        );
    }
    s
}

/// Every run, for readers who want the spread behind the medians (Markdown).
pub fn detail(runs: &[Run]) -> String {
    let mut s = String::from(
        "| profile | rep | seed | implementation | goodput (MB/s) | p50 (ms) | p99 (ms) | CPU in KCP (ms/MB) | run CPU (ms/MB) | datagrams | retransmits | lost on link | result |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in runs {
        let t = &r.t;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.2} | {} | {} | {} | {} | {} |",
            r.profile,
            r.rep + 1,
            r.seed,
            r.imp.label(),
            t.goodput() / 1e6,
            latency_ms(t, 50.0),
            latency_ms(t, 99.0),
            per_mb(t.impl_cpu(), t.bytes),
            opt(t.run_cpu.map(|c| per_mb(c, t.bytes)), 2),
            t.datagrams_ab + t.datagrams_ba,
            t.retransmits,
            t.link.dropped() + t.link.corrupted,
            if t.intact {
                "intact".to_string()
            } else {
                format!(
                    "NOT INTACT: {}",
                    t.problem.as_deref().unwrap_or("unknown problem")
                )
            }
        );
    }
    s
}

/// Transfers that were not intact, one line each (empty when all were).
pub fn failures(runs: &[Run]) -> Vec<String> {
    runs.iter()
        .filter(|r| !r.t.intact)
        .map(|r| {
            format!(
                "{} on {} (rep {}, seed {}): {}",
                r.imp.label(),
                r.profile,
                r.rep + 1,
                r.seed,
                r.t.problem.as_deref().unwrap_or("not intact")
            )
        })
        .collect()
}

/// The acceptance checks, as sentences: goodput at 10% loss at least the
/// reference's, and CPU per MB no worse, per profile.
pub fn verdicts(plan: &Plan, runs: &[Run]) -> Vec<String> {
    let mut v = Vec::new();
    for (name, _) in &plan.profiles {
        let o = summarize(runs, name, Impl::Ours);
        let r = summarize(runs, name, Impl::Reference);
        let g = o.goodput_mbs / r.goodput_mbs;
        let c = o.cpu_ms_per_mb / r.cpu_ms_per_mb;
        let pct = |x: f64| format!("{:+.1}%", (x - 1.0) * 100.0);
        v.push(format!(
            "{name}: goodput ours/ref {g:.3} ({} {}), CPU per MB ours/ref {c:.3} ({} {})",
            pct(g),
            if g > 1.0005 {
                "ours higher"
            } else if g >= 0.9995 {
                "equal within 0.05%"
            } else {
                "OURS LOWER"
            },
            pct(c),
            if c < 0.9995 {
                "ours lower"
            } else if c <= 1.0005 {
                "equal within 0.05%"
            } else {
                "OURS HIGHER"
            }
        ));
    }
    v
}

/// Goodput over loss rate per implementation, for the report's plot: one point per
/// profile whose only impairment is i.i.d. loss (no jitter, burst loss, duplication or
/// corruption: `clean`, `loss1`, `loss10`), at its loss rate.
pub fn goodput_series(plan: &Plan, runs: &[Run]) -> Vec<super::report::Series> {
    let loss_only: Vec<(&str, f64)> = plan
        .profiles
        .iter()
        .filter(|(_, p)| {
            p.jitter.is_zero() && p.burst.is_none() && p.duplicate == 0.0 && p.corrupt == 0.0
        })
        .map(|(n, p)| (n.as_str(), p.loss * 100.0))
        .collect();
    [Impl::Ours, Impl::Reference]
        .into_iter()
        .map(|imp| super::report::Series {
            name: imp.label().to_string(),
            points: loss_only
                .iter()
                .map(|(n, loss)| (*loss, summarize(runs, n, imp).goodput_mbs))
                .filter(|(_, g)| g.is_finite())
                .collect(),
        })
        .collect()
}

/// The Markdown report: the opening, knobs and method, the profiles, the median table,
/// the acceptance checks and every run. `elapsed` is the wall time of all transfers.
pub fn render(plan: &Plan, runs: &[Run], facts: &RunFacts, elapsed: Duration) -> String {
    let k = &plan.knobs;
    let table = table(plan, runs);
    let verdicts = verdicts(plan, runs);
    let failures = failures(runs);
    let mut s = opening("KCP benchmark: tunnelbed-kcp vs crate kcp 0.6", facts);
    s.push_str(&format!(
        "- knobs (both): nodelay {}, interval {} ms, resend {}, nc {}, snd_wnd {}, rcv_wnd {}, mtu {}, {} mode, writes of {} bytes, sender keeps waitsnd < {}; dead_link 20, fastlimit 5, minrto {} (defaults of both)\n",
        k.nodelay as u8,
        k.interval,
        k.resend,
        if k.nc { "on" } else { "off" },
        k.snd_wnd,
        k.rcv_wnd,
        k.mtu,
        if k.stream { "stream" } else { "message" },
        plan.msg_size,
        k.snd_wnd,
        if k.nodelay { 30 } else { 100 },
    ));
    s.push_str(&format!(
        "- workload: {} bytes per transfer (the same pseudo-random payload for both), {} repetitions per profile and implementation; repetition r uses link seed {}+r for both; ours and the reference alternate which runs first; one untimed warm-up each; {} transfers took {:.1}s of wall time\n",
        plan.bytes,
        plan.reps,
        plan.seed,
        runs.len(),
        elapsed.as_secs_f64()
    ));
    s.push_str(
        "- how: both ends of each transfer run in one thread in a discrete-event loop in virtual time over the simulator's link model (`tunnelbed_sim::link::LinkModel`), so both implementations see exactly the same link: loss, jitter and queueing are drawn per datagram index from the seed. Goodput and latency are in virtual time (deterministic per seed); latency is from the application's write to delivery of its last byte.\n",
    );
    s.push_str(
        "- CPU: **CPU in KCP** is the time spent inside the implementations' calls (both ends: send, input, update, check, recv, taking datagrams), measured with the monotonic clock (`Instant`, a vDSO call) around the block of calls of each event, then scaled by the run's thread CPU time over its wall time, which removes time the thread spent preempted by other processes (the loop is single-threaded and never blocks, so on an idle machine the scale is 1). **run CPU** is the thread's CPU time (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`) for the whole transfer, harness included (link model, event heap, byte checks: work that grows with the datagrams sent, so it penalises the side that sends more). Both per MB (10^6 bytes) delivered; medians over the repetitions.\n",
    );
    s.push_str(
        "- known behavioural difference: crate kcp 0.6, with its default features, counts a fast-ack for a segment only when the acknowledging segment was sent no earlier than it (`ts` check), which is ikcp's *optional* `IKCP_FASTACK_CONSERVE` behaviour; reference ikcp (and so ours, which is byte-identical to it) counts every later ack by default. Under reordering this makes ours fast-retransmit more (retransmits/MB) and changes goodput in both directions; crate kcp's `fastack-conserve` feature, despite its name, selects ikcp's default rule.\n",
    );
    s.push_str("\n## Profiles\n\n");
    for (name, p) in &plan.profiles {
        s.push_str(&format!("- `{name}`: {}\n", profile::describe(p)));
    }
    s.push_str("\n## Results (medians)\n\n");
    s.push_str(&table);
    s.push_str("\nRatios are ours/reference: above 1 is better for goodput, below 1 is better for latency and CPU.\n\n");
    s.push_str("## Acceptance checks\n\n");
    for v in &verdicts {
        s.push_str(&format!("- {v}\n"));
    }
    if failures.is_empty() {
        s.push_str(&format!(
            "- integrity: all {} transfers delivered every byte intact and in order\n",
            runs.len()
        ));
    } else {
        for f in &failures {
            s.push_str(&format!("- NOT INTACT: {f}\n"));
        }
    }
    s.push_str("\n## Every run\n\n");
    s.push_str(&detail(runs));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(stream: bool) -> Knobs {
        Knobs {
            nodelay: true,
            interval: 10,
            resend: 2,
            nc: true,
            snd_wnd: 128,
            rcv_wnd: 128,
            mtu: 1250,
            stream,
        }
    }

    /// Both implementations deliver intact on a lossy link, in both modes, and on a
    /// clean link with no jitter they behave identically (same datagram count).
    #[test]
    fn both_deliver_intact() {
        for stream in [false, true] {
            let plan = Plan {
                knobs: knobs(stream),
                profiles: ["clean", "loss10", "hostile"]
                    .iter()
                    .map(|n| (n.to_string(), link_profile(n).unwrap()))
                    .collect(),
                bytes: 200_000,
                msg_size: 3000,
                reps: 1,
                seed: 5,
                limit: Duration::from_secs(120),
            };
            let runs = run(&plan, &mut |_| {}).unwrap();
            assert_eq!(runs.len(), 6);
            assert!(failures(&runs).is_empty(), "{:?}", failures(&runs));
            let clean: Vec<_> = runs.iter().filter(|r| r.profile == "clean").collect();
            assert_eq!(clean[0].t.datagrams_ab, clean[1].t.datagrams_ab);
            assert!(table(&plan, &runs).contains("ours/ref"));
        }
    }

    #[test]
    fn validation_catches_mtu_and_fragments() {
        let mut plan = Plan {
            knobs: knobs(false),
            profiles: vec![("hostile".into(), link_profile("hostile").unwrap())],
            bytes: 1000,
            msg_size: 1000,
            reps: 1,
            seed: 0,
            limit: Duration::from_secs(1),
        };
        assert!(plan.validate().is_ok());
        plan.knobs.mtu = 1450;
        assert!(plan.validate().unwrap_err().to_string().contains("MTU"));
        plan.knobs.mtu = 1250;
        plan.msg_size = 1226 * 128;
        assert!(plan
            .validate()
            .unwrap_err()
            .to_string()
            .contains("fragments"));
    }
}
