//! `tunnelbed bench kcp` end to end, in a debug build with a tiny transfer and one
//! repetition: the command runs, prints a table with both implementations and ratios,
//! reports every transfer intact, and writes the Markdown report. This checks the
//! machinery, not performance.

use std::path::Path;
use std::process::Command;

#[test]
fn bench_kcp_prints_both_implementations_and_intact_transfers() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench_kcp");
    let _ = std::fs::remove_dir_all(&dir);
    let out_file = dir.join("nested/kcp-bench.md");
    let out = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args([
            "bench",
            "kcp",
            "--bytes",
            "64KiB",
            "--reps",
            "1",
            "--profiles",
            "clean,loss10,hostile",
            "--out",
        ])
        .arg(&out_file)
        .output()
        .expect("running tunnelbed");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}:\n{text}", out.status);
    for want in [
        "tunnelbed-kcp (ours)",
        "crate kcp 0.6 (ref)",
        "**ours/ref**",
        "| loss10 |",
        "| hostile |",
        "integrity: all 6 transfers delivered every byte intact and in order",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("NOT INTACT"), "{text}");
    let report = std::fs::read_to_string(&out_file).expect("report written");
    for want in [
        "- command: `tunnelbed bench kcp",
        "- date: ",
        "- machine: ",
        "- CPU: ",
        "## Every run",
    ] {
        assert!(report.contains(want), "report lacks {want:?}:\n{report}");
    }
}

#[test]
fn bench_kcp_rejects_bad_options_with_usage_exit() {
    for args in [
        &["--profiles", "nowhere"][..],
        &["--mtu", "1450", "--profiles", "hostile"][..],
        &["--mode", "message", "--size", "200000"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
            .args(["bench", "kcp", "--bytes", "1k", "--reps", "1"])
            .args(args)
            .output()
            .expect("running tunnelbed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}
