//! cargo-fuzz target `vless_session`: the server machine fed arbitrary bytes; the body
//! lives in the protocol crate so that a stable `cargo test` replays
//! `corpora/vless_session/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_vless::fuzzing::fuzz_server_session(data);
});
