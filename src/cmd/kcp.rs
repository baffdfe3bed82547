//! `tunnelbed kcp`: KCP on real UDP sockets (echo server and bulk sender), for interop
//! with reference peers.

use std::process::ExitCode;

use clap::Subcommand;

/// KCP roles on real sockets.
#[derive(Subcommand, Debug)]
pub enum KcpCmd {}

/// Runs a `kcp` subcommand.
pub fn run(cmd: KcpCmd) -> anyhow::Result<ExitCode> {
    match cmd {}
}
