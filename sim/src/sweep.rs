//! Sweeps: one scenario over a range of seeds on every core, collecting the failures.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::scenario::{run, RunConfig, RunReport, Scenario};

/// What a sweep found.
#[derive(Clone, Debug, Default)]
pub struct SweepResult {
    /// Runs completed.
    pub runs: u64,
    /// Failing runs, in seed order.
    pub failures: Vec<RunReport>,
}

/// Runs `scenario` for every seed in `seeds` on `jobs` threads; `progress` is called
/// after each run with the number done. Each simulation stays on one thread.
pub fn sweep(
    scenario: &Scenario,
    seeds: Range<u64>,
    profile: &str,
    jobs: usize,
    sabotage: Option<crate::sabotage::Sabotage>,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<SweepResult> {
    // Fail on a bad profile before spawning anything.
    crate::profile::params(profile, 0)
        .ok_or_else(|| anyhow::anyhow!("unknown profile {profile:?}"))?;
    let next = AtomicU64::new(seeds.start);
    let done = AtomicU64::new(0);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let jobs = jobs.max(1);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= seeds.end {
                    break;
                }
                let cfg = RunConfig {
                    seed,
                    profile: profile.to_string(),
                    capture: false,
                    sabotage,
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
                    },
                };
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
    Ok(SweepResult {
        runs: done.load(Ordering::SeqCst),
        failures,
    })
}
