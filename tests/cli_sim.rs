//! The `tunnelbed sim` command line as a user meets it: determinism, pcaps that tshark
//! dissects cleanly, sweeps that list failing seeds, and exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("running tunnelbed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Fails with an install hint when tshark is missing (never passes silently).
fn check_pcap_with_tshark(path: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/check-pcaps");
    let out = Command::new("bash")
        .arg(&script)
        .arg(path)
        .output()
        .expect("running .ci/check-pcaps");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tshark check failed for {} (install tshark with `apt-get install -y tshark` if missing):\n{text}",
        path.display()
    );
}

#[test]
fn udp_echo_twice_gives_identical_pcaps_and_tshark_reads_them() {
    let d = tmpdir("udp_echo_det");
    let a = d.join("a.pcapng");
    let b = d.join("b.pcapng");
    for p in [&a, &b] {
        let (code, out) = run(bin()
            .args([
                "sim",
                "run",
                "udp-echo",
                "--seed",
                "7",
                "--profile",
                "lossy",
                "--pcap",
            ])
            .arg(p));
        assert_eq!(code, 0, "{out}");
    }
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(ba.len() > 1000);
    assert_eq!(ba, bb, "same seed gave different pcap bytes");
    let (code, out) = run(bin().args([
        "sim",
        "run",
        "udp-echo",
        "--seed",
        "7",
        "--profile",
        "lossy",
        "--check-determinism",
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("same seed, same trace and pcap bytes"),
        "{out}"
    );
    check_pcap_with_tshark(&a);
}

/// Every scenario, run in two separate processes with one seed, writes the same trace
/// and the same pcap bytes (within one process, the harness checks the same; across
/// processes, anything seeded from process state, such as tokio's task ids or a
/// `RandomState`, would show here).
#[test]
fn every_scenario_replays_byte_for_byte_across_processes() {
    let d = tmpdir("cross_process_det");
    for s in tunnelbed_sim::scenarios::all() {
        let mut outputs = Vec::new();
        for run_no in 0..2 {
            let pcap = d.join(format!("{}-{run_no}.pcapng", s.name));
            let trace = d.join(format!("{}-{run_no}.trace", s.name));
            let (code, out) = run(bin()
                .args(["sim", "run", s.name, "--seed", "3", "--profile", "lossy"])
                .arg("--pcap")
                .arg(&pcap)
                .arg("--trace")
                .arg(&trace));
            assert_eq!(code, 0, "{}: {out}", s.name);
            outputs.push((
                std::fs::read(&pcap).unwrap(),
                std::fs::read(&trace).unwrap(),
            ));
        }
        let ((pa, ta), (pb, tb)) = (&outputs[0], &outputs[1]);
        assert!(pa.len() > 1000, "{}: capture is empty", s.name);
        assert!(!ta.is_empty(), "{}: trace is empty", s.name);
        assert!(ta == tb, "{}: two processes wrote different traces", s.name);
        assert!(pa == pb, "{}: two processes wrote different pcaps", s.name);
    }
}

#[test]
fn tcp_echo_pcap_dissects_cleanly() {
    let d = tmpdir("tcp_echo_pcap");
    let p = d.join("t.pcapng");
    let (code, out) = run(bin()
        .args([
            "sim",
            "run",
            "tcp-echo",
            "--seed",
            "3",
            "--profile",
            "hostile",
            "--pcap",
        ])
        .arg(&p));
    assert_eq!(code, 0, "{out}");
    check_pcap_with_tshark(&p);
}

#[test]
fn sweep_lists_failing_seeds_with_replay_lines() {
    let (code, out) = run(bin().args([
        "sim",
        "sweep",
        "udp-echo",
        "--seeds",
        "0..12",
        "--profile",
        "swarm",
        "--sabotage",
    ]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "replay: tunnelbed sim run udp-echo --seed 0 --profile swarm --sabotage integrity"
        ),
        "{out}"
    );
    assert!(out.contains("failed (seeds: 0"), "{out}");
    let (code, out) = run(bin().args([
        "sim",
        "sweep",
        "udp-echo",
        "--seeds",
        "0..24",
        "--profile",
        "swarm",
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("24 runs, 24 passed, 0 failed"), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, out) = run(bin().args(["sim", "run", "no-such-scenario"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown scenario"), "{out}");
    let (code, out) = run(bin().args(["sim", "run", "udp-echo", "--profile", "nope"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown profile"), "{out}");
    let (code, _) = run(bin().args(["sim", "sweep", "udp-echo", "--seeds", "5..1"]));
    assert_eq!(code, 2);
    let (code, _) = run(bin().args(["frobnicate"]));
    assert_eq!(code, 2);
}

#[test]
fn every_sabotage_kind_fails_and_replays() {
    for (kind, check) in [
        ("data-path", "integrity"),
        ("liveness", "liveness"),
        ("leak", "no-leak"),
    ] {
        let (code, out) =
            run(bin().args(["sim", "run", "tcp-echo", "--seed", "8", "--sabotage", kind]));
        assert_eq!(code, 1, "{kind}: {out}");
        assert!(out.contains(&format!("[FAIL] {check}: ")), "{kind}: {out}");
        assert!(
            out.contains(&format!(
                "replay: tunnelbed sim run tcp-echo --seed 8 --profile clean --sabotage {kind}"
            )),
            "{kind}: {out}"
        );
    }
    let (code, out) = run(bin().args([
        "sim",
        "run",
        "udp-echo",
        "--seed",
        "8",
        "--profile",
        "lossy",
        "--sabotage",
        "determinism",
        "--check-determinism",
    ]));
    assert_eq!(code, 1, "{out}");
    let (code, out) = run(bin().args(["sim", "run", "udp-echo", "--sabotage", "nope"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown sabotage"), "{out}");
}

#[test]
fn failing_run_prints_replay_line_and_exits_1() {
    let (code, out) = run(bin().args(["sim", "run", "udp-echo", "--seed", "4", "--sabotage"]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "replay: tunnelbed sim run udp-echo --seed 4 --profile clean --sabotage integrity"
        ),
        "{out}"
    );
}
