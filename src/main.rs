//! `tunnelbed`: run protocol scenarios on the simulated network, and the same protocol
//! code on real sockets against real peers.

use std::process::ExitCode;

use clap::Parser;
use tunnelbed::cmd;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    cmd::init_logging(cli.verbose);
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cmd::EXIT_FAILURE)
        }
    }
}
