//! `tunnelbed check tcpstack`: a packetdrill-style checker for seed 002's TCP stack.
//! Each case is a script ([`script`]) of segments to inject, segments to expect (flags,
//! relative numbers, lengths, options, a time window), silences and application calls.
//! The same scripts run against our stack under a virtual clock ([`ours`]) and, with
//! `--kernel`, against the Linux kernel's TCP through a TUN device in a network
//! namespace the checker makes ([`kernel`]), so every difference between the seed's
//! stack and a kernel shows up, as expected ([`cases::Kernel::Differs`]) or as a FAIL.

pub mod cases;
pub mod kernel;
pub mod ours;
pub mod run;
pub mod script;
pub mod target;

pub use run::{markdown, run, run_kernel, run_ours, run_ours_with, select, CheckConfig, Run};

/// The report as JUnit XML (suite `tcpstack conformance (<target>)`).
pub fn to_junit(r: &crate::framework::Report) -> String {
    crate::framework::to_junit(r, "tcpstack")
}
