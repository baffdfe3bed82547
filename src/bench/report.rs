//! How every benchmark report is put together: the same opening lines (title, command,
//! date, machine, load), then the bench's own setup lines and tables, written to the
//! `--out` file the same way.

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
}
