//! `tunnelbed kcp`: KCP on real UDP sockets (echo server and bulk sender), for interop
//! with reference peers.
//!
//! Both roles run our sans-IO [`Kcp`] through the generic ARQ driver of
//! `tunnelbed-netio` over real sockets (`TokioNet`, wrapped for `--pcap`), so what runs here is the code the simulator tests.
//! The bulk data is SHA-256 in counter mode ([`pattern_fill`]): not periodic, so a lost,
//! duplicated or reordered segment always changes the digest, and any offset can be
//! recomputed on its own (the sender checks every echoed byte as it arrives). The reference
//! peer `conformance/peers/kcp_peer.py` sends the same bytes.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{self, ArqOptions, ArqServer, SessionEnd};

use super::observe::{stop_signal, Observe, ObserveArgs};
use super::{runtime, EXIT_FAILURE, EXIT_OK};

/// Text shared by both roles' `--profile` help, so the choice is documented once.
const PROFILE_HELP: &str = "KCP knob preset. reference-peer (the default): the knobs of the \
reference peer conformance/peers/kcp_peer.py — mtu 1400, nodelay 1, interval 10, resend 2, \
no congestion window, windows 256/256, MESSAGE mode (the Python binding has no stream mode). \
default: the reference ikcp defaults (mtu 1400, windows 32/128, interval 100, congestion \
window on), MESSAGE mode. fast1, fast2, fast3, fast4, clientFast3, clientFast4, normal: \
vproxy's tunnel presets (mtu 1250, nc on), STREAM mode as vproxy runs them. Stream and \
message mode interoperate both ways: a stream-mode sender's segments all carry frg=0, which \
a message-mode receiver takes as one message each, and a stream-mode receiver reassembles \
fragmented messages.";

/// KCP roles on real sockets.
#[derive(Subcommand, Debug)]
pub enum KcpCmd {
    /// Echo server: one KCP session per remote address; every byte received goes back.
    ///
    /// Prints `listening ADDR` on stdout once bound (with port 0, ADDR has the real port).
    /// Bytes come back in order; message boundaries are not kept (the echo is a byte
    /// stream), which a byte-counting sender cannot tell. A session ends when its peer has
    /// been silent for --idle-timeout or the link is declared dead.
    Echo(EchoArgs),
    /// Bulk sender: sends N bytes to an echo server over KCP and checks what comes back.
    ///
    /// Prints one line `bytes=N seconds=S goodput_mbps=G goodput_MBps=G sha256=HEX`: N
    /// bytes each way, S from the first byte written to the last byte echoed, goodput as N
    /// over S (megabits and megabytes per second), and the SHA-256 of what came back. Exit
    /// 0 when the echo equals what was sent, 1 when it differs, the peer stops answering,
    /// the link is declared dead or --timeout passes, 2 for a usage error.
    Send(SendArgs),
}

/// Arguments of `kcp echo`.
#[derive(Args, Debug)]
pub struct EchoArgs {
    /// Address to bind, e.g. 127.0.0.1:4000 (port 0 picks a free one).
    #[arg(long, value_parser = parse_addr)]
    pub listen: SocketAddr,
    /// Conversation id; both ends must agree (kcp_peer.py uses 1). Datagrams from a new
    /// peer that do not start with it are refused.
    #[arg(long, default_value_t = 1)]
    pub conv: u32,
    /// KCP knob preset: reference-peer (default; message mode), default (ikcp's; message
    /// mode), or vproxy's fast1..fast4, clientFast3, clientFast4, normal (stream mode).
    #[arg(long, default_value = "reference-peer", value_parser = parse_profile, long_help = PROFILE_HELP)]
    pub profile: String,
    /// Override the profile's mode (stream or message).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// End a session after this many seconds without a datagram from its peer.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    pub idle_timeout: Duration,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long, value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Most sessions at once; datagrams from further peers are dropped.
    #[arg(long, default_value_t = 1024)]
    pub max_sessions: usize,
    /// `--pcap` / `--trace`, as on every real role.
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// Arguments of `kcp send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The echo server, e.g. 127.0.0.1:4000 (a host name is resolved once).
    #[arg(long, value_parser = parse_addr)]
    pub to: SocketAddr,
    /// Bytes to send: a number, optionally with k/M/G (x1000) or KiB/MiB/GiB (x1024).
    #[arg(long, value_parser = parse_size)]
    pub bytes: u64,
    /// Conversation id; both ends must agree (kcp_peer.py uses 1).
    #[arg(long, default_value_t = 1)]
    pub conv: u32,
    /// KCP knob preset: reference-peer (default; message mode), default (ikcp's; message
    /// mode), or vproxy's fast1..fast4, clientFast3, clientFast4, normal (stream mode).
    #[arg(long, default_value = "reference-peer", value_parser = parse_profile, long_help = PROFILE_HELP)]
    pub profile: String,
    /// Override the profile's mode (stream or message).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Give up (exit 1) when the whole echo has not come back after this many seconds.
    #[arg(long, default_value = "120", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Give up (exit 1) when the peer has sent nothing for this many seconds (no echo
    /// server, or the link died).
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub idle_timeout: Duration,
    /// `--pcap` / `--trace`, as on every real role.
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// KCP framing mode, to override a profile's choice.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No message boundaries; writes coalesce into full segments, every frg is 0.
    Stream,
    /// Every write is a message, split into fragments counted down by frg.
    Message,
}

/// The profile names `--profile` accepts: ours first, then the crate's presets.
fn profile_names() -> Vec<&'static str> {
    let mut v = vec![REFERENCE_PEER];
    v.extend_from_slice(KcpConfig::PRESETS);
    v
}

/// Our preset matching `conformance/peers/kcp_peer.py` knob for knob.
const REFERENCE_PEER: &str = "reference-peer";

/// The knobs for a profile name (already validated by [`parse_profile`]), with the mode
/// override applied.
fn config(profile: &str, mode: Option<Mode>) -> KcpConfig {
    let mut cfg = if profile == REFERENCE_PEER {
        KcpConfig {
            mtu: 1400,
            snd_wnd: 256,
            rcv_wnd: 256,
            nodelay: 1,
            interval: 10,
            resend: 2,
            nc: true,
            stream: false,
            ..KcpConfig::default()
        }
    } else {
        KcpConfig::preset(profile).expect("profile validated by the parser")
    };
    if let Some(m) = mode {
        cfg.stream = m == Mode::Stream;
    }
    cfg
}

fn parse_profile(s: &str) -> Result<String, String> {
    if s == REFERENCE_PEER || KcpConfig::preset(s).is_some() {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown profile; known: {}",
            profile_names().join(", ")
        ))
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err("expected HOST:PORT, e.g. 127.0.0.1:4000".into());
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("{s} resolves to no address")),
        Err(e) => Err(format!("expected HOST:PORT, e.g. 127.0.0.1:4000 ({e})")),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| "expected a number of seconds, e.g. 30 or 0.5".to_string())?;
    if !v.is_finite() || v <= 0.0 || v > 1e9 {
        return Err("expected a positive number of seconds".into());
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a byte count, e.g. 4000000, 20M or 4MiB".to_string())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "kB" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        u => return Err(format!("unknown unit {u:?}; use k, M, G, KiB, MiB or GiB")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| "byte count too large".to_string())?;
    if v == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(v)
}

/// Fills `buf` with the bulk pattern from stream offset `offset`: the concatenation of
/// SHA-256(k as 8 little-endian bytes) for k = 0, 1, 2, ... Public because it is the
/// documented payload other tools must reproduce (`kcp_peer.py` does, with `hashlib`).
pub fn pattern_fill(offset: u64, buf: &mut [u8]) {
    let mut pos = 0usize;
    while pos < buf.len() {
        let at = offset + pos as u64;
        let block: [u8; 32] = Sha256::digest((at / 32).to_le_bytes()).into();
        let skip = (at % 32) as usize;
        let n = (32 - skip).min(buf.len() - pos);
        buf[pos..pos + n].copy_from_slice(&block[skip..skip + n]);
        pos += n;
    }
}

/// Runs a `kcp` subcommand.
pub fn run(cmd: KcpCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KcpCmd::Echo(a) => runtime()?.block_on(echo(a)),
        KcpCmd::Send(a) => runtime()?.block_on(send(a)),
    }
}

async fn echo(a: EchoArgs) -> anyhow::Result<ExitCode> {
    let obs = a.observe.start("kcp-echo");
    let r = echo_on(&a, &obs).await;
    obs.finish()?;
    r
}

async fn echo_on(a: &EchoArgs, obs: &Observe) -> anyhow::Result<ExitCode> {
    let net = obs.net();
    let trace = obs.trace();
    let cfg = config(&a.profile, a.mode);
    let conv = a.conv;
    let opts = ArqOptions {
        idle_timeout: a.idle_timeout,
        max_sessions: a.max_sessions,
        ..ArqOptions::default()
    };
    let refused = AtomicU64::new(0);
    let make_cfg = cfg.clone();
    let mut srv = ArqServer::bind(
        &net,
        a.listen,
        move |peer, first: &[u8]| {
            // Only a datagram carrying our conversation starts a session, so stray or
            // misconfigured senders do not each cost a session.
            let theirs = first
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if theirs != Some(conv) {
                let n = refused.fetch_add(1, Ordering::Relaxed);
                if n < 10 {
                    tracing::warn!(
                        "kcp echo: refusing {peer}: first datagram has conv {theirs:?}, expected {conv}"
                    );
                }
                return None;
            }
            tracing::info!("kcp echo: new session from {peer}");
            Some(Kcp::new(
                conv,
                &make_cfg,
                trace.clone(),
                format!("kcp[echo<-{peer}]"),
            ))
        },
        opts,
    )
    .await
    .with_context(|| format!("binding {}", a.listen))?;
    println!("listening {}", srv.local_addr());
    std::io::stdout().flush().ok();
    tracing::info!(
        "kcp echo: {} conv {} profile {} ({} mode)",
        srv.local_addr(),
        conv,
        a.profile,
        if cfg.stream { "stream" } else { "message" }
    );
    let stop = async {
        match a.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => stop_signal().await,
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            acc = srv.accept() => {
                let Some((stream, peer)) = acc else {
                    anyhow::bail!("the server socket failed (see the log)");
                };
                tokio::spawn(async move {
                    let (rd, mut wr) = tokio::io::split(stream);
                    let mut rd = BufReader::with_capacity(64 * 1024, rd);
                    match tokio::io::copy_buf(&mut rd, &mut wr).await {
                        Ok(n) => tracing::info!("kcp echo: session {peer} ended after {n} bytes"),
                        Err(e) => tracing::info!("kcp echo: session {peer} ended: {e}"),
                    }
                });
            }
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// How a send ended when it did not complete.
fn fail(msg: String) -> anyhow::Result<ExitCode> {
    eprintln!("error: {msg}");
    Ok(ExitCode::from(EXIT_FAILURE))
}

async fn send(a: SendArgs) -> anyhow::Result<ExitCode> {
    let obs = a.observe.start("kcp-send");
    let r = send_on(&a, &obs).await;
    obs.finish()?;
    r
}

async fn send_on(a: &SendArgs, obs: &Observe) -> anyhow::Result<ExitCode> {
    let cfg = config(&a.profile, a.mode);
    let total = a.bytes;
    let bind: SocketAddr = if a.to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let opts = ArqOptions {
        idle_timeout: a.idle_timeout,
        ..ArqOptions::default()
    };
    let kcp = Kcp::new(a.conv, &cfg, obs.trace(), "kcp[send]");
    let (stream, mut session) = arq::connect(&obs.net(), bind, a.to, kcp, opts)
        .await
        .with_context(|| format!("opening a UDP socket towards {}", a.to))?;
    tracing::info!(
        "kcp send: {} bytes to {} conv {} profile {} ({} mode)",
        total,
        a.to,
        a.conv,
        a.profile,
        if cfg.stream { "stream" } else { "message" }
    );
    let (mut rd, mut wr) = tokio::io::split(stream);
    let start = tokio::time::Instant::now();
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut off = 0u64;
        while off < total {
            let n = (total - off).min(buf.len() as u64) as usize;
            pattern_fill(off, &mut buf[..n]);
            if wr.write_all(&buf[..n]).await.is_err() {
                return None;
            }
            off += n as u64;
        }
        // Hand our half back still open: shutting it down would let the driver end the
        // session once everything is acknowledged, before the echo is back.
        Some(wr)
    });
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} echoed {wide_bar} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(style);
        }
        b
    });

    let mut hash = Sha256::new();
    let mut got = 0u64;
    let mut mismatch: Option<u64> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let deadline = start + a.timeout;
    let outcome: Result<(), String> = loop {
        if got >= total {
            break Ok(());
        }
        let cap = (total - got).min(buf.len() as u64) as usize;
        let n = match tokio::time::timeout_at(deadline, rd.read(&mut buf[..cap])).await {
            Err(_) => {
                break Err(format!(
                    "timed out after {:.1} s with {got} of {total} bytes echoed (raise --timeout?)",
                    a.timeout.as_secs_f64()
                ))
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                // The driver dropped its end: the session is over; say why.
                let why = match tokio::time::timeout(Duration::from_secs(2), &mut session).await
                {
                    Ok(Ok(SessionEnd::Idle)) => format!(
                        "no datagram from {} for {:.1} s (is a KCP echo server listening there, with conv {}?)",
                        a.to,
                        a.idle_timeout.as_secs_f64(),
                        a.conv
                    ),
                    Ok(Ok(SessionEnd::DeadLink)) => format!(
                        "dead link: a segment was sent {} times without being acknowledged",
                        cfg.dead_link
                    ),
                    Ok(Ok(end)) => format!("session ended: {end}"),
                    Ok(Err(e)) => format!("session task failed: {e}"),
                    Err(_) => "session ended for an unknown reason".to_string(),
                };
                break Err(format!("{why}; {got} of {total} bytes echoed"));
            }
            Ok(Ok(n)) => n,
        };
        hash.update(&buf[..n]);
        if mismatch.is_none() {
            pattern_fill(got, &mut want[..n]);
            if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
                mismatch = Some(got + i as u64);
            }
        }
        got += n as u64;
        if let Some(b) = &bar {
            b.set_position(got);
        }
    };
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if let Err(msg) = outcome {
        writer.abort();
        session.abort();
        return fail(msg);
    }
    // Anything beyond what we sent means the echo duplicated something.
    let mut extra = 0usize;
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), rd.read(&mut buf)).await {
        extra = n;
    }
    // Acknowledge the last echoed segments before the socket closes (acks go out on the
    // next flush tick), then let the session finish once our data is all acknowledged, so
    // the peer is not left retransmitting into a closed port. Bounded; not timed.
    tokio::time::sleep(Duration::from_millis(
        2 * u64::from(cfg.interval.max(10)) + 10,
    ))
    .await;
    if let Ok(Ok(Some(mut wr))) = tokio::time::timeout(Duration::from_secs(1), writer).await {
        let _ = wr.shutdown().await;
        match tokio::time::timeout(Duration::from_secs(1), &mut session).await {
            Ok(Ok(end)) => tracing::info!("kcp send: session ended: {end}"),
            _ => tracing::info!("kcp send: session still draining; closing anyway"),
        }
    }
    session.abort();
    let digest = hex::encode(hash.finalize());
    println!(
        "bytes={} seconds={:.3} goodput_mbps={:.2} goodput_MBps={:.2} sha256={}",
        got,
        secs,
        got as f64 * 8.0 / secs / 1e6,
        got as f64 / secs / 1e6,
        digest
    );
    std::io::stdout().flush().ok();
    if let Some(at) = mismatch {
        return fail(format!(
            "the echo differs from what was sent, first at byte offset {at}"
        ));
    }
    if extra > 0 {
        return fail(format!(
            "the echo returned at least {extra} bytes more than the {total} sent"
        ));
    }
    Ok(ExitCode::from(EXIT_OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_counter_mode_sha256_at_any_offset() {
        let mut whole = vec![0u8; 200];
        pattern_fill(0, &mut whole);
        let first: [u8; 32] = Sha256::digest(0u64.to_le_bytes()).into();
        assert_eq!(&whole[..32], &first);
        let mut part = vec![0u8; 77];
        pattern_fill(45, &mut part);
        assert_eq!(&part[..], &whole[45..122]);
    }

    #[test]
    fn sizes_and_profiles_parse() {
        assert_eq!(parse_size("20M"), Ok(20_000_000));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_profile("fast3").is_ok());
        assert!(parse_profile("fast9").is_err());
        assert!(!config(REFERENCE_PEER, None).stream);
        assert!(config("fast4", None).stream);
        assert!(!config("fast4", Some(Mode::Message)).stream);
        assert!(parse_addr("nonsense").is_err());
    }
}
