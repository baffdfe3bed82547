//! Plays the selected cases one after another against the server, each on connections of
//! its own and under a time limit (through [`crate::framework::run_network`]), and gathers
//! the [`Report`].

use std::time::Duration;

use super::cases::{self, Case};
use super::ctx::{CheckConfig, Ctx};
use crate::framework::{self, CaseReport, NetworkRun, Report};

/// The ids matching `patterns` (an exact id, or a prefix up to a `-`); empty selects all.
pub fn select(patterns: &[String]) -> Result<Vec<&'static str>, String> {
    let ids: Vec<&'static str> = cases::all().iter().map(|c| c.id).collect();
    framework::select(&ids, patterns)
}

/// Runs the chosen cases (all when `cfg.cases` is empty) and reports.
pub async fn run(cfg: CheckConfig) -> Report {
    run_with(cfg, |_| {}).await
}

/// Like [`run`], calling `progress` after each case.
pub async fn run_with(cfg: CheckConfig, progress: impl FnMut(&CaseReport)) -> Report {
    let chosen: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| cfg.cases.is_empty() || cfg.cases.contains(&c.id))
        .collect();
    let run = NetworkRun {
        checker: "vless check",
        target: cfg.server.to_string(),
        strict: cfg.strict,
        wait: cfg.wait,
        limit: cfg.wait * 8 + Duration::from_secs(2),
    };
    let probe = Ctx {
        cfg: cfg.clone(),
        id: "preflight",
    };
    let preflight = async move { probe.conn().await.map(|_| ()) };
    let ctx = |id| Ctx {
        cfg: cfg.clone(),
        id,
    };
    framework::run_network(run, &chosen, ctx, preflight, progress).await
}
