//! `tunnelbed bench h2tunnel`: our h2tunnel client and server against Debian's `kcptun`
//! (KCP plus smux; crypto, FEC and compression off) on real loopback UDP, side by side
//! in one run: each stack is started behind the same `tunnelbed netem` relay settings,
//! downloads go through it from one `tunnelbed http-source`, and the stacks take turns
//! repetition by repetition.
//!
//! kcptun runs twice: with its own `fast3` profile (resend 2), and with the very KCP
//! knobs of ours (nodelay 1, interval 10, resend 1, nc 1, from a `-c` JSON file; the
//! bench checks kcptun's log says `nodelay parameters: 1 10 1 1` and fails otherwise), so
//! one ratio compares the implementations and not the settings.
//!
//! Throughput: the median over repetitions of a bulk download's MB/s. Latency: p50/p99
//! of small requests, each on a new TCP connection (so a new stream), one at a time.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::child::{spawn_banner, spawn_until, Pipe, Proc};
use super::report::{opening, RunFacts};
use super::stats::{median, percentile};

/// Our KCP knobs (vproxy's fast4) as kcptun's `-c` configuration file.
pub const SAME_KNOBS_JSON: &str =
    r#"{"mode":"manual","nodelay":1,"interval":10,"resend":1,"nc":1}"#;

/// What kcptun logs when it runs with [`SAME_KNOBS_JSON`] (nodelay, interval, resend, nc).
pub const SAME_KNOBS_LOG: &str = "nodelay parameters: 1 10 1 1";

/// What kcptun logs with `--mode fast3`.
pub const FAST3_LOG: &str = "nodelay parameters: 1 10 2 1";

/// What a run measures.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Loss percentages; 0 runs without a relay.
    pub losses: Vec<f64>,
    /// Bytes per bulk download.
    pub bytes: u64,
    /// Repetitions per stack and loss.
    pub reps: usize,
    /// Small requests per stack and loss for the latency figures.
    pub requests: usize,
    /// Give up on one download after this long.
    pub timeout: Duration,
    /// Another build whose `h2tunnel server` and `client` run in our row (None: this one).
    pub tunnel_binary: Option<PathBuf>,
}

/// One stack's figures at one loss rate.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Median bulk throughput in MB/s (0 when every download failed).
    pub mbps: f64,
    /// Every repetition's MB/s.
    pub all: Vec<f64>,
    /// Small-request latency percentiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Downloads or requests that failed or came back wrong.
    pub failures: usize,
}

fn tunnelbed() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the tunnelbed binary")
}

/// A port free on 127.0.0.1 right now (kcptun takes fixed ports).
fn free_port(udp: bool) -> anyhow::Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    })
}

/// Waits until a TCP port accepts connections.
fn wait_tcp(addr: &str) -> anyhow::Result<()> {
    let a: SocketAddr = addr.parse()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("{addr} did not start listening");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `GET /bytes/n` through `proxy`; checks length and content; returns the elapsed time.
pub fn get(proxy: &str, n: u64, timeout: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(proxy)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET /bytes/{n} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 || head.len() > 16 * 1024 {
            bail!("bad response header");
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!(
            "status {}",
            String::from_utf8_lossy(&head[..head.len().min(20)])
        );
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    loop {
        let k = s.read(&mut buf)?;
        if k == 0 {
            break;
        }
        if off + k as u64 > n {
            bail!("more than {n} bytes");
        }
        crate::pattern::fill_pattern(off, &mut want[..k]);
        if buf[..k] != want[..k] {
            bail!("wrong bytes at offset {off}");
        }
        off += k as u64;
        if t0.elapsed() > timeout {
            bail!("timed out after {off} of {n} bytes");
        }
    }
    if off != n {
        bail!("{off} of {n} bytes");
    }
    Ok(t0.elapsed())
}

/// The stacks, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// tunnelbed h2tunnel (KCP fast4 / clientFast4, mtu 1250, stream mode).
    Ours,
    /// kcptun (kcp-go + smux), --mode fast3, same windows and mtu, crypt none, no FEC.
    Kcptun,
    /// kcptun with our KCP knobs (nodelay 1, interval 10, resend 1, nc 1), the rest as
    /// [`Stack::Kcptun`].
    KcptunSameKnobs,
}

/// Every stack, in table order.
pub const STACKS: [Stack; 3] = [Stack::Ours, Stack::Kcptun, Stack::KcptunSameKnobs];

impl Stack {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Ours => "tunnelbed h2tunnel",
            Stack::Kcptun => "kcptun",
            Stack::KcptunSameKnobs => "kcptun, our knobs",
        }
    }
}

/// Starts `stack`'s server (forwarding to `origin`), a relay with `loss` in front of it
/// when loss > 0, and its client; returns the processes and the client's TCP address.
fn start_stack(
    stack: Stack,
    origin: &str,
    loss: f64,
    same_knobs: &Path,
    tunnel_binary: Option<&Path>,
) -> anyhow::Result<(Vec<Proc>, String)> {
    let me = tunnelbed()?;
    let ours = tunnel_binary.map_or_else(|| me.clone(), Path::to_path_buf);
    let mut procs = Vec::new();
    let server = match stack {
        Stack::Ours => {
            let mut c = Command::new(&ours);
            c.args([
                "h2tunnel",
                "server",
                "--listen",
                "udp://127.0.0.1:0",
                "--forward",
                origin,
            ]);
            c.stderr(Stdio::null());
            let (p, a) = spawn_banner(c, Pipe::Stdout)?;
            procs.push(p);
            a
        }
        Stack::Kcptun | Stack::KcptunSameKnobs => {
            let port = free_port(true)?;
            let addr = format!("127.0.0.1:{port}");
            let mut c = Command::new("kcptun-server");
            c.args(["-l", &addr, "-t", origin])
                .args(kcptun_knobs(stack, 1024, 1024, same_knobs));
            procs.push(start_kcptun(c, stack)?);
            addr
        }
    };
    let via = if loss > 0.0 {
        let mut c = Command::new(&me);
        c.args(["netem", "--listen", "127.0.0.1:0", "--forward", &server])
            .args([
                "--loss",
                &loss.to_string(),
                "--seed",
                "1",
                "--duration",
                "3600",
            ]);
        c.stdout(Stdio::null());
        let (p, a) = spawn_banner(c, Pipe::Stderr)?;
        procs.push(p);
        a
    } else {
        server
    };
    let client = match stack {
        Stack::Ours => {
            let mut c = Command::new(&ours);
            c.args(["h2tunnel", "client", "--listen", "tcp://127.0.0.1:0"])
                .args(["--server", &format!("udp://{via}")]);
            c.stderr(Stdio::null());
            let (p, a) = spawn_banner(c, Pipe::Stdout)?;
            procs.push(p);
            a
        }
        Stack::Kcptun | Stack::KcptunSameKnobs => {
            let addr = format!("127.0.0.1:{}", free_port(false)?);
            let mut c = Command::new("kcptun-client");
            c.args(["-l", &addr, "-r", &via])
                .args(kcptun_knobs(stack, 256, 1024, same_knobs));
            procs.push(start_kcptun(c, stack)?);
            wait_tcp(&addr)?;
            addr
        }
    };
    // Warm up: the first request opens the tunnel.
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&client, 1000, Duration::from_secs(5)).is_err() {
        if Instant::now() > deadline {
            bail!("{} did not come up", stack.name());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((procs, client))
}

/// Starts a kcptun end and checks from its log that it took the KCP knobs `stack` asks
/// for (`nodelay parameters: nodelay interval resend nc`): a bench whose kcptun silently
/// ran other settings would compare the wrong things.
fn start_kcptun(mut c: Command, stack: Stack) -> anyhow::Result<Proc> {
    let want = match stack {
        Stack::KcptunSameKnobs => SAME_KNOBS_LOG,
        _ => FAST3_LOG,
    };
    c.stdout(Stdio::null());
    let (p, lines) = spawn_until(c, Pipe::Stderr, |l| l.contains("nodelay parameters:"))
        .context("starting kcptun (install it with `apt-get install -y kcptun`)")?;
    let got = lines.last().map(String::as_str).unwrap_or("");
    if !got.trim_end().ends_with(want) {
        bail!("{}: kcptun logged {got:?}, not {want:?}", stack.name());
    }
    Ok(p)
}

/// kcptun's knobs: `fast3` (nodelay, 10 ms, resend 2, no congestion window), or for
/// [`Stack::KcptunSameKnobs`] ours from the `-c` file `same_knobs`; and for both mtu
/// 1250, the given windows, no crypto, no FEC, no compression.
fn kcptun_knobs(stack: Stack, snd: u32, rcv: u32, same_knobs: &Path) -> Vec<String> {
    let config: Vec<String> = match stack {
        Stack::KcptunSameKnobs => vec!["-c".into(), same_knobs.display().to_string()],
        _ => Vec::new(),
    };
    [
        "--mode",
        "fast3",
        "--crypt",
        "none",
        "--datashard",
        "0",
        "--parityshard",
        "0",
        "--nocomp",
        "--mtu",
        "1250",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--sndwnd".into(),
        snd.to_string(),
        "--rcvwnd".into(),
        rcv.to_string(),
    ])
    .chain(config)
    .collect()
}

/// Figures per stack, in [`STACKS`] order, at one loss rate.
pub type Row = (f64, Vec<Figures>);

/// Runs the plan; returns the figures per (loss, stack) in plan order.
pub fn run(plan: &Plan, mut progress: impl FnMut(&str)) -> anyhow::Result<Vec<Row>> {
    let me = tunnelbed()?;
    let mut c = Command::new(&me);
    c.args(["http-source", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::null());
    let (_origin, origin) = spawn_banner(c, Pipe::Stdout)?;
    // kcptun's -c file with our knobs, for the run's lifetime.
    let same_knobs = std::env::temp_dir().join(format!(
        "tunnelbed-kcptun-knobs-{}.json",
        std::process::id()
    ));
    std::fs::write(&same_knobs, SAME_KNOBS_JSON)
        .with_context(|| format!("writing {}", same_knobs.display()))?;
    let out = run_with(plan, &origin, &same_knobs, &mut progress);
    let _ = std::fs::remove_file(&same_knobs);
    out
}

fn run_with(
    plan: &Plan,
    origin: &str,
    same_knobs: &Path,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Vec<Row>> {
    let mut out = Vec::new();
    for &loss in &plan.losses {
        let mut running = Vec::new();
        for s in STACKS {
            running.push(start_stack(
                s,
                origin,
                loss,
                same_knobs,
                plan.tunnel_binary.as_deref(),
            )?);
        }
        let mut figs = vec![Figures::default(); STACKS.len()];
        for rep in 0..plan.reps {
            // Rotate which stack goes first.
            for k in 0..STACKS.len() {
                let i = (rep + k) % STACKS.len();
                progress(&format!(
                    "loss {loss}% rep {} {}",
                    rep + 1,
                    STACKS[i].name()
                ));
                match get(&running[i].1, plan.bytes, plan.timeout) {
                    Ok(t) => figs[i].all.push(plan.bytes as f64 / t.as_secs_f64() / 1e6),
                    Err(e) => {
                        tracing::warn!("{} at {loss}%: {e}", STACKS[i].name());
                        figs[i].failures += 1;
                        figs[i].all.push(0.0);
                    }
                }
            }
        }
        for (i, f) in figs.iter_mut().enumerate() {
            progress(&format!("loss {loss}% latency {}", STACKS[i].name()));
            let mut lat = Vec::new();
            for _ in 0..plan.requests {
                match get(&running[i].1, 1000, Duration::from_secs(10)) {
                    Ok(t) => lat.push(t.as_secs_f64() * 1e3),
                    Err(_) => f.failures += 1,
                }
            }
            f.p50_ms = percentile(&lat, 50.0);
            f.p99_ms = percentile(&lat, 99.0);
            f.mbps = median(&f.all);
        }
        drop(running);
        out.push((loss, figs));
    }
    Ok(out)
}

/// Throughput over loss rate per stack, for the report's plot.
pub fn goodput_series(results: &[Row]) -> Vec<super::report::Series> {
    STACKS
        .iter()
        .enumerate()
        .map(|(i, stack)| super::report::Series {
            name: stack.name().to_string(),
            points: results
                .iter()
                .filter_map(|(loss, figs)| figs.get(i).map(|f| (*loss, f.mbps)))
                .collect(),
        })
        .collect()
}

/// The Markdown report.
pub fn render(plan: &Plan, results: &[Row], facts: &RunFacts) -> String {
    let mut s = opening("h2tunnel benchmark: tunnelbed h2tunnel vs kcptun", facts);
    let _ = writeln!(
        s,
        "- setup: loopback; all stacks run at the same time, downloads take turns between them"
    );
    let _ = writeln!(
        s,
        "- ours: `h2tunnel server` (KCP fast4: nodelay, 10 ms, resend 1, nc, windows 1024/1024) and `h2tunnel client` (clientFast4: windows 256/1024), mtu 1250, stream mode"
    );
    let _ = writeln!(
        s,
        "- kcptun (Debian): `--mode fast3` (nodelay, 10 ms, resend 2, nc), the same windows and mtu, `--crypt none --datashard 0 --parityshard 0 --nocomp`, smux v1"
    );
    let _ = writeln!(
        s,
        "- kcptun, our knobs: the same, with `-c` `{SAME_KNOBS_JSON}` (our nodelay, interval, resend and nc); the bench checks both of its ends log `{SAME_KNOBS_LOG}`, so the ratio to this row compares the implementations, not the settings"
    );
    let _ = writeln!(
        s,
        "- lossy rows: each server behind its own `tunnelbed netem --loss PCT --seed 1` (i.i.d. loss both ways, 5 ms each way)"
    );
    let _ = writeln!(
        s,
        "- throughput: median of {} downloads of {} bytes from `tunnelbed http-source` (every byte checked); latency: {} requests of 1000 bytes, each a new TCP connection and stream, one at a time; percentiles by nearest rank\n",
        plan.reps, plan.bytes, plan.requests
    );
    let _ = writeln!(
        s,
        "| loss | stack | throughput (MB/s) | every rep (MB/s) | p50 (ms) | p99 (ms) | failures |"
    );
    let _ = writeln!(s, "|---:|---|---:|---|---:|---:|---:|");
    for (loss, figs) in results {
        for (stack, f) in STACKS.iter().zip(figs) {
            let all: Vec<String> = f.all.iter().map(|x| format!("{x:.1}")).collect();
            let _ = writeln!(
                s,
                "| {loss}% | {} | {:.1} | {} | {:.1} | {:.1} | {} |",
                stack.name(),
                f.mbps,
                all.join(", "),
                f.p50_ms,
                f.p99_ms,
                f.failures
            );
        }
        for (i, label) in [(1, "ours/kcptun"), (2, "ours/kcptun, same knobs")] {
            let r = match figs.get(i) {
                Some(k) if k.mbps > 0.0 => figs[0].mbps / k.mbps,
                _ => f64::INFINITY,
            };
            let _ = writeln!(s, "| {loss}% | **{label}** | **{r:.2}x** | | | | |");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcptun_gets_our_knobs_only_in_its_own_row() {
        let file = Path::new("/tmp/k.json");
        let fast3 = kcptun_knobs(Stack::Kcptun, 256, 1024, file);
        assert!(!fast3.contains(&"-c".to_string()));
        let same = kcptun_knobs(Stack::KcptunSameKnobs, 256, 1024, file);
        let i = same.iter().position(|a| a == "-c").unwrap();
        assert_eq!(same[i + 1], "/tmp/k.json");
        assert_eq!(same[..same.len() - 2], fast3[..]);
        assert!(SAME_KNOBS_JSON.contains(r#""resend":1"#));
    }

    #[test]
    fn the_table_has_a_row_per_stack_and_both_ratios() {
        let plan = Plan {
            losses: vec![0.0],
            bytes: 10,
            reps: 1,
            requests: 1,
            timeout: Duration::from_secs(1),
            tunnel_binary: None,
        };
        let f = |mbps| Figures {
            mbps,
            all: vec![mbps],
            ..Figures::default()
        };
        let facts = RunFacts::start("tunnelbed bench h2tunnel".into());
        let md = render(&plan, &[(0.0, vec![f(30.0), f(10.0), f(20.0)])], &facts);
        assert!(md.contains("| 0% | kcptun, our knobs | 20.0 | 20.0 |"));
        assert!(md.contains("| 0% | **ours/kcptun** | **3.00x** |"));
        assert!(md.contains("| 0% | **ours/kcptun, same knobs** | **1.50x** |"));
    }
}
