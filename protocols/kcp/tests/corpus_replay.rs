//! Replays the committed fuzz corpora through the fuzz bodies on stable Rust, so every
//! input the fuzzer ever kept (and every crash fixed since) stays a regression test.
//! A missing or empty corpus directory is a failure: this test never passes on zero files.

use std::fs;
use std::path::PathBuf;

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../corpora")
        .join(name);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} missing: {e}", dir.display()));
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus directory {} holds no files",
        dir.display()
    );
    files
}

fn replay(name: &str, body: fn(&[u8])) {
    let files = corpus(name);
    for (path, data) in &files {
        // Name the file that fails, so it can be run alone under the fuzzer.
        let r = std::panic::catch_unwind(|| body(data));
        assert!(r.is_ok(), "{} failed on {}", name, path.display());
    }
    eprintln!("{name}: replayed {} files", files.len());
}

#[test]
fn kcp_segment_corpus() {
    replay("kcp_segment", tunnelbed_kcp::fuzzing::fuzz_segment_decode);
}

#[test]
fn kcp_session_ops_corpus() {
    replay("kcp_session_ops", tunnelbed_kcp::fuzzing::fuzz_session_ops);
}

/// The session corpus must exercise the machine, not only parse: data checked on arrival
/// in both modes, forged input, a tainted run, a dead link. A corpus trimmed to inputs
/// that stop early would still "pass" the replay above; this catches that.
#[test]
fn kcp_session_ops_corpus_covers_the_machine() {
    use tunnelbed_kcp::fuzzing::run_session_ops;
    let runs: Vec<_> = corpus("kcp_session_ops")
        .iter()
        .filter_map(|(_, d)| run_session_ops(d))
        .collect();
    let any = |f: &dyn Fn(&tunnelbed_kcp::fuzzing::SessionSummary) -> bool| runs.iter().any(f);
    assert!(
        any(&|r| r.stream && r.delivered > 0),
        "stream data delivered"
    );
    assert!(any(&|r| !r.stream && r.delivered > 1), "messages delivered");
    assert!(any(&|r| r.forged_input && !r.tainted && r.delivered > 0));
    assert!(any(&|r| r.tainted), "a forged data segment accepted");
    assert!(any(&|r| r.dead), "a dead link");
    assert!(any(&|r| r.ops >= 20), "long op sequences");
}
