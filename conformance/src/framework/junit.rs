//! JUnit XML for CI: one `<testcase>` per case. FAIL is a `<failure>` with the detail as
//! its message, N/A is `<skipped>`, WARN passes with the detail in `<system-out>`.

use std::fmt::Write as _;

use super::report::{Report, Status};

/// The report of `tunnelbed check <checker>` as a JUnit XML document: suite
/// `<checker> conformance (<target>)`, test classes `<checker>.<AREA>` from the ids'
/// second part.
pub fn to_junit(r: &Report, checker: &str) -> String {
    let failures = r.count(Status::Fail);
    let skipped = r.count(Status::NotApplicable);
    let time = r.elapsed.as_secs_f64();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"tunnelbed check {checker}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">",
        r.cases.len()
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"{} conformance ({})\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">",
        esc(checker),
        esc(&r.target),
        r.cases.len()
    );
    let _ = writeln!(s, "    <properties>");
    for (k, v) in [
        ("remote", r.target.clone()),
        ("strict", r.strict.to_string()),
        ("wait_secs", format!("{:.3}", r.wait.as_secs_f64())),
    ] {
        let _ = writeln!(s, "      <property name=\"{k}\" value=\"{}\"/>", esc(&v));
    }
    let _ = writeln!(s, "    </properties>");
    let prefix = checker.to_ascii_uppercase();
    for c in &r.cases {
        let area = c.id.split('-').nth(1).unwrap_or(&prefix);
        let _ = write!(
            s,
            "    <testcase classname=\"{}.{}\" name=\"{} [{}] {}\" time=\"{:.3}\"",
            esc(checker),
            esc(area),
            c.id,
            c.level.name(),
            esc(c.clause),
            c.elapsed.as_secs_f64()
        );
        match c.status {
            Status::Pass => {
                let _ = writeln!(s, ">");
                let _ = writeln!(s, "      <system-out>{}</system-out>", esc(&c.detail));
            }
            Status::Fail => {
                let _ = writeln!(s, ">");
                let _ = writeln!(
                    s,
                    "      <failure message=\"{}\" type=\"{}\">{}: {}</failure>",
                    esc(&c.detail),
                    c.level.name(),
                    c.id,
                    esc(&c.detail)
                );
            }
            Status::Warn => {
                let _ = writeln!(s, ">");
                let _ = writeln!(
                    s,
                    "      <system-out>WARN (SHOULD; counts under --strict): {}</system-out>",
                    esc(&c.detail)
                );
            }
            Status::NotApplicable => {
                let _ = writeln!(s, ">");
                let _ = writeln!(s, "      <skipped message=\"{}\"/>", esc(&c.detail));
            }
        }
        let _ = writeln!(s, "    </testcase>");
    }
    let _ = writeln!(s, "  </testsuite>");
    let _ = writeln!(s, "</testsuites>");
    s
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
