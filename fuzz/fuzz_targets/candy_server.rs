//! cargo-fuzz target `candy_server`: the body lives in the protocol crate so that a stable
//! `cargo test` replays `corpora/candy_server/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_candy::fuzzing::fuzz_server(data);
});
