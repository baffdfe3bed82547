//! A few hundred seeded random inputs through the fuzz bodies on stable Rust: a cheap
//! check, in every `cargo test`, that the bodies and the machine hold their invariants
//! beyond the committed corpora.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn inputs(seed: u64, count: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let n = r.gen_range(0..max_len);
            (0..n).map(|_| r.gen()).collect()
        })
        .collect()
}

#[test]
fn random_segments() {
    for (i, d) in inputs(1, 2000, 200).iter().enumerate() {
        let r = std::panic::catch_unwind(|| tunnelbed_kcp::fuzzing::fuzz_segment_decode(d));
        assert!(r.is_ok(), "input {i}: {d:02x?}");
    }
}

#[test]
fn random_session_ops() {
    for (i, d) in inputs(2, 300, 3000).iter().enumerate() {
        let r = std::panic::catch_unwind(|| tunnelbed_kcp::fuzzing::fuzz_session_ops(d));
        assert!(r.is_ok(), "input {i} of seed 2");
    }
}
