//! Command-line surface: argument parsing and dispatch to one module per command group.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_candy;
mod candy;
mod check;
mod check_vless;
mod h2tunnel;
pub mod http_source;
pub mod kcp;
mod netem;
mod observe;
mod plot;
pub(crate) mod pong;
mod replay;
mod report;
mod sim;
mod tcpstack;
mod vless;
mod wireshark;

/// Every check passed.
pub const EXIT_OK: u8 = 0;
/// A run, check or transfer failed.
pub const EXIT_FAILURE: u8 = 1;
/// The command line was wrong (clap also exits 2).
pub const EXIT_USAGE: u8 = 2;

/// Reports a command-line mistake clap cannot see (a bad value inside a URL, an
/// inconsistent pair of options) and exits with [`EXIT_USAGE`].
pub(crate) fn usage(e: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("error: {e}");
    Ok(ExitCode::from(EXIT_USAGE))
}

/// The runtime every subcommand runs its roles on (multi-threaded, timers and I/O on).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// tunnelbed: a deterministic testbed for tunnel and proxy protocols.
///
/// Run scenarios on a seeded, lossy simulated network (every run replays from its seed,
/// with a pcap and a transition trace), or run the same protocol code on real sockets.
#[derive(Parser, Debug)]
#[command(name = "tunnelbed", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The job to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand of `tunnelbed`; each parses its own arguments and calls library code.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Scenarios on the simulated network: list, run, sweep, all, merge.
    #[command(subcommand)]
    Sim(sim::SimCmd),
    /// A real UDP relay that applies a link profile (loss, jitter, ...) between two peers.
    Netem(netem::NetemArgs),
    /// A fast HTTP/1.1 server of deterministic bulk data (`GET /bytes/N`) for downloads.
    HttpSource(http_source::HttpSourceArgs),
    /// KCP on real UDP: an echo server and a bulk sender, for interop with reference peers.
    #[command(subcommand)]
    Kcp(kcp::KcpCmd),
    /// Side-by-side benchmarks of our implementations against reference implementations.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// vproxy's KCP tunnel on real sockets: client (TCP in, tunnel out) and server roles.
    #[command(subcommand)]
    H2tunnel(h2tunnel::H2tunnelCmd),
    /// Decode a capture: reassemble KCP sessions and TCP flows, print tunnel frames per stream.
    Replay(replay::ReplayArgs),
    /// The pong multiplexed proxy on real sockets: `local` (SOCKS5 in) and `remote` roles.
    #[command(subcommand)]
    Pong(pong::PongCmd),
    /// Conformance checkers that play spec-clause cases against any implementation.
    #[command(subcommand)]
    Check(check::CheckCmd),
    /// VLESS v0/v1 on real sockets: `server` and `client` (SOCKS5 in); v1 has full-cone UDP.
    #[command(subcommand)]
    Vless(vless::VlessCmd),
    /// Candy's WebSocket VPN on real sockets: `server` and `client` (a TUN device).
    #[command(subcommand)]
    Candy(candy::CandyCmd),
    /// vproxy's user-space TCP stack on a TUN device: `serve` (echo, bulk HTTP, forward).
    #[command(subcommand)]
    Tcpstack(tcpstack::TcpstackCmd),
    /// Render DIR/index.html from a results folder (`sim all --out DIR` writes runs.jsonl).
    Report(report::ReportArgs),
    /// Wireshark: install the Lua dissectors for KCP, h2tunnel, pong, VLESS and Candy.
    #[command(subcommand)]
    Wireshark(wireshark::WiresharkCmd),
    /// SVG pictures of a capture: time-sequence graphs and stream ladders.
    #[command(subcommand)]
    Plot(plot::PlotCmd),
}

/// Sends logs through `tracing` to stderr.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the chosen command and maps its outcome to an exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sim(c) => sim::run(c),
        Command::Netem(a) => netem::run(a),
        Command::HttpSource(a) => http_source::run(a),
        Command::Kcp(c) => kcp::run(c),
        Command::Bench(c) => bench::run(c),
        Command::H2tunnel(c) => h2tunnel::run(c),
        Command::Replay(a) => replay::run(a),
        Command::Pong(c) => pong::run(c),
        Command::Check(c) => check::run(c),
        Command::Vless(c) => vless::run(c),
        Command::Candy(c) => candy::run(c),
        Command::Tcpstack(c) => tcpstack::run(c),
        Command::Wireshark(c) => wireshark::run(c),
        Command::Report(a) => report::run(a),
        Command::Plot(c) => plot::run(c),
    }
}
