//! cargo-fuzz target `kcp_segment`: the body lives in the protocol crate so that a stable
//! `cargo test` replays `corpora/kcp_segment/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_kcp::fuzzing::fuzz_segment_decode(data);
});
