//! Results of a check run and the table printed for it.

use std::fmt::Write as _;
use std::time::Duration;

use super::client::{cut, secs};

/// How binding a rule is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Required: a failure fails the run.
    Must,
    /// Recommended: a failure is a WARN, or a FAIL under `--strict`.
    Should,
}

impl Level {
    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
        }
    }

    /// Whether a failure at this level fails the run.
    pub fn counts(self, strict: bool) -> bool {
        match self {
            Level::Must => true,
            Level::Should => strict,
        }
    }
}

/// A case's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The rule holds.
    Pass,
    /// The rule does not hold (a MUST case, or a SHOULD case under `--strict`).
    Fail,
    /// A SHOULD case that does not hold, without `--strict`.
    Warn,
    /// The case cannot tell on this remote.
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
    /// Stable id (`PONG-<AREA>-<RULE>`).
    pub id: &'static str,
    /// MUST or SHOULD.
    pub level: Level,
    /// The rule checked.
    pub clause: &'static str,
    /// The result.
    pub status: Status,
    /// What was seen (why it failed, or what passed).
    pub detail: String,
    /// How long the case took.
    pub elapsed: Duration,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The remote checked (its URL).
    pub remote: String,
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
            self.remote,
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

/// `s` on one line (control characters shown as spaces).
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &'static str, level: Level, status: Status) -> CaseReport {
        CaseReport {
            id,
            level,
            clause: "a rule that is rather long for the column",
            status,
            detail: "line one\nline two".into(),
            elapsed: Duration::from_millis(3),
        }
    }

    #[test]
    fn table_and_summary() {
        let r = Report {
            remote: "tcp://127.0.0.1:1".into(),
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
        assert!(Level::Should.counts(true) && !Level::Should.counts(false));
    }
}
