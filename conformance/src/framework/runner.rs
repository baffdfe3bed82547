//! Plays cases one after another, each in its own task under a time limit, and turns
//! what each body concludes into its report line.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::case::Case;
use super::report::{CaseReport, Outcome};
use super::text::secs;

/// Plays every case of `cases` with `play`, in order. Each play runs in a task of its
/// own under `limit` (a body that panics, or runs past the limit, is a failure that says
/// so; it never takes the run down). `strict` makes SHOULD failures FAIL instead of WARN.
/// `progress` sees each line as it is made.
pub async fn run_cases<B, F, Fut>(
    cases: &[Case<B>],
    strict: bool,
    limit: Duration,
    mut play: F,
    mut progress: impl FnMut(&CaseReport),
) -> Vec<CaseReport>
where
    F: FnMut(&Case<B>) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut out = Vec::with_capacity(cases.len());
    for case in cases {
        let t0 = Instant::now();
        let task = tokio::spawn(play(case));
        let abort = task.abort_handle();
        let outcome = match tokio::time::timeout(limit, task).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => Err(format!("checker error: the case task failed: {e}")),
            Err(_) => {
                abort.abort();
                Err(format!("the case did not finish within {}", secs(limit)))
            }
        };
        let r = CaseReport::new(case, outcome, strict, t0.elapsed());
        tracing::info!(
            "{} {} ({} ms): {}",
            r.id,
            r.status.name(),
            r.elapsed.as_millis(),
            r.detail
        );
        progress(&r);
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{Level, Status, Verdict};

    fn case(id: &'static str, level: Level, body: u8) -> Case<u8> {
        Case {
            id,
            level,
            source: "tunnelbed",
            clause: "test",
            differs: None,
            body,
        }
    }

    #[tokio::test]
    async fn bodies_that_fail_hang_or_panic_are_reported_not_fatal() {
        let cases = [
            case("T-A-PASS", Level::Must, 0),
            case("T-A-FAIL", Level::Should, 1),
            case("T-A-HANG", Level::Must, 2),
            case("T-A-PANIC", Level::Must, 3),
        ];
        let mut seen = Vec::new();
        let out = run_cases(
            &cases,
            false,
            Duration::from_millis(300),
            |c| {
                let b = c.body;
                async move {
                    match b {
                        0 => Ok(Verdict::Pass("ok".into())),
                        1 => Err("differs".into()),
                        2 => std::future::pending().await,
                        _ => panic!("body bug"),
                    }
                }
            },
            |r| seen.push(r.id),
        )
        .await;
        let st: Vec<Status> = out.iter().map(|r| r.status).collect();
        assert_eq!(st, [Status::Pass, Status::Warn, Status::Fail, Status::Fail]);
        assert!(out[2].detail.contains("did not finish within 300ms"));
        assert!(out[3].detail.contains("case task failed"));
        assert_eq!(seen, ["T-A-PASS", "T-A-FAIL", "T-A-HANG", "T-A-PANIC"]);
    }
}
