//! Runs the cases against our stack and, with `--kernel`, against the Linux kernel, and
//! makes the report lines and the side-by-side Markdown table.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tunnelbed_netio::Trace;
use tunnelbed_tcpstack::StackConfig;

use super::cases::{all, Body, Kernel};
use super::kernel::{in_new_netns, KernelTarget};
use super::ours::OurStack;
use super::script::Player;
use super::target::Target;
use crate::framework::{select as select_ids, Case, CaseReport, Report, Status, Verdict};

/// What to run.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// The chosen case ids (empty: all).
    pub cases: Vec<&'static str>,
    /// SHOULD failures are FAILs.
    pub strict: bool,
    /// Also run every script against the kernel over a TUN in a new namespace.
    pub kernel: bool,
    /// The TUN device's name for the kernel run.
    pub tun: String,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            cases: Vec::new(),
            strict: false,
            kernel: false,
            tun: "tbcheck0".into(),
        }
    }
}

/// The reports of one run.
pub struct Run {
    /// Our stack.
    pub ours: Report,
    /// The kernel, with `--kernel`.
    pub kernel: Option<Report>,
}

impl Run {
    /// Whether nothing FAILed.
    pub fn passed(&self) -> bool {
        self.ours.passed() && self.kernel.as_ref().is_none_or(|k| k.passed())
    }
}

/// The ids matching `patterns` (exact ids or prefixes up to a dash).
pub fn select(patterns: &[String]) -> Result<Vec<&'static str>, String> {
    let ids: Vec<&'static str> = all().iter().map(|c| c.id).collect();
    select_ids(&ids, patterns)
}

fn chosen(cfg: &CheckConfig) -> Vec<Case<Body>> {
    all()
        .into_iter()
        .filter(|c| cfg.cases.is_empty() || cfg.cases.contains(&c.id))
        .collect()
}

fn play<T: Target>(t: &mut T, case: &Case<Body>) -> Result<String, String> {
    let script = (case.body.script)();
    Player::new(t, &script).play()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Runs the chosen cases on our stack (a fresh stack per case, vproxy's constants);
/// `progress` sees each line.
pub fn run_ours(cfg: &CheckConfig, progress: impl FnMut(&CaseReport)) -> Report {
    run_ours_with(cfg, &StackConfig::default(), progress)
}

/// [`run_ours`] with other tunables (a stack with faults, to see the checker find them).
pub fn run_ours_with(
    cfg: &CheckConfig,
    stack: &StackConfig,
    mut progress: impl FnMut(&CaseReport),
) -> Report {
    let t0 = Instant::now();
    let mut lines = Vec::new();
    let mut name = String::new();
    for case in chosen(cfg) {
        let c0 = Instant::now();
        let outcome = match OurStack::new(stack.clone(), Trace::disabled()) {
            Ok(mut t) => {
                name = t.name();
                play(&mut t, &case).map(Verdict::Pass)
            }
            Err(e) => Err(format!("checker error: listen: {e}")),
        };
        let r = CaseReport::new(&case, outcome, cfg.strict, c0.elapsed());
        progress(&r);
        lines.push(r);
    }
    Report {
        target: name,
        strict: cfg.strict,
        wait: Duration::from_secs(3),
        cases: lines,
        elapsed: t0.elapsed(),
    }
}

/// The kernel's line for a case: a case the kernel should hold must pass; a case where
/// it should differ must fail (else the script cannot tell the two apart) and is N/A.
fn kernel_line(
    case: &Case<Body>,
    r: Result<String, String>,
    strict: bool,
    d: Duration,
) -> CaseReport {
    let outcome = match (case.body.kernel, r) {
        (Kernel::Holds, r) => r.map(Verdict::Pass),
        (Kernel::Differs(why), Err(seen)) => Ok(Verdict::NotApplicable(format!(
            "differs as expected: {why}. Seen: {}",
            first_line(&seen)
        ))),
        (Kernel::Differs(why), Ok(_)) => Err(format!(
            "the kernel followed the rule, though it should differ ({why}): the script does not tell the two apart"
        )),
    };
    CaseReport::new(case, outcome, strict, d)
}

/// Runs the chosen cases against the kernel in a new network namespace.
pub fn run_kernel(
    cfg: &CheckConfig,
    progress: impl FnMut(&CaseReport) + Send + 'static,
) -> Result<Report, String> {
    let cfg = cfg.clone();
    in_new_netns(move || {
        let mut progress = progress;
        let t0 = Instant::now();
        let mut t = KernelTarget::open(&cfg.tun)?;
        let mut lines = Vec::new();
        for case in chosen(&cfg) {
            let c0 = Instant::now();
            let r = play(&mut t, &case);
            let line = kernel_line(&case, r, cfg.strict, c0.elapsed());
            progress(&line);
            lines.push(line);
        }
        Ok(Report {
            target: t.name(),
            strict: cfg.strict,
            wait: Duration::from_secs(3),
            cases: lines,
            elapsed: t0.elapsed(),
        })
    })?
}

/// Runs ours, then (with `cfg.kernel`) the kernel.
pub fn run(
    cfg: &CheckConfig,
    progress: impl FnMut(&str, &CaseReport) + Send + Clone + 'static,
) -> Result<Run, String> {
    let mut p = progress.clone();
    let ours = run_ours(cfg, move |r| p("ours", r));
    let kernel = if cfg.kernel {
        let mut p = progress;
        Some(run_kernel(cfg, move |r| p("kernel", r))?)
    } else {
        None
    };
    Ok(Run { ours, kernel })
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn result(c: &CaseReport) -> String {
    let first = first_line(&c.detail);
    match c.status {
        Status::Pass => "pass".into(),
        Status::Fail => format!("FAIL: {first}"),
        Status::Warn => format!("WARN: {first}"),
        Status::NotApplicable => format!(
            "differs: {}",
            first.trim_start_matches("differs as expected: ")
        ),
    }
}

/// The Markdown table: one row per case, our result and the kernel's side by side.
pub fn markdown(run: &Run) -> String {
    let mut md = String::from(
        "| ID | level | source | rule | our stack | Linux kernel | differs from vproxy |\n|---|---|---|---|---|---|---|\n",
    );
    let cases = all();
    for (i, o) in run.ours.cases.iter().enumerate() {
        let k = run
            .kernel
            .as_ref()
            .and_then(|k| k.cases.get(i))
            .map_or("not run".to_string(), result);
        let level = cases
            .iter()
            .find(|c| c.id == o.id)
            .map_or("", |c| c.level.name());
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            o.id,
            level,
            o.source,
            cell(o.clause),
            cell(&result(o)),
            cell(&k),
            cell(o.differs.unwrap_or(""))
        );
    }
    md
}
