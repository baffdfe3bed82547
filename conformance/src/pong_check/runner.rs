//! Plays the selected cases one after another against the remote, each on its own
//! connection and under a time limit (through [`crate::framework::run_network`]), and
//! gathers the [`Report`].

use std::time::Duration;

use super::cases::{self, Case};
use super::ctx::{CheckConfig, Ctx};
use crate::framework::{self, CaseReport, NetworkRun, Report};

/// The ids matching `patterns`: an exact id, or a prefix up to a `-` (`PONG-RST` selects
/// every `PONG-RST-...`), case-insensitive. Empty patterns select every case. An unknown
/// pattern is an error that lists the ids.
pub fn select(patterns: &[String]) -> Result<Vec<&'static str>, String> {
    let ids: Vec<&'static str> = cases::all().iter().map(|c| c.id).collect();
    framework::select(&ids, patterns)
}

/// Runs the chosen cases (all when `cfg.cases` is empty) and reports. Never panics on
/// anything the remote does: each case runs in its own task under a time limit.
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
        checker: "pong check",
        target: cfg.remote.to_string(),
        strict: cfg.strict,
        wait: cfg.wait,
        limit: cfg.wait * 6 + Duration::from_secs(2),
    };
    let probe = Ctx {
        cfg: cfg.clone(),
        id: "preflight",
    };
    let preflight = async move { probe.carrier().await.map(|_| ()) };
    let ctx = |id| Ctx {
        cfg: cfg.clone(),
        id,
    };
    framework::run_network(run, &chosen, ctx, preflight, progress).await
}
