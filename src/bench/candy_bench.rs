//! `tunnelbed bench candy`: TCP throughput between two VPN clients through the server,
//! ours (`tunnelbed candy server` + two `tunnelbed candy client`) against Candy's own
//! server and clients (lanthora/candy, built from `shared/peers/candy`), in the same run
//! with the same settings: each stack in its own network namespaces (a server namespace
//! and two client namespaces joined by veth pairs), real TUN devices with MTU 1400 (Candy's
//! default), addresses from the server's DHCP pool, no peer-to-peer path (every packet
//! crosses the server). The load is kernel TCP at both ends: a thread of this process
//! enters client 2's namespace and listens, another enters client 1's and sends `size`
//! bytes of a fixed pattern; the sink checks every byte. The stacks take turns in every
//! repetition (the order alternates) so load drifts hit them alike. CPU is user+system of
//! the server process (and of the two client processes) from `/proc/PID/stat`, per GB
//! moved.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::candy_netns::{enter, World};
use super::child::{spawn_until, Pipe, Proc};
use super::measure::proc_cpu;
use super::report::{opening, RunFacts};
use super::stats::{median, min_max};

/// The password every stack shares.
const PW: &str = "tb-bench-candy";
/// The DHCP pool.
const POOL: &str = "10.78.0.0/24";
/// The server's WebSocket port (in its own namespace).
const PORT: u16 = 18080;
/// The sink's TCP port.
const SINK_PORT: u16 = 5001;
/// The TUN MTU of every client (Candy's default).
pub const MTU: u32 = 1400;
/// How long a transfer may go without progress (socket timeouts at both ends).
const IDLE: Duration = Duration::from_secs(60);
/// The length of the repeating pattern: not a power of two, so a misplaced chunk shows.
const PATTERN_LEN: usize = (1 << 20) + 7;

/// Where Candy comes from.
#[derive(Clone, Debug)]
pub struct CandyPeer {
    /// Candy's binary.
    pub bin: PathBuf,
    /// `run-pair.sh`: starts one Candy process in the current namespace with a private
    /// state directory and prints its pid.
    pub run_pair: PathBuf,
}

impl CandyPeer {
    /// Builds (or finds the cached build of) Candy with `DIR/build.sh`.
    pub fn from_peer_dir(dir: &Path) -> anyhow::Result<CandyPeer> {
        let build = dir.join("build.sh");
        let out = Command::new("bash")
            .arg(&build)
            .output()
            .with_context(|| format!("running {}", build.display()))?;
        if !out.status.success() {
            bail!(
                "building Candy with {} failed (it needs apt packages cmake make g++ \
                 pkg-config patch libssl-dev libspdlog-dev libpoco-dev; `bash .ci/setup` \
                 installs them):\n{}",
                build.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(CandyPeer {
            bin: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            run_pair: dir.join("run-pair.sh"),
        })
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Bytes per transfer.
    pub size: usize,
    /// Timed transfers per stack.
    pub reps: usize,
    /// Candy's binary and start script.
    pub candy: CandyPeer,
}

/// The stacks compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// `tunnelbed candy server` and two `tunnelbed candy client`.
    Ours,
    /// Candy's server and two Candy clients.
    Candy,
}

impl StackKind {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            StackKind::Ours => "ours (tunnelbed candy server + 2 clients)",
            StackKind::Candy => "Candy v6.1.8 (server + 2 clients)",
        }
    }
}

/// One stack's results.
#[derive(Clone, Debug)]
pub struct Row {
    /// Which stack.
    pub kind: StackKind,
    /// MB/s of each successful transfer.
    pub mbps: Vec<f64>,
    /// The server's CPU seconds per GB of each successful transfer.
    pub server_cpu: Vec<f64>,
    /// The two clients' CPU seconds per GB (summed) of each successful transfer.
    pub clients_cpu: Vec<f64>,
    /// Why transfers failed.
    pub failures: Vec<String>,
}

/// A running stack: its namespaces, its processes, the clients' VPN addresses.
struct Stack {
    kind: StackKind,
    world: World,
    server_pid: u32,
    client_pids: [u32; 2],
    addrs: [String; 2],
    /// The clients' TUN devices.
    devs: [String; 2],
    _procs: Vec<Proc>,
    candy_pids: Vec<i32>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for &pid in &self.candy_pids {
            // SAFETY: kill(2) on a pid this bench started (printed by run-pair.sh).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn our_stack(tag: &str) -> anyhow::Result<Stack> {
    let world = World::new(tag, 2)?;
    let exe = std::env::current_exe().context("finding the tunnelbed binary")?;
    let exe = exe.to_string_lossy().into_owned();
    let mut procs = Vec::new();
    let mut c = World::exec(&world.srv, &exe);
    c.args([
        "candy",
        "server",
        "--listen",
        &format!("ws://0.0.0.0:{PORT}"),
    ]);
    c.args(["--password", PW, "--dhcp", POOL]);
    let (server, _) = spawn_until(c, Pipe::Stderr, |l| l.contains("candy server listening"))?;
    let server_pid = server.pid();
    procs.push(server);
    let mut pids = [0u32; 2];
    let mut addrs = [String::new(), String::new()];
    for i in 1..=2 {
        let mut c = World::exec(&world.clients[i - 1], &exe);
        c.args([
            "candy",
            "client",
            "--server",
            &format!("ws://10.99.{i}.1:{PORT}"),
        ]);
        c.args(["--password", PW, "--tun", "cnd0", "--dhcp"]);
        c.args(["--mtu", &MTU.to_string()]);
        let (p, lines) = spawn_until(c, Pipe::Stderr, |l| l.contains("candy client up: cnd0 "))?;
        let line = lines.last().cloned().unwrap_or_default();
        let cidr = line.rsplit(' ').next().unwrap_or_default();
        addrs[i - 1] = cidr.split('/').next().unwrap_or_default().to_string();
        pids[i - 1] = p.pid();
        procs.push(p);
    }
    Ok(Stack {
        kind: StackKind::Ours,
        world,
        server_pid,
        client_pids: pids,
        addrs,
        devs: ["cnd0".into(), "cnd0".into()],
        _procs: procs,
        candy_pids: Vec::new(),
    })
}

fn run_pair(peer: &CandyPeer, ns: &str, args: &[&str]) -> anyhow::Result<i32> {
    let mut c = World::exec(ns, "bash");
    c.arg(&peer.run_pair).args(args);
    c.arg("--candy").arg(&peer.bin);
    let out = c.output().context("running run-pair.sh")?;
    let pid: Option<i32> = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    match pid {
        Some(p) if out.status.success() => Ok(p),
        _ => bail!(
            "run-pair.sh {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn candy_stack(tag: &str, peer: &CandyPeer, dir: &Path) -> anyhow::Result<Stack> {
    let world = World::new(tag, 2)?;
    let mut stack = Stack {
        kind: StackKind::Candy,
        world,
        server_pid: 0,
        client_pids: [0, 0],
        addrs: [String::new(), String::new()],
        devs: ["candy-b1".into(), "candy-b2".into()],
        _procs: Vec::new(),
        candy_pids: Vec::new(),
    };
    let log = |n: &str| {
        dir.join(format!("{tag}-{n}.log"))
            .to_string_lossy()
            .into_owned()
    };
    let ws = format!("ws://0.0.0.0:{PORT}");
    let srv = stack.world.srv.clone();
    let server_log = log("server");
    let pid = run_pair(
        peer,
        &srv,
        &[
            "server",
            "--ws",
            &ws,
            "--password",
            PW,
            "--dhcp",
            POOL,
            "--log",
            &server_log,
        ],
    )?;
    stack.candy_pids.push(pid);
    stack.server_pid = pid as u32;
    for i in 1..=2 {
        let ns = stack.world.clients[i - 1].clone();
        let name = format!("b{i}");
        let state = dir.join(format!("{tag}-state-{i}"));
        let (ws, mtu, log) = (
            format!("ws://10.99.{i}.1:{PORT}"),
            MTU.to_string(),
            log(&format!("client-{i}")),
        );
        let pid = run_pair(
            peer,
            &ns,
            &[
                "client",
                "--ws",
                &ws,
                "--password",
                PW,
                "--dhcp",
                "--name",
                &name,
                "--mtu",
                &mtu,
                "--state-dir",
                &state.to_string_lossy(),
                "--log",
                &log,
            ],
        )?;
        stack.candy_pids.push(pid);
        stack.client_pids[i - 1] = pid as u32;
        stack.addrs[i - 1] = World::addr_of(&ns, &stack.devs[i - 1])?;
    }
    Ok(stack)
}

/// Byte `i` of what the source sends.
fn pattern() -> Vec<u8> {
    // A fixed xorshift stream: incompressible, the same every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Waits until `fd` is readable (a connection to accept), at most `t`.
fn readable(fd: i32, t: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(t.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll(2) on one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

/// The sink: in `ns`, accepts one connection on `addr`, reads to EOF checking every byte
/// against the pattern; returns the bytes read and when the last arrived.
fn sink(ns: &str, addr: SocketAddr, ready: std::sync::mpsc::Sender<()>) -> anyhow::Result<u64> {
    enter(ns)?;
    let l = TcpListener::bind(addr).with_context(|| format!("binding the sink on {addr}"))?;
    let _ = ready.send(());
    if !readable(l.as_raw_fd(), IDLE) {
        bail!("sink: no connection within {IDLE:?}");
    }
    let (mut c, _) = l.accept()?;
    c.set_read_timeout(Some(IDLE))?;
    let pat = pattern();
    let mut buf = vec![0u8; 1 << 16];
    let mut n: u64 = 0;
    loop {
        let k = match c.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) => bail!("sink: no progress for {IDLE:?} after {n} bytes: {e}"),
        };
        let mut off = (n % PATTERN_LEN as u64) as usize;
        let mut rest = &buf[..k];
        while !rest.is_empty() {
            let take = rest.len().min(PATTERN_LEN - off);
            if rest[..take] != pat[off..off + take] {
                bail!("sink: the bytes after offset {n} differ from what was sent");
            }
            rest = &rest[take..];
            off = (off + take) % PATTERN_LEN;
        }
        n += k as u64;
    }
    Ok(n)
}

/// The source: in `ns`, connects to `addr` and sends `size` bytes of the pattern.
fn source(ns: &str, addr: SocketAddr, size: usize) -> anyhow::Result<()> {
    enter(ns)?;
    let mut c = TcpStream::connect_timeout(&addr, IDLE)
        .with_context(|| format!("source: connecting to {addr}"))?;
    c.set_write_timeout(Some(IDLE))?;
    let pat = pattern();
    let mut sent = 0usize;
    let mut off = 0usize;
    while sent < size {
        let take = (size - sent).min(PATTERN_LEN - off).min(1 << 18);
        c.write_all(&pat[off..off + take])
            .with_context(|| format!("source: no progress for {IDLE:?} after {sent} bytes"))?;
        sent += take;
        off = (off + take) % PATTERN_LEN;
    }
    c.shutdown(Shutdown::Write)?;
    Ok(())
}

/// Re-reads the clients' TUN addresses; says which changed (a client that reconnected
/// and was given another address by the server's DHCP).
fn refresh(s: &mut Stack) -> Vec<String> {
    let mut changed = Vec::new();
    for i in 0..2 {
        let now = World::addr_of(&s.world.clients[i], &s.devs[i]).unwrap_or_default();
        if now != s.addrs[i] {
            changed.push(format!(
                "client {}'s address changed from {} to {now:?}",
                i + 1,
                s.addrs[i]
            ));
            s.addrs[i] = now;
        }
    }
    changed
}

/// One timed transfer from client 1 to client 2 of `s`: MB/s and the CPU seconds the
/// server and the clients used meanwhile.
fn transfer(s: &Stack, size: usize) -> anyhow::Result<(f64, f64, f64)> {
    let to: SocketAddr = format!("{}:{SINK_PORT}", s.addrs[1])
        .parse()
        .context("the sink's address")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let sink_ns = s.world.clients[1].clone();
    let sink = std::thread::spawn(move || sink(&sink_ns, to, tx));
    if rx.recv_timeout(IDLE).is_err() {
        return match sink.join() {
            Ok(Err(e)) => Err(e),
            _ => bail!("the sink did not start"),
        };
    }
    let cpu = |pids: &[u32]| pids.iter().map(|&p| proc_cpu(p)).sum::<f64>();
    let (srv0, cl0) = (cpu(&[s.server_pid]), cpu(&s.client_pids));
    let start = Instant::now();
    let src_ns = s.world.clients[0].clone();
    let src = std::thread::spawn(move || source(&src_ns, to, size));
    let sent = src
        .join()
        .map_err(|_| anyhow::anyhow!("the source panicked"))?;
    let got = sink
        .join()
        .map_err(|_| anyhow::anyhow!("the sink panicked"))?;
    let secs = start.elapsed().as_secs_f64();
    let (srv1, cl1) = (cpu(&[s.server_pid]), cpu(&s.client_pids));
    sent?;
    let got = got?;
    if got != size as u64 {
        bail!("the sink got {got} bytes of {size}");
    }
    let gb = size as f64 / 1e9;
    Ok((
        size as f64 / secs / 1e6,
        (srv1 - srv0) / gb,
        (cl1 - cl0) / gb,
    ))
}

/// Starts both stacks, checks each path with a ping, then runs `reps` timed transfers
/// per stack, alternating the order; `step` hears what happens.
pub fn run(plan: &Plan, step: impl Fn(&str)) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("tunnelbed-bench-candy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tag = format!("tbb{}", std::process::id() % 100_000);
    step("starting our server and clients");
    let ours = our_stack(&format!("{tag}o"))?;
    step("starting Candy's server and clients");
    let candy = candy_stack(&format!("{tag}k"), &plan.candy, &dir)?;
    let mut stacks = [ours, candy];
    for s in &stacks {
        s.world.wait_ping(1, &s.addrs[0], &s.addrs[1])?;
        s.world.wait_ping(2, &s.addrs[1], &s.addrs[0])?;
    }
    let mut rows: Vec<Row> = stacks
        .iter()
        .map(|s| Row {
            kind: s.kind,
            mbps: Vec::new(),
            server_cpu: Vec::new(),
            clients_cpu: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    for rep in 0..plan.reps {
        for k in 0..stacks.len() {
            let i = (k + rep) % stacks.len();
            let s = &mut stacks[i];
            for c in refresh(s) {
                step(&format!("{}: before rep {}: {c}", s.kind.name(), rep + 1));
            }
            let r = transfer(s, plan.size);
            let changed = refresh(s);
            match r.map_err(|e| {
                if changed.is_empty() {
                    e
                } else {
                    e.context(changed.join("; "))
                }
            }) {
                Ok((mbps, srv, cl)) => {
                    step(&format!(
                        "rep {}: {}: {mbps:.1} MB/s, server {srv:.2} CPU s/GB",
                        rep + 1,
                        s.kind.name()
                    ));
                    rows[i].mbps.push(mbps);
                    rows[i].server_cpu.push(srv);
                    rows[i].clients_cpu.push(cl);
                }
                Err(e) => {
                    step(&format!(
                        "rep {}: {}: FAILED: {e:#}",
                        rep + 1,
                        s.kind.name()
                    ));
                    rows[i].failures.push(format!("{e:#}"));
                }
            }
        }
    }
    drop(stacks);
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

/// The Markdown report.
pub fn render(plan: &Plan, rows: &[Row], facts: &RunFacts) -> String {
    let mut s = opening(
        "bench candy: TCP between two VPN clients through the server, ours and Candy's",
        facts,
    );
    s.push_str(&format!(
        "\n{} MB per transfer, {} timed transfers per stack, the stacks taking turns (the order alternates every repetition). Each stack runs in its own network namespaces: the server in one, each client in its own, joined by veth pairs; the clients make real TUN devices (MTU {MTU}) with addresses from the server's DHCP pool; no peer-to-peer path, every packet crosses the server over ws://. The load is one kernel-TCP connection from client 1's TUN address to client 2's (a source and a sink thread of the bench in the clients' namespaces; the sink checks every byte). CPU is user+system seconds from /proc/PID/stat during the transfer, per GB moved.\n\n",
        plan.size / 1_000_000,
        plan.reps
    ));
    s.push_str("| stack | MB/s median | min..max | server CPU s per GB (median) | clients' CPU s per GB (median, both) | failures |\n|---|---:|---|---:|---:|---|\n");
    for r in rows {
        let m = median(&r.mbps);
        let (lo, hi) = min_max(&r.mbps);
        s.push_str(&format!(
            "| {} | {m:.1} | {:.1}..{hi:.1} | {:.2} | {:.2} | {} |\n",
            r.kind.name(),
            lo,
            median(&r.server_cpu),
            median(&r.clients_cpu),
            if r.failures.is_empty() {
                "0".to_string()
            } else {
                format!("{}: {}", r.failures.len(), r.failures[0])
            }
        ));
    }
    let failed: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.failures
                .iter()
                .map(move |f| format!("- {}: {f}\n", r.kind.name()))
        })
        .collect();
    if !failed.is_empty() {
        s.push_str(
            "\nFailed transfers (each after 60 s without progress, or before it began):\n\n",
        );
        s.push_str(&failed.concat());
    }
    let get = |k| rows.iter().find(|r: &&Row| r.kind == k);
    if let (Some(o), Some(c)) = (get(StackKind::Ours), get(StackKind::Candy)) {
        s.push_str(&format!(
            "\n- throughput: ours {:.2}x Candy's\n- server CPU per GB: ours {:.2}x Candy's\n",
            ratio(median(&o.mbps), median(&c.mbps)),
            ratio(median(&o.server_cpu), median(&c.server_cpu)),
        ));
    }
    s
}

/// Failed transfers over every stack.
pub fn failures(rows: &[Row]) -> usize {
    rows.iter().map(|r| r.failures.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_fixed_and_not_periodic_in_powers_of_two() {
        let p = pattern();
        assert_eq!(p.len(), PATTERN_LEN);
        assert_eq!(p, pattern());
        assert_ne!(p[..4096], p[4096..8192]);
    }
}
