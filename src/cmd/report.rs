//! `tunnelbed report DIR`: the HTML page of saved results (`sim all --out DIR`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tunnelbed_sim::record::read_json_lines;

use super::EXIT_OK;

/// Arguments of `tunnelbed report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A folder holding runs.jsonl (and the pcaps it names); index.html is written there.
    pub dir: PathBuf,
}

/// Reads DIR/runs.jsonl and writes DIR/index.html.
pub(super) fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let src = a.dir.join("runs.jsonl");
    let text =
        std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    let records = read_json_lines(&text).map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
    anyhow::ensure!(!records.is_empty(), "{}: no runs", src.display());
    let page = super::sim::write_html(&a.dir, &a.dir, "tunnelbed results", &records)?;
    println!("report: {} ({} runs)", page.display(), records.len());
    Ok(ExitCode::from(EXIT_OK))
}
