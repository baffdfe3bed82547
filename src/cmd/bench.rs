//! `tunnelbed bench`: side-by-side benchmarks of our implementations against references.

use std::process::ExitCode;

use clap::Subcommand;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCmd {}

/// Runs a `bench` subcommand.
pub fn run(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {}
}
