//! cargo-fuzz target `h2t_frame`: the body lives in the protocol crate so that a stable
//! `cargo test` replays `corpora/h2t_frame/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_h2tunnel::fuzzing::fuzz_frame_decode(data);
});
