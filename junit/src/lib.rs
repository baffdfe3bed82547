//! JUnit XML, the one format GitLab, Jenkins and GitHub test reporters all read. One
//! writer for every producer (`check pong`, `sim all`, `sim sweep`, `sim merge`), so the
//! escaping and the counts are right in one place.

use std::fmt::Write as _;

/// How one test case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Pass,
    /// Failed: `message` (one line) and `kind` go in attributes, `text` in the body.
    Failure {
        /// Short reason.
        message: String,
        /// The failure's type attribute (e.g. MUST, or the check that failed).
        kind: String,
        /// Longer text.
        text: String,
    },
    /// Not run or not applicable, with the reason.
    Skipped {
        /// Why.
        message: String,
    },
}

/// One `<testcase>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// Dotted group name (reporters group by it).
    pub classname: String,
    /// Test name.
    pub name: String,
    /// Seconds.
    pub time: f64,
    /// Verdict.
    pub outcome: Outcome,
    /// Text shown with the case (details, replay line).
    pub system_out: Option<String>,
}

/// One `<testsuite>`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Suite {
    /// Suite name.
    pub name: String,
    /// Seconds (the whole suite's time).
    pub time: f64,
    /// `<property>` pairs.
    pub properties: Vec<(String, String)>,
    /// The cases, in order.
    pub cases: Vec<Case>,
}

impl Suite {
    /// Cases that failed.
    pub fn failures(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failure { .. }))
            .count()
    }

    /// Cases skipped.
    pub fn skipped(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Skipped { .. }))
            .count()
    }
}

/// The document: `<testsuites name=..>` holding `suites`, with totals on the root.
pub fn to_xml(name: &str, suites: &[Suite]) -> String {
    let tests: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = suites.iter().map(Suite::failures).sum();
    let skipped: usize = suites.iter().map(Suite::skipped).sum();
    let time: f64 = suites.iter().map(|s| s.time).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">",
        esc(name)
    );
    for suite in suites {
        write_suite(&mut s, suite);
    }
    let _ = writeln!(s, "</testsuites>");
    s
}

fn write_suite(s: &mut String, suite: &Suite) {
    let _ = writeln!(
        s,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
        esc(&suite.name),
        suite.cases.len(),
        suite.failures(),
        suite.skipped(),
        suite.time
    );
    if !suite.properties.is_empty() {
        let _ = writeln!(s, "    <properties>");
        for (k, v) in &suite.properties {
            let _ = writeln!(
                s,
                "      <property name=\"{}\" value=\"{}\"/>",
                esc(k),
                esc(v)
            );
        }
        let _ = writeln!(s, "    </properties>");
    }
    for c in &suite.cases {
        let _ = writeln!(
            s,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            esc(&c.classname),
            esc(&c.name),
            c.time
        );
        match &c.outcome {
            Outcome::Pass => {}
            Outcome::Failure {
                message,
                kind,
                text,
            } => {
                let _ = writeln!(
                    s,
                    "      <failure message=\"{}\" type=\"{}\">{}</failure>",
                    esc(message),
                    esc(kind),
                    esc(text)
                );
            }
            Outcome::Skipped { message } => {
                let _ = writeln!(s, "      <skipped message=\"{}\"/>", esc(message));
            }
        }
        if let Some(out) = &c.system_out {
            let _ = writeln!(s, "      <system-out>{}</system-out>", esc(out));
        }
        let _ = writeln!(s, "    </testcase>");
    }
    let _ = writeln!(s, "  </testsuite>");
}

/// Escapes text for XML attributes and content; characters XML 1.0 cannot hold at all
/// (most control characters) become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' => o.push_str("&#9;"),
            '\r' => o.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_escaping_and_outcomes() {
        let case = |name: &str, outcome| Case {
            classname: "a.b".into(),
            name: name.into(),
            time: 0.5,
            outcome,
            system_out: Some("out <x>".into()),
        };
        let suites = vec![
            Suite {
                name: "one & two".into(),
                time: 1.0,
                properties: vec![("seed".into(), "7".into())],
                cases: vec![
                    case("p", Outcome::Pass),
                    case(
                        "f",
                        Outcome::Failure {
                            message: "bad\u{1}\"".into(),
                            kind: "integrity".into(),
                            text: "long".into(),
                        },
                    ),
                ],
            },
            Suite {
                name: "three".into(),
                time: 2.0,
                properties: vec![],
                cases: vec![case(
                    "s",
                    Outcome::Skipped {
                        message: "n/a".into(),
                    },
                )],
            },
        ];
        let x = to_xml("root", &suites);
        assert!(x.contains(
            "<testsuites name=\"root\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\" time=\"3.000\">"
        ));
        assert!(x.contains("<testsuite name=\"one &amp; two\" tests=\"2\" failures=\"1\""));
        assert!(
            x.contains("<failure message=\"bad\u{fffd}&quot;\" type=\"integrity\">long</failure>")
        );
        assert!(x.contains("<skipped message=\"n/a\"/>"));
        assert!(x.contains("<system-out>out &lt;x&gt;</system-out>"));
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("</testcase>").count(), 3);
    }
}
