//! Sweeps: one scenario over a set of seeds on every core, collecting the failures and
//! a small record of every run; and the deterministic split of a seed range into shards
//! that separate machines run (`sim sweep --shard K/N`).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::realtcp::TcpMode;
use crate::record::RunRecord;
use crate::scenario::{run, RunConfig, RunReport, Scenario};

/// The seeds of `range` that shard `k` of `n` runs: every `n`-th seed starting at the
/// `k`-th (0-based), so slow and fast seeds spread evenly and the `n` shards together
/// cover the range exactly once. Empty when `k >= n` or `n == 0`.
pub fn shard_seeds(range: Range<u64>, k: u64, n: u64) -> Vec<u64> {
    if n == 0 || k >= n {
        return Vec::new();
    }
    range
        .clone()
        .filter(|s| (s - range.start) % n == k)
        .collect()
}

/// What a sweep found.
#[derive(Clone, Debug, Default)]
pub struct SweepResult {
    /// Runs completed.
    pub runs: u64,
    /// Failing runs, in seed order.
    pub failures: Vec<RunReport>,
    /// Every run's record, in seed order.
    pub records: Vec<RunRecord>,
}

/// Runs `scenario` for every seed in `seeds` on `jobs` threads; `progress` is called
/// after each run with the number done. Each simulation stays on one thread.
pub fn sweep(
    scenario: &Scenario,
    seeds: &[u64],
    profile: &str,
    jobs: usize,
    sabotage: Option<crate::sabotage::Sabotage>,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<SweepResult> {
    sweep_tcp(
        scenario,
        seeds,
        profile,
        TcpMode::Ideal,
        jobs,
        sabotage,
        progress,
    )
}

/// [`sweep`] with a choice of TCP (see [`crate::realtcp`]).
pub fn sweep_tcp(
    scenario: &Scenario,
    seeds: &[u64],
    profile: &str,
    tcp: TcpMode,
    jobs: usize,
    sabotage: Option<crate::sabotage::Sabotage>,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<SweepResult> {
    // Fail on a bad profile before spawning anything.
    crate::profile::params(profile, 0)
        .ok_or_else(|| anyhow::anyhow!("unknown profile {profile:?}"))?;
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let records = Arc::new(Mutex::new(Vec::with_capacity(seeds.len())));
    let jobs = jobs.max(1);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = seeds.get(i as usize) else {
                    break;
                };
                let cfg = RunConfig {
                    seed,
                    profile: profile.to_string(),
                    capture: false,
                    sabotage,
                    tcp,
                };
                let report = match run(scenario, &cfg) {
                    Ok(r) => r,
                    Err(e) => RunReport {
                        scenario: scenario.name.into(),
                        seed,
                        profile: profile.into(),
                        checks: vec![],
                        metrics: vec![],
                        link: Default::default(),
                        trace_hash: String::new(),
                        trace: String::new(),
                        pcap: None,
                        sim_time: Default::default(),
                        error: Some(e.to_string()),
                        sabotage,
                        tcp,
                    },
                };
                records
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(RunRecord::from_report(&report));
                if !report.ok() {
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(report);
                }
                let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                progress(d);
            });
        }
    });
    let mut failures = Arc::try_unwrap(failures)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default();
    failures.sort_by_key(|r| r.seed);
    let mut records = Arc::try_unwrap(records)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default();
    records.sort_by_key(|r| r.seed);
    Ok(SweepResult {
        runs: done.load(Ordering::SeqCst),
        failures,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_range_once() {
        let mut all: Vec<u64> = (0..4).flat_map(|k| shard_seeds(10..2010, k, 4)).collect();
        assert_eq!(shard_seeds(10..2010, 1, 4)[..3], [11, 15, 19]);
        all.sort();
        assert_eq!(all, (10..2010).collect::<Vec<_>>());
        assert!(shard_seeds(0..10, 4, 4).is_empty());
        assert!(shard_seeds(0..10, 0, 0).is_empty());
        assert_eq!(shard_seeds(0..3, 2, 5), vec![2]);
    }
}
