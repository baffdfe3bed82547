//! Results for CI and for sweeps across machines: four shards of a sweep, run as
//! separate processes (as a GitHub Actions matrix or a Kubernetes Indexed Job runs them)
//! and merged, give the same runs as one unsharded sweep; a missing shard makes the merge
//! fail; and the JUnit XML of `sim sweep`, `sim merge` and `sim all` parses (Python's
//! ElementTree, a parser we did not write) with the counts the runs had.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tunnelbed_sim::record::{read_json_lines, RunRecord};

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("sim_results")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tunnelbed(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tunnelbed"));
    c.args(args);
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn records(p: &Path) -> Vec<RunRecord> {
    read_json_lines(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// (tests, failures, testcases, failure elements) of a JUnit file, read by Python.
fn junit_counts(p: &Path) -> (usize, usize, usize, usize) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             r = E.parse(sys.argv[1]).getroot()\n\
             assert r.tag == 'testsuites', r.tag\n\
             print(r.get('tests'), r.get('failures'), len(r.findall('./testsuite/testcase')), len(r.findall('./testsuite/testcase/failure')))",
        ])
        .arg(p)
        .output()
        .expect("python3 is needed to parse the JUnit XML (apt-get install -y python3)");
    assert!(out.status.success(), "{}", text(&out));
    let v: Vec<usize> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    (v[0], v[1], v[2], v[3])
}

const SEEDS: &str = "0..40";

#[test]
fn four_shards_merged_equal_one_sweep() {
    let d = dir("shards");
    let sweep = |extra: &[&str]| {
        let mut c = tunnelbed(&[
            "sim",
            "sweep",
            "udp-echo",
            "--seeds",
            SEEDS,
            "--profile",
            "swarm",
            "--sabotage",
            "--jobs",
            "1",
        ]);
        c.args(extra);
        c
    };
    // The unsharded sweep (sabotaged, so some seeds fail and verdicts differ by seed).
    let all = d.join("all.jsonl");
    let all_xml = d.join("all.xml");
    let o = sweep(&[
        "--json",
        all.to_str().unwrap(),
        "--junit",
        all_xml.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let want = records(&all);
    let failed = want.iter().filter(|r| !r.ok).count();
    assert_eq!(want.len(), 40);
    assert!(failed > 0 && failed < 40, "{failed} of 40 failed");
    assert_eq!(junit_counts(&all_xml), (40, failed, 40, failed));

    // Four shards as four processes at once.
    let shard_files: Vec<PathBuf> = (0..4).map(|k| d.join(format!("shard-{k}.jsonl"))).collect();
    let children: Vec<_> = (0..4)
        .map(|k| {
            sweep(&[
                "--shard",
                &format!("{k}/4"),
                "--json",
                shard_files[k].to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (k, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "shard {k}: {}",
            text(&o)
        );
        let seeds: Vec<u64> = records(&shard_files[k]).iter().map(|r| r.seed).collect();
        assert_eq!(seeds, (k as u64..40).step_by(4).collect::<Vec<_>>());
    }

    // Merged: the same records (verdict, trace hash, duration, replay line) per seed.
    let merged = d.join("merged.jsonl");
    let merged_xml = d.join("merged.xml");
    let mut args = vec!["sim", "merge"];
    let names: Vec<String> = shard_files
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    args.extend(names.iter().map(String::as_str));
    args.extend([
        "--seeds",
        SEEDS,
        "--json",
        merged.to_str().unwrap(),
        "--junit",
        merged_xml.to_str().unwrap(),
    ]);
    let o = tunnelbed(&args).output().unwrap();
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "failures make the merge exit 1: {out}"
    );
    assert!(
        out.contains(&format!("40 runs, {} passed, {failed} failed", 40 - failed)),
        "{out}"
    );
    assert_eq!(
        records(&merged),
        want,
        "merged shards differ from the unsharded sweep"
    );
    assert_eq!(junit_counts(&merged_xml), (40, failed, 40, failed));

    // A lost shard is an incomplete merge, not a smaller sweep.
    let o = tunnelbed(&[
        "sim", "merge", &names[0], &names[1], &names[3], "--seeds", SEEDS,
    ])
    .output()
    .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("10 seeds MISSING"), "{out}");
    // A shard file that is not ours is an error naming the line.
    let bad = d.join("bad.jsonl");
    std::fs::write(&bad, "{\"seed\":1}\n").unwrap();
    let o = tunnelbed(&["sim", "merge", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("line 1"), "{}", text(&o));
}

#[test]
fn sim_all_writes_junit_and_run_records() {
    let d = dir("all");
    let out_dir = d.join("out");
    let xml = d.join("all.xml");
    let o = tunnelbed(&[
        "sim",
        "all",
        "--scenario",
        "udp-echo",
        "--seeds",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
        "--junit",
        xml.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let recs = records(&out_dir.join("runs.jsonl"));
    let profiles = tunnelbed_sim::scenarios::find("udp-echo")
        .unwrap()
        .profiles
        .len();
    assert_eq!(recs.len(), 2 * profiles);
    for r in &recs {
        let pcap = r.pcap.as_ref().expect("sim all records its pcap");
        assert!(out_dir.join(pcap).is_file(), "{pcap}");
    }
    assert_eq!(junit_counts(&xml), (2 * profiles, 0, 2 * profiles, 0));
    let o = tunnelbed(&["sim", "all", "--scenario", "no-such"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
