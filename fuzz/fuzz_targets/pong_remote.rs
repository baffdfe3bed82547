//! cargo-fuzz target `pong_remote`: the body lives in the protocol crate so that a stable
//! `cargo test` replays `corpora/pong_remote/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_pong::fuzzing::fuzz_remote_session(data);
});
