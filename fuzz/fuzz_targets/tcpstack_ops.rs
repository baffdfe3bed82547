//! cargo-fuzz target `tcpstack_ops`: the body lives in the protocol crate so that a
//! stable `cargo test` replays `corpora/tcpstack_ops/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_tcpstack::fuzzing::fuzz_stack_ops(data);
});
