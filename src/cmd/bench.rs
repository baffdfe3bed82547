//! `tunnelbed bench`: side-by-side benchmarks of our implementations against references.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::bench::kcp_bench::{self, Plan};
use crate::bench::kcp_port::Knobs;
use crate::bench::report::{command_line, write_report, write_report_with_plot, RunFacts};

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Our KCP against crate `kcp` (a Rust port of ikcp) over the same simulated links:
    /// goodput, delivery latency and CPU per MB, with ratios ours/reference.
    Kcp(KcpBenchArgs),
    /// Our h2tunnel client/server against Debian's kcptun (crypto, FEC and compression
    /// off) on loopback UDP, clean and through `tunnelbed netem` loss: throughput and
    /// small-request latency, side by side in one run. Needs `kcptun-client` and
    /// `kcptun-server` (`apt-get install -y kcptun`).
    H2tunnel(H2tunnelBenchArgs),
    /// Our pong local and remote on loopback against direct TCP, in one run: bulk
    /// throughput through SOCKS5 -> local -> carrier -> remote (ratio to direct TCP and to
    /// a chain of two plain TCP relays, per carrier), p50/p99 of small request/response exchanges at many concurrent streams,
    /// and RSS with thousands of idle streams. Local and remote run as child processes.
    Pong(PongBenchArgs),
    /// Our VLESS client and server against Debian's v2ray 4.34 and the two-relay TCP
    /// reference, side by side in one run on loopback: download throughput, CPU per GB,
    /// and p50/p99 of small requests at 200 concurrent connections. Needs `v2ray`
    /// (`apt-get install -y v2ray`).
    Vless(VlessBenchArgs),
    /// Our Candy server and clients against Candy's own (lanthora/candy v6.1.8) in one run:
    /// kernel-TCP throughput between two clients through the server, in network
    /// namespaces with real TUN devices, and the server's CPU per GB. Needs root and
    /// Candy built by `shared/peers/candy/build.sh`.
    Candy(super::bench_candy::CandyBenchArgs),
}

/// `bench vless` arguments.
#[derive(Args, Debug)]
pub struct VlessBenchArgs {
    /// Also write the Markdown report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// MiB per download.
    #[arg(long, default_value_t = 256)]
    pub size: u64,
    /// Timed downloads per stack (the median is reported), and latency rounds per stack.
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// Concurrent connections in each latency round.
    #[arg(long, default_value_t = 200)]
    pub streams: usize,
    /// Timed 100-byte request/answer round trips per connection and round.
    #[arg(long, default_value_t = 50)]
    pub exchanges: usize,
}

/// Carriers `bench pong` can run over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PongCarrier {
    /// Plain TCP.
    Tcp,
    /// TLS (rustls) over TCP.
    Tls,
    /// WebSocket over TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// One HTTP/2 request over cleartext TCP.
    H2c,
    /// One HTTP/2 request over TLS.
    H2,
    /// One HTTP/3 request over QUIC.
    H3,
    /// HTTP/1.1 POST, then raw bytes.
    Http,
    /// HTTP/1.1 POST over TLS, then raw bytes.
    Https,
}

impl PongCarrier {
    fn kind(self) -> tunnelbed_carrier::CarrierKind {
        use tunnelbed_carrier::CarrierKind as K;
        match self {
            PongCarrier::Tcp => K::Tcp,
            PongCarrier::Tls => K::Tls,
            PongCarrier::Ws => K::Ws,
            PongCarrier::Wss => K::Wss,
            PongCarrier::H2c => K::H2c,
            PongCarrier::H2 => K::H2,
            PongCarrier::H3 => K::H3,
            PongCarrier::Http => K::Http,
            PongCarrier::Https => K::Https,
        }
    }
}

/// `bench pong` arguments.
#[derive(Args, Debug)]
pub struct PongBenchArgs {
    /// Also write the Markdown report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// MiB per bulk download.
    #[arg(long, default_value_t = 256)]
    pub size: u64,
    /// Timed downloads per stack (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// Carriers to run pong over (repeat the flag or separate with commas).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tcp,tls,ws,wss,h2c,h2,h3,http,https"
    )]
    pub carrier: Vec<PongCarrier>,
    /// Idle streams for the memory figures (0 skips them).
    #[arg(long, default_value_t = 10_000)]
    pub idle_streams: usize,
    /// Times the idle streams are opened and closed in the same processes (a leak shows
    /// as RSS after closing that keeps rising from cycle to cycle).
    #[arg(long, default_value_t = 5)]
    pub memory_cycles: usize,
    /// Idle close of the memory phase's pong locals, seconds (pong's default 60). After
    /// the last cycle the bench waits for the carriers to close this way and measures
    /// the processes at rest: what is still allocated then is neither a stream nor a
    /// carrier.
    #[arg(long, default_value_t = 60)]
    pub idle_close: u64,
    /// Concurrent streams for the latency figures.
    #[arg(long, default_value_t = 200)]
    pub streams: usize,
    /// Timed request/response round trips per latency stream.
    #[arg(long, default_value_t = 50)]
    pub exchanges: usize,
    /// Internal: run one process of the benchmark's path (remote, local, relay, tls-relay-out, tls-relay-in, hold).
    #[arg(long, hide = true)]
    pub child: Option<String>,
}

/// `bench h2tunnel` arguments.
#[derive(Args, Debug)]
pub struct H2tunnelBenchArgs {
    /// Loss percentages to run (0 runs without a relay).
    #[arg(long, value_delimiter = ',', default_value = "0,1,10")]
    pub losses: Vec<f64>,
    /// Bytes per bulk download.
    #[arg(long, default_value_t = 50 * 1024 * 1024)]
    pub bytes: u64,
    /// Downloads per stack and loss rate (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Small requests per stack and loss rate for p50/p99 latency.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Give up on one download after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Run another tunnelbed build's `h2tunnel server` and `client` in our row (default:
    /// this binary); the relay, origin and client stay this build's, so two builds' tunnels
    /// are compared under one harness.
    #[arg(long, value_name = "PATH")]
    pub tunnel_binary: Option<std::path::PathBuf>,
    /// Also write the Markdown report here.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

/// KCP transfer mode, applied to both implementations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Stream mode (as vproxy's tunnel): no message boundaries, writes coalesce.
    Stream,
    /// Message mode: every message arrives whole (at most 127 fragments).
    Message,
}

/// Options of `tunnelbed bench kcp`. Defaults are vproxy's fast3 profile (nodelay 1,
/// interval 10, resend 2, nc on, windows 1024/1024, mtu 1250, stream mode).
#[derive(Args, Debug)]
pub struct KcpBenchArgs {
    /// Bytes per transfer (suffixes k, M, KiB, MiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub bytes: u64,
    /// Repetitions per profile and implementation (the table shows medians).
    #[arg(long, default_value_t = 9)]
    pub reps: u32,
    /// Comma-separated link profiles: clean, loss1, loss10 (20 ms, 1% / 10% i.i.d. loss),
    /// reorder (20 ms + up to 20 ms jitter, no loss), lossy, hostile.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "clean,loss1,loss10,reorder,lossy,hostile"
    )]
    pub profiles: Vec<String>,
    /// Also write the report (Markdown) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// First link seed (repetition r uses seed + r, the same for both implementations).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stream or message mode.
    #[arg(long, value_enum, default_value_t = Mode::Stream)]
    pub mode: Mode,
    /// Size of each application write (message mode: each message).
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// KCP MTU (largest datagram).
    #[arg(long, default_value_t = 1250)]
    pub mtu: usize,
    /// Send window in segments.
    #[arg(long, default_value_t = 1024)]
    pub snd_wnd: u16,
    /// Receive window in segments (at least 128 in effect).
    #[arg(long, default_value_t = 1024)]
    pub rcv_wnd: u16,
    /// ikcp nodelay (0 or 1; crate kcp has no mode 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub nodelay: u8,
    /// Update interval in ms.
    #[arg(long, default_value_t = 10)]
    pub interval: u32,
    /// Fast resend after this many later acks (0: off).
    #[arg(long, default_value_t = 2)]
    pub resend: u32,
    /// No congestion window (true/false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub nc: bool,
    /// Give up on a transfer after this many seconds of virtual time (default: 600 plus
    /// one second per 50 kB).
    #[arg(long)]
    pub time_limit: Option<u64>,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|e| format!("{s:?}: {e}"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "kB" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        u => return Err(format!("unknown unit {u:?} (use k, M, KiB, MiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Runs a `bench` subcommand.
pub(super) fn run(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::Kcp(a) => run_kcp(a),
        BenchCmd::H2tunnel(a) => run_h2tunnel(a),
        BenchCmd::Pong(a) => run_pong(a),
        BenchCmd::Vless(a) => run_vless(a),
        BenchCmd::Candy(a) => super::bench_candy::run(a),
    }
}

fn plan(a: &KcpBenchArgs) -> anyhow::Result<Plan> {
    let mut profiles = Vec::new();
    for name in &a.profiles {
        let p = kcp_bench::link_profile(name).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown profile {name:?}; known: {}",
                kcp_bench::PROFILES.join(", ")
            )
        })?;
        profiles.push((name.clone(), p));
    }
    anyhow::ensure!(!profiles.is_empty(), "--profiles is empty");
    anyhow::ensure!(
        a.bytes <= 1 << 30,
        "--bytes {} is more than 1 GiB (the payload is held in memory)",
        a.bytes
    );
    let plan = Plan {
        knobs: Knobs {
            nodelay: a.nodelay != 0,
            interval: a.interval,
            resend: a.resend,
            nc: a.nc,
            snd_wnd: a.snd_wnd,
            rcv_wnd: a.rcv_wnd,
            mtu: a.mtu,
            stream: a.mode == Mode::Stream,
        },
        profiles,
        bytes: a.bytes as usize,
        msg_size: a.size,
        reps: a.reps,
        seed: a.seed,
        limit: Duration::from_secs(a.time_limit.unwrap_or(600 + a.bytes / 50_000)),
    };
    plan.validate()?;
    Ok(plan)
}

fn run_kcp(a: KcpBenchArgs) -> anyhow::Result<ExitCode> {
    let plan = match plan(&a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let pb = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(plan.runs());
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.enable_steady_tick(Duration::from_millis(250));
        pb
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut facts = RunFacts::start(command_line());
    let mut first = true;
    let runs = kcp_bench::run(&plan, &mut |what| {
        if what != "warm-up" {
            if !first {
                pb.inc(1);
            }
            first = false;
        }
        pb.set_message(what.to_string());
    })?;
    pb.finish_and_clear();
    let elapsed = started.elapsed();
    facts.finish();

    let table = kcp_bench::table(&plan, &runs);
    let verdicts = kcp_bench::verdicts(&plan, &runs);
    let failures = kcp_bench::failures(&runs);
    println!("{table}");
    for v in &verdicts {
        println!("{v}");
    }
    if failures.is_empty() {
        println!(
            "integrity: all {} transfers delivered every byte intact and in order",
            runs.len()
        );
    } else {
        for f in &failures {
            println!("NOT INTACT: {f}");
        }
    }
    println!(
        "({} transfers in {:.1}s)",
        runs.len(),
        elapsed.as_secs_f64()
    );

    if let Some(out) = &a.out {
        let doc = kcp_bench::render(&plan, &runs, &facts, elapsed);
        let series = kcp_bench::goodput_series(&plan, &runs);
        let title = "KCP goodput vs loss (loss-only profiles; median MB/s of virtual time)";
        if let Some(svg) = write_report_with_plot(out, &doc, &series, title)? {
            println!("wrote {}", svg.display());
        }
        println!("wrote {}", out.display());
    }
    Ok(ExitCode::from(if failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

fn run_h2tunnel(a: H2tunnelBenchArgs) -> anyhow::Result<ExitCode> {
    use crate::bench::h2tunnel_bench::{self, Plan};
    if let Some(bin) = &a.tunnel_binary {
        if !bin.is_file() {
            eprintln!("error: --tunnel-binary {}: no such file", bin.display());
            return Ok(ExitCode::from(crate::cmd::EXIT_USAGE));
        }
    }
    for bin in ["kcptun-client", "kcptun-server"] {
        if std::process::Command::new(bin)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("error: {bin} not found; install it with `apt-get install -y kcptun`");
            return Ok(ExitCode::from(crate::cmd::EXIT_FAILURE));
        }
    }
    if a.losses.iter().any(|l| !(0.0..100.0).contains(l)) || a.reps == 0 || a.bytes == 0 {
        eprintln!("error: losses must be in 0..100, --reps and --bytes at least 1");
        return Ok(ExitCode::from(crate::cmd::EXIT_USAGE));
    }
    let plan = Plan {
        losses: a.losses.clone(),
        bytes: a.bytes,
        reps: a.reps,
        requests: a.requests,
        timeout: std::time::Duration::from_secs(a.timeout.max(1)),
        tunnel_binary: a.tunnel_binary.clone(),
    };
    let mut facts = RunFacts::start(String::new());
    let results = h2tunnel_bench::run(&plan, |step| eprintln!("bench h2tunnel: {step}"))?;
    facts.finish();
    facts.command = format!(
        "tunnelbed bench h2tunnel --losses {} --bytes {} --reps {} --requests {}",
        a.losses
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(","),
        a.bytes,
        a.reps,
        a.requests
    );
    if let Some(bin) = &a.tunnel_binary {
        facts
            .command
            .push_str(&format!(" --tunnel-binary {}", bin.display()));
    }
    if let Some(p) = &a.out {
        facts.command.push_str(&format!(" --out {}", p.display()));
    }
    let report = h2tunnel_bench::render(&plan, &results, &facts);
    print!("{report}");
    if let Some(p) = &a.out {
        let series = h2tunnel_bench::goodput_series(&results);
        let title = "h2tunnel throughput vs loss (median MB/s of bulk downloads)";
        if let Some(svg) = write_report_with_plot(p, &report, &series, title)? {
            println!("wrote {}", svg.display());
        }
    }
    let failures: usize = results
        .iter()
        .flat_map(|(_, f)| f.iter())
        .map(|f| f.failures)
        .sum();
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::cmd::EXIT_FAILURE)
    })
}

fn run_pong(a: PongBenchArgs) -> anyhow::Result<ExitCode> {
    use crate::bench::pong_bench::{self, Plan};
    if let Some(spec) = &a.child {
        pong_bench::child_main(spec)?;
        return Ok(ExitCode::from(EXIT_OK));
    }
    let mut carriers: Vec<PongCarrier> = Vec::new();
    for c in &a.carrier {
        if !carriers.contains(c) {
            carriers.push(*c);
        }
    }
    if a.size == 0
        || a.size > 4096
        || a.reps == 0
        || a.streams == 0
        || a.memory_cycles == 0
        || !(1..=3600).contains(&a.idle_close)
        || carriers.is_empty()
    {
        eprintln!(
            "error: --size must be 1..=4096 MiB, --reps, --streams and --memory-cycles at least 1, --idle-close 1..=3600 s, --carrier not empty"
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let plan = Plan {
        size: (a.size as usize) << 20,
        reps: a.reps,
        carriers: carriers.iter().map(|c| c.kind()).collect(),
        streams: a.streams,
        exchanges: a.exchanges,
        idle_streams: a.idle_streams,
        memory_cycles: a.memory_cycles,
        idle_close: std::time::Duration::from_secs(a.idle_close),
    };
    let mut facts = RunFacts::start(String::new());
    let results = pong_bench::run(&plan, |step| eprintln!("bench pong: {step}"))?;
    facts.finish();
    let names: Vec<&str> = plan
        .carriers
        .iter()
        .map(|&k| pong_bench::scheme(k))
        .collect();
    let mut command = format!(
        "tunnelbed bench pong --size {} --reps {} --carrier {} --idle-streams {} --memory-cycles {} --idle-close {} --streams {} --exchanges {}",
        a.size,
        a.reps,
        names.join(","),
        a.idle_streams,
        a.memory_cycles,
        a.idle_close,
        a.streams,
        a.exchanges
    );
    if let Some(p) = &a.out {
        command.push_str(&format!(" --out {}", p.display()));
    }
    facts.command = command;
    let report = pong_bench::render(&plan, &results, &facts);
    print!("{report}");
    if let Some(p) = &a.out {
        write_report(p, &report)?;
        eprintln!("bench pong: wrote {}", p.display());
    }
    Ok(ExitCode::from(if results.failures() == 0 {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

fn run_vless(a: VlessBenchArgs) -> anyhow::Result<ExitCode> {
    use crate::bench::vless_bench::{self, Plan};
    if a.size == 0 || a.size > 4096 || a.reps == 0 || a.streams == 0 || a.exchanges == 0 {
        return super::usage(
            "--size must be 1..=4096 MiB, --reps, --streams and --exchanges at least 1",
        );
    }
    let plan = Plan {
        size: (a.size as usize) << 20,
        reps: a.reps,
        streams: a.streams,
        exchanges: a.exchanges,
    };
    let mut facts = RunFacts::start(command_line());
    let rows = vless_bench::run(&plan, |step| eprintln!("bench vless: {step}"))?;
    facts.finish();
    let report = vless_bench::render(&plan, &rows, &facts);
    print!("{report}");
    if let Some(p) = &a.out {
        write_report(p, &report)?;
        eprintln!("bench vless: wrote {}", p.display());
    }
    Ok(ExitCode::from(if vless_bench::failures(&rows) == 0 {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
        assert_eq!(parse_bytes("100k"), Ok(100_000));
        assert_eq!(parse_bytes("1_000"), Ok(1000));
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
