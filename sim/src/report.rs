//! The Markdown summary `tunnelbed sim all` writes under `reports/`.

use std::fmt::Write;

use crate::scenario::RunReport;

/// A Markdown table of runs: scenario, profile, seed, verdict, checks, link counters.
pub fn summary_markdown(reports: &[RunReport], title: &str) -> String {
    let mut s = String::new();
    let failed = reports.iter().filter(|r| !r.ok()).count();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "{} runs, {} passed, {} failed.\n",
        reports.len(),
        reports.len() - failed,
        failed
    );
    let _ = writeln!(
        s,
        "| scenario | profile | seed | result | sim time | datagrams sent / dropped / dup / corrupt | trace hash | checks | metrics |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let checks: Vec<String> = r
            .checks
            .iter()
            .map(|c| format!("{} {}: {}", if c.ok { "✔" } else { "✘" }, c.name, c.detail))
            .collect();
        let metrics: Vec<String> = r.metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2}s | {} / {} / {} / {} | `{}` | {} | {} |",
            r.scenario,
            r.profile,
            r.seed,
            if r.ok() { "pass" } else { "**FAIL**" },
            r.sim_time.as_secs_f64(),
            r.link.sent,
            r.link.dropped(),
            r.link.duplicated,
            r.link.corrupted,
            r.trace_hash,
            match &r.error {
                Some(e) => format!("error: {}", e.replace('|', "/")),
                None => checks.join("<br>").replace('|', "/"),
            },
            metrics.join(" ")
        );
    }
    if failed > 0 {
        let _ = writeln!(s, "\n## Replay the failures\n");
        for r in reports.iter().filter(|r| !r.ok()) {
            let _ = writeln!(s, "- `{}` — {}", r.replay_line(), r.failure_summary());
        }
    }
    s
}
