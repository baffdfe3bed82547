//! `tunnelbed bench candy`: arguments, then the library's [`crate::bench::candy_bench`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{EXIT_FAILURE, EXIT_OK};
use crate::bench::candy_bench::{self, CandyPeer, Plan};
use crate::bench::report::{command_line, write_report, RunFacts};

/// `bench candy` arguments.
#[derive(Args, Debug)]
pub struct CandyBenchArgs {
    /// Also write the Markdown report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// MB (10^6 bytes) per transfer.
    #[arg(long, default_value_t = 100)]
    pub size: u64,
    /// Timed transfers per stack (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// The folder with Candy's source archive, `build.sh` and `run-pair.sh` (the
    /// project's `shared/peers/candy`).
    #[arg(long, value_name = "DIR", default_value = "../shared/peers/candy")]
    pub candy_peers: PathBuf,
}

/// Runs `bench candy`.
pub(super) fn run(a: CandyBenchArgs) -> anyhow::Result<ExitCode> {
    if a.size == 0 || a.size > 10_000 || a.reps == 0 {
        return super::usage("--size must be 1..=10000 MB and --reps at least 1");
    }
    let plan = Plan {
        size: (a.size as usize) * 1_000_000,
        reps: a.reps,
        candy: CandyPeer::from_peer_dir(&a.candy_peers)?,
    };
    let mut facts = RunFacts::start(command_line());
    let rows = candy_bench::run(&plan, |step| eprintln!("bench candy: {step}"))?;
    facts.finish();
    let report = candy_bench::render(&plan, &rows, &facts);
    print!("{report}");
    if let Some(p) = &a.out {
        write_report(p, &report)?;
        eprintln!("bench candy: wrote {}", p.display());
    }
    Ok(ExitCode::from(if candy_bench::failures(&rows) == 0 {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}
