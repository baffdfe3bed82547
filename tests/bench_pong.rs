//! `tunnelbed bench pong` end to end with a tiny plan, in a debug build: the pong local
//! and remote children come up over every carrier, every download arrives with the
//! payload's SHA-256, every latency stream and idle stream comes up, and the report has
//! every table row and is written to `--out`. This checks the machinery, not performance.

use std::path::Path;
use std::process::Command;

#[test]
fn bench_pong_runs_every_stack_and_writes_the_report() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench_pong");
    let _ = std::fs::remove_dir_all(&dir);
    let out_file = dir.join("nested/pong-bench.md");
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(["bench", "pong", "--size", "1", "--reps", "2"])
        .args(["--carrier", "tcp,tls", "--carrier", "ws"])
        .args(["--carrier", "h2c,h2,h3,http,https"])
        .args([
            "--idle-streams",
            "60",
            "--memory-cycles",
            "2",
            "--idle-close",
            "2",
            "--streams",
            "20",
            "--exchanges",
            "3",
        ])
        .arg("--out")
        .arg(&out_file)
        .output()
        .expect("running tunnelbed");
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench pong failed:\n{out}");
    let report = std::fs::read_to_string(&out_file).expect("the report was written");
    for want in [
        "| direct TCP | ",
        "| reference: TCP relay x2 | ",
        "| reference: TLS relay x2 | ",
        "% of the TLS two-relay reference",
        "| **pong over tcp** | ",
        "| **pong over tls** | ",
        "| **pong over ws** | ",
        "| **pong over h2c** | ",
        "| **pong over h2** | ",
        "| **pong over h3** | ",
        "| **pong over http** | ",
        "| **pong over https** | ",
        "pong over ws: ",
        "pong over https: ",
        "of the two-relay reference",
        "integrity: all 33 downloads (warm-ups included) arrived whole",
        "| tcp | 60 of 60 |",
        "| tls | 60 of 60 |",
        "| ws | 60 of 60 |",
        "| h2c | 60 of 60 |",
        "| h2 | 60 of 60 |",
        "| h3 | 60 of 60 |",
        "| http | 60 of 60 |",
        "| https | 60 of 60 |",
        "RLIMIT_NOFILE",
        "### Open and close, 2 times in the same processes",
        "Streams up per cycle: tcp 60, 60; tls 60, 60; ws 60, 60; h2c 60, 60; h2 60, 60; h3 60, 60; http 60, 60; https 60, 60.",
        "load average",
    ] {
        assert!(report.contains(want), "missing {want:?} in:\n{report}");
    }
    // Every latency row reports zero failed streams.
    let lat = report
        .split("## Latency")
        .nth(1)
        .and_then(|s| s.split("## Memory").next())
        .expect("a latency section");
    let rows: Vec<&str> = lat
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 11, "{lat}");
    for r in rows {
        assert!(r.trim_end().ends_with("| 0 |"), "failed streams in {r:?}");
    }
    // The cycle table gives each process's heap in use after every cycle (a number on
    // glibc, never n/a).
    let cycles = report
        .split("### Open and close")
        .nth(1)
        .expect("a cycle table");
    for who in ["| tcp | local |", "| h3 | remote |"] {
        let row = cycles
            .lines()
            .find(|l| l.starts_with(who))
            .unwrap_or_else(|| panic!("no {who} row in:\n{cycles}"));
        // Two cycles and the rest column, each with the heap in brackets; the
        // carriers idle-closed before the rest figures were taken.
        assert!(
            !row.contains("n/a") && row.matches(") |").count() == 3,
            "heap figures missing in {row:?}"
        );
        assert!(!row.contains("carriers still open"), "{row:?}");
    }
}
