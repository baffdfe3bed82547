//! `tunnelbed plot`: SVG pictures of a capture. Parses arguments, reads the file and
//! calls [`crate::plot`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::plot::ladder::{self, Kind};
use crate::plot::tsg::{self, FlowSpec};

/// Largest capture the plots read.
const MAX_CAPTURE: u64 = 2 << 30;

/// `tunnelbed plot` subcommands.
#[derive(Subcommand, Debug)]
pub enum PlotCmd {
    /// Time-sequence graph (sequence number over time; data, acks, retransmissions) of one
    /// direction of a KCP session or a TCP connection.
    Tsg(TsgArgs),
    /// Stream ladder (message sequence chart) of the h2tunnel and pong connections:
    /// SYN, SYN-ACK, DATA, FIN, RST per stream between the two ends over time.
    Ladder(LadderArgs),
}

/// Arguments of `tunnelbed plot ladder`.
#[derive(Args, Debug)]
pub struct LadderArgs {
    /// A pcapng or pcap file (as `sim run --pcap` writes); at most 2 GiB.
    pub capture: PathBuf,
    /// Only this stream id (in every connection that has it).
    #[arg(long)]
    pub stream: Option<u32>,
    /// The SVG file to write.
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Arguments of `tunnelbed plot tsg`.
#[derive(Args, Debug)]
pub struct TsgArgs {
    /// A pcapng or pcap file (as `sim run --pcap` writes); at most 2 GiB.
    pub capture: PathBuf,
    /// Which direction: `auto` (the one with the most data), `conv=N` (KCP), or
    /// `SRC->DST` socket addresses (KCP over UDP or TCP).
    #[arg(long, default_value = "auto")]
    pub flow: FlowSpec,
    /// Only from this many seconds after the capture's first packet (zoom).
    #[arg(long)]
    pub from: Option<f64>,
    /// Only up to this many seconds after the capture's first packet (zoom).
    #[arg(long)]
    pub to: Option<f64>,
    /// The SVG file to write.
    #[arg(short, long)]
    pub out: PathBuf,
}

fn read_capture(p: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(p)
        .with_context(|| format!("reading {}", p.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_CAPTURE,
        "{}: {len} bytes is over the {MAX_CAPTURE}-byte limit",
        p.display()
    );
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

fn write(p: &Path, svg: &str) -> anyhow::Result<()> {
    if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(p, svg).with_context(|| format!("writing {}", p.display()))
}

/// Runs a `tunnelbed plot` subcommand: writes the SVG and prints what it shows.
pub(super) fn run(c: PlotCmd) -> anyhow::Result<ExitCode> {
    match c {
        PlotCmd::Tsg(a) => {
            let bytes = read_capture(&a.capture)?;
            let mut g = tsg::build(&bytes, &a.flow)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.capture.display()))?;
            if a.from.is_some() || a.to.is_some() {
                g.between(a.from.unwrap_or(0.0), a.to.unwrap_or(f64::INFINITY));
            }
            write(&a.out, &g.render())?;
            let c = g.counts;
            println!(
                "{}: {} data, {} late, {} retransmissions, {} acks, sequence up to {} -> {}",
                g.title,
                c.data,
                c.late,
                c.retransmissions,
                c.acks,
                g.top(),
                a.out.display()
            );
        }
        PlotCmd::Ladder(a) => {
            let bytes = read_capture(&a.capture)?;
            let mut ls = ladder::build(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.capture.display()))?;
            anyhow::ensure!(
                !ls.is_empty(),
                "{}: no h2tunnel or pong connection in the capture",
                a.capture.display()
            );
            if let Some(sid) = a.stream {
                ls.iter_mut().for_each(|l| l.only_stream(sid));
                ls.retain(|l| !l.arrows.is_empty());
                anyhow::ensure!(
                    !ls.is_empty(),
                    "{}: no connection has stream {sid}",
                    a.capture.display()
                );
            }
            write(&a.out, &ladder::render(&ls))?;
            for l in &ls {
                println!(
                    "{}: {} arrows ({} SYN, {} SYN-ACK, {} DATA runs, {} FIN, {} RST)",
                    l.title,
                    l.arrows.len(),
                    l.count(Kind::Syn),
                    l.count(Kind::SynAck),
                    l.count(Kind::Data),
                    l.count(Kind::Fin),
                    l.count(Kind::Rst)
                );
            }
            println!("wrote {}", a.out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
