//! Plays the selected cases one after another against the server, each with fake
//! clients of its own and under a time limit (through [`crate::framework::run_network`]).

use std::time::Duration;

use super::cases::{self, Case};
use super::ctx::{CheckConfig, Ctx};
use crate::framework::{self, CaseReport, NetworkRun, Report};

/// The ids matching `patterns` (exact ids or prefixes up to a `-`, case-insensitive).
pub fn select(patterns: &[String]) -> Result<Vec<&'static str>, String> {
    let ids: Vec<&'static str> = cases::all().iter().map(|c| c.id).collect();
    framework::select(&ids, patterns)
}

/// Runs the chosen cases and reports.
pub async fn run(cfg: CheckConfig) -> Report {
    run_with(cfg, |_| {}).await
}

/// Like [`run`], calling `progress` after each case.
pub async fn run_with(cfg: CheckConfig, progress: impl FnMut(&CaseReport)) -> Report {
    let all = cases::all();
    let index = |id: &str| all.iter().position(|c| c.id == id).unwrap_or(0) as u32;
    let chosen: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| cfg.cases.is_empty() || cfg.cases.contains(&c.id))
        .collect();
    let run = NetworkRun {
        checker: "candy check",
        target: cfg.server.to_url(),
        strict: cfg.strict,
        wait: cfg.wait,
        limit: cfg.wait * 10 + Duration::from_secs(2),
    };
    // A server that cannot be reached fails every case at once, with the reason.
    let probe = Ctx::new(cfg.clone(), "preflight", 0);
    let preflight = async move { probe.connect().await.map(|_| ()) };
    let ctx = |id| Ctx::new(cfg.clone(), id, index(id));
    framework::run_network(run, &chosen, ctx, preflight, progress).await
}
