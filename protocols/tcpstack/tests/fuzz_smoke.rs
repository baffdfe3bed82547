//! Thousands of seeded random inputs through the fuzz bodies on stable Rust: a cheap
//! stand-in for the fuzzer that runs in every `cargo test`.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tunnelbed_tcpstack::fuzzing::{fuzz_packet_decode, run_stack_ops, OpsSummary};

#[test]
fn random_packets_never_panic() {
    let mut r = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..20_000 {
        let n = r.gen_range(0..120);
        let mut d = vec![0u8; n];
        r.fill_bytes(&mut d);
        if n > 0 && r.gen_bool(0.5) {
            d[0] = 0x45; // mostly IPv4 with IHL 5, to get past the first checks
        }
        fuzz_packet_decode(&d);
    }
}

#[test]
fn random_op_sequences_hold_the_invariants() {
    let mut r = ChaCha8Rng::seed_from_u64(12);
    let mut runs: Vec<OpsSummary> = Vec::new();
    for _ in 0..300 {
        let n = r.gen_range(16..3000);
        let mut d = vec![0u8; n];
        r.fill_bytes(&mut d);
        if let Some(s) = run_stack_ops(&d) {
            runs.push(s);
        }
    }
    let any = |f: &dyn Fn(&OpsSummary) -> bool| runs.iter().any(f);
    assert!(any(&|s| s.ops >= 50), "long op sequences");
    assert!(any(&|s| s.rsts_sent > 0), "an RST sent");
    assert!(any(&|s| s.bad_packets > 0), "a corrupted packet refused");
}
