//! Replays the committed fuzz corpora through the fuzz bodies on stable Rust, so every
//! input the fuzzer kept stays a regression test. A missing or empty corpus directory is
//! a failure: this test never passes on zero files.

use std::fs;
use std::path::PathBuf;

use tunnelbed_vless::fuzzing::{
    fuzz_request_decode, fuzz_server_session, fuzz_umfurs_decode, run_server_session,
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
        let r = std::panic::catch_unwind(|| body(data));
        assert!(r.is_ok(), "{} failed on {}", name, path.display());
    }
    eprintln!("{name}: replayed {} files", files.len());
}

#[test]
fn vless_request_corpus() {
    replay("vless_request", fuzz_request_decode);
}

#[test]
fn vless_umfurs_corpus() {
    replay("vless_umfurs", fuzz_umfurs_decode);
}

#[test]
fn vless_session_corpus() {
    replay("vless_session", fuzz_server_session);
}

/// The session corpus must reach every decision, not only parse errors: a corpus trimmed
/// to inputs that stop early would still pass the replay above.
#[test]
fn vless_session_corpus_covers_the_machine() {
    let runs: Vec<_> = corpus("vless_session")
        .iter()
        .map(|(_, d)| run_server_session(d))
        .collect();
    for want in ["relay", "udp", "crumfurs"] {
        assert!(
            runs.iter().any(|r| r.accepted.as_deref() == Some(want)),
            "no input accepted as {want}"
        );
    }
    for want in [
        "unknown user id",
        "not implemented",
        "not served",
        "truncated",
    ] {
        assert!(
            runs.iter()
                .any(|r| r.rejected.as_deref().is_some_and(|x| x.contains(want))),
            "no input rejected with {want:?}"
        );
    }
    assert!(runs.iter().any(|r| r.datagrams >= 3), "datagrams split");
}
