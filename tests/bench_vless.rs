//! `tunnelbed bench vless` end to end with a tiny plan, in a debug build: the reference
//! relays, our VLESS client and server and Debian's v2ray come up, every download
//! arrives whole, every latency connection of every round completes its exchanges, and
//! the report has both tables and the target lines. This checks the machinery, not
//! performance. Needs `v2ray` (`apt-get install -y v2ray`).

use std::path::Path;
use std::process::Command;

#[test]
fn bench_vless_runs_every_stack_and_writes_the_report() {
    assert!(
        Command::new("v2ray").arg("-version").output().is_ok(),
        "v2ray not found: install Debian's v2ray 4.34 with `apt-get install -y v2ray`"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench_vless");
    let _ = std::fs::remove_dir_all(&dir);
    let out_file = dir.join("nested/vless-bench.md");
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(["bench", "vless", "--size", "1", "--reps", "2"])
        .args(["--streams", "20", "--exchanges", "3"])
        .arg("--out")
        .arg(&out_file)
        .output()
        .expect("running tunnelbed");
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench vless failed:\n{out}");
    let report = std::fs::read_to_string(&out_file).expect("the report was written");
    for want in [
        "## Throughput",
        "## Small-request latency (20 concurrent connections, 100-byte request/answer)",
        "120 samples per stack",
        "throughput: ours ",
        "CPU per GB: ours ",
        "small-request p99: ours ",
        "load average",
    ] {
        assert!(report.contains(want), "missing {want:?} in:\n{report}");
    }
    for section in ["## Throughput", "## Small-request latency"] {
        let body = report
            .split(section)
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap_or_else(|| panic!("no {section} in:\n{report}"));
        let rows: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| stack"))
            .collect();
        assert_eq!(rows.len(), 3, "{section}:\n{body}");
        for (r, name) in rows
            .iter()
            .zip(["reference: TCP relay x2", "ours", "v2ray"])
        {
            assert!(r.contains(name), "{r}");
            // The last column is failures (downloads) or failed streams (latency).
            assert!(
                r.trim_end().ends_with("| 0 |"),
                "a failure in {section}: {r}"
            );
        }
    }
}
