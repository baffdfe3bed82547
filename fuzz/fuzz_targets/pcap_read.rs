//! cargo-fuzz target `pcap_read`: the capture reader behind `tunnelbed replay`. The body
//! lives in tunnelbed-netio so that a stable `cargo test` replays `corpora/pcap_read/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tunnelbed_netio::pcap_read::fuzzing::fuzz_read_capture(data);
});
