//! Plays the selected cases one after another against the remote, each on its own
//! connection and under a time limit (through [`crate::framework::run_cases`]), and
//! gathers the [`Report`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::cases::{self, Case};
use super::ctx::{CheckConfig, Ctx};
use crate::framework::{self, CaseReport, Report};

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
    let started = Instant::now();
    let chosen: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| cfg.cases.is_empty() || cfg.cases.contains(&c.id))
        .collect();
    // One connection first: if the carrier cannot be set up at all, say so once per
    // case at once instead of waiting out every case.
    let probe = Ctx {
        cfg: cfg.clone(),
        id: "preflight",
    };
    let unreachable = probe.carrier().await.err();
    if let Some(e) = &unreachable {
        tracing::warn!("pong check: {e}");
    }
    // Every wait inside a case is bounded by `wait`; this outer limit only catches a case
    // that chains too many of them (or a bug).
    let limit = cfg.wait * 6 + Duration::from_secs(2);
    let play = |case: &Case| {
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            id: case.id,
        });
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
        target: cfg.remote.to_string(),
        strict: cfg.strict,
        wait: cfg.wait,
        cases: out,
        elapsed: started.elapsed(),
    }
}
