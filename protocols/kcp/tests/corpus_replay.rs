//! Replays the committed fuzz corpora through the fuzz bodies on stable Rust, so every
//! input the fuzzer ever kept (and every crash fixed since) stays a regression test.
//! A missing or empty corpus directory is a failure: this test never passes on zero files
//! (`tunnelbed_netio::corpus`, shared by every crate's replay).

use tunnelbed_netio::corpus::{corpus, replay};

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
