//! How every benchmark report is put together: the same opening lines (title, command,
//! date, machine, load), then the bench's own setup lines and tables, written to the
//! `--out` file the same way; benches that vary the loss rate add a goodput-vs-loss plot
//! (ours and the reference) as an SVG file beside the report.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

/// What a run knows about itself when its report is written.
#[derive(Clone, Debug)]
pub struct RunFacts {
    /// The command line, with the binary shown as `tunnelbed`.
    pub command: String,
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Load averages (1, 5, 15 min) when the run started.
    pub load_start: String,
    /// Load averages when it ended.
    pub load_end: String,
}

impl RunFacts {
    /// Facts for a run starting now, with `command` as typed.
    pub fn start(command: String) -> Self {
        let load = super::measure::loadavg();
        RunFacts {
            command,
            date: today(),
            load_start: load.clone(),
            load_end: load,
        }
    }

    /// Notes the load at the end of the run.
    pub fn finish(&mut self) {
        self.load_end = super::measure::loadavg();
    }
}

/// The opening of every report: `# title`, then command, date, machine and load lines.
pub fn opening(title: &str, facts: &RunFacts) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "- command: `{}` (`tunnelbed` is `cargo run --release --`)",
        facts.command
    );
    let _ = writeln!(s, "- date: {} (UTC)", facts.date);
    let _ = writeln!(s, "- machine: {}", machine());
    let _ = writeln!(
        s,
        "- load average (1, 5, 15 min) at start: {}; at end: {} (the machine may be shared with other work)",
        facts.load_start, facts.load_end
    );
    s
}

/// Writes `report` to `path`, creating its directory.
pub fn write_report(path: &Path, report: &str) -> anyhow::Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, report).with_context(|| format!("writing {}", path.display()))
}

/// One line of a goodput-vs-loss plot: an implementation's goodput at each loss rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The implementation, as the report's tables name it.
    pub name: String,
    /// (loss in percent, goodput in MB/s), in any order.
    pub points: Vec<(f64, f64)>,
}

/// Line colours, one per series in order.
const SERIES_COLOURS: [&str; 4] = ["#1f4e9c", "#d62728", "#2a9d2a", "#8a6d00"];

/// A goodput-vs-loss plot as a standalone SVG: one polyline with dots per series
/// (`class="series"`, `class="point"`, each with `data-series`), loss on x, MB/s on y.
pub fn goodput_plot(title: &str, series: &[Series]) -> String {
    use crate::plot::svg::{esc, open, Frame, Scale};
    let (w, h) = (760.0, 440.0);
    let pts = || series.iter().flat_map(|s| s.points.iter());
    let x_max = pts().map(|p| p.0).fold(0.0, f64::max);
    let y_max = pts()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let x = Scale::new(0.0, x_max * 1.05, 70.0, w - 20.0);
    let y = Scale::new(0.0, y_max * 1.1, h - 50.0, 60.0);
    let legend: Vec<(&str, String, String)> = series
        .iter()
        .zip(SERIES_COLOURS.iter().cycle())
        .map(|(s, c)| {
            (
                *c,
                "<path d=\"M0 6H12\" stroke-width=\"2\"/><circle cx=\"6\" cy=\"6\" r=\"3\"/>"
                    .to_string(),
                s.name.clone(),
            )
        })
        .collect();
    let frame = Frame {
        size: (w, h),
        title,
        labels: ("loss (%)", "goodput (MB/s)"),
        legend: &legend,
    };
    let mut out = open(&frame, &x, &y);
    for (s, colour) in series.iter().zip(SERIES_COLOURS.iter().cycle()) {
        let mut p: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line: Vec<String> = p
            .iter()
            .map(|(l, g)| format!("{:.1},{:.1}", x.px(*l), y.px(*g)))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"series\" data-series=\"{}\" points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            esc(&s.name),
            line.join(" ")
        );
        for (l, g) in &p {
            let _ = write!(
                out,
                "<circle class=\"point\" data-series=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{colour}\"><title>{}: {l}% loss, {g:.2} MB/s</title></circle>",
                esc(&s.name),
                x.px(*l),
                y.px(*g),
                esc(&s.name)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Writes `report` to `path` and, when some series has points, `svg` beside it as
/// `<stem>-goodput.svg`, with a section linking it appended to the report. Returns the
/// plot's path when one was written.
pub fn write_report_with_plot(
    path: &Path,
    report: &str,
    series: &[Series],
    title: &str,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    if series.iter().all(|s| s.points.is_empty()) {
        write_report(path, report)?;
        return Ok(None);
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let name = format!("{stem}-goodput.svg");
    let svg_path = path.with_file_name(&name);
    let mut doc = report.to_string();
    let _ = write!(doc, "\n## Goodput vs loss\n\n![{title}]({name})\n");
    write_report(path, &doc)?;
    write_report(&svg_path, &goodput_plot(title, series))?;
    Ok(Some(svg_path))
}

/// Machine facts: CPU model, cores, kernel, build.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "{cpu}, {cores} cores, Linux {kernel}, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// The command line as typed, with the binary shown as `tunnelbed`.
pub fn command_line() -> String {
    let mut v = vec!["tunnelbed".to_string()];
    v.extend(std::env::args().skip(1));
    v.join(" ")
}

/// `YYYY-MM-DD` (UTC) of the system clock, without a date library.
pub fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    civil_date(days)
}

/// The date `days` after 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_opening() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(19_723), "2024-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        let f = RunFacts {
            command: "tunnelbed bench x".into(),
            date: "2026-12-01".into(),
            load_start: "1.00 1.00 1.00".into(),
            load_end: "2.00 1.00 1.00".into(),
        };
        let o = opening("x benchmark", &f);
        assert!(o.starts_with("# x benchmark\n\n- command: `tunnelbed bench x` (`tunnelbed` is"));
        assert!(o.contains("- date: 2026-12-01 (UTC)\n- machine: "));
        assert!(o.contains("at start: 1.00 1.00 1.00; at end: 2.00 1.00 1.00"));
    }

    #[test]
    fn goodput_plot_has_both_series_and_is_linked() {
        let series = [
            Series {
                name: "ours".into(),
                points: vec![(10.0, 2.0), (0.0, 9.5), (1.0, 8.0)],
            },
            Series {
                name: "ref <x>".into(),
                points: vec![(0.0, 9.0), (1.0, 6.5), (10.0, 1.0)],
            },
        ];
        let svg = goodput_plot("goodput", &series);
        assert_eq!(svg.matches("<polyline class=\"series\"").count(), 2);
        assert_eq!(
            svg.matches("<circle class=\"point\" data-series=\"ours\"")
                .count(),
            3
        );
        assert_eq!(
            svg.matches("<circle class=\"point\" data-series=\"ref &lt;x&gt;\"")
                .count(),
            3
        );
        let d = std::env::temp_dir().join(format!("tb-report-{}", std::process::id()));
        let md = d.join("bench.md");
        let plot = write_report_with_plot(&md, "# r\n", &series, "goodput")
            .unwrap()
            .unwrap();
        assert_eq!(plot, d.join("bench-goodput.svg"));
        assert_eq!(std::fs::read_to_string(&plot).unwrap(), svg);
        let doc = std::fs::read_to_string(&md).unwrap();
        assert!(doc.ends_with("## Goodput vs loss\n\n![goodput](bench-goodput.svg)\n"));
        let empty = [Series {
            name: "x".into(),
            points: vec![],
        }];
        let md2 = d.join("none.md");
        assert_eq!(
            write_report_with_plot(&md2, "# r\n", &empty, "t").unwrap(),
            None
        );
        assert!(!d.join("none-goodput.svg").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
