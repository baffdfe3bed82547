//! cargo-fuzz target `pong_frame`: the body lives in the protocol crate so that a stable
//! `cargo test` replays `corpora/pong_frame/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_pong::fuzzing::fuzz_frame_decode(data);
});
