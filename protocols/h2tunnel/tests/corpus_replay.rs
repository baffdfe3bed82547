//! Replays the committed fuzz corpora through the fuzz bodies on stable Rust, so every
//! input the fuzzer ever kept (and every crash fixed since) stays a regression test.
//! A missing or empty corpus directory is a failure: this test never passes on zero files
//! (`tunnelbed_netio::corpus`, shared by every crate's replay).

use tunnelbed_netio::corpus::{corpus, replay};

use tunnelbed_h2tunnel::fuzzing::{fuzz_frame_decode, fuzz_tunnel, run_tunnel};

#[test]
fn h2t_frame_corpus() {
    replay("h2t_frame", fuzz_frame_decode);
}

#[test]
fn h2t_tunnel_corpus() {
    replay("h2t_tunnel", fuzz_tunnel);
}

/// The tunnel corpus must exercise the machine, not only parse: both roles through the
/// handshake, streams established and data read, failures and peer shutdowns, keepalives
/// and RSTs. A corpus trimmed to inputs that stop early would still pass the replay
/// above; this catches that.
#[test]
fn h2t_tunnel_corpus_covers_the_machine() {
    let runs: Vec<_> = corpus("h2t_tunnel")
        .iter()
        .filter_map(|(_, d)| run_tunnel(d))
        .collect();
    let any = |f: &dyn Fn(&tunnelbed_h2tunnel::fuzzing::TunnelSummary) -> bool| runs.iter().any(f);
    assert!(
        any(&|r| r.server && r.ready),
        "a server through the handshake"
    );
    assert!(
        any(&|r| !r.server && r.ready),
        "a client through the handshake"
    );
    // Reading an established stream covers no code that reading a syn_sent one does
    // not, so coverage-guided minimisation need not keep both in one input.
    assert!(any(&|r| r.established > 0), "a stream established");
    assert!(any(&|r| r.read > 0), "data read on a stream");
    assert!(any(&|r| r.sent > 0), "data sent");
    assert!(
        any(&|r| r.ready && r.failed),
        "a failure after the handshake"
    );
    assert!(any(&|r| r.peer_shutdown), "a peer shutdown");
    assert!(any(&|r| r.pings > 0), "a keepalive sent");
    assert!(any(&|r| r.rsts > 0), "an RST sent");
    assert!(any(&|r| r.ops >= 20), "long op sequences");
}

/// The crash the first fuzz run found (a harness bug: a PING's stream id is not kept on
/// re-encoding), kept as a fixed input.
#[test]
fn ping_on_a_stream_reencodes_on_stream_zero() {
    fuzz_frame_decode(&[0, 0, 8, 6, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8]);
}
