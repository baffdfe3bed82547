//! Runs the fullcone cases: the T1-T4 survey once, then each case judged from it, and the
//! timer cases on associations of their own.

use std::time::Duration;

use tokio::time::Instant;

use super::cases::{self, classify, Behaviour, Body, Case, Timers};
use super::survey::{self, Setup, Survey};
use crate::framework::{self, Report, Verdict};

/// A run's report and the NAT behaviour the survey showed.
pub struct FullconeReport {
    /// Per case.
    pub report: Report,
    /// What T1-T4 add up to (`None` when the survey could not finish).
    pub behaviour: Option<Behaviour>,
    /// The raw observations.
    pub survey: Survey,
}

/// The ids matching `patterns`; empty selects all.
pub fn select(patterns: &[String]) -> Result<Vec<&'static str>, String> {
    let ids: Vec<&'static str> = cases::all().iter().map(|c| c.id).collect();
    framework::select(&ids, patterns)
}

/// Runs the chosen cases (all when `chosen` is empty).
pub async fn run(
    setup: Setup,
    timers: Timers,
    chosen: Vec<&'static str>,
    progress: impl FnMut(&framework::CaseReport),
) -> FullconeReport {
    let started = Instant::now();
    let list: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| chosen.is_empty() || chosen.contains(&c.id))
        .collect();
    let needs_survey = list.iter().any(|c| matches!(c.body, Body::Survey(_)));
    let v = if needs_survey {
        survey::survey(&setup).await
    } else {
        Survey::default()
    };
    let limit_for = |extra: Duration| setup.wait * 30 + extra + Duration::from_secs(5);
    let longest = timers
        .mapping_timeout
        .map(|t| t * 3)
        .unwrap_or_default()
        .max(timers.idle.unwrap_or_default());
    let play = |c: &Case| {
        let (body, v, s) = (c.body, v.clone(), setup.clone());
        async move {
            match body {
                Body::Survey(f) => f(&v),
                Body::Refresh => match timers.mapping_timeout {
                    None => Ok(Verdict::NotApplicable(
                        "needs the proxy's mapping timeout (--mapping-timeout SECS)".into(),
                    )),
                    Some(t) => survey::refresh(&s, t).await.map(Verdict::Pass),
                },
                Body::Idle => match timers.idle {
                    None => Ok(Verdict::NotApplicable(
                        "needs an idle time (--idle SECS; 119 checks RFC 4787's 120 s floor)"
                            .into(),
                    )),
                    Some(i) => survey::idle(&s, i).await.map(|d| {
                        if i < Duration::from_secs(119) {
                            Verdict::Pass(format!("{d} (shorter than RFC 4787's 120 s floor)"))
                        } else {
                            Verdict::Pass(d)
                        }
                    }),
                },
            }
        }
    };
    let out = framework::run_cases(&list, true, limit_for(longest), play, progress).await;
    FullconeReport {
        report: Report {
            target: format!("socks5://{}", setup.socks),
            strict: true,
            wait: setup.wait,
            cases: out,
            elapsed: started.elapsed(),
        },
        behaviour: classify(&v),
        survey: v,
    }
}
