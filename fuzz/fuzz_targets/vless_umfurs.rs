//! cargo-fuzz target `vless_umfurs`: UMFURS messages and command-2 frames; the body
//! lives in the protocol crate so that a stable `cargo test` replays
//! `corpora/vless_umfurs/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_vless::fuzzing::fuzz_umfurs_decode(data);
});
