//! Placeholder until the `check` commands land.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum CheckCmd {}

pub fn run(c: CheckCmd) -> anyhow::Result<ExitCode> {
    match c {}
}
