//! cargo-fuzz target `vless_request`: the body lives in the protocol crate so that a
//! stable `cargo test` replays `corpora/vless_request/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_vless::fuzzing::fuzz_request_decode(data);
});
