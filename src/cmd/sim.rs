//! `tunnelbed sim ...`: list, run, sweep and run-all over the registered scenarios.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tunnelbed_sim::realtcp::TcpMode;
use tunnelbed_sim::record::{self, RunRecord};
use tunnelbed_sim::sabotage::Sabotage;
use tunnelbed_sim::scenario::{check_determinism, run as run_once, RunConfig, RunReport};
use tunnelbed_sim::{profile, report, scenarios, sweep};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

#[derive(Subcommand, Debug)]
pub enum SimCmd {
    /// List the scenarios and their default profiles.
    List,
    /// Run one scenario once; prints its checks and a line that replays it.
    Run(RunArgs),
    /// Run one scenario over a range of seeds on every core; lists failing seeds.
    Sweep(SweepArgs),
    /// Run every scenario on its default profiles and write a report (Markdown + pcaps).
    All(AllArgs),
    /// Merge the JSON lines of sweep shards (`sweep --shard K/N --json F`) into one result.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario name (see `tunnelbed sim list`).
    pub scenario: String,
    /// Seed for every random choice in the run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Link profile: clean, lossy, hostile, or swarm (drawn from the seed).
    #[arg(long, default_value = "clean")]
    pub profile: String,
    /// TCP in the simulation: ideal (turmoil's reliable streams) or real (smoltcp at
    /// both ends over the link model: loss, duplication, reordering, corruption, MTU and
    /// bandwidth hit TCP segments, and the pcap holds the real segments).
    #[arg(long, default_value = "ideal", value_name = "MODE")]
    pub tcp: TcpMode,
    /// Write the capture (pcapng) here.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Write the transition trace (text) here.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Run twice and compare the trace hash and the pcap bytes.
    #[arg(long)]
    pub check_determinism: bool,
    /// Deliberately break an invariant on seeds that are multiples of 4, to see its check
    /// fail and the failure reported: integrity (the default), data-path (a chunk of
    /// application data lost in the network or the ARQ driver), liveness (a client still
    /// busy after the deadline), leak (a flow left open), determinism (an unseeded choice).
    #[arg(long, num_args = 0..=1, default_missing_value = "integrity", value_name = "KIND")]
    pub sabotage: Option<Sabotage>,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Scenario name.
    pub scenario: String,
    /// Seed range, half-open: `0..200`.
    #[arg(long, value_parser = parse_range)]
    pub seeds: std::ops::Range<u64>,
    /// Link profile (swarm draws different parameters for every seed).
    #[arg(long, default_value = "swarm")]
    pub profile: String,
    /// TCP in the simulation: ideal (turmoil's reliable streams) or real (smoltcp at
    /// both ends over the link model: loss, duplication, reordering, corruption, MTU and
    /// bandwidth hit TCP segments, and the pcap holds the real segments).
    #[arg(long, default_value = "ideal", value_name = "MODE")]
    pub tcp: TcpMode,
    /// Parallel runs (default: every core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Deliberately break an invariant on seeds that are multiples of 4, to see its check
    /// fail and the failure reported: integrity (the default), data-path (a chunk of
    /// application data lost in the network or the ARQ driver), liveness (a client still
    /// busy after the deadline), leak (a flow left open), determinism (an unseeded choice).
    #[arg(long, num_args = 0..=1, default_missing_value = "integrity", value_name = "KIND")]
    pub sabotage: Option<Sabotage>,
    /// Run only shard K of N (0-based): the seeds A+K, A+K+N, A+K+2N, ... of the range.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(u64, u64)>,
    /// Write one JSON line per run (scenario, profile, seed, verdict, duration, trace
    /// hash, replay line) to FILE; `sim merge` combines shard files.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write JUnit XML (one testcase per seed) to FILE.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AllArgs {
    /// Where to write summary.md, runs.jsonl and the pcaps.
    #[arg(long, default_value = "reports/latest")]
    pub out: PathBuf,
    /// Seeds per scenario and profile (default: each scenario's own count).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Write JUnit XML (one testcase per run) to FILE.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Run only this scenario (repeatable; default: every scenario).
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
    /// Also write DIR/index.html: the matrix, plots, and failing runs with pcap links.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// TCP in the simulation: ideal (turmoil's reliable streams) or real (smoltcp at
    /// both ends over the link model: loss, duplication, reordering, corruption, MTU and
    /// bandwidth hit TCP segments, and the pcap holds the real segments).
    #[arg(long, default_value = "ideal", value_name = "MODE")]
    pub tcp: TcpMode,
    /// Deliberately break an invariant on seeds that are multiples of 4 (the kinds as for
    /// `sim run --sabotage`; integrity when no kind is given).
    #[arg(long, num_args = 0..=1, default_missing_value = "integrity", value_name = "KIND")]
    pub sabotage: Option<Sabotage>,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// JSON-lines files written by `sim sweep --json` (or `sim all`'s runs.jsonl).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Every scenario and profile in the files must hold exactly these seeds (A..B): a
    /// missing shard is an error, not a smaller sweep.
    #[arg(long, value_parser = parse_range)]
    pub seeds: Option<std::ops::Range<u64>>,
    /// Write the merged runs as JSON lines to FILE.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write JUnit XML of the merged runs to FILE.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write DIR/index.html of the merged runs.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("expected K/N (e.g. 0/4), got {s:?}"))?;
    let k: u64 = k
        .trim()
        .parse()
        .map_err(|e| format!("shard index {k:?}: {e}"))?;
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|e| format!("shard count {n:?}: {e}"))?;
    if n == 0 || k >= n {
        return Err(format!("shard {k}/{n}: need 0 <= K < N"));
    }
    Ok((k, n))
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("expected A..B, got {s:?}"))?;
    let a: u64 = a.trim().parse().map_err(|e| format!("start {a:?}: {e}"))?;
    let b: u64 = b.trim().parse().map_err(|e| format!("end {b:?}: {e}"))?;
    if b <= a {
        return Err(format!("empty range {a}..{b}"));
    }
    Ok(a..b)
}

fn find(name: &str) -> anyhow::Result<tunnelbed_sim::Scenario> {
    scenarios::find(name).ok_or_else(|| {
        let names: Vec<_> = scenarios::all()
            .iter()
            .chain(scenarios::by_name_only().iter())
            .map(|s| s.name)
            .collect();
        anyhow::anyhow!("unknown scenario {name:?}; known: {}", names.join(", "))
    })
}

fn check_profile(p: &str) -> anyhow::Result<()> {
    if profile::params(p, 0).is_none() {
        bail!("unknown profile {p:?}; known: {}", profile::ALL.join(", "));
    }
    Ok(())
}

pub(super) fn run(cmd: SimCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SimCmd::List => {
            for s in scenarios::all() {
                println!(
                    "{:<22} {}  [profiles: {}]",
                    s.name,
                    s.about,
                    s.profiles.join(", ")
                );
            }
            for s in scenarios::by_name_only() {
                println!(
                    "{:<22} {}  [profiles: {}; by name only, not in `sim all`]",
                    s.name,
                    s.about,
                    s.profiles.join(", ")
                );
            }
            println!("\nprofiles: {}", profile::ALL.join(", "));
            Ok(ExitCode::from(EXIT_OK))
        }
        SimCmd::Run(a) => run_one(a),
        SimCmd::Sweep(a) => run_sweep(a),
        SimCmd::All(a) => run_all(a),
        SimCmd::Merge(a) => run_merge(a),
    }
}

fn print_report(r: &RunReport) {
    println!(
        "{} seed {} profile {}{}: {} (sim time {:.3}s)",
        r.scenario,
        r.seed,
        r.profile,
        match r.tcp {
            TcpMode::Ideal => String::new(),
            t => format!(" tcp {t}"),
        },
        if r.ok() { "PASS" } else { "FAIL" },
        r.sim_time.as_secs_f64()
    );
    println!(
        "  link: {}",
        profile::describe(&profile::params(&r.profile, r.seed).unwrap_or_default())
    );
    println!(
        "  datagrams: sent {} delivered {} dropped {} (loss {} mtu {} queue {}) duplicated {} corrupted {} delayed {}",
        r.link.sent,
        r.link.delivered,
        r.link.dropped(),
        r.link.dropped_loss,
        r.link.dropped_mtu,
        r.link.dropped_queue,
        r.link.duplicated,
        r.link.corrupted,
        r.link.delayed
    );
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    for c in &r.checks {
        println!(
            "  [{}] {}: {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    for (k, v) in &r.metrics {
        println!("  {k}: {v}");
    }
    println!(
        "  trace hash: {} ({} transitions)",
        r.trace_hash,
        r.trace.lines().count()
    );
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn run_one(a: RunArgs) -> anyhow::Result<ExitCode> {
    let s = match find(&a.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    if let Err(e) = check_profile(&a.profile) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let cfg = RunConfig {
        seed: a.seed,
        profile: a.profile.clone(),
        capture: a.pcap.is_some(),
        sabotage: a.sabotage,
        tcp: a.tcp,
    };
    let (r, det) = if a.check_determinism {
        let (r, d) = check_determinism(&s, &cfg)?;
        (r, Some(d))
    } else {
        (run_once(&s, &cfg)?, None)
    };
    print_report(&r);
    if let (Some(path), Some(pcap)) = (&a.pcap, &r.pcap) {
        write_file(path, pcap)?;
        println!("  pcap: {} ({} bytes)", path.display(), pcap.len());
    }
    if let Some(path) = &a.trace {
        write_file(path, r.trace.as_bytes())?;
        println!("  trace: {}", path.display());
    }
    let mut ok = r.ok();
    if let Some(d) = det {
        println!(
            "  determinism: {} (trace {} vs {}; pcap {} vs {} bytes, {})",
            if d.ok() {
                "same seed, same trace and pcap bytes"
            } else {
                "DIFFERS"
            },
            d.hashes.0,
            d.hashes.1,
            d.pcap_sizes.0,
            d.pcap_sizes.1,
            if d.same_pcap {
                "identical"
            } else {
                "different"
            }
        );
        ok &= d.ok();
    }
    if !ok {
        println!("replay: {}", r.replay_line());
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    Ok(ExitCode::from(EXIT_OK))
}

fn bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(250));
    pb
}

fn run_sweep(a: SweepArgs) -> anyhow::Result<ExitCode> {
    let s = match find(&a.scenario).and_then(|s| check_profile(&a.profile).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let (k, n) = a.shard.unwrap_or((0, 1));
    let seeds = sweep::shard_seeds(a.seeds.clone(), k, n);
    let pb = bar(seeds.len() as u64);
    pb.set_message(format!("{} on {}", s.name, a.profile));
    let res = sweep::sweep_tcp(&s, &seeds, &a.profile, a.tcp, jobs, a.sabotage, &|d| {
        pb.set_position(d)
    })?;
    pb.finish_and_clear();
    if let Some(path) = &a.json {
        write_file(path, json_lines(&res.records).as_bytes())?;
    }
    if let Some(path) = &a.junit {
        let title = format!("tunnelbed sim sweep {} --profile {}", s.name, a.profile);
        write_file(path, record::junit_xml(&title, &res.records).as_bytes())?;
    }
    for f in &res.failures {
        println!("FAIL seed {}: {}", f.seed, f.failure_summary());
        println!("  replay: {}", f.replay_line());
    }
    let failing: Vec<String> = res.failures.iter().map(|f| f.seed.to_string()).collect();
    println!(
        "sweep {} --profile {}{} seeds {}..{}{}: {} runs, {} passed, {} failed{}",
        s.name,
        a.profile,
        match a.tcp {
            TcpMode::Ideal => String::new(),
            t => format!(" --tcp {t}"),
        },
        a.seeds.start,
        a.seeds.end,
        match a.shard {
            Some((k, n)) => format!(" shard {k}/{n}"),
            None => String::new(),
        },
        res.runs,
        res.runs - res.failures.len() as u64,
        res.failures.len(),
        if failing.is_empty() {
            String::new()
        } else {
            format!(" (seeds: {})", failing.join(" "))
        }
    );
    Ok(ExitCode::from(if res.failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

fn run_all(a: AllArgs) -> anyhow::Result<ExitCode> {
    let mut all = scenarios::all();
    if !a.scenarios.is_empty() {
        for name in &a.scenarios {
            if let Err(e) = find(name) {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        }
        all.retain(|s| a.scenarios.iter().any(|n| n == s.name));
    }
    let mut plan = Vec::new();
    for s in &all {
        for p in s.profiles {
            for seed in 0..a.seeds.unwrap_or(s.default_seeds) {
                plan.push((*s, p.to_string(), seed));
            }
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let pb = bar(plan.len() as u64);
    let mut reports = Vec::new();
    let mut records = Vec::new();
    for (s, p, seed) in plan {
        pb.set_message(format!("{} {} seed {}", s.name, p, seed));
        let cfg = RunConfig {
            seed,
            profile: p.clone(),
            capture: true,
            sabotage: a.sabotage,
            tcp: a.tcp,
        };
        let mut r = run_once(&s, &cfg)?;
        let mut rec = RunRecord::from_report(&r);
        if let Some(pcap) = r.pcap.take() {
            let name = match a.tcp {
                TcpMode::Ideal => format!("{}-{}-{}.pcapng", s.name, p, seed),
                t => format!("{}-{}-{}-tcp-{t}.pcapng", s.name, p, seed),
            };
            write_file(&a.out.join(&name), &pcap)?;
            rec.pcap = Some(name);
        }
        records.push(rec);
        if !r.ok() {
            pb.println(format!(
                "FAIL {} — {}",
                r.replay_line(),
                r.failure_summary()
            ));
        }
        reports.push(r);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let md = report::summary_markdown(&reports, "tunnelbed scenario suite");
    let path = a.out.join("summary.md");
    write_file(&path, md.as_bytes())?;
    write_file(&a.out.join("runs.jsonl"), json_lines(&records).as_bytes())?;
    if let Some(j) = &a.junit {
        write_file(
            j,
            record::junit_xml("tunnelbed sim all", &records).as_bytes(),
        )?;
    }
    if let Some(dir) = &a.html {
        let page = write_html(dir, &a.out, "tunnelbed scenario suite", &records)?;
        println!("sim all: HTML report {}", page.display());
    }
    let failed = reports.iter().filter(|r| !r.ok()).count();
    println!(
        "sim all: {} runs, {} passed, {} failed; report {} (pcaps beside it)",
        reports.len(),
        reports.len() - failed,
        failed,
        path.display()
    );
    for r in reports.iter().filter(|r| !r.ok()) {
        println!("  replay: {}", r.replay_line());
    }
    Ok(ExitCode::from(if failed == 0 {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

fn json_lines(records: &[RunRecord]) -> String {
    records.iter().map(|r| r.to_json_line() + "\n").collect()
}

fn run_merge(a: MergeArgs) -> anyhow::Result<ExitCode> {
    let mut all: std::collections::BTreeMap<(String, String, u64), RunRecord> = Default::default();
    for f in &a.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let recs =
            record::read_json_lines(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        for r in recs {
            let key = (r.scenario.clone(), r.profile.clone(), r.seed);
            if let Some(old) = all.get(&key) {
                // The same run twice (a retried shard) must agree; otherwise replays differ.
                if old.ok != r.ok || old.trace_hash != r.trace_hash {
                    eprintln!(
                        "error: {} seed {} on {} appears twice with different results ({} {} vs {} {}): {}",
                        key.0, key.2, key.1, old.verdict(), old.trace_hash, r.verdict(), r.trace_hash, f.display()
                    );
                    return Ok(ExitCode::from(EXIT_FAILURE));
                }
                continue;
            }
            all.insert(key, r);
        }
    }
    let records: Vec<RunRecord> = all.into_values().collect();
    // Seeds per scenario and profile: contiguous, and equal to --seeds when given.
    let mut groups: std::collections::BTreeMap<(&str, &str), Vec<u64>> = Default::default();
    for r in &records {
        groups
            .entry((&r.scenario, &r.profile))
            .or_default()
            .push(r.seed);
    }
    let mut incomplete = false;
    for ((scen, prof), seeds) in &groups {
        let (lo, hi) = match &a.seeds {
            Some(range) => (range.start, range.end),
            None => (seeds[0], seeds[seeds.len() - 1] + 1),
        };
        let have: std::collections::BTreeSet<u64> = seeds.iter().copied().collect();
        let missing = (lo..hi).filter(|s| !have.contains(s)).count();
        let extra = have.iter().filter(|s| !(lo..hi).contains(*s)).count();
        let failed = records
            .iter()
            .filter(|r| r.scenario == *scen && r.profile == *prof && !r.ok)
            .count();
        println!(
            "{scen} --profile {prof} seeds {lo}..{hi}: {} runs, {} passed, {failed} failed{}{}",
            seeds.len(),
            seeds.len() - failed,
            if missing > 0 {
                format!("; {missing} seeds MISSING")
            } else {
                String::new()
            },
            if extra > 0 {
                format!("; {extra} seeds outside the range")
            } else {
                String::new()
            },
        );
        incomplete |= missing > 0 || extra > 0;
    }
    if groups.is_empty() {
        eprintln!("error: no runs in the files");
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    for r in records.iter().filter(|r| !r.ok) {
        println!("FAIL seed {}: {}", r.seed, r.failure);
        println!("  replay: {}", r.replay);
    }
    if let Some(path) = &a.json {
        write_file(path, json_lines(&records).as_bytes())?;
    }
    if let Some(path) = &a.junit {
        write_file(
            path,
            record::junit_xml("tunnelbed sim merge", &records).as_bytes(),
        )?;
    }
    if let Some(dir) = &a.html {
        write_html(dir, dir, "tunnelbed sweep (merged)", &records)?;
    }
    let failed = records.iter().filter(|r| !r.ok).count();
    println!(
        "merged {} files: {} runs, {} passed, {} failed{}",
        a.files.len(),
        records.len(),
        records.len() - failed,
        failed,
        if incomplete {
            "; INCOMPLETE (see above)"
        } else {
            ""
        }
    );
    Ok(ExitCode::from(if failed == 0 && !incomplete {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

/// Writes `dir/index.html` for `records`, whose captures are in `pcap_dir`: links are
/// relative when the page sits beside them, absolute paths otherwise. Returns the page.
pub(super) fn write_html(
    dir: &Path,
    pcap_dir: &Path,
    title: &str,
    records: &[RunRecord],
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let same = dir.canonicalize().ok() == pcap_dir.canonicalize().ok();
    let base = pcap_dir
        .canonicalize()
        .unwrap_or_else(|_| pcap_dir.to_path_buf());
    let href = |name: &str| {
        if same {
            name.to_string()
        } else {
            base.join(name).display().to_string()
        }
    };
    let page = dir.join("index.html");
    write_file(
        &page,
        tunnelbed_sim::html::render(title, records, &href).as_bytes(),
    )?;
    Ok(page)
}
