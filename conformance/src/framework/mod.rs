//! The conformance framework every `tunnelbed check <protocol>` is built on: a case type
//! with a stable id, a level, a source and a clause ([`Case`]); selection by id or
//! prefix ([`select`]); a runner that plays each case under a time limit and turns what
//! its body concludes into PASS / FAIL / WARN / N/A ([`run_cases`]; a scripted checker
//! may call [`CaseReport::new`] itself); and the outputs: the plain-text table
//! and summary line the CLI prints ([`Report::table`]), a Markdown table for
//! `reports/` ([`markdown_table`]) and JUnit XML for CI ([`to_junit`]).
//!
//! # Writing a checker (`check tcpstack`, `check candy`, `check vless`, `check fullcone`)
//!
//! Follow `pong_check`, which is built this way:
//!
//! 1. **Cases** (`<proto>_check/cases.rs`): one [`Case`] per rule, in report order.
//!    Ids are `<PROTO>-<AREA>-<RULE>` in capitals (`VLESS-HDR-VERSION`); they key
//!    snapshots, reports and `--case` selection, so never renumber or reuse one. `level`
//!    is [`Level::Must`] (a failure fails the run) or [`Level::Should`] (a WARN unless
//!    `--strict`). `source` says where the rule comes from so a reader can find the text
//!    (`seed`, `notes` for `shared/protocols/<proto>.md`, `tunnelbed` for our own reading
//!    where both are silent: then say the reading in the clause). `differs` is set when we
//!    deliberately behave unlike the reference implementation, saying how and why.
//!    The body type `B` is the checker's own: an `fn(Arc<Ctx>) -> CaseFuture` for a
//!    checker that talks to a live implementation (as `pong_check`), or an `fn() ->
//!    CaseResult` for a scripted exchange with a sans-IO machine (as `h2tunnel_cases`,
//!    whose harness is apart from its cases).
//! 2. **Context** (`ctx.rs`): the settings (target, strictness, the per-wait limit) and
//!    the ways a body reaches the implementation under test. Cases import the context;
//!    the runner imports the cases; nothing imports the runner, so there is no import
//!    cycle.
//! 3. **Bodies** return an [`Outcome`]: `Ok(Verdict::Pass(what was seen))`,
//!    `Ok(Verdict::NotApplicable(why))`, or `Err(what differed)`. Every wait inside a
//!    body is bounded (a silent peer gives "no answer within 5s", never a hang); the
//!    runner also bounds the whole case.
//! 4. **Runner** (`runner.rs`): against a live peer, implement [`LiveCheck`] on the
//!    context (the cases, the run's settings, the context per case, one preflight
//!    connection) and name the runner in `mod.rs`: `pub type Checker = Live<Ctx>;`
//!    ([`Live`] selects, plays each case under a time limit through [`run_network`] and
//!    reports). Any other checker calls [`run_cases`] with a closure that plays one case
//!    and wraps the lines in a [`Report`]; a scripted checker runs its bodies itself and
//!    makes each line with [`CaseReport::new`].
//! 5. **Faulty fixture**: an implementation with known faults (`pong_check::faulty_remote`)
//!    and a test that the checker FAILs exactly the expected ids, so no case can pass
//!    whatever the peer does.
//! 6. **CLI** (`src/cmd/check.rs`): parse arguments, call the runner
//!    (`Checker::run_with`), print
//!    [`Report::table`], write [`to_junit`] for `--junit`, exit 1 when [`Report::passed`]
//!    is false.

mod case;
mod junit;
mod live;
mod network;
mod report;
mod runner;
pub mod text;

pub use case::{select, Case, Level};
pub use junit::{esc, to_junit};
pub use live::{Live, LiveCheck};
pub use network::{run_network, CaseBody, CaseFuture, NetworkRun};
pub use report::{markdown_table, CaseReport, Outcome, Report, Status, Verdict};
pub use runner::run_cases;
