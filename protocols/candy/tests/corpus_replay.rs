//! Replays the committed fuzz corpora through the fuzz bodies on stable Rust, so every
//! input the fuzzer kept stays a regression test. A missing or empty corpus directory is
//! a failure: this test never passes on zero files.

use tunnelbed_candy::fuzzing::{fuzz_decode, fuzz_server};
use tunnelbed_netio::corpus::replay;

#[test]
fn candy_decode_corpus() {
    replay("candy_decode", fuzz_decode);
}

#[test]
fn candy_server_corpus() {
    replay("candy_server", fuzz_server);
}
