//! One static HTML page of a suite's results (`sim all --html`, `tunnelbed report`,
//! `sim merge --html`): no JavaScript, plots as inline SVG written here. It shows the
//! pass/fail matrix of scenarios x profiles, per scenario the distribution of completion
//! time (simulated seconds) and of any p50/p99 latency metric over seeds, link counters,
//! and every failing run with its replay line and a link to its capture.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::record::RunRecord;

/// Escapes text for HTML content and attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #bbb;padding:4px 10px;text-align:left}\
td.pass{background:#c8f0c8}td.fail{background:#f6b8b8;font-weight:bold}td.none{background:#eee}\
code{font-size:90%}h2{margin-top:32px}svg{background:#fafafa;border:1px solid #ddd}";

/// A dot plot: one row per profile, one dot per run at its value (green pass, red fail),
/// with the median marked; the x axis runs from 0 to the largest value.
fn dot_plot(title: &str, unit: &str, rows: &[(String, Vec<(f64, bool)>)]) -> String {
    let (w, left, right, row_h, top) = (720.0, 110.0, 20.0, 34.0, 30.0);
    let h = top + row_h * rows.len() as f64 + 40.0;
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .fold(0.0f64, f64::max);
    let max = if max > 0.0 { max * 1.05 } else { 1.0 };
    let x = |v: f64| left + (w - left - right) * v / max;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    let axis_y = top + row_h * rows.len() as f64 + 4.0;
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"#444\"/>",
        w - right
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{axis_y}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{1}\" font-size=\"11\" text-anchor=\"middle\">{2}</text>",
            x(v),
            axis_y + 16.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
        w - right,
        axis_y + 32.0,
        esc(unit)
    );
    for (i, (label, pts)) in rows.iter().enumerate() {
        let cy = top + row_h * i as f64 + row_h / 2.0;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            cy + 4.0,
            esc(label)
        );
        for (j, (v, ok)) in pts.iter().enumerate() {
            // Spread dots vertically a little so equal values stay visible.
            let dy = ((j % 5) as f64 - 2.0) * 3.0;
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\" fill-opacity=\"0.7\"/>",
                x(*v),
                cy + dy,
                if *ok { "#2a9d2a" } else { "#d62728" }
            );
        }
        let mut sorted: Vec<f64> = pts.iter().map(|p| p.0).collect();
        sorted.sort_by(f64::total_cmp);
        if let Some(m) = sorted.get(sorted.len() / 2) {
            let _ = write!(
                s,
                "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"#000\" stroke-width=\"2\"/>",
                x(*m),
                cy - 12.0,
                cy + 12.0
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The page. `pcap_href` turns a record's capture name into a link target.
pub fn render(title: &str, records: &[RunRecord], pcap_href: &dyn Fn(&str) -> String) -> String {
    let scenarios: BTreeSet<&str> = records.iter().map(|r| r.scenario.as_str()).collect();
    let profiles: BTreeSet<&str> = records.iter().map(|r| r.profile.as_str()).collect();
    let failed: Vec<&RunRecord> = records.iter().filter(|r| !r.ok).collect();
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    );
    let _ = writeln!(
        s,
        "<h1>{}</h1>\n<p id=\"totals\">{} runs, {} passed, {} failed.</p>",
        esc(title),
        records.len(),
        records.len() - failed.len(),
        failed.len()
    );
    // The matrix.
    let _ = writeln!(
        s,
        "<h2>Pass/fail: scenarios x profiles</h2>\n<table id=\"matrix\"><tr><th>scenario</th>"
    );
    for p in &profiles {
        let _ = write!(s, "<th>{}</th>", esc(p));
    }
    s.push_str("</tr>\n");
    for sc in &scenarios {
        let _ = write!(s, "<tr><td>{}</td>", esc(sc));
        for p in &profiles {
            let runs: Vec<&RunRecord> = records
                .iter()
                .filter(|r| r.scenario == *sc && r.profile == *p)
                .collect();
            let pass = runs.iter().filter(|r| r.ok).count();
            let (class, text) = match runs.len() {
                0 => ("none", "—".to_string()),
                n if pass == n => ("pass", format!("{pass}/{n} pass")),
                n => ("fail", format!("{} FAIL, {pass}/{n} pass", n - pass)),
            };
            let _ = write!(s, "<td class=\"{class}\">{text}</td>");
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    // Failing runs first: what a reader needs most.
    let _ = writeln!(s, "<h2>Failing runs</h2>");
    if failed.is_empty() {
        s.push_str("<p>None.</p>\n");
    } else {
        s.push_str("<table id=\"failures\"><tr><th>run</th><th>why</th><th>replay</th><th>capture</th></tr>\n");
        for r in &failed {
            let _ = writeln!(
                s,
                "<tr><td>{} {} seed {}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(&r.scenario),
                esc(&r.profile),
                r.seed,
                esc(&r.failure),
                esc(&r.replay),
                match &r.pcap {
                    Some(p) => format!("<a href=\"{}\">{}</a>", esc(&pcap_href(p)), esc(p)),
                    None => "not captured".into(),
                }
            );
        }
        s.push_str("</table>\n");
    }
    // Per scenario: distributions and link counters.
    for sc in &scenarios {
        let runs: Vec<&RunRecord> = records.iter().filter(|r| r.scenario == *sc).collect();
        let _ = writeln!(s, "<h2>{}</h2>", esc(sc));
        let by_profile =
            |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Vec<(String, Vec<(f64, bool)>)> {
                profiles
                    .iter()
                    .filter_map(|p| {
                        let pts: Vec<(f64, bool)> = runs
                            .iter()
                            .filter(|r| r.profile == *p)
                            .filter_map(|r| f(r).map(|v| (v, r.ok)))
                            .collect();
                        (!pts.is_empty()).then(|| (p.to_string(), pts))
                    })
                    .collect()
            };
        s.push_str(&dot_plot(
            &format!("{sc}: completion time over seeds (bar: median)"),
            "simulated seconds",
            &by_profile(&|r| Some(r.duration_secs)),
        ));
        s.push('\n');
        // Latency metrics (p50/p99 ...) the scenario reports.
        let names: BTreeSet<String> = runs
            .iter()
            .flat_map(|r| {
                r.metrics
                    .split(' ')
                    .filter_map(|kv| kv.split_once('=').map(|x| x.0.to_string()))
            })
            .filter(|k| k.contains("p50") || k.contains("p99"))
            .collect();
        for name in names {
            let rows = by_profile(&|r| r.metric(&name));
            if !rows.is_empty() {
                s.push_str(&dot_plot(&format!("{sc}: {name} over seeds"), &name, &rows));
                s.push('\n');
            }
        }
        s.push_str("<table class=\"link\"><tr><th>profile</th><th>runs</th><th>datagrams sent</th><th>dropped</th><th>drop rate</th></tr>\n");
        let mut link: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
        for r in &runs {
            let e = link.entry(r.profile.as_str()).or_default();
            e.0 += 1;
            e.1 += r.datagrams_sent;
            e.2 += r.datagrams_dropped;
        }
        for (p, (n, sent, dropped)) in link {
            let _ =
                writeln!(
                s,
                "<tr><td>{}</td><td>{n}</td><td>{sent}</td><td>{dropped}</td><td>{:.2}%</td></tr>",
                esc(p),
                if sent > 0 { 100.0 * dropped as f64 / sent as f64 } else { 0.0 }
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, profile: &str, seed: u64, ok: bool) -> RunRecord {
        RunRecord {
            scenario: scenario.into(),
            profile: profile.into(),
            seed,
            ok,
            duration_secs: 1.0 + seed as f64,
            trace_hash: "h".into(),
            replay: format!("tunnelbed sim run {scenario} --seed {seed} --profile {profile}"),
            failure: if ok {
                String::new()
            } else {
                "integrity: <bad>".into()
            },
            metrics: "p50_ms=3.5 p99_ms=9".into(),
            datagrams_sent: 100,
            datagrams_dropped: 5,
            pcap: Some(format!("{scenario}-{profile}-{seed}.pcapng")),
            tcp: Default::default(),
        }
    }

    #[test]
    fn matrix_plots_and_failures() {
        let rs = vec![
            rec("a", "clean", 0, true),
            rec("a", "lossy", 0, false),
            rec("b", "clean", 1, true),
        ];
        let h = render("t", &rs, &|p| format!("pcaps/{p}"));
        assert!(h.contains("<p id=\"totals\">3 runs, 2 passed, 1 failed.</p>"));
        assert!(h.contains("<td class=\"pass\">1/1 pass</td>"));
        assert!(h.contains("<td class=\"fail\">1 FAIL, 0/1 pass</td>"));
        assert!(h.contains("<td class=\"none\">—</td>"));
        assert!(h.contains("integrity: &lt;bad&gt;"));
        assert!(h.contains("<code>tunnelbed sim run a --seed 0 --profile lossy</code>"));
        assert!(h.contains("<a href=\"pcaps/a-lossy-0.pcapng\">"));
        assert_eq!(
            h.matches("<svg ").count(),
            6,
            "completion, p50, p99 for each scenario"
        );
        assert!(!h.contains("<script"));
    }
}
