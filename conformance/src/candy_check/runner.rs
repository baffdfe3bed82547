//! Plays the selected cases one after another against the server, each with fake
//! clients of its own and under a time limit (through [`crate::framework::run_cases`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::cases::{self, Case};
use super::ctx::{CheckConfig, Ctx};
use crate::framework::{self, CaseReport, Report};

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
    let started = Instant::now();
    let all = cases::all();
    let index = |id: &str| all.iter().position(|c| c.id == id).unwrap_or(0) as u32;
    let chosen: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| cfg.cases.is_empty() || cfg.cases.contains(&c.id))
        .collect();
    // A server that cannot be reached fails every case at once, with the reason.
    let probe = Ctx::new(cfg.clone(), "preflight", 0);
    let unreachable = probe.connect().await.err();
    let limit = cfg.wait * 10 + Duration::from_secs(2);
    let play = |case: &Case| {
        let ctx = Arc::new(Ctx::new(cfg.clone(), case.id, index(case.id)));
        let unreachable = unreachable.clone();
        let body = case.body;
        async move {
            match unreachable {
                Some(e) => Err(e),
                None => body(ctx).await,
            }
        }
    };
    let out = framework::run_cases(&chosen, cfg.strict, limit, play, progress).await;
    Report {
        target: cfg.server.to_url(),
        strict: cfg.strict,
        wait: cfg.wait,
        cases: out,
        elapsed: started.elapsed(),
    }
}
