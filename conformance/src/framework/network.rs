//! The runner every checker against a live peer shares (`check pong`, `check vless`, ...):
//! one preflight connection first, so an unreachable peer is said once per case at once
//! instead of waiting out every case; then each case on a context of its own through
//! [`run_cases`], under an outer time limit; then the [`Report`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::case::Case;
use super::report::{CaseReport, Outcome, Report};
use super::runner::run_cases;

/// What a case body returns.
pub type CaseFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A case body that plays against the peer through its context `X`.
pub type CaseBody<X> = fn(Arc<X>) -> CaseFuture;

/// How one run against a peer is set up.
#[derive(Clone, Debug)]
pub struct NetworkRun {
    /// The checker's name for logs ("pong check").
    pub checker: &'static str,
    /// The peer as the report names it.
    pub target: String,
    /// SHOULD failures FAIL instead of WARN.
    pub strict: bool,
    /// The per-wait bound the cases use (reported).
    pub wait: Duration,
    /// The outer limit per case: it only catches a case that chains too many waits (or
    /// a bug), since every wait inside a case is bounded by `wait`.
    pub limit: Duration,
}

/// Plays `cases` against the peer: `preflight` first (an error fails every case at once
/// with that message), then each case with the context `ctx(id)` makes for it.
pub async fn run_network<X, P>(
    run: NetworkRun,
    cases: &[Case<CaseBody<X>>],
    ctx: impl Fn(&'static str) -> X,
    preflight: P,
    progress: impl FnMut(&CaseReport),
) -> Report
where
    X: Send + Sync + 'static,
    P: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let unreachable = preflight.await.err();
    if let Some(e) = &unreachable {
        tracing::warn!("{}: {e}", run.checker);
    }
    let play = |case: &Case<CaseBody<X>>| {
        let ctx = Arc::new(ctx(case.id));
        let unreachable = unreachable.clone();
        let body = case.body;
        async move {
            match unreachable {
                Some(e) => Err(e),
                None => body(ctx).await,
            }
        }
    };
    let out = run_cases(cases, run.strict, run.limit, play, progress).await;
    Report {
        target: run.target,
        strict: run.strict,
        wait: run.wait,
        cases: out,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{Level, Status, Verdict};

    struct Ctx {
        id: &'static str,
    }

    fn pass(ctx: Arc<Ctx>) -> CaseFuture {
        Box::pin(async move { Ok(Verdict::Pass(format!("ran as {}", ctx.id))) })
    }

    fn cases() -> Vec<Case<CaseBody<Ctx>>> {
        ["T-N-ONE", "T-N-TWO"]
            .into_iter()
            .map(|id| Case {
                id,
                level: Level::Must,
                source: "tunnelbed",
                clause: "test",
                differs: None,
                body: pass as CaseBody<Ctx>,
            })
            .collect()
    }

    fn run() -> NetworkRun {
        NetworkRun {
            checker: "test check",
            target: "peer".into(),
            strict: true,
            wait: Duration::from_millis(100),
            limit: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn each_case_gets_its_own_context_and_the_report_names_the_target() {
        let r = run_network(run(), &cases(), |id| Ctx { id }, async { Ok(()) }, |_| {}).await;
        assert_eq!(r.target, "peer");
        let lines: Vec<(Status, &str)> = r.cases.iter().map(|c| (c.status, &*c.detail)).collect();
        assert_eq!(
            lines,
            [
                (Status::Pass, "ran as T-N-ONE"),
                (Status::Pass, "ran as T-N-TWO")
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_preflight_fails_every_case_with_its_message_without_running_them() {
        let r = run_network(
            run(),
            &cases(),
            |id| Ctx { id },
            async { Err("connection refused".to_string()) },
            |_| {},
        )
        .await;
        assert!(r
            .cases
            .iter()
            .all(|c| c.status == Status::Fail && c.detail.contains("connection refused")));
    }
}
