//! `tunnelbed replay FILE`: decode a capture into per-stream timelines.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `tunnelbed replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// A pcapng or pcap file (as `sim run --pcap` writes).
    pub file: PathBuf,
}

/// Runs `tunnelbed replay`.
pub fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("replay of {} is not implemented yet", a.file.display())
}
