//! What a case concludes, a run's results, and the plain-text and Markdown tables.

use std::fmt::Write as _;
use std::time::Duration;

use super::case::{Case, Level};
use super::text::{cut, one_line, secs};

/// What a case body concludes when it does not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The rule holds; the text says what was seen.
    Pass(String),
    /// The case cannot tell on this target (e.g. its resolver answers `.invalid`).
    NotApplicable(String),
}

/// A case body's result: `Err` is a failure, with what differed.
pub type Outcome = Result<Verdict, String>;

/// A case's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The rule holds.
    Pass,
    /// The rule does not hold (a MUST case, or a SHOULD case under `--strict`).
    Fail,
    /// A SHOULD case that does not hold, without `--strict`.
    Warn,
    /// The case cannot tell on this target.
    NotApplicable,
}

impl Status {
    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Warn => "WARN",
            Status::NotApplicable => "N/A",
        }
    }
}

/// One case's line.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// Stable id.
    pub id: &'static str,
    /// MUST or SHOULD.
    pub level: Level,
    /// Where the rule comes from.
    pub source: &'static str,
    /// The rule checked.
    pub clause: &'static str,
    /// How we differ from the reference implementation here, if we do on purpose.
    pub differs: Option<&'static str>,
    /// The result.
    pub status: Status,
    /// What was seen (why it failed, or what passed).
    pub detail: String,
    /// How long the case took.
    pub elapsed: Duration,
}

impl CaseReport {
    /// The line for `case` from what its body concluded: a failure is FAIL when the
    /// case's level counts (MUST, or SHOULD under `strict`), WARN otherwise.
    pub fn new<B>(case: &Case<B>, outcome: Outcome, strict: bool, elapsed: Duration) -> Self {
        let (status, detail) = match outcome {
            Ok(Verdict::Pass(d)) => (Status::Pass, d),
            Ok(Verdict::NotApplicable(d)) => (Status::NotApplicable, d),
            Err(d) if case.level.counts(strict) => (Status::Fail, d),
            Err(d) => (Status::Warn, d),
        };
        CaseReport {
            id: case.id,
            level: case.level,
            source: case.source,
            clause: case.clause,
            differs: case.differs,
            status,
            detail,
            elapsed,
        }
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The implementation checked (a URL, or a name for scripted checks).
    pub target: String,
    /// Whether SHOULD cases counted.
    pub strict: bool,
    /// The per-wait limit used.
    pub wait: Duration,
    /// One per case run, in the list's order.
    pub cases: Vec<CaseReport>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// Cases with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.cases.iter().filter(|c| c.status == status).count()
    }

    /// Ids of the cases with `status`, in order.
    pub fn ids(&self, status: Status) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.id)
            .collect()
    }

    /// Whether every case that counts passed (no FAIL; WARN and N/A do not count).
    pub fn passed(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    /// The one-line summary printed under the table.
    pub fn summary(&self) -> String {
        format!(
            "{} cases against {}: {} PASS, {} FAIL, {} WARN, {} N/A ({}; waits up to {}; {:.1}s)",
            self.cases.len(),
            self.target,
            self.count(Status::Pass),
            self.count(Status::Fail),
            self.count(Status::Warn),
            self.count(Status::NotApplicable),
            if self.strict {
                "--strict: SHOULD cases count"
            } else {
                "SHOULD cases only warn"
            },
            secs(self.wait),
            self.elapsed.as_secs_f64(),
        )
    }

    /// The table: id, level, result, clause (cut to `clause_width` characters), detail;
    /// then the summary line.
    pub fn table(&self, clause_width: usize) -> String {
        let idw = self
            .cases
            .iter()
            .map(|c| c.id.len())
            .max()
            .unwrap_or(2)
            .max(2);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:idw$}  {:6}  {:6}  {:clause_width$}  DETAIL",
            "ID", "LEVEL", "RESULT", "CLAUSE"
        );
        let _ = writeln!(
            s,
            "{}  {}  {}  {}  {}",
            "-".repeat(idw),
            "-".repeat(6),
            "-".repeat(6),
            "-".repeat(clause_width),
            "-".repeat(6)
        );
        for c in &self.cases {
            let clause = cut(c.clause, clause_width);
            let _ = writeln!(
                s,
                "{:idw$}  {:6}  {:6}  {:clause_width$}  {}",
                c.id,
                c.level.name(),
                c.status.name(),
                clause,
                one_line(&c.detail)
            );
        }
        let _ = writeln!(s, "\n{}", self.summary());
        s
    }
}

/// A Markdown table of `cases` for `reports/`: id, source, clause, result (`pass`, or
/// the status and the first line of the detail), and how we differ from `reference`.
pub fn markdown_table(cases: &[CaseReport], reference: &str) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut md = format!(
        "| ID | source | clause | result | differs from {reference} |\n|---|---|---|---|---|\n"
    );
    for c in cases {
        let first = c.detail.lines().next().unwrap_or("");
        let result = match c.status {
            Status::Pass => "pass".to_string(),
            Status::Fail => format!("FAIL: {first}"),
            Status::Warn => format!("WARN: {first}"),
            Status::NotApplicable => format!("N/A: {first}"),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} |",
            c.id,
            c.source,
            cell(c.clause),
            cell(&result),
            cell(c.differs.unwrap_or(""))
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &'static str, level: Level, status: Status) -> CaseReport {
        CaseReport {
            id,
            level,
            source: "seed",
            clause: "a rule that is rather long for the column",
            differs: None,
            status,
            detail: "line one\nline two".into(),
            elapsed: Duration::from_millis(3),
        }
    }

    #[test]
    fn table_and_summary() {
        let r = Report {
            target: "tcp://127.0.0.1:1".into(),
            strict: false,
            wait: Duration::from_secs(5),
            cases: vec![
                case("PONG-A-B", Level::Must, Status::Pass),
                case("PONG-A-C", Level::Should, Status::Warn),
                case("PONG-A-D", Level::Must, Status::NotApplicable),
            ],
            elapsed: Duration::from_millis(1500),
        };
        assert!(r.passed());
        let t = r.table(20);
        assert!(t.contains("PONG-A-B  MUST    PASS    a rule that is rath…  line one line two"));
        assert!(t.contains("3 cases against tcp://127.0.0.1:1: 1 PASS, 0 FAIL, 1 WARN, 1 N/A"));
        assert_eq!(r.ids(Status::Warn), ["PONG-A-C"]);
    }

    #[test]
    fn markdown_rows() {
        let mut failed = case("X-A-F", Level::Must, Status::Fail);
        failed.clause = "a | b";
        failed.differs = Some("we do | they do");
        let md = markdown_table(
            &[case("X-A-P", Level::Must, Status::Pass), failed],
            "vproxy",
        );
        assert!(md.starts_with("| ID | source | clause | result | differs from vproxy |\n"));
        assert!(
            md.contains("| `X-A-P` | seed | a rule that is rather long for the column | pass |  |")
        );
        assert!(md.contains("| `X-A-F` | seed | a \\| b | FAIL: line one | we do \\| they do |"));
    }

    #[test]
    fn outcomes_become_statuses_by_level() {
        let must = Case {
            id: "X-A-M",
            level: Level::Must,
            source: "seed",
            clause: "",
            differs: None,
            body: (),
        };
        let should = Case {
            level: Level::Should,
            ..must
        };
        let z = Duration::ZERO;
        let st = |c: &Case<()>, o: Outcome, strict| CaseReport::new(c, o, strict, z).status;
        assert_eq!(st(&must, Err("x".into()), false), Status::Fail);
        assert_eq!(st(&should, Err("x".into()), false), Status::Warn);
        assert_eq!(st(&should, Err("x".into()), true), Status::Fail);
        assert_eq!(
            st(&should, Ok(Verdict::NotApplicable("n".into())), true),
            Status::NotApplicable
        );
        assert_eq!(st(&must, Ok(Verdict::Pass("p".into())), true), Status::Pass);
    }
}
