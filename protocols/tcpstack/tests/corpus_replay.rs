//! Replays the committed fuzz corpora through the fuzz bodies on stable Rust, so every
//! input the fuzzer kept (and every crash fixed since) stays a regression test. A missing
//! or empty corpus directory is a failure: this test never passes on zero files.

use tunnelbed_netio::corpus::{corpus, replay};

use tunnelbed_tcpstack::fuzzing::{fuzz_packet_decode, fuzz_stack_ops, run_stack_ops, OpsSummary};

#[test]
fn tcpstack_packet_corpus() {
    replay("tcpstack_packet", fuzz_packet_decode);
}

#[test]
fn tcpstack_ops_corpus() {
    replay("tcpstack_ops", fuzz_stack_ops);
}

/// The ops corpus must reach the machine, not only parse: connections accepted, data
/// read, RSTs and challenge ACKs sent, closing states, retransmissions, bad packets.
#[test]
fn tcpstack_ops_corpus_covers_the_machine() {
    let runs: Vec<OpsSummary> = corpus("tcpstack_ops")
        .iter()
        .filter_map(|(_, d)| run_stack_ops(d))
        .collect();
    let any = |f: &dyn Fn(&OpsSummary) -> bool| runs.iter().any(f);
    assert!(any(&|r| r.accepted > 0), "a connection accepted");
    assert!(any(&|r| r.bytes_read > 0), "data read");
    assert!(any(&|r| r.rsts_sent > 0), "an RST sent");
    assert!(any(&|r| r.challenge_acks > 0), "a challenge ACK");
    assert!(any(&|r| r.closing_states), "a closing state reached");
    assert!(any(&|r| r.retransmits > 0), "a retransmission");
    assert!(any(&|r| r.bad_packets > 0), "a bad packet");
    assert!(any(&|r| r.ops >= 50), "long op sequences");
}

/// The hand-built seeds reach what they are built for (this also checks that
/// `OpsInput` writes the format `fuzz_stack_ops` reads).
#[test]
fn hand_built_seeds_reach_the_machine() {
    let runs: Vec<OpsSummary> = tunnelbed_tcpstack::fuzzing::ops_seeds()
        .iter()
        .map(|d| run_stack_ops(d).expect("long enough"))
        .collect();
    assert!(
        runs[0].accepted == 1 && runs[0].bytes_read == 700,
        "{:?}",
        runs[0]
    );
    assert!(runs[0].closing_states);
    assert!(
        runs[1].retransmits >= 7 && runs[1].rsts_sent >= 1,
        "{:?}",
        runs[1]
    );
    assert!(runs[2].challenge_acks == 2, "{:?}", runs[2]);
    assert!(
        runs[3].closing_states && runs[3].rsts_sent >= 1,
        "{:?}",
        runs[3]
    );
    assert!(
        runs[4].bytes_read == 200 && runs[4].bad_packets >= 2,
        "{:?}",
        runs[4]
    );
}

/// Writes the hand-built seeds into `corpora/tcpstack_ops` (run once by hand:
/// `cargo test -p tunnelbed-tcpstack --test corpus_replay -- --ignored`).
#[test]
#[ignore]
fn write_hand_built_seeds() {
    let dir = tunnelbed_netio::corpus::corpora_dir().join("tcpstack_ops");
    for (i, s) in tunnelbed_tcpstack::fuzzing::ops_seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
    }
}
