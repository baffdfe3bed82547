//! `tunnelbed check candy`: a conformance checker for any Candy server (seed 003 and
//! `shared/protocols/candy.md`). It plays fake clients over WebSocket (no TUN device:
//! it builds and reads the FORWARD packets itself), one set of connections per case,
//! and reports PASS / FAIL / WARN / N/A per case with what it saw.
//!
//! - [`cases`]: the case list (stable ids `CANDY-<AREA>-<RULE>`) and their bodies.
//! - [`ctx`]: the settings, the fake client ([`ctx::Peer`]) and address allocation.
//! - [`runner`]: how the checker plugs into the framework's live runner ([`Checker`]:
//!   selection and running under time limits on [`crate::framework`]).
//!
//! "Nothing arrives" is never judged by a bare timeout where an ordered marker can
//! decide it: a probe that must not be delivered is followed, on the same connection,
//! by one that must, so seeing the marker first proves the probe was dropped.

pub mod cases;
pub mod ctx;
pub mod runner;

pub use crate::framework::{CaseReport, Level, Outcome, Report, Status, Verdict};
pub use ctx::CheckConfig;

/// This checker's runner: `Checker::select`, `Checker::run` and `Checker::run_with`.
pub type Checker = crate::framework::Live<ctx::Ctx>;

/// The report as JUnit XML (suite `candy conformance (<server>)`, classes `candy.<AREA>`).
pub fn to_junit(r: &Report) -> String {
    crate::framework::to_junit(r, "candy")
}
