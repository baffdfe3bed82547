//! Placeholder until the `pong` commands land.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum PongCmd {}

pub fn run(c: PongCmd) -> anyhow::Result<ExitCode> {
    match c {}
}
