//! Replays the committed fuzz corpora through the fuzz bodies on stable Rust, so every
//! input the fuzzer ever kept (and every crash fixed since) stays a regression test.
//! A missing or empty corpus directory is a failure: this test never passes on zero files.

use std::fs;
use std::path::PathBuf;

use tunnelbed_pong::fuzzing::{
    fuzz_frame_decode, fuzz_remote_session, run_remote_session, SessionSummary,
};

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
fn pong_frame_corpus() {
    replay("pong_frame", fuzz_frame_decode);
}

#[test]
fn pong_remote_corpus() {
    replay("pong_remote", fuzz_remote_session);
}

/// The remote corpus must exercise the machine, not only parse: dials, data read,
/// rsts sent, input held back, a protocol error, frames for ended streams. A corpus
/// trimmed to inputs that stop early would still pass the replay above; this catches
/// that.
#[test]
fn pong_remote_corpus_covers_the_machine() {
    let runs: Vec<SessionSummary> = corpus("pong_remote")
        .iter()
        .filter_map(|(_, d)| run_remote_session(d))
        .collect();
    let any = |f: &dyn Fn(&SessionSummary) -> bool| runs.iter().any(f);
    assert!(any(&|r| r.dials > 0), "a dial raised");
    assert!(any(&|r| r.reads > 0), "data read on a stream");
    assert!(any(&|r| r.rsts_sent > 0), "an rst sent");
    assert!(any(&|r| r.holds > 0), "input held back");
    assert!(any(&|r| r.protocol_error), "a protocol error");
    assert!(any(&|r| r.late_frames > 0), "frames for an ended stream");
    assert!(any(&|r| r.ops >= 20), "long op sequences");
}
