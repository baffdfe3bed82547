//! `tunnelbed bench pong`: our pong local and remote on loopback against direct TCP, in
//! one run, side by side.
//!
//! Layout: the bench process holds the applications (a bulk source, an echo target and
//! the clients, on blocking threads and a tokio runtime of its own). Everything on the
//! proxy path runs in child processes of this same binary (`bench pong --child ...`,
//! hidden): one `remote` (pong remote, tokio multi-thread runtime) and one `local` (SOCKS5
//! front and carrier pool, its own tokio multi-thread runtime) per carrier, as `pong
//! remote` and `pong local` would run. A reference path, two plain TCP relays in a chain
//! (two child processes copying with tokio, no framing), has the same number of
//! processes, sockets and hops as pong and shows what relaying alone costs here.
//!
//! - Throughput: bulk downloads of one pseudo-random payload (ChaCha8, incompressible)
//!   from a loopback TCP source, directly, through the relay chain and through each
//!   carrier, the stacks rotating their order repetition by repetition. The receiver
//!   reads into a pre-touched buffer; the SHA-256 of what arrived is checked against the
//!   payload's after the clock stops, so a broken transfer never counts.
//! - Latency: `streams` concurrent streams, each doing `exchanges` 100-byte request /
//!   100-byte answer round trips (closed loop, all streams at once) to an echo target.
//! - Memory: fresh children per carrier; RSS (`VmRSS` of the local and the remote) before
//!   and after `idle_streams` streams are opened to an idle target (a child that accepts
//!   and holds connections) and left idle.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_carrier::http3::{H3Listener, QuicSeed};
use tunnelbed_carrier::tls::{ClientTls, ServerTls};
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, TcpListen, TokioNet, Trace};
use tunnelbed_pong::driver::DriverConfig;
use tunnelbed_pong::local::serve_socks;
use tunnelbed_pong::pool::{Pool, PoolConfig};
use tunnelbed_pong::remote::{serve, serve_h3, RemoteConfig};

use super::child::{spawn_until, Pipe, Proc};
use super::measure::{fd_count, proc_cpu, raise_nofile, rss_kib, self_cpu};
use super::report::{opening, RunFacts};
use super::stats::{median, percentile};

/// The client id the bench's local and remote share.
pub const CLIENT_ID: [u8; 16] = *b"tunnelbed-bench!";

/// Bytes of each latency request and answer (the shared latency method's).
pub const MSG: usize = super::latency::MSG;

/// Buffer size of each direction of the reference relay.
pub const RELAY_BUF: usize = 64 * 1024;

/// Issue 14's target for pong over tcp: throughput at least this share of the two-relay
/// reference measured in the same run (a proxy path crosses three TCP connections, so
/// direct TCP is no fair yardstick).
pub const TARGET_TCP: f64 = 0.95;

/// Issue 14's target for the other carriers (set for tls and ws; the HTTP carriers are
/// held to the same).
pub const TARGET_OTHER: f64 = 0.75;

/// What a run measures.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Bytes per bulk download.
    pub size: usize,
    /// Timed downloads per stack (plus one untimed warm-up each).
    pub reps: usize,
    /// Carriers to run pong over.
    pub carriers: Vec<CarrierKind>,
    /// Concurrent streams for the latency figures.
    pub streams: usize,
    /// Timed round trips per latency stream.
    pub exchanges: usize,
    /// Idle streams for the memory figures (0 skips the memory phase).
    pub idle_streams: usize,
    /// Times the idle streams are opened and closed again in the same processes, so a
    /// leak shows as RSS that keeps growing from cycle to cycle (at least 1).
    pub memory_cycles: usize,
    /// Idle close of the memory phase's pong locals; after the cycles the bench waits
    /// for their carriers to close and measures the processes at rest.
    pub idle_close: Duration,
}

/// The carrier's URL scheme (`tcp`, `tls`, `ws`, `wss`, `h2c`, `h2`, `http`, `https`).
pub fn scheme(k: CarrierKind) -> &'static str {
    k.scheme()
}

fn parse_scheme(s: &str) -> anyhow::Result<CarrierKind> {
    match CarrierKind::from_scheme(s) {
        Some(k) => Ok(k),
        None => bail!("unknown carrier {s:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Child processes.

/// Starts `tunnelbed bench pong --child SPEC`; returns it and the address its
/// `listening ADDR` banner names.
fn spawn_child(spec: &str) -> anyhow::Result<(Proc, SocketAddr)> {
    let me = std::env::current_exe().context("finding the tunnelbed binary")?;
    let mut cmd = Command::new(me);
    // The child exits when its stdin closes: the Proc holds it open.
    cmd.args(["bench", "pong", "--child", spec])
        .stdin(Stdio::piped())
        .stderr(Stdio::inherit());
    let (p, lines) = spawn_until(cmd, Pipe::Stdout, |_| true)?;
    let line = lines.last().map(String::as_str).unwrap_or("");
    let addr = line
        .strip_prefix("listening ")
        .and_then(|a| a.trim().parse().ok())
        .with_context(|| format!("child {spec}: no address in its banner {line:?}"))?;
    Ok((p, addr))
}

/// Runs a child role until its stdin closes. `spec`: `remote:SCHEME`, `local:URL`,
/// `relay:ADDR` or `hold`.
pub fn child_main(spec: &str) -> anyhow::Result<()> {
    raise_nofile();
    let pong = spec.starts_with("remote:") || spec.starts_with("local:");
    if pong {
        // As `pong remote` and `pong local` run.
        crate::heap::keep_freed_heap();
    }
    // The parent going away (or closing our stdin) ends us; until then it may ask for
    // our heap figures (`heap` -> `heap IN_USE FREE_HELD`, bytes).
    std::thread::spawn(|| {
        for line in io::stdin().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "heap" {
                let answer = match crate::heap::figures() {
                    Some(f) => format!("heap {} {}", f.in_use, f.free_held),
                    None => "heap none".to_string(),
                };
                let mut o = io::stdout().lock();
                let _ = writeln!(o, "{answer}").and_then(|()| o.flush());
            }
        }
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if pong {
        rt.spawn(crate::heap::give_back_freed_heap());
    }
    rt.block_on(async move {
        let net = TokioNet;
        let (role, arg) = spec.split_once(':').unwrap_or((spec, ""));
        // pong's own listeners come from `Net` as `pong local`/`pong remote` get them
        // (tokio's default backlog); the bench's infrastructure gets a deep backlog so
        // that bursts of connects never wait for a SYN retransmit there.
        let listener = if matches!(role, "remote" | "local") {
            net.listen_tcp(([127, 0, 0, 1], 0).into()).await?
        } else {
            listen_deep()?
        };
        let addr = TcpListen::local_addr(&listener)?;
        let banner = || -> io::Result<()> {
            let mut o = io::stdout().lock();
            writeln!(o, "listening {addr}")?;
            o.flush()
        };
        match role {
            "remote" => {
                let kind = parse_scheme(arg)?;
                let tls = if kind.uses_tls() {
                    Some(Arc::new(ServerTls::self_signed(&[
                        "localhost".into(),
                        "127.0.0.1".into(),
                    ])?))
                } else {
                    None
                };
                let cfg = RemoteConfig {
                    allowed: vec![CLIENT_ID],
                    ..RemoteConfig::default()
                };
                if let (true, Some(tls)) = (kind.uses_udp(), tls.as_deref()) {
                    // h3:// is QUIC: a UDP socket on 127.0.0.1, its address the banner's.
                    drop(listener);
                    let h3 = H3Listener::bind(
                        &net,
                        ([127, 0, 0, 1], 0).into(),
                        tls,
                        &QuicSeed::default(),
                    )
                    .await?;
                    let mut o = io::stdout().lock();
                    writeln!(o, "listening {}", h3.local_addr()?)?;
                    o.flush()?;
                    drop(o);
                    serve_h3(net, h3, Arc::new(cfg), Trace::disabled(), "remote".into()).await?;
                    return Ok(());
                }
                banner()?;
                serve(
                    net,
                    listener,
                    kind,
                    tls,
                    Arc::new(cfg),
                    Trace::disabled(),
                    "remote".into(),
                )
                .await?;
            }
            "local" => {
                // `URL [idle-close=SECS]`
                let mut words = arg.split_whitespace();
                let url: CarrierUrl = words
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!(e))?;
                let mut cfg = PoolConfig::new(url, CLIENT_ID);
                for w in words {
                    match w.strip_prefix("idle-close=").map(str::parse::<u64>) {
                        Some(Ok(s)) => cfg.idle_close = Duration::from_secs(s),
                        _ => bail!("child {spec:?}: unknown option {w:?}"),
                    }
                }
                let pool = Arc::new(Pool::new(
                    net,
                    cfg,
                    Arc::new(ClientTls::insecure()),
                    Trace::disabled(),
                    "local".into(),
                ));
                tokio::spawn(pool.clone().run_maintenance());
                banner()?;
                serve_socks(net, listener, pool).await?;
            }
            "relay" => {
                let to: SocketAddr = arg.parse()?;
                banner()?;
                loop {
                    let (mut a, _) = listener.accept().await?;
                    tokio::spawn(async move {
                        if let Ok(mut b) = tokio::net::TcpStream::connect(to).await {
                            let _ = b.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional_with_sizes(
                                &mut a, &mut b, RELAY_BUF, RELAY_BUF,
                            )
                            .await;
                        }
                    });
                }
            }
            "tls-relay-out" | "tls-relay-in" => {
                // A relay of the TLS reference: plain TCP in, TLS out (or TLS in, plain
                // out), copying as the plain relay does.
                let to: SocketAddr = arg.parse()?;
                let server = Arc::new(ServerTls::self_signed(&[
                    "localhost".into(),
                    "127.0.0.1".into(),
                ])?);
                let client = Arc::new(ClientTls::insecure());
                let outward = role == "tls-relay-out";
                banner()?;
                loop {
                    let (a, _) = listener.accept().await?;
                    let (server, client) = (server.clone(), client.clone());
                    tokio::spawn(async move {
                        let _ = a.set_nodelay(true);
                        let Ok(b) = tokio::net::TcpStream::connect(to).await else {
                            return;
                        };
                        let _ = b.set_nodelay(true);
                        if outward {
                            let (mut a, Ok(mut b)) = (a, client.connect("localhost", b).await)
                            else {
                                return;
                            };
                            let _ = tokio::io::copy_bidirectional_with_sizes(
                                &mut a, &mut b, RELAY_BUF, RELAY_BUF,
                            )
                            .await;
                        } else if let Ok(mut a) = server.accept(a).await {
                            let mut b = b;
                            let _ = tokio::io::copy_bidirectional_with_sizes(
                                &mut a, &mut b, RELAY_BUF, RELAY_BUF,
                            )
                            .await;
                        }
                    });
                }
            }
            "hold" => {
                // Holds every connection until the other side ends it, then closes, as
                // a server does: a half-open stream left behind would count as memory
                // the proxies keep.
                banner()?;
                loop {
                    let (mut s, _) = listener.accept().await?;
                    tokio::spawn(async move {
                        let mut sink = [0u8; 1024];
                        while let Ok(n) = s.read(&mut sink).await {
                            if n == 0 {
                                break;
                            }
                        }
                    });
                }
            }
            _ => bail!("unknown child role {spec:?}"),
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Paths.

/// How a client reaches a target.
#[derive(Clone, Copy, Debug)]
struct Route {
    /// Where to connect (`None`: the target itself).
    via: Option<SocketAddr>,
    /// Whether `via` is a SOCKS5 server to ask for the target.
    socks: bool,
}

impl Route {
    const DIRECT: Route = Route {
        via: None,
        socks: false,
    };

    fn connect_blocking(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let mut s = TcpStream::connect(self.via.unwrap_or(target))?;
        s.set_nodelay(true)?;
        if self.socks {
            s.write_all(&[5, 1, 0])?;
            let mut m = [0u8; 2];
            s.read_exact(&mut m)?;
            s.write_all(&socks_request(target)?)?;
            let mut r = [0u8; 10];
            s.read_exact(&mut r)?;
            if m != [5, 0] || r[..2] != [5, 0] || r[3] != 1 {
                return Err(io::Error::other(format!("SOCKS5 refused: {m:?} {r:?}")));
            }
        }
        Ok(s)
    }

    async fn connect(&self, target: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let mut s = tokio::net::TcpStream::connect(self.via.unwrap_or(target)).await?;
        s.set_nodelay(true)?;
        if self.socks {
            let (code, _) =
                tunnelbed_socks5::handshake::connect(&mut s, &tunnelbed_socks5::Addr::Ip(target))
                    .await?;
            if code != 0 {
                return Err(io::Error::other(format!("SOCKS5 reply {code}")));
            }
        }
        Ok(s)
    }
}

fn socks_request(target: SocketAddr) -> io::Result<Vec<u8>> {
    let SocketAddr::V4(t) = target else {
        return Err(io::Error::other("IPv4 targets only"));
    };
    let mut v = vec![5, 1, 0, 1];
    v.extend_from_slice(&t.ip().octets());
    v.extend_from_slice(&t.port().to_be_bytes());
    Ok(v)
}

/// What sits between client and target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// Client connects to the target.
    Direct,
    /// Two plain TCP relays in a chain (reference).
    Relay,
    /// The same two relays with TLS between them (rustls, configured as pong's TLS
    /// carriers): the reference for the TLS carriers, paying the same encryption and
    /// decryption per byte.
    TlsRelay,
    /// SOCKS5 -> pong local -> carrier -> pong remote.
    Pong(CarrierKind),
}

impl StackKind {
    /// Its name in the tables.
    pub fn name(self) -> String {
        match self {
            StackKind::Direct => "direct TCP".into(),
            StackKind::Relay => "reference: TCP relay x2".into(),
            StackKind::TlsRelay => "reference: TLS relay x2".into(),
            StackKind::Pong(k) => format!("pong over {}", scheme(k)),
        }
    }
}

/// A running stack: its processes and how to reach the bulk source and the echo target.
struct Stack {
    kind: StackKind,
    bulk: Route,
    echo: Route,
    procs: Vec<Proc>,
}

impl Stack {
    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    fn cpu(&self) -> f64 {
        self.pids().into_iter().map(proc_cpu).sum()
    }
}

/// Starts a pong remote and local for `kind`; returns them and the SOCKS5 address.
/// Starts a pong remote and local over `kind`; `idle_close`: the local's, else pong's
/// default.
fn start_pong(
    kind: CarrierKind,
    idle_close: Option<Duration>,
) -> anyhow::Result<(Vec<Proc>, SocketAddr)> {
    let (remote, raddr) = spawn_child(&format!("remote:{}", scheme(kind)))?;
    let mut spec = format!("local:{}://{raddr}", scheme(kind));
    if let Some(d) = idle_close {
        spec.push_str(&format!(" idle-close={}", d.as_secs()));
    }
    let (local, socks) = spawn_child(&spec)?;
    Ok((vec![remote, local], socks))
}

fn start_relay_chain(target: SocketAddr, tls: bool) -> anyhow::Result<(Vec<Proc>, SocketAddr)> {
    let (inner, outer) = if tls {
        ("tls-relay-in", "tls-relay-out")
    } else {
        ("relay", "relay")
    };
    let (b, baddr) = spawn_child(&format!("{inner}:{target}"))?;
    let (a, aaddr) = spawn_child(&format!("{outer}:{baddr}"))?;
    Ok((vec![a, b], aaddr))
}

fn start_stack(kind: StackKind, source: SocketAddr, echo: SocketAddr) -> anyhow::Result<Stack> {
    Ok(match kind {
        StackKind::Direct => Stack {
            kind,
            bulk: Route::DIRECT,
            echo: Route::DIRECT,
            procs: Vec::new(),
        },
        StackKind::Relay | StackKind::TlsRelay => {
            let tls = kind == StackKind::TlsRelay;
            let (mut p1, a1) = start_relay_chain(source, tls)?;
            let (p2, a2) = start_relay_chain(echo, tls)?;
            p1.extend(p2);
            Stack {
                kind,
                bulk: Route {
                    via: Some(a1),
                    socks: false,
                },
                echo: Route {
                    via: Some(a2),
                    socks: false,
                },
                procs: p1,
            }
        }
        StackKind::Pong(k) => {
            let (procs, socks) = start_pong(k, None)?;
            let r = Route {
                via: Some(socks),
                socks: true,
            };
            Stack {
                kind,
                bulk: r,
                echo: r,
                procs,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Applications.

/// The bulk payload: `size` bytes of ChaCha8 output (incompressible, fixed seed).
pub fn payload(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    rand_chacha::ChaCha8Rng::seed_from_u64(0x706f_6e67).fill_bytes(&mut v);
    v
}

/// A TCP source that writes the whole payload to every connection, then half-closes.
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
                    // Wait for the client's close so ours is not an abort.
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut b = [0u8; 64];
                    let _ = s.read(&mut b);
                }
            });
        }
    });
    Ok(addr)
}

/// Backlog of the bench's own listeners (echo target, idle target, reference relays).
pub const BACKLOG: u32 = 4096;

/// A loopback listener with a [`BACKLOG`]-deep accept queue.
fn listen_deep() -> io::Result<tokio::net::TcpListener> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(([127, 0, 0, 1], 0).into())?;
    s.listen(BACKLOG)
}

/// One download into `buf`; returns the elapsed time (connect to end of file) and bytes.
fn download(
    route: Route,
    target: SocketAddr,
    buf: &mut [u8],
    timeout: Duration,
) -> anyhow::Result<(Duration, usize)> {
    let t0 = Instant::now();
    let mut s = route.connect_blocking(target)?;
    s.set_read_timeout(Some(timeout))?;
    let mut off = 0;
    loop {
        if off == buf.len() {
            let mut extra = [0u8; 1];
            if s.read(&mut extra)? != 0 {
                bail!("more than {} bytes", buf.len());
            }
            break;
        }
        let n = s.read(&mut buf[off..])?;
        if n == 0 {
            break;
        }
        off += n;
        if t0.elapsed() > timeout {
            bail!("timed out after {off} bytes");
        }
    }
    Ok((t0.elapsed(), off))
}

// ---------------------------------------------------------------------------------------
// Results.

/// Bulk figures of one stack.
#[derive(Clone, Debug)]
pub struct Bulk {
    /// Which stack.
    pub kind: StackKind,
    /// MB/s (10^6 bytes) of each timed repetition, in order (0 for a failed one).
    pub mbps: Vec<f64>,
    /// Failed or corrupted downloads, with what went wrong.
    pub failures: Vec<String>,
    /// CPU seconds of this process (source and client) over the timed downloads.
    pub app_cpu: f64,
    /// CPU seconds of the path's processes (pong local+remote, or the relays).
    pub path_cpu: f64,
    /// Verified bytes over the timed downloads.
    pub bytes: u64,
}

/// Latency figures of one stack.
#[derive(Clone, Debug)]
pub struct Latency {
    /// Which stack.
    pub kind: StackKind,
    /// Round-trip times, ms, sorted.
    pub rtt_ms: Vec<f64>,
    /// Per stream: connect (+ SOCKS5) plus the first exchange, ms, sorted.
    pub open_ms: Vec<f64>,
    /// Streams that failed or exchanges answered wrongly.
    pub failures: usize,
    /// Wall time of the timed exchanges.
    pub wall: Duration,
}

/// Memory figures of one carrier.
#[derive(Clone, Debug)]
pub struct Memory {
    /// Which carrier.
    pub carrier: CarrierKind,
    /// Idle streams asked for.
    pub asked: usize,
    /// Streams that came up end to end (the idle target accepted them).
    pub opened: usize,
    /// RSS KiB of the local before, with the streams open, and after closing them.
    pub local_kib: [u64; 3],
    /// The same for the remote.
    pub remote_kib: [u64; 3],
    /// File descriptors of the local and the remote with the streams open, minus before.
    pub fds: [usize; 2],
    /// Opening took this long.
    pub open_time: Duration,
    /// Every cycle, the first included: RSS with the streams open and after closing.
    pub cycles: Vec<MemoryCycle>,
    /// Heap in use (KiB, the allocator's count, `None` off glibc) of the local and the
    /// remote before the first cycle.
    pub heap_before_kib: [Option<u64>; 2],
    /// The local and the remote after the last cycle once the carriers idle-closed.
    pub rest: Rest,
    /// Anything that went wrong.
    pub note: Option<String>,
}

/// The processes at rest: no stream and no carrier left.
#[derive(Clone, Debug)]
pub struct Rest {
    /// From the end of the last cycle until the carriers were closed (or the bound).
    pub waited: Duration,
    /// Whether both processes were back to their descriptor count before the cycles.
    pub carriers_closed: bool,
    /// RSS KiB of the local and the remote.
    pub rss_kib: [u64; 2],
    /// Heap in use KiB of the local and the remote (`None` off glibc).
    pub heap_kib: [Option<u64>; 2],
}

/// One open-and-close cycle of the memory check: a leak shows as `closed` figures that
/// keep rising from cycle to cycle, a retained allocator pool as figures that stay flat.
#[derive(Clone, Debug)]
pub struct MemoryCycle {
    /// Streams that came up end to end in this cycle.
    pub opened: usize,
    /// RSS KiB of the local with the streams open and after closing them.
    pub local_kib: [u64; 2],
    /// The same for the remote.
    pub remote_kib: [u64; 2],
    /// Heap in use (KiB) of the local and the remote after closing: unlike RSS, it
    /// does not count freed memory the allocator kept, so a leak shows here alone.
    pub heap_closed_kib: [Option<u64>; 2],
}

/// Everything a run measured.
#[derive(Clone, Debug)]
pub struct Results {
    /// Bulk figures, direct first.
    pub bulk: Vec<Bulk>,
    /// Latency figures, direct first.
    pub latency: Vec<Latency>,
    /// Memory figures per carrier.
    pub memory: Vec<Memory>,
    /// Soft and hard `RLIMIT_NOFILE` after raising.
    pub nofile: (u64, u64),
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Hex SHA-256 of the payload.
    pub payload_sha: String,
}

impl Results {
    /// Failures of any kind (corrupt downloads, failed exchanges, missing streams).
    pub fn failures(&self) -> usize {
        self.bulk.iter().map(|b| b.failures.len()).sum::<usize>()
            + self.latency.iter().map(|l| l.failures).sum::<usize>()
            + self.memory.iter().filter(|m| m.opened < m.asked).count()
    }
}

// ---------------------------------------------------------------------------------------
// The run.

/// Runs the plan; `progress` gets a line per step.
pub fn run(plan: &Plan, mut progress: impl FnMut(&str)) -> anyhow::Result<Results> {
    let started = Instant::now();
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-app")
        .build()?;

    progress(&format!("generating {} bytes of payload", plan.size));
    let data = Arc::new(payload(plan.size));
    let want: [u8; 32] = Sha256::digest(&data[..]).into();
    let source = start_source(data.clone())?;
    let echo = rt.block_on(super::latency::start_echo())?;

    let mut kinds = vec![StackKind::Direct, StackKind::Relay];
    if plan.carriers.iter().any(|k| k.uses_tls()) {
        kinds.push(StackKind::TlsRelay);
    }
    kinds.extend(plan.carriers.iter().map(|&k| StackKind::Pong(k)));
    let mut stacks = Vec::new();
    for &k in &kinds {
        progress(&format!("starting {}", k.name()));
        stacks.push(start_stack(k, source, echo)?);
    }

    // Throughput.
    let mut buf = vec![1u8; plan.size];
    let timeout = Duration::from_secs(60 + (plan.size as u64 >> 20));
    let mut bulk: Vec<Bulk> = kinds
        .iter()
        .map(|&kind| Bulk {
            kind,
            mbps: Vec::new(),
            failures: Vec::new(),
            app_cpu: 0.0,
            path_cpu: 0.0,
            bytes: 0,
        })
        .collect();
    for (i, st) in stacks.iter().enumerate() {
        progress(&format!("warm-up download via {}", st.kind.name()));
        match download(st.bulk, source, &mut buf, timeout) {
            Ok((_, n)) if n == plan.size && Sha256::digest(&buf[..n])[..] == want => {}
            Ok((_, n)) => bulk[i]
                .failures
                .push(format!("warm-up: {n} bytes or wrong SHA-256")),
            Err(e) => bulk[i].failures.push(format!("warm-up: {e:#}")),
        }
    }
    for rep in 0..plan.reps {
        for j in 0..stacks.len() {
            let i = (j + rep) % stacks.len();
            let st = &stacks[i];
            progress(&format!(
                "rep {}/{}: download via {}",
                rep + 1,
                plan.reps,
                st.kind.name()
            ));
            let (c0, p0) = (self_cpu(), st.cpu());
            let r = download(st.bulk, source, &mut buf, timeout);
            let (c1, p1) = (self_cpu(), st.cpu());
            let b = &mut bulk[i];
            match r {
                Ok((t, n)) => {
                    let ok = n == plan.size && Sha256::digest(&buf[..n])[..] == want;
                    if ok {
                        b.mbps.push(n as f64 / t.as_secs_f64() / 1e6);
                        b.app_cpu += c1 - c0;
                        b.path_cpu += p1 - p0;
                        b.bytes += n as u64;
                    } else {
                        b.mbps.push(0.0);
                        b.failures.push(format!(
                            "rep {}: {n} of {} bytes or wrong SHA-256",
                            rep + 1,
                            plan.size
                        ));
                    }
                }
                Err(e) => {
                    b.mbps.push(0.0);
                    b.failures.push(format!("rep {}: {e:#}", rep + 1));
                }
            }
        }
    }
    drop(buf);

    // Latency.
    let mut latency = Vec::new();
    for st in &stacks {
        progress(&format!(
            "latency: {} streams x {} exchanges via {}",
            plan.streams,
            plan.exchanges,
            st.kind.name()
        ));
        latency.push(rt.block_on(measure_latency(
            st.kind,
            st.echo,
            echo,
            plan.streams,
            plan.exchanges,
        )));
    }
    drop(stacks);

    // Memory.
    let mut memory = Vec::new();
    if plan.idle_streams > 0 {
        for &k in &plan.carriers {
            progress(&format!(
                "memory: {} idle streams over {}",
                plan.idle_streams,
                scheme(k)
            ));
            memory.push(rt.block_on(measure_memory(
                k,
                plan.idle_streams,
                plan.memory_cycles.max(1),
                plan.idle_close,
                nofile.0,
                &mut progress,
            ))?);
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(Results {
        bulk,
        latency,
        memory,
        nofile,
        elapsed: started.elapsed(),
        payload_sha: hex::encode(want),
    })
}

/// The latency figures of one stack, measured as every bench does
/// ([`super::latency::measure`]), with the samples sorted for the report.
async fn measure_latency(
    kind: StackKind,
    route: Route,
    echo: SocketAddr,
    streams: usize,
    exchanges: usize,
) -> Latency {
    let via = super::latency::Route {
        via: route.via,
        socks: route.socks,
    };
    let m = super::latency::measure(via, echo, streams, exchanges).await;
    let mut out = Latency {
        kind,
        rtt_ms: m.rtt_ms,
        open_ms: m.open_ms,
        failures: m.failures,
        wall: m.wall,
    };
    out.rtt_ms.sort_by(|a, b| a.total_cmp(b));
    out.open_ms.sort_by(|a, b| a.total_cmp(b));
    out
}

/// How long to let the processes settle before reading RSS, and after closing the idle
/// streams: 1 s and 2 s at 10 000 streams, less for small runs (tests).
pub fn settle_times(n: usize) -> (Duration, Duration) {
    let ms = |x: usize, lo: u64, hi: u64| Duration::from_millis((x as u64).clamp(lo, hi));
    (ms(n / 10, 100, 1000), ms(n / 5, 200, 2000))
}

async fn measure_memory(
    kind: CarrierKind,
    n: usize,
    cycles: usize,
    idle_close: Duration,
    nofile: u64,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Memory> {
    let (hold, target) = spawn_child("hold")?;
    let (mut procs, socks) = start_pong(kind, Some(idle_close))?;
    let (remote, local) = (procs[0].pid(), procs[1].pid());
    let route = Route {
        via: Some(socks),
        socks: true,
    };
    let mut notes = Vec::new();
    // Each of the four processes holds one descriptor per stream (plus carriers).
    let room = (nofile as usize).saturating_sub(n / 30 + 200);
    let n_try = if n > room {
        notes.push(format!(
            "RLIMIT_NOFILE {nofile} leaves room for {room} streams per process; opened {room} of {n}"
        ));
        room
    } else {
        n
    };
    // Warm up: one stream end to end, so the runtimes, TLS and the first carrier exist.
    {
        let mut s = route.connect(target).await?;
        s.write_all(b"x").await?;
        s.shutdown().await?;
    }
    let (settle, _) = settle_times(n);
    tokio::time::sleep(settle).await;
    let fds0 = [fd_count(local), fd_count(remote)];
    let hold_base = fd_count(hold.pid());
    let before = [rss_kib(local)?, rss_kib(remote)?];
    let heap_before_kib = [
        heap_in_use_kib(&mut procs[1])?,
        heap_in_use_kib(&mut procs[0])?,
    ];

    let mut done: Vec<MemoryCycle> = Vec::with_capacity(cycles);
    let mut first: Option<(usize, [usize; 2], Duration)> = None;
    for c in 0..cycles {
        if cycles > 1 {
            progress(&format!(
                "memory over {}: cycle {} of {cycles}",
                scheme(kind),
                c + 1
            ));
        }
        let t0 = Instant::now();
        let HeldStreams {
            streams,
            opened,
            failed,
        } = open_idle_streams(&route, target, hold.pid(), hold_base, n_try).await;
        let open_time = t0.elapsed();
        tokio::time::sleep(settle).await;
        let during = [rss_kib(local)?, rss_kib(remote)?];
        let fds = [
            fd_count(local).saturating_sub(fds0[0]),
            fd_count(remote).saturating_sub(fds0[1]),
        ];
        if failed > 0 {
            notes.push(format!("cycle {}: {failed} SOCKS5 opens failed", c + 1));
        }
        drop(streams);
        // Wait (bounded) until the target has seen every stream end, so the figures
        // after closing are of streams that ended end to end, and the next cycle starts
        // from the same place.
        let deadline = Instant::now() + Duration::from_secs(60);
        while fd_count(hold.pid()) > hold_base && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lingering = fd_count(hold.pid()).saturating_sub(hold_base);
        if lingering > 0 {
            notes.push(format!(
                "cycle {}: {lingering} streams still open at the target 60 s after closing",
                c + 1
            ));
        }
        tokio::time::sleep(settle_times(n).1).await;
        let after = [rss_kib(local)?, rss_kib(remote)?];
        let heap_closed_kib = [
            heap_in_use_kib(&mut procs[1])?,
            heap_in_use_kib(&mut procs[0])?,
        ];
        first.get_or_insert((opened, fds, open_time));
        done.push(MemoryCycle {
            opened,
            local_kib: [during[0], after[0]],
            remote_kib: [during[1], after[1]],
            heap_closed_kib,
        });
    }
    // At rest: the carriers idle-close (the local closes them, the remote follows);
    // then neither streams nor carriers hold memory, and what the allocator still
    // counts in use is what a leak would be.
    progress(&format!(
        "memory over {}: waiting for the carriers to idle-close ({} s)",
        scheme(kind),
        idle_close.as_secs()
    ));
    let t0 = Instant::now();
    let deadline = t0 + idle_close + Duration::from_secs(30);
    let closed =
        |procs: &[Proc]| fd_count(procs[1].pid()) <= fds0[0] && fd_count(procs[0].pid()) <= fds0[1];
    while !closed(&procs) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let carriers_closed = closed(&procs);
    let waited = t0.elapsed();
    // Two looks of the give-back task, as after each cycle.
    tokio::time::sleep(crate::heap::GIVE_BACK_EVERY * 2).await;
    let rest = Rest {
        waited,
        carriers_closed,
        rss_kib: [rss_kib(local)?, rss_kib(remote)?],
        heap_kib: [
            heap_in_use_kib(&mut procs[1])?,
            heap_in_use_kib(&mut procs[0])?,
        ],
    };
    if !carriers_closed {
        notes.push(format!(
            "at rest: carriers still open {:.0} s after the last cycle",
            waited.as_secs_f64()
        ));
    }
    drop(procs);
    drop(hold);
    let (opened, fds, open_time) = first.unwrap_or((0, [0, 0], Duration::ZERO));
    let (during, after) = match done.first() {
        Some(c) => (
            [c.local_kib[0], c.remote_kib[0]],
            [c.local_kib[1], c.remote_kib[1]],
        ),
        None => (before, before),
    };
    Ok(Memory {
        carrier: kind,
        asked: n,
        opened,
        local_kib: [before[0], during[0], after[0]],
        remote_kib: [before[1], during[1], after[1]],
        fds,
        open_time,
        cycles: done,
        heap_before_kib,
        rest,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

/// A pong child's heap in use, KiB (its answer to `heap`), or `None` off glibc.
fn heap_in_use_kib(child: &mut Proc) -> anyhow::Result<Option<u64>> {
    let line = child.ask("heap", "heap ", Duration::from_secs(10))?;
    let mut words = line.split_whitespace().skip(1);
    match words.next() {
        Some("none") => Ok(None),
        Some(n) => Ok(Some(
            n.parse::<u64>()
                .with_context(|| format!("child {}: bad heap line {line:?}", child.pid()))?
                / 1024,
        )),
        None => bail!("child {}: empty heap line", child.pid()),
    }
}

/// Idle streams held open through pong, and how many came up end to end.
struct HeldStreams {
    streams: Vec<tokio::net::TcpStream>,
    opened: usize,
    failed: usize,
}

/// Opens `n_try` streams through SOCKS5 (64 at a time) to the holding child, waits
/// (bounded, 60 s) until the child holds every one that opened (`hold_fds0`: its
/// descriptors with no stream open).
async fn open_idle_streams(
    route: &Route,
    target: SocketAddr,
    hold: u32,
    hold_fds0: usize,
    n_try: usize,
) -> HeldStreams {
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n_try {
        let sem = sem.clone();
        let route = *route;
        tasks.spawn(async move {
            let _p = sem.acquire_owned().await.ok()?;
            tokio::time::timeout(Duration::from_secs(30), route.connect(target))
                .await
                .ok()?
                .ok()
        });
    }
    let mut streams = Vec::with_capacity(n_try);
    let mut failed = 0usize;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Some(s)) => streams.push(s),
            _ => failed += 1,
        }
    }
    // Wait until the remote has dialed every stream (the idle target holds them).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut opened;
    loop {
        opened = fd_count(hold).saturating_sub(hold_fds0);
        if opened >= streams.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    HeldStreams {
        opened: opened.min(n_try),
        streams,
        failed,
    }
}

// ---------------------------------------------------------------------------------------
// The report.

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

/// The verdict line of each pong carrier against its target share of the two-relay
/// reference.
pub fn verdicts(r: &Results) -> Vec<String> {
    let median_of = |kind: StackKind| {
        r.bulk
            .iter()
            .find(|b| b.kind == kind)
            .map(|b| median(&b.mbps))
            .unwrap_or(0.0)
    };
    let reference = median_of(StackKind::Relay);
    let tls_reference = median_of(StackKind::TlsRelay);
    r.bulk
        .iter()
        .filter_map(|b| match b.kind {
            StackKind::Pong(k) => Some((b, k)),
            _ => None,
        })
        .map(|(b, k)| {
            let target = if k == CarrierKind::Tcp {
                TARGET_TCP
            } else {
                TARGET_OTHER
            };
            let ratio = if reference > 0.0 {
                median(&b.mbps) / reference
            } else {
                0.0
            };
            let tls = if k.uses_tls() && tls_reference > 0.0 {
                format!(
                    "; {:.0}% of the TLS two-relay reference",
                    median(&b.mbps) / tls_reference * 100.0
                )
            } else {
                String::new()
            };
            format!(
                "{}: {:.0}% of the two-relay reference ({}: target {:.0}%){tls}",
                b.kind.name(),
                ratio * 100.0,
                if ratio >= target && b.failures.is_empty() {
                    "MET"
                } else {
                    "NOT MET"
                },
                target * 100.0
            )
        })
        .collect()
}

/// The Markdown report.
pub fn render(plan: &Plan, r: &Results, facts: &RunFacts) -> String {
    let d = DriverConfig::default();
    let pool = PoolConfig::new("tcp://127.0.0.1:1".parse().expect("a valid URL"), CLIENT_ID);
    let mut s = opening(
        "pong benchmark: local + remote on loopback vs direct TCP",
        facts,
    );
    let _ = writeln!(
        s,
        "- RLIMIT_NOFILE after raising soft to hard: soft {}, hard {} (each process holds about one descriptor per idle stream)",
        r.nofile.0, r.nofile.1
    );
    let _ = writeln!(
        s,
        "- processes: this one runs the applications (bulk source and download client on blocking threads; echo target and latency/idle clients on a 2-worker tokio runtime); pong remote and pong local run as two child processes of the same binary (`bench pong --child remote:SCHEME` / `--child local:URL`), each a tokio multi-thread runtime with one worker per core, over real loopback sockets; the reference relays are two more children (`--child relay:ADDR`, `tokio::io::copy_bidirectional_with_sizes` with {} KiB buffers, `TCP_NODELAY`; with a TLS carrier in the run, a TLS reference too: the same two relays with TLS between them, `--child tls-relay-out:ADDR` / `tls-relay-in:ADDR`, rustls configured as pong's TLS carriers); the bench's own listeners (echo target, idle target, relays) have a {}-deep accept queue, pong's local and remote listen through `TokioNet::listen_tcp` as the `pong` commands do (tokio's default backlog)",
        RELAY_BUF / 1024,
        BACKLOG
    );
    let _ = writeln!(
        s,
        "- path through pong: client -> SOCKS5 CONNECT (no auth, IPv4 target) -> pong local -> carrier (`tcp://`; `tls://` rustls with a self-signed certificate; `ws://`/`wss://` one binary message per write; `h2c://`/`h2://` one HTTP/2 POST whose request and response bodies carry the bytes, h2 crate, 4 MiB stream window; `http://`/`https://` a POST answered 200, then raw bytes) -> pong remote -> target; all sockets `TCP_NODELAY`"
    );
    let _ = writeln!(
        s,
        "- knobs (library defaults, as `pong local`/`pong remote` use them): pool {} live streams per carrier, idle close {} s, max age {} s; driver stream_buffer {} KiB per stream towards the application (16 KiB chunks), datagram_queue {}; session stream_rx_cap {} KiB, max_output {} KiB, max_streams {}, ended_memory {}; carrier read buffer 64 KiB, data frames of at most 32 KiB per application write, command queue 64, carrier writer queue 8; relay copies (SOCKS front both ways, remote both ways) with a buffer of {} KiB growing to {} KiB while reads fill it",
        pool.max_streams_per_conn,
        pool.idle_close.as_secs(),
        pool.max_age.as_secs(),
        d.stream_buffer / 1024,
        d.datagram_queue,
        d.session.stream_rx_cap / 1024,
        d.session.max_output / 1024,
        d.session.max_streams,
        d.session.ended_memory,
        tunnelbed_pong::pump::PUMP_START / 1024,
        tunnelbed_pong::pump::PUMP_MAX / 1024,
    );
    let _ = writeln!(
        s,
        "- throughput: {} timed downloads of {} bytes ({} MiB) per stack after one untimed warm-up each, the stacks rotating their order every repetition; payload ChaCha8 (seed 0x706f6e67), SHA-256 {}…, checked on every download after the clock stops; time is connect (and SOCKS5 handshake) to end of file; MB = 10^6 bytes",
        plan.reps,
        plan.size,
        plan.size >> 20,
        &r.payload_sha[..16]
    );
    let _ = writeln!(
        s,
        "- CPU: user+system seconds over the timed downloads per MB delivered; *app* is this process (source writing, client reading), *path* the proxy's processes (`/proc/PID/stat`, 10 ms ticks)"
    );
    let _ = writeln!(
        s,
        "- latency: {} streams open at once, each doing {} timed {}-byte request / {}-byte answer round trips back to back against an echo target (closed loop, all streams concurrently, {} samples per stack); *open* is connect + SOCKS5 + the first exchange per stream, all streams opening at once",
        plan.streams,
        plan.exchanges,
        MSG,
        MSG,
        plan.streams * plan.exchanges
    );
    let _ = writeln!(
        s,
        "- memory: fresh local and remote per carrier; after one warm-up stream, {} streams are opened through SOCKS5 (64 at a time) to a child that accepts and holds connections, and left idle; VmRSS of the local and the remote before, with all streams open ({} ms after the last was dialed) and {} ms after closing them; open and close repeated {} times in the same processes",
        plan.idle_streams,
        settle_times(plan.idle_streams).0.as_millis(),
        settle_times(plan.idle_streams).1.as_millis(),
        plan.memory_cycles.max(1)
    );
    let _ = writeln!(s, "- run took {:.1} s\n", r.elapsed.as_secs_f64());

    let direct = median(&r.bulk[0].mbps);
    let _ = writeln!(s, "## Throughput\n");
    let _ = writeln!(
        s,
        "| stack | median MB/s | min-max MB/s | ratio to direct | ratio to reference | per-rep ratios (to direct) | CPU ms/MB app + path | failures | every rep (MB/s) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let reference = r
        .bulk
        .iter()
        .find(|b| b.kind == StackKind::Relay)
        .map(|b| median(&b.mbps))
        .unwrap_or(0.0);
    for b in &r.bulk {
        let m = median(&b.mbps);
        let (lo, hi) = spread(&b.mbps);
        let ratio = if direct > 0.0 { m / direct } else { 0.0 };
        let to_ref = if reference > 0.0 {
            format!("{:.2}", m / reference)
        } else {
            "-".into()
        };
        let per: Vec<f64> = b
            .mbps
            .iter()
            .zip(&r.bulk[0].mbps)
            .filter(|(_, d)| **d > 0.0)
            .map(|(x, d)| x / d)
            .collect();
        let (plo, phi) = spread(&per);
        let mb = b.bytes as f64 / 1e6;
        let cpu = if mb > 0.0 {
            format!("{:.2} + {:.2}", b.app_cpu * 1e3 / mb, b.path_cpu * 1e3 / mb)
        } else {
            "-".into()
        };
        let all: Vec<String> = b.mbps.iter().map(|x| format!("{x:.0}")).collect();
        let name = if matches!(b.kind, StackKind::Pong(_)) {
            format!("**{}**", b.kind.name())
        } else {
            b.kind.name()
        };
        let _ = writeln!(
            s,
            "| {name} | {m:.0} | {lo:.0}-{hi:.0} | {:.2} | {to_ref} | {plo:.2}-{phi:.2} | {cpu} | {} | {} |",
            ratio,
            b.failures.len(),
            all.join(", ")
        );
    }
    let _ = writeln!(s);
    for v in verdicts(r) {
        let _ = writeln!(s, "- {v}");
    }
    for b in &r.bulk {
        for f in &b.failures {
            let _ = writeln!(s, "- FAILED ({}): {f}", b.kind.name());
        }
    }
    if r.bulk.iter().all(|b| b.failures.is_empty()) {
        let n: usize = r.bulk.iter().map(|b| b.mbps.len() + 1).sum();
        let _ = writeln!(
            s,
            "- integrity: all {n} downloads (warm-ups included) arrived whole with the payload's SHA-256"
        );
    }

    let _ = writeln!(
        s,
        "\n## Latency ({} concurrent streams, {MSG}-byte request/answer)\n",
        plan.streams
    );
    let _ = writeln!(
        s,
        "| stack | RTT p50 (ms) | RTT p99 (ms) | RTT max (ms) | exchanges/s | open p50 (ms) | open p99 (ms) | failed streams |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &r.latency {
        let rate = l.rtt_ms.len() as f64 / l.wall.as_secs_f64().max(1e-9);
        let name = if matches!(l.kind, StackKind::Pong(_)) {
            format!("**{}**", l.kind.name())
        } else {
            l.kind.name()
        };
        let _ = writeln!(
            s,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {} |",
            percentile(&l.rtt_ms, 50.0),
            percentile(&l.rtt_ms, 99.0),
            l.rtt_ms.last().copied().unwrap_or(0.0),
            rate,
            percentile(&l.open_ms, 50.0),
            percentile(&l.open_ms, 99.0),
            l.failures
        );
    }

    if !r.memory.is_empty() {
        let _ = writeln!(s, "\n## Memory ({} idle streams)\n", plan.idle_streams);
        let _ = writeln!(
            s,
            "| carrier | streams up | local RSS before / open / closed (MiB) | remote RSS before / open / closed (MiB) | growth, both (MiB) | per stream (bytes) | fds local / remote (+) | opening took (s) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for m in &r.memory {
            let mib = |k: u64| k as f64 / 1024.0;
            let growth =
                (m.local_kib[1] + m.remote_kib[1]).saturating_sub(m.local_kib[0] + m.remote_kib[0]);
            let per = if m.opened > 0 {
                growth as f64 * 1024.0 / m.opened as f64
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "| {} | {} of {} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.1} | {:.0} | {} / {} | {:.1} |",
                scheme(m.carrier),
                m.opened,
                m.asked,
                mib(m.local_kib[0]),
                mib(m.local_kib[1]),
                mib(m.local_kib[2]),
                mib(m.remote_kib[0]),
                mib(m.remote_kib[1]),
                mib(m.remote_kib[2]),
                mib(growth),
                per,
                m.fds[0],
                m.fds[1],
                m.open_time.as_secs_f64()
            );
        }
        if r.memory.iter().any(|m| m.cycles.len() > 1) {
            let _ = writeln!(
                s,
                "\n### Open and close, {} times in the same processes\n\nRSS in MiB with the streams open / after closing them, and in brackets the heap in use after closing (the allocator's own count, `mallinfo2`: memory allocated and not freed, so freed memory the allocator keeps is not in it), cycle by cycle. A leak shows as heap-in-use figures that keep rising from cycle to cycle, and as heap still in use at rest (after the last cycle, once the local's carriers idle-closed, {} s, and the remote's followed: no stream and no carrier left); between cycles the idle carriers (one per {} streams, each with its read buffers and a memory of its ended stream ids) are still there. RSS after closing also includes freed heap not yet given back (pong gives freed heap back to the kernel once more than {} MiB is held, checking every {} s).\n",
                plan.memory_cycles,
                plan.idle_close.as_secs(),
                pool.max_streams_per_conn,
                crate::heap::GIVE_BACK_ABOVE >> 20,
                crate::heap::GIVE_BACK_EVERY.as_secs()
            );
            let n = r.memory.iter().map(|m| m.cycles.len()).max().unwrap_or(0);
            let mut head = String::from("| carrier | process |");
            let mut rule = String::from("|---|---|");
            for c in 1..=n {
                let _ = write!(head, " cycle {c} |");
                rule.push_str("---:|");
            }
            head.push_str(" RSS closed, last minus first cycle (MiB) | heap in use before the first cycle (MiB) | heap in use closed, last minus first cycle (MiB) | at rest, carriers closed: RSS (heap in use) MiB |");
            rule.push_str("---:|---:|---:|---:|");
            let _ = writeln!(s, "{head}\n{rule}");
            for m in &r.memory {
                for (who, pick) in [("local", 0usize), ("remote", 1)] {
                    let kib = |c: &MemoryCycle| {
                        if pick == 0 {
                            c.local_kib
                        } else {
                            c.remote_kib
                        }
                    };
                    let mut row = format!("| {} | {who} |", scheme(m.carrier));
                    let heap = |k: Option<u64>| match k {
                        Some(k) => format!("{:.1}", k as f64 / 1024.0),
                        None => "n/a".into(),
                    };
                    for c in &m.cycles {
                        let [open, closed] = kib(c);
                        let _ = write!(
                            row,
                            " {:.1} / {:.1} ({}) |",
                            open as f64 / 1024.0,
                            closed as f64 / 1024.0,
                            heap(c.heap_closed_kib[pick])
                        );
                    }
                    let closed: Vec<u64> = m.cycles.iter().map(|c| kib(c)[1]).collect();
                    let drift = match (closed.first(), closed.last()) {
                        (Some(&a), Some(&b)) => (b as f64 - a as f64) / 1024.0,
                        _ => 0.0,
                    };
                    let _ = write!(row, " {drift:+.1} |");
                    let heaps: Vec<Option<u64>> =
                        m.cycles.iter().map(|c| c.heap_closed_kib[pick]).collect();
                    let _ = write!(row, " {} |", heap(m.heap_before_kib[pick]));
                    match (heaps.first(), heaps.last()) {
                        (Some(Some(a)), Some(Some(b))) => {
                            let _ = write!(row, " {:+.2} |", (*b as f64 - *a as f64) / 1024.0);
                        }
                        _ => row.push_str(" n/a |"),
                    }
                    let _ = write!(
                        row,
                        " {:.1} ({}){} |",
                        m.rest.rss_kib[pick] as f64 / 1024.0,
                        heap(m.rest.heap_kib[pick]),
                        if m.rest.carriers_closed {
                            ""
                        } else {
                            ", carriers still open"
                        }
                    );
                    let _ = writeln!(s, "{row}");
                }
            }
            let _ = writeln!(
                s,
                "\nStreams up per cycle: {}.",
                r.memory
                    .iter()
                    .map(|m| format!(
                        "{} {}",
                        scheme(m.carrier),
                        m.cycles
                            .iter()
                            .map(|c| c.opened.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        for m in &r.memory {
            if let Some(n) = &m.note {
                let _ = writeln!(s, "\n- {}: {n}", scheme(m.carrier));
            }
        }
        let _ = writeln!(
            s,
            "\nDirect TCP keeps no user-space state per connection; kernel socket memory is outside RSS for every stack and not counted. fds (+) are the descriptors added with the streams open: one per stream plus the carriers ({} streams per carrier).",
            pool.max_streams_per_conn
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks_request_bytes() {
        let r = socks_request("127.0.0.1:258".parse().unwrap()).unwrap();
        assert_eq!(r, vec![5, 1, 0, 1, 127, 0, 0, 1, 1, 2]);
    }
}
