//! `tunnelbed replay FILE`: decode a capture into per-stream timelines.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

/// Arguments of `tunnelbed replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// A pcapng or pcap file (as `sim run --pcap` writes); at most 2 GiB.
    pub file: PathBuf,
}

/// Largest capture replay reads.
const MAX_CAPTURE: u64 = 2 << 30;

/// Runs `tunnelbed replay`: the report on stdout, or a one-line error naming the packet.
pub(super) fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let len = std::fs::metadata(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_CAPTURE,
        "{}: {len} bytes is over the {MAX_CAPTURE}-byte limit",
        a.file.display()
    );
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    match crate::replay::render(&bytes) {
        Ok(report) => {
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => anyhow::bail!("{}: {e}", a.file.display()),
    }
}
