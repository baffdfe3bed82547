//! `tunnelbed bench candy` end to end with a tiny plan (2 MB, one transfer per stack):
//! both stacks come up in their namespaces (ours, and Candy's server and clients built
//! from `shared/peers/candy`), every transfer arrives whole (the sink checks each byte),
//! and the report has both rows, the CPU columns and the load. This checks the machinery,
//! not performance. Needs root; a missing Candy build fails with how to get it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn candy_peer_dir() -> PathBuf {
    if let Ok(d) = std::env::var("TUNNELBED_CANDY_PEER_DIR") {
        return PathBuf::from(d);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/peers/candy"))
        .find(|d| d.join("build.sh").is_file())
        .unwrap_or_else(|| {
            panic!(
                "Candy's peer files (shared/peers/candy/build.sh) not found above {}: set \
                 TUNNELBED_CANDY_PEER_DIR",
                here.display()
            )
        })
}

#[test]
fn bench_candy_runs_both_stacks_and_writes_the_report() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench_candy");
    let _ = std::fs::remove_dir_all(&dir);
    let out_file = dir.join("nested/candy-bench.md");
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(["bench", "candy", "--size", "2", "--reps", "1"])
        .arg("--candy-peers")
        .arg(candy_peer_dir())
        .arg("--out")
        .arg(&out_file)
        .output()
        .expect("running tunnelbed");
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench candy failed:\n{out}");
    let report = std::fs::read_to_string(&out_file).expect("the report was written");
    for want in [
        "2 MB per transfer, 1 timed transfers per stack",
        "server CPU s per GB",
        "throughput: ours ",
        "server CPU per GB: ours ",
        "load average",
    ] {
        assert!(report.contains(want), "missing {want:?} in:\n{report}");
    }
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| stack"))
        .collect();
    assert_eq!(rows.len(), 2, "{report}");
    for (r, name) in rows.iter().zip(["ours", "Candy"]) {
        assert!(r.contains(name), "{r}");
        assert!(r.trim_end().ends_with("| 0 |"), "a failed transfer: {r}");
        // A measured rate, not 0.0.
        let mbps: f64 = r
            .split('|')
            .nth(2)
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(mbps > 0.0, "no rate in {r}");
    }
}
