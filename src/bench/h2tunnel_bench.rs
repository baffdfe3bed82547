//! `tunnelbed bench h2tunnel`: our h2tunnel client and server against Debian's `kcptun`
//! (KCP plus smux; crypto, FEC and compression off) on real loopback UDP, side by side
//! in one run: each stack is started behind the same `tunnelbed netem` relay settings,
//! downloads go through it from one `tunnelbed http-source`, and the two stacks
//! alternate repetition by repetition.
//!
//! Throughput: the median over repetitions of a bulk download's MB/s. Latency: p50/p99
//! of small requests, each on a new TCP connection (so a new stream), one at a time.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Kills a child process when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

/// Starts a process; returns it and the second word of its first line on stdout (or
/// stderr): the address its `listening ADDR` / `netem: ADDR -> ...` banner names.
fn spawn(mut cmd: Command, banner_on_stderr: bool) -> anyhow::Result<(Proc, String)> {
    if banner_on_stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pipe: Box<dyn Read> = if banner_on_stderr {
        Box::new(child.stderr.take().context("no stderr")?)
    } else {
        Box::new(child.stdout.take().context("no stdout")?)
    };
    let mut line = String::new();
    BufReader::new(pipe).read_line(&mut line)?;
    let addr = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("no address in the banner {line:?} of {cmd:?}"))?
        .to_string();
    Ok((Proc(child), addr))
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
        crate::cmd::http_source::fill_pattern(off, &mut want[..k]);
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

/// The two stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// tunnelbed h2tunnel (KCP fast4 / clientFast4, mtu 1250, stream mode).
    Ours,
    /// kcptun (kcp-go + smux), --mode fast3, same windows and mtu, crypt none, no FEC.
    Kcptun,
}

impl Stack {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Ours => "tunnelbed h2tunnel",
            Stack::Kcptun => "kcptun",
        }
    }
}

/// Starts `stack`'s server (forwarding to `origin`), a relay with `loss` in front of it
/// when loss > 0, and its client; returns the processes and the client's TCP address.
fn start_stack(stack: Stack, origin: &str, loss: f64) -> anyhow::Result<(Vec<Proc>, String)> {
    let me = tunnelbed()?;
    let mut procs = Vec::new();
    let server = match stack {
        Stack::Ours => {
            let mut c = Command::new(&me);
            c.args([
                "h2tunnel",
                "server",
                "--listen",
                "udp://127.0.0.1:0",
                "--forward",
                origin,
            ]);
            let (p, a) = spawn(c, false)?;
            procs.push(p);
            a
        }
        Stack::Kcptun => {
            let port = free_port(true)?;
            let addr = format!("127.0.0.1:{port}");
            let mut c = Command::new("kcptun-server");
            c.args(["-l", &addr, "-t", origin])
                .args(kcptun_knobs(1024, 1024));
            c.stdout(Stdio::null()).stderr(Stdio::null());
            procs.push(Proc(c.spawn().context(
                "starting kcptun-server (install it with `apt-get install -y kcptun`)",
            )?));
            std::thread::sleep(Duration::from_millis(300));
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
        let (p, a) = spawn(c, true)?;
        procs.push(p);
        a
    } else {
        server
    };
    let client = match stack {
        Stack::Ours => {
            let mut c = Command::new(&me);
            c.args(["h2tunnel", "client", "--listen", "tcp://127.0.0.1:0"])
                .args(["--server", &format!("udp://{via}")]);
            let (p, a) = spawn(c, false)?;
            procs.push(p);
            a
        }
        Stack::Kcptun => {
            let addr = format!("127.0.0.1:{}", free_port(false)?);
            let mut c = Command::new("kcptun-client");
            c.args(["-l", &addr, "-r", &via])
                .args(kcptun_knobs(256, 1024));
            c.stdout(Stdio::null()).stderr(Stdio::null());
            procs.push(Proc(c.spawn().context("starting kcptun-client")?));
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

/// kcptun's knobs matching vproxy's tunnel profile: fast3 (nodelay, 10 ms, resend 2,
/// no congestion window), mtu 1250, the given windows, no crypto, no FEC, no compression.
fn kcptun_knobs(snd: u32, rcv: u32) -> Vec<String> {
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
    .collect()
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the plan; returns the figures per (loss, stack) in plan order.
pub fn run(
    plan: &Plan,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<(f64, [Figures; 2])>> {
    let me = tunnelbed()?;
    let mut c = Command::new(&me);
    c.args(["http-source", "--listen", "127.0.0.1:0"]);
    let (_origin, origin) = spawn(c, false)?;
    let stacks = [Stack::Ours, Stack::Kcptun];
    let mut out = Vec::new();
    for &loss in &plan.losses {
        let mut running = Vec::new();
        for s in stacks {
            running.push(start_stack(s, &origin, loss)?);
        }
        let mut figs: [Figures; 2] = Default::default();
        for rep in 0..plan.reps {
            // Alternate which stack goes first.
            let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                progress(&format!(
                    "loss {loss}% rep {} {}",
                    rep + 1,
                    stacks[i].name()
                ));
                match get(&running[i].1, plan.bytes, plan.timeout) {
                    Ok(t) => figs[i].all.push(plan.bytes as f64 / t.as_secs_f64() / 1e6),
                    Err(e) => {
                        tracing::warn!("{} at {loss}%: {e}", stacks[i].name());
                        figs[i].failures += 1;
                        figs[i].all.push(0.0);
                    }
                }
            }
        }
        for (i, f) in figs.iter_mut().enumerate() {
            progress(&format!("loss {loss}% latency {}", stacks[i].name()));
            let mut lat = Vec::new();
            for _ in 0..plan.requests {
                match get(&running[i].1, 1000, Duration::from_secs(10)) {
                    Ok(t) => lat.push(t.as_secs_f64() * 1e3),
                    Err(_) => f.failures += 1,
                }
            }
            lat.sort_by(|a, b| a.total_cmp(b));
            if !lat.is_empty() {
                f.p50_ms = lat[lat.len() / 2];
                f.p99_ms = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
            }
            f.mbps = median(&mut f.all.clone());
        }
        drop(running);
        out.push((loss, figs));
    }
    Ok(out)
}

/// The Markdown report.
pub fn render(plan: &Plan, results: &[(f64, [Figures; 2])], command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# h2tunnel benchmark: tunnelbed h2tunnel vs kcptun\n");
    let _ = writeln!(
        s,
        "- command: `{command}` (`tunnelbed` is `cargo run --release --`)"
    );
    let _ = writeln!(
        s,
        "- machine: {} cores, loopback; both stacks run at the same time, downloads alternate between them",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
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
        "- lossy rows: each server behind its own `tunnelbed netem --loss PCT --seed 1` (i.i.d. loss both ways, 5 ms each way)"
    );
    let _ = writeln!(
        s,
        "- throughput: median of {} downloads of {} bytes from `tunnelbed http-source` (every byte checked); latency: {} requests of 1000 bytes, each a new TCP connection and stream, one at a time\n",
        plan.reps, plan.bytes, plan.requests
    );
    let _ = writeln!(
        s,
        "| loss | stack | throughput (MB/s) | every rep (MB/s) | p50 (ms) | p99 (ms) | failures |"
    );
    let _ = writeln!(s, "|---:|---|---:|---|---:|---:|---:|");
    for (loss, figs) in results {
        for (i, f) in figs.iter().enumerate() {
            let name = if i == 0 {
                Stack::Ours.name()
            } else {
                Stack::Kcptun.name()
            };
            let all: Vec<String> = f.all.iter().map(|x| format!("{x:.1}")).collect();
            let _ = writeln!(
                s,
                "| {loss}% | {name} | {:.1} | {} | {:.1} | {:.1} | {} |",
                f.mbps,
                all.join(", "),
                f.p50_ms,
                f.p99_ms,
                f.failures
            );
        }
        let r = if figs[1].mbps > 0.0 {
            figs[0].mbps / figs[1].mbps
        } else {
            f64::INFINITY
        };
        let _ = writeln!(s, "| {loss}% | **ours/kcptun** | **{r:.2}x** | | | | |");
    }
    s
}
