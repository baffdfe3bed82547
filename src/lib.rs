//! The `tunnelbed` binary's library half: the command implementations, shared with the
//! end-to-end tests under `tests/`.

pub mod bench;
pub mod cmd;
pub mod heap;
pub mod pattern;
pub mod plot;
pub mod replay;
pub mod wireshark;
