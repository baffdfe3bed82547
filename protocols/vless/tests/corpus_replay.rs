//! Replays the committed fuzz corpora through the fuzz bodies on stable Rust, so every
//! input the fuzzer kept stays a regression test. A missing or empty corpus directory is
//! a failure: this test never passes on zero files.

use tunnelbed_netio::corpus::{corpus, replay};

use tunnelbed_vless::fuzzing::{
    fuzz_request_decode, fuzz_server_session, fuzz_umfurs_decode, run_server_session,
};

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
