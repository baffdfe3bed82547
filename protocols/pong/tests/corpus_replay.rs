//! Replays the committed fuzz corpora through the fuzz bodies on stable Rust, so every
//! input the fuzzer ever kept (and every crash fixed since) stays a regression test.
//! A missing or empty corpus directory is a failure: this test never passes on zero files
//! (`tunnelbed_netio::corpus`, shared by every crate's replay).

use tunnelbed_netio::corpus::{corpus, replay};

use tunnelbed_pong::fuzzing::{
    fuzz_frame_decode, fuzz_remote_session, run_remote_session, SessionSummary,
};

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
