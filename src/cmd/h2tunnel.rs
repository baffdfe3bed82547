//! `tunnelbed h2tunnel`: vproxy's KCP tunnel on real sockets (client and server roles).

use std::process::ExitCode;

use clap::Subcommand;

/// h2tunnel roles on real sockets.
#[derive(Subcommand, Debug)]
pub enum H2tunnelCmd {}

/// Runs an `h2tunnel` subcommand.
pub fn run(cmd: H2tunnelCmd) -> anyhow::Result<ExitCode> {
    match cmd {}
}
