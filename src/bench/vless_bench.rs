//! `tunnelbed bench vless`: TCP download throughput and CPU per GB through our VLESS
//! client and server, side by side with Debian's v2ray 4.34 (socks inbound -> VLESS
//! outbound -> VLESS inbound -> freedom) and the two-relay TCP chain that `bench pong`
//! uses as the limit of this topology, with the same settings: loopback, tcp carrier, no
//! encryption, one download at a time of the same incompressible payload, the stacks
//! taking turns in every repetition so load drifts hit them alike. Then small-request
//! latency through each stack, measured as `bench pong` does ([`super::latency`]):
//! `streams` connections at once (200 by default) to an echo target, each doing
//! `exchanges` 100-byte round trips; the stacks take turns over `reps` rounds and the
//! samples of a stack are pooled for its p50 and p99.
//!
//! Every download and every answer is checked byte for byte; a short or altered one is a
//! failure.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::child::{spawn_banner, spawn_until, Pipe, Proc};
use super::latency::{self, Route, Sample, MSG};
use super::measure::proc_cpu;
use super::report::{opening, RunFacts};
use super::stats::{median, min_max};

/// The user id the bench's stacks share.
const UUID: &str = "5d8a1c3e-7b24-4f6a-9e10-2c4b6d8f0a13";

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Bytes per download.
    pub size: usize,
    /// Timed downloads per stack, and latency rounds per stack.
    pub reps: usize,
    /// Concurrent connections per latency round.
    pub streams: usize,
    /// Timed round trips per connection and round.
    pub exchanges: usize,
}

/// The issue's throughput target: ours at least this share of the two-relay reference.
pub const TARGET_RATIO: f64 = 0.95;

/// The stacks compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// Two plain TCP relays in a chain (`bench pong`'s reference).
    Relay,
    /// SOCKS5 -> our VLESS client -> tcp -> our VLESS server.
    Ours,
    /// SOCKS5 -> v2ray (vless outbound) -> tcp -> v2ray (vless inbound -> freedom).
    V2ray,
}

impl StackKind {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            StackKind::Relay => "reference: TCP relay x2",
            StackKind::Ours => "ours (tunnelbed vless client + server)",
            StackKind::V2ray => "v2ray 4.34 (socks/vless out + vless in/freedom)",
        }
    }
}

struct Stack {
    kind: StackKind,
    /// Where the download connects, and whether through SOCKS5.
    via: SocketAddr,
    socks: bool,
    procs: Vec<Proc>,
    /// How the latency rounds reach the echo target.
    echo: Route,
    /// Processes only the latency rounds use (kept alive, CPU not counted).
    _echo_procs: Vec<Proc>,
}

impl Stack {
    fn cpu(&self) -> f64 {
        self.procs.iter().map(|p| proc_cpu(p.pid())).sum()
    }
}

fn me() -> anyhow::Result<std::path::PathBuf> {
    std::env::current_exe().context("finding the tunnelbed binary")
}

/// `bench pong`'s relay child on `target`.
fn relay(target: SocketAddr) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut cmd = Command::new(me()?);
    cmd.args(["bench", "pong", "--child", &format!("relay:{target}")])
        .stdin(Stdio::piped())
        .stderr(Stdio::inherit());
    let (p, addr) = spawn_banner(cmd, Pipe::Stdout)?;
    Ok((p, addr.parse().context("relay address")?))
}

fn ours() -> anyhow::Result<(Vec<Proc>, SocketAddr)> {
    let mut s = Command::new(me()?);
    s.args([
        "vless",
        "server",
        "--listen",
        "tcp://127.0.0.1:0",
        "--uuid",
        UUID,
    ])
    .stdout(Stdio::null());
    let (server, line) = spawn_until(s, Pipe::Stderr, |l| l.contains("listening on"))?;
    let url = line
        .last()
        .and_then(|l| l.split_whitespace().last())
        .context("server banner")?
        .to_string();
    let mut c = Command::new(me()?);
    c.args([
        "vless",
        "client",
        "--socks",
        "127.0.0.1:0",
        "--server",
        &url,
        "--uuid",
        UUID,
    ])
    .stdout(Stdio::null());
    let (client, line) = spawn_until(c, Pipe::Stderr, |l| l.contains("SOCKS5 on"))?;
    let socks = line
        .last()
        .and_then(|l| l.split_whitespace().last())
        .context("client banner")?
        .parse()
        .context("client address")?;
    Ok((vec![server, client], socks))
}

/// A port for v2ray to bind (it is told one); a start on a taken port is retried.
fn v2ray_port(n: u32) -> u16 {
    let seed = u64::from(std::process::id()).wrapping_mul(2_654_435_761) ^ (u64::from(n) * 7919);
    20_000 + (seed % 40_000) as u16
}

fn v2ray_child(
    dir: &Path,
    name: &str,
    config: &dyn Fn(u16) -> String,
) -> anyhow::Result<(Proc, u16)> {
    if Command::new("v2ray").arg("-version").output().is_err() {
        bail!("v2ray not runnable: install Debian's v2ray 4.34 with `apt-get install -y v2ray`");
    }
    let mut last = String::new();
    for n in 0..10 {
        let port = v2ray_port(n + if name == "client" { 100 } else { 0 });
        let file = dir.join(format!("{name}-{port}.json"));
        std::fs::write(&file, config(port))?;
        let mut cmd = Command::new("v2ray");
        cmd.arg("-config").arg(&file).stderr(Stdio::null());
        match spawn_until(cmd, Pipe::Stdout, |l| {
            l.contains("started") || l.contains("address already in use")
        }) {
            Ok((p, lines)) if lines.last().is_some_and(|l| l.contains("started")) => {
                return Ok((p, port))
            }
            Ok((_, lines)) => last = lines.join("\n"),
            Err(e) => last = e.to_string(),
        }
    }
    bail!("v2ray {name} did not start in 10 tries: {last}")
}

fn v2ray(dir: &Path) -> anyhow::Result<(Vec<Proc>, SocketAddr)> {
    let (server, sport) = v2ray_child(dir, "server", &|p| {
        format!(
            r#"{{"log":{{"loglevel":"warning"}},"inbounds":[{{"listen":"127.0.0.1","port":{p},"protocol":"vless","settings":{{"clients":[{{"id":"{UUID}","level":0}}],"decryption":"none"}},"streamSettings":{{"network":"tcp"}}}}],"outbounds":[{{"protocol":"freedom","settings":{{}}}}]}}"#
        )
    })?;
    let (client, cport) = v2ray_child(dir, "client", &|p| {
        format!(
            r#"{{"log":{{"loglevel":"warning"}},"inbounds":[{{"listen":"127.0.0.1","port":{p},"protocol":"socks","settings":{{"auth":"noauth","udp":false}}}}],"outbounds":[{{"protocol":"vless","settings":{{"vnext":[{{"address":"127.0.0.1","port":{sport},"users":[{{"id":"{UUID}","encryption":"none","level":0}}]}}]}},"streamSettings":{{"network":"tcp"}}}}]}}"#
        )
    })?;
    Ok((
        vec![server, client],
        SocketAddr::from(([127, 0, 0, 1], cport)),
    ))
}

/// Starts a stack. The relays forward to one fixed target, so the reference gets a
/// second chain of two relays to the echo target for the latency rounds (not counted in
/// its CPU); the SOCKS5 stacks reach both targets themselves.
fn start(
    kind: StackKind,
    source: SocketAddr,
    echo: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Stack> {
    let socks = |kind, procs, via| Stack {
        kind,
        via,
        socks: true,
        procs,
        echo: Route {
            via: Some(via),
            socks: true,
        },
        _echo_procs: Vec::new(),
    };
    Ok(match kind {
        StackKind::Relay => {
            let (b, baddr) = relay(source)?;
            let (a, aaddr) = relay(baddr)?;
            let (d, daddr) = relay(echo)?;
            let (c, caddr) = relay(daddr)?;
            Stack {
                kind,
                via: aaddr,
                socks: false,
                procs: vec![a, b],
                echo: Route {
                    via: Some(caddr),
                    socks: false,
                },
                _echo_procs: vec![c, d],
            }
        }
        StackKind::Ours => {
            let (procs, via) = ours()?;
            socks(kind, procs, via)
        }
        StackKind::V2ray => {
            let (procs, via) = v2ray(dir)?;
            socks(kind, procs, via)
        }
    })
}

/// The payload: a fixed xorshift stream (incompressible enough, reproducible).
pub fn payload(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x766c_6573_7362_656e;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A TCP source that writes the payload to every connection, then half-closes.
fn start_source(data: Arc<Vec<u8>>) -> io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let data = data.clone();
            std::thread::spawn(move || {
                if s.write_all(&data).is_ok() {
                    let _ = s.shutdown(Shutdown::Write);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut b = [0u8; 64];
                    let _ = s.read(&mut b);
                }
            });
        }
    });
    Ok(addr)
}

/// One download through `st` into `buf`; returns its time, or what went wrong.
fn download(
    st: &Stack,
    target: SocketAddr,
    buf: &mut [u8],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(st.via)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    if st.socks {
        let SocketAddr::V4(t) = target else {
            bail!("IPv4 target only")
        };
        s.write_all(&[5, 1, 0])?;
        let mut m = [0u8; 2];
        s.read_exact(&mut m)?;
        let mut req = vec![5, 1, 0, 1];
        req.extend_from_slice(&t.ip().octets());
        req.extend_from_slice(&t.port().to_be_bytes());
        s.write_all(&req)?;
        let mut r = [0u8; 10];
        s.read_exact(&mut r)?;
        if m != [5, 0] || r[1] != 0 {
            bail!("SOCKS5 refused: {m:?} {r:?}");
        }
    }
    let mut off = 0;
    while off < buf.len() {
        let n = s.read(&mut buf[off..])?;
        if n == 0 {
            bail!("{off} of {} bytes", buf.len());
        }
        off += n;
        if t0.elapsed() > timeout {
            bail!("timed out after {off} bytes");
        }
    }
    // Timed to the last byte: how soon a proxy passes the end on (v2ray lingers before
    // closing) is not throughput. The end must still come, and nothing after it.
    let took = t0.elapsed();
    let mut extra = [0u8; 1];
    if s.read(&mut extra)? != 0 {
        bail!("more than {} bytes", buf.len());
    }
    Ok(took)
}

/// One stack's figures.
#[derive(Clone, Debug)]
pub struct Row {
    /// Which stack.
    pub kind: StackKind,
    /// MB/s (10^6 bytes) of each good repetition.
    pub mbps: Vec<f64>,
    /// CPU seconds of the stack's processes per GB (10^9 bytes) moved, over the good ones.
    pub cpu_per_gb: f64,
    /// Failed downloads and why.
    pub failures: Vec<String>,
    /// Small-request latency, every round pooled.
    pub latency: Sample,
}

/// Runs the plan: one warm-up and `reps` timed downloads per stack, taking turns; then
/// `reps` latency rounds per stack, taking turns.
pub fn run(plan: &Plan, mut progress: impl FnMut(&str)) -> anyhow::Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-app")
        .build()?;
    let echo = rt.block_on(latency::start_echo())?;
    let data = Arc::new(payload(plan.size));
    let source = start_source(data.clone())?;
    let dir = std::env::temp_dir().join(format!("tunnelbed-bench-vless-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kinds = [StackKind::Relay, StackKind::Ours, StackKind::V2ray];
    let mut stacks = Vec::new();
    for k in kinds {
        progress(&format!("starting {}", k.name()));
        stacks.push(start(k, source, echo, &dir)?);
    }
    let timeout = Duration::from_secs(120) + Duration::from_secs((plan.size >> 20) as u64);
    let mut buf = vec![0u8; plan.size];
    let mut rows: Vec<Row> = kinds
        .iter()
        .map(|&kind| Row {
            kind,
            mbps: Vec::new(),
            cpu_per_gb: 0.0,
            failures: Vec::new(),
            latency: Sample::default(),
        })
        .collect();
    let mut cpu = vec![0.0f64; kinds.len()];
    for rep in 0..=plan.reps {
        for j in 0..stacks.len() {
            let i = (j + rep) % stacks.len();
            let st = &stacks[i];
            buf.iter_mut().for_each(|b| *b = 0);
            let c0 = st.cpu();
            let r = download(st, source, &mut buf, timeout);
            let c1 = st.cpu();
            match r {
                Ok(_) if buf[..] != data[..] => rows[i].failures.push("bytes differ".into()),
                Ok(t) if rep > 0 => {
                    rows[i].mbps.push(plan.size as f64 / t.as_secs_f64() / 1e6);
                    cpu[i] += c1 - c0;
                }
                Ok(_) => {}
                Err(e) => rows[i].failures.push(e.to_string()),
            }
            progress(&format!("rep {rep}/{} {}", plan.reps, st.kind.name()));
        }
    }
    for (i, r) in rows.iter_mut().enumerate() {
        let moved = r.mbps.len() as f64 * plan.size as f64 / 1e9;
        r.cpu_per_gb = if moved > 0.0 { cpu[i] / moved } else { 0.0 };
    }
    drop(buf);
    for round in 0..plan.reps {
        for j in 0..stacks.len() {
            let i = (j + round) % stacks.len();
            let st = &stacks[i];
            let l = rt.block_on(latency::measure(
                st.echo,
                echo,
                plan.streams,
                plan.exchanges,
            ));
            progress(&format!(
                "latency round {}/{} {}: p99 {:.2} ms, {} failed streams",
                round + 1,
                plan.reps,
                st.kind.name(),
                l.rtt(99.0),
                l.failures
            ));
            if l.failures > 0 {
                rows[i].failures.push(format!(
                    "latency round {}: {} of {} streams failed",
                    round + 1,
                    l.failures,
                    plan.streams
                ));
            }
            rows[i].latency.absorb(l);
        }
    }
    drop(stacks);
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The issue's targets, one line each: ours against the reference (throughput) and
/// against v2ray (throughput, CPU per GB, small-request p99), MET or NOT MET.
pub fn verdicts(rows: &[Row]) -> Vec<String> {
    let get = |k| rows.iter().find(|r: &&Row| r.kind == k);
    let (Some(rf), Some(o), Some(v)) = (
        get(StackKind::Relay),
        get(StackKind::Ours),
        get(StackKind::V2ray),
    ) else {
        return Vec::new();
    };
    let met = |ok: bool| if ok { "MET" } else { "NOT MET" };
    let (mr, mo, mv) = (median(&rf.mbps), median(&o.mbps), median(&v.mbps));
    let clean = o.failures.is_empty();
    vec![
        format!(
            "throughput: ours {:.2} of the two-relay reference ({}: target {TARGET_RATIO:.2})",
            ratio(mo, mr),
            met(clean && mo >= TARGET_RATIO * mr)
        ),
        format!(
            "throughput: ours {:.2}x v2ray ({}: target ahead of v2ray)",
            ratio(mo, mv),
            met(clean && mo > mv)
        ),
        format!(
            "CPU per GB: ours {:.2}x v2ray ({}: target less than v2ray)",
            ratio(o.cpu_per_gb, v.cpu_per_gb),
            met(clean && o.cpu_per_gb > 0.0 && o.cpu_per_gb < v.cpu_per_gb)
        ),
        format!(
            "small-request p99: ours {:.2} ms, v2ray {:.2} ms, reference {:.2} ms (ours/v2ray {:.2}, ours/reference {:.2})",
            o.latency.rtt(99.0),
            v.latency.rtt(99.0),
            rf.latency.rtt(99.0),
            ratio(o.latency.rtt(99.0), v.latency.rtt(99.0)),
            ratio(o.latency.rtt(99.0), rf.latency.rtt(99.0)),
        ),
    ]
}

/// The Markdown report.
pub fn render(plan: &Plan, rows: &[Row], facts: &RunFacts) -> String {
    let mut s = opening(
        "bench vless: TCP downloads and small-request latency through VLESS, ours and v2ray",
        facts,
    );
    s.push_str(&format!(
        "\n{} MiB per download, {} timed downloads per stack (after one warm-up), the stacks taking turns (the order rotates every repetition); loopback, tcp carrier, no TLS, one connection at a time. CPU is user+system of the stack's processes (client and server, or both relays) per GB moved.\n\n",
        plan.size >> 20,
        plan.reps
    ));
    s.push_str("## Throughput\n\n| stack | MB/s median | min..max | of the reference | CPU s per GB | failures |\n|---|---|---|---|---|---|\n");
    let reference = rows
        .iter()
        .find(|r| r.kind == StackKind::Relay)
        .map(|r| median(&r.mbps))
        .unwrap_or(0.0);
    for r in rows {
        let m = median(&r.mbps);
        let (lo, hi) = min_max(&r.mbps);
        s.push_str(&format!(
            "| {} | {m:.0} | {:.0}..{hi:.0} | {:.2} | {:.2} | {} |\n",
            r.kind.name(),
            lo,
            ratio(m, reference),
            r.cpu_per_gb,
            if r.failures.is_empty() {
                "0".to_string()
            } else {
                format!("{}: {}", r.failures.len(), r.failures[0])
            }
        ));
    }
    s.push_str(&format!(
        "\n## Small-request latency ({} concurrent connections, {MSG}-byte request/answer)\n\n{} rounds per stack, the stacks taking turns (the order rotates every round); in each round {} connections open at once through the stack to an echo target (SOCKS5 CONNECT for ours and v2ray; for the reference, plain TCP into a second chain of two relays ending at the echo target), then each does {} timed round trips back to back (closed loop), {} samples per stack in all; percentiles by nearest rank over the pooled samples. *open* is connect + SOCKS5 + the first exchange, every connection opening at once.\n\n",
        plan.streams,
        plan.reps,
        plan.streams,
        plan.exchanges,
        plan.reps * plan.streams * plan.exchanges
    ));
    s.push_str("| stack | RTT p50 (ms) | RTT p99 (ms) | RTT max (ms) | exchanges/s | open p50 (ms) | open p99 (ms) | failed streams |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let l = &r.latency;
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {} |\n",
            r.kind.name(),
            l.rtt(50.0),
            l.rtt(99.0),
            l.rtt(100.0),
            l.rate(),
            l.open(50.0),
            l.open(99.0),
            l.failures
        ));
    }
    s.push_str("\n## Targets (issue 12)\n\n");
    for v in verdicts(rows) {
        s.push_str(&format!("- {v}\n"));
    }
    s
}

/// Failed downloads over every stack.
pub fn failures(rows: &[Row]) -> usize {
    rows.iter().map(|r| r.failures.len()).sum()
}
