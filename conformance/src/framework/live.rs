//! One runner for every checker against a live peer (`check pong`, `check vless`, `check
//! candy`): a checker says what its cases, settings, per-case context and preflight are
//! ([`LiveCheck`]), and [`Live`] selects, plays and reports them the same way for all
//! (through [`run_network`]).

use std::future::Future;
use std::marker::PhantomData;

use super::case::{select, Case};
use super::network::{run_network, CaseBody, NetworkRun};
use super::report::{CaseReport, Report};

/// How a checker against a live peer plugs into [`Live`]. Implemented on the context its
/// case bodies get, in the checker's `runner.rs` (which imports the cases; the cases
/// import only the context, so there is no import cycle).
pub trait LiveCheck: Sized + Send + Sync + 'static {
    /// The run's settings (the peer, strictness, the per-wait bound, chosen case ids).
    type Config: Clone;
    /// Every case, in report order.
    fn cases() -> Vec<Case<CaseBody<Self>>>;
    /// How the run is set up, and the case ids the settings chose (all when empty).
    fn plan(cfg: &Self::Config) -> (NetworkRun, &[&'static str]);
    /// The context case `id` plays with (`"preflight"` for the preflight).
    fn context(cfg: &Self::Config, id: &'static str) -> Self;
    /// One connection to the peer before any case: an error fails every case with it.
    fn preflight(self) -> impl Future<Output = Result<(), String>>;
}

/// The runner of checker `X`: `Live::<X>::select`, `run` and `run_with` (each checker
/// names it `Checker`).
pub struct Live<X>(PhantomData<X>);

impl<X: LiveCheck> Live<X> {
    /// The ids matching `patterns`: an exact id, or a prefix up to a `-` (`PONG-RST`
    /// selects every `PONG-RST-...`), case-insensitive. Empty patterns select every case.
    /// An unknown pattern is an error that lists the ids.
    pub fn select(patterns: &[String]) -> Result<Vec<&'static str>, String> {
        let ids: Vec<&'static str> = X::cases().iter().map(|c| c.id).collect();
        select(&ids, patterns)
    }

    /// Runs the chosen cases (all when none are chosen) and reports. Never panics on
    /// anything the peer does: each case runs in its own task under a time limit.
    pub async fn run(cfg: X::Config) -> Report {
        Self::run_with(cfg, |_| {}).await
    }

    /// Like [`Live::run`], calling `progress` after each case.
    pub async fn run_with(cfg: X::Config, progress: impl FnMut(&CaseReport)) -> Report {
        let (run, chosen) = X::plan(&cfg);
        let cases: Vec<Case<CaseBody<X>>> = X::cases()
            .into_iter()
            .filter(|c| chosen.is_empty() || chosen.contains(&c.id))
            .collect();
        let preflight = X::context(&cfg, "preflight").preflight();
        run_network(run, &cases, |id| X::context(&cfg, id), preflight, progress).await
    }
}
