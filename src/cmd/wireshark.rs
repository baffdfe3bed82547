//! `tunnelbed wireshark install`: puts the Lua dissectors where Wireshark finds them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{EXIT_OK, EXIT_USAGE};

/// Wireshark helpers.
#[derive(Subcommand, Debug)]
pub enum WiresharkCmd {
    /// Copy the KCP, h2tunnel, pong, VLESS and Candy dissectors to Wireshark's personal plugin folder.
    Install(InstallArgs),
}

/// Arguments of `tunnelbed wireshark install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Folder to write to (default: ~/.local/lib/wireshark/plugins).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs a `wireshark` subcommand.
pub(super) fn run(cmd: WiresharkCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        WiresharkCmd::Install(a) => {
            let Some(dir) = a.dir.or_else(crate::wireshark::default_plugin_dir) else {
                eprintln!("error: no HOME; pass --dir");
                return Ok(ExitCode::from(EXIT_USAGE));
            };
            let files = crate::wireshark::install(&dir)
                .with_context(|| format!("installing into {}", dir.display()))?;
            for f in &files {
                println!("installed {}", f.display());
            }
            println!(
                "Wireshark and tshark load them at start (check: tshark -G protocols | grep -E 'kcp|h2tunnel|pong|vless|candy')"
            );
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}
