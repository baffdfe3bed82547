//! Thousands of seeded random inputs through the fuzz bodies on stable Rust: a cheap
//! check, in every `cargo test`, that the codec and the remote machine hold their
//! invariants, plus a check that the inputs really reach the interesting paths.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tunnelbed_pong::fuzzing::{fuzz_frame_decode, run_remote_session, SessionSummary};

fn inputs(seed: u64, count: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let n = r.gen_range(0..max_len);
            (0..n).map(|_| r.gen()).collect()
        })
        .collect()
}

/// Random bytes with frame-like starts: a plausible `len` and a known type, so that the
/// decoder gets past the length check often.
fn framey_inputs(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let mut v = Vec::new();
            for _ in 0..r.gen_range(1..6) {
                let plen: usize = r.gen_range(0..40);
                let len = (7 + plen) as u16;
                v.extend_from_slice(&len.to_be_bytes());
                v.extend_from_slice(&r.gen_range(0u32..8).to_be_bytes());
                v.push([0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10][r.gen_range(0..11)]);
                let mut p: Vec<u8> = (0..plen).map(|_| r.gen()).collect();
                if let Some(first) = p.first_mut() {
                    *first = [1, 3, 4, 9][r.gen_range(0..4)];
                }
                v.extend_from_slice(&p);
            }
            if r.gen_bool(0.3) {
                let cut = r.gen_range(0..v.len());
                v.truncate(cut);
            }
            v
        })
        .collect()
}

#[test]
fn random_frames() {
    let mut all = inputs(1, 3000, 300);
    all.extend(framey_inputs(2, 2000));
    for (i, d) in all.iter().enumerate() {
        let r = std::panic::catch_unwind(|| fuzz_frame_decode(d));
        assert!(r.is_ok(), "input {i}: {d:02x?}");
    }
}

#[test]
fn random_remote_sessions() {
    let mut total = SessionSummary::default();
    let mut runs = 0;
    for (i, d) in inputs(3, 3000, 1500).iter().enumerate() {
        let r = std::panic::catch_unwind(|| run_remote_session(d));
        let Ok(s) = r else {
            panic!("input {i} of seed 3 failed");
        };
        if let Some(s) = s {
            runs += 1;
            total.ops += s.ops;
            total.dials += s.dials;
            total.reads += s.reads;
            total.rsts_sent += s.rsts_sent;
            total.holds += s.holds;
            total.late_frames += s.late_frames;
            total.protocol_error |= s.protocol_error;
        }
    }
    // The inputs must reach the machine's paths, or the invariants above say nothing.
    // (Deterministic: seeded; thresholds are about half of what the seed reaches.)
    assert!(runs > 2500, "{runs} runs");
    assert!(total.dials > 2000, "{total:?}");
    assert!(total.reads > 200, "{total:?}");
    assert!(total.rsts_sent > 2000, "{total:?}");
    assert!(total.holds > 500, "{total:?}");
    assert!(total.late_frames > 10000, "{total:?}");
    assert!(total.protocol_error, "{total:?}");
    eprintln!("{runs} runs: {total:?}");
}
