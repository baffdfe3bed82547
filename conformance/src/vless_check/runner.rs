//! Plays the selected cases one after another against the server, each on connections of
//! its own and under a time limit (through [`crate::framework::run_cases`]), and gathers
//! the [`Report`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::cases::{self, Case};
use super::ctx::{CheckConfig, Ctx};
use crate::framework::{self, CaseReport, Report};

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
    let started = Instant::now();
    let chosen: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| cfg.cases.is_empty() || cfg.cases.contains(&c.id))
        .collect();
    // One connection first: an unreachable server is said once per case at once.
    let probe = Ctx {
        cfg: cfg.clone(),
        id: "preflight",
    };
    let unreachable = probe.conn().await.err();
    if let Some(e) = &unreachable {
        tracing::warn!("vless check: {e}");
    }
    let limit = cfg.wait * 8 + Duration::from_secs(2);
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
        target: cfg.server.to_string(),
        strict: cfg.strict,
        wait: cfg.wait,
        cases: out,
        elapsed: started.elapsed(),
    }
}
