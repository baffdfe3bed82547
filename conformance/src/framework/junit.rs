//! JUnit XML for CI: one `<testcase>` per case. FAIL is a `<failure>` with the detail as
//! its message, N/A is `<skipped>`, WARN passes with the detail in `<system-out>`.

use tunnelbed_junit::{Case, Outcome, Suite};

use super::report::{Report, Status};

pub use tunnelbed_junit::esc;

/// The report of `tunnelbed check <checker>` as a JUnit XML document: suite
/// `<checker> conformance (<target>)`, test classes `<checker>.<AREA>` from the ids'
/// second part. The document itself is written by the shared `tunnelbed-junit` crate.
pub fn to_junit(r: &Report, checker: &str) -> String {
    let prefix = checker.to_ascii_uppercase();
    let cases = r
        .cases
        .iter()
        .map(|c| {
            let area = c.id.split('-').nth(1).unwrap_or(&prefix);
            let (outcome, system_out) = match c.status {
                Status::Pass => (Outcome::Pass, Some(c.detail.clone())),
                Status::Fail => (
                    Outcome::Failure {
                        message: c.detail.clone(),
                        kind: c.level.name().to_string(),
                        text: format!("{}: {}", c.id, c.detail),
                    },
                    None,
                ),
                Status::Warn => (
                    Outcome::Pass,
                    Some(format!(
                        "WARN (SHOULD; counts under --strict): {}",
                        c.detail
                    )),
                ),
                Status::NotApplicable => (
                    Outcome::Skipped {
                        message: c.detail.clone(),
                    },
                    None,
                ),
            };
            Case {
                classname: format!("{checker}.{area}"),
                name: format!("{} [{}] {}", c.id, c.level.name(), c.clause),
                time: c.elapsed.as_secs_f64(),
                outcome,
                system_out,
            }
        })
        .collect();
    let suite = Suite {
        name: format!("{checker} conformance ({})", r.target),
        time: r.elapsed.as_secs_f64(),
        properties: vec![
            ("remote".into(), r.target.clone()),
            ("strict".into(), r.strict.to_string()),
            ("wait_secs".into(), format!("{:.3}", r.wait.as_secs_f64())),
        ],
        cases,
    };
    tunnelbed_junit::to_xml(&format!("tunnelbed check {checker}"), &[suite])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::framework::{CaseReport, Level};

    #[test]
    fn escapes_and_marks_each_status() {
        let mk = |id, status, detail: &str| CaseReport {
            id,
            level: Level::Must,
            source: "seed",
            clause: "a <rule> & \"more\"",
            differs: None,
            status,
            detail: detail.into(),
            elapsed: Duration::from_millis(10),
        };
        let r = Report {
            target: "tcp://h:1".into(),
            strict: true,
            wait: Duration::from_secs(5),
            cases: vec![
                mk("PONG-X-A", Status::Pass, "ok"),
                mk("PONG-X-B", Status::Fail, "bad\u{1} <thing>"),
                mk("PONG-Y-C", Status::NotApplicable, "n/a"),
                mk("PONG-Y-D", Status::Warn, "meh"),
            ],
            elapsed: Duration::from_secs(1),
        };
        let x = to_junit(&r, "pong");
        assert!(x.contains("<testsuites name=\"tunnelbed check pong\" tests=\"4\""));
        assert!(x.contains("<testsuite name=\"pong conformance (tcp://h:1)\""));
        assert!(x.contains("tests=\"4\" failures=\"1\" errors=\"0\" skipped=\"1\""));
        assert!(x.contains(
            "classname=\"pong.X\" name=\"PONG-X-A [MUST] a &lt;rule&gt; &amp; &quot;more&quot;\""
        ));
        assert!(x.contains("<failure message=\"bad\u{fffd} &lt;thing&gt;\" type=\"MUST\">"));
        assert!(x.contains("<skipped message=\"n/a\"/>"));
        assert!(x.contains("WARN (SHOULD"));
        assert_eq!(x.matches("<testcase ").count(), 4);
        assert_eq!(x.matches("</testcase>").count(), 4);
    }
}
