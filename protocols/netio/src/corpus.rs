//! Replaying committed fuzz corpora on stable Rust, for every crate's
//! `tests/corpus_replay.rs`: each input the fuzzer ever kept (and every crash fixed
//! since) stays a regression test without nightly or libFuzzer. A missing or empty
//! corpus directory is a failure, so a replay never passes on zero files.

use std::fs;
use std::path::PathBuf;

/// The repository's `corpora/` directory (this crate sits at `protocols/netio`).
pub fn corpora_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../corpora")
}

/// Every file of `corpora/<name>/`, sorted by path, with its bytes.
///
/// # Panics
/// When the directory is missing, unreadable or empty: the caller is a test.
pub fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpora_dir().join(name);
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

/// Runs the fuzz body `body` on every file of `corpora/<name>/` and returns how many
/// ran.
///
/// # Panics
/// On the first file the body panics on, naming it so it can be run alone under the
/// fuzzer; or as [`corpus`] does.
pub fn replay(name: &str, body: fn(&[u8])) -> usize {
    let files = corpus(name);
    for (path, data) in &files {
        let r = std::panic::catch_unwind(|| body(data));
        assert!(r.is_ok(), "{} failed on {}", name, path.display());
    }
    eprintln!("{name}: replayed {} files", files.len());
    files.len()
}
