//! `tunnelbed kcp`: KCP on real UDP sockets, an echo server and a bulk sender, so our
//! KCP can be checked against the reference ikcp (and any other KCP peer) on a real
//! network, also through `tunnelbed netem` under loss.
//!
//! Both use the same deterministic payload as the reference peer script
//! (`conformance/peers/kcp_peer.py`): byte `p` of the stream is `((p mod L) * 131 + 7) mod
//! 256` with `L = min(bytes, 1 MiB)`, so a SHA-256 printed by either sender can be checked
//! against [`expected_sha256`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{self, ArqOptions, ArqServer, SessionEnd};
use tunnelbed_netio::{TokioNet, Trace};

use super::{EXIT_FAILURE, EXIT_USAGE};

/// KCP roles on real sockets.
#[derive(Subcommand, Debug)]
pub enum KcpCmd {
    /// Echo every byte back, one KCP session per remote address (as vproxy keeps one per
    /// address). Prints `listening ADDR` on stdout once bound.
    Echo(EchoArgs),
    /// Send N bytes, read the echo back, print bytes, seconds, goodput and the SHA-256 of
    /// what came back; exit 1 if it differs from what was sent.
    Send(SendArgs),
}

/// Knobs shared by both roles.
#[derive(Args, Debug, Clone)]
pub struct KcpKnobs {
    /// Conversation id; both ends must agree (vproxy uses 0, the reference peer script 1).
    #[arg(long, default_value_t = 0)]
    pub conv: u32,
    /// Knob preset: `reference-peer` (the knobs of conformance/peers/kcp_peer.py: mtu 1400,
    /// nodelay, interval 10, resend 2, no congestion window, windows 256), `default` (ikcp's
    /// defaults), or vproxy's `fast1`..`fast4`, `clientFast3`, `clientFast4`, `normal`.
    #[arg(long, default_value = "reference-peer")]
    pub profile: String,
    /// Stream mode (sends coalesce, segments carry no message boundaries; vproxy's) or
    /// message mode (each write is one message of at most 127 fragments). Either
    /// interoperates with a message-mode peer: stream-mode segments arrive as one-segment
    /// messages.
    #[arg(long, value_enum, default_value_t = Mode::Stream)]
    pub mode: Mode,
}

/// KCP's two delivery modes.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    /// No message boundaries.
    Stream,
    /// Message boundaries kept.
    Message,
}

/// `kcp echo` arguments.
#[derive(Args, Debug)]
pub struct EchoArgs {
    /// UDP address to listen on (port 0 picks one; the bound address is printed).
    #[arg(long)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub knobs: KcpKnobs,
    /// End a session after this many seconds without a datagram from its peer.
    #[arg(long, default_value_t = 30)]
    pub idle_secs: u64,
}

/// `kcp send` arguments.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The echo server's UDP address.
    #[arg(long)]
    pub to: SocketAddr,
    /// How many bytes to send (and expect back).
    #[arg(long)]
    pub bytes: u64,
    #[command(flatten)]
    pub knobs: KcpKnobs,
    /// Give up after this many seconds (exit 1).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// The knobs of `conformance/peers/kcp_peer.py`, so both ends match by default.
fn reference_peer() -> KcpConfig {
    KcpConfig {
        mtu: 1400,
        snd_wnd: 256,
        rcv_wnd: 256,
        nodelay: 1,
        interval: 10,
        resend: 2,
        nc: true,
        ..KcpConfig::default()
    }
}

fn config(k: &KcpKnobs) -> Result<KcpConfig, String> {
    let mut c = match k.profile.as_str() {
        "reference-peer" => reference_peer(),
        other => KcpConfig::preset(other).ok_or_else(|| {
            format!(
                "unknown KCP profile {other:?} (known: reference-peer, {})",
                KcpConfig::PRESETS.join(", ")
            )
        })?,
    };
    c.stream = k.mode == Mode::Stream;
    Ok(c)
}

/// The payload both senders use: `len` bytes of the documented pattern.
pub fn payload(len: u64) -> impl Iterator<Item = u8> {
    let l = len.clamp(1, 1 << 20);
    (0..len).map(move |p| (((p % l) * 131 + 7) & 0xff) as u8)
}

/// SHA-256 (hex) of [`payload`]`(len)`: what a correct echo of a send of `len` hashes to.
pub fn expected_sha256(len: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    for b in payload(len) {
        buf.push(b);
        if buf.len() == buf.capacity() {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
    hex::encode(h.finalize())
}

/// Runs a `kcp` subcommand.
pub fn run(cmd: KcpCmd) -> anyhow::Result<ExitCode> {
    let knobs = match &cmd {
        KcpCmd::Echo(a) => &a.knobs,
        KcpCmd::Send(a) => &a.knobs,
    };
    let cfg = match config(knobs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    match cmd {
        KcpCmd::Echo(a) => rt.block_on(echo(a, cfg)),
        KcpCmd::Send(a) => rt.block_on(send(a, cfg)),
    }
}

async fn echo(a: EchoArgs, cfg: KcpConfig) -> anyhow::Result<ExitCode> {
    let net = TokioNet;
    let conv = a.knobs.conv;
    let opts = ArqOptions {
        idle_timeout: Duration::from_secs(a.idle_secs.max(1)),
        ..ArqOptions::default()
    };
    let mut srv = ArqServer::bind(
        &net,
        a.listen,
        move |peer, _| {
            tracing::info!("kcp echo: new session from {peer}");
            Some(Kcp::new(
                conv,
                &cfg,
                Trace::disabled(),
                format!("kcp[{peer}]"),
            ))
        },
        opts,
    )
    .await
    .with_context(|| format!("binding {}", a.listen))?;
    println!("listening {}", srv.local_addr());
    while let Some((s, peer)) = srv.accept().await {
        tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(s);
            match tokio::io::copy(&mut rd, &mut wr).await {
                Ok(n) => {
                    let _ = wr.shutdown().await;
                    tracing::info!("kcp echo: {peer}: {n} bytes echoed");
                }
                Err(e) => tracing::warn!("kcp echo: {peer}: {e}"),
            }
        });
    }
    Ok(ExitCode::SUCCESS)
}

async fn send(a: SendArgs, cfg: KcpConfig) -> anyhow::Result<ExitCode> {
    let net = TokioNet;
    let bind: SocketAddr = if a.to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let kcp = Kcp::new(a.knobs.conv, &cfg, Trace::disabled(), "kcp[send]");
    let opts = ArqOptions {
        idle_timeout: Duration::from_secs(a.timeout.max(1)),
        ..ArqOptions::default()
    };
    let (s, session) = arq::connect(&net, bind, a.to, kcp, opts)
        .await
        .with_context(|| format!("connecting to {}", a.to))?;
    let (mut rd, mut wr) = tokio::io::split(s);
    let total = a.bytes;
    let start = std::time::Instant::now();
    let writer = async move {
        let mut it = payload(total);
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            buf.extend(it.by_ref().take(16 * 1024));
            if buf.is_empty() {
                break;
            }
            wr.write_all(&buf).await?;
        }
        Ok::<_, std::io::Error>(wr)
    };
    let reader = async {
        let mut h = Sha256::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        while got < total {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            got += n as u64;
        }
        Ok::<_, std::io::Error>((got, hex::encode(h.finalize())))
    };
    let both = async { tokio::try_join!(writer, reader) };
    let outcome = tokio::time::timeout(Duration::from_secs(a.timeout), both).await;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let (wr, (got, sha)) = match outcome {
        Err(_) => {
            eprintln!("error: timed out after {}s", a.timeout);
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
        Ok(Ok(x)) => x,
    };
    println!(
        "bytes={got} seconds={secs:.3} goodput_mbps={:.2} sha256={sha}",
        got as f64 * 8.0 / secs / 1e6
    );
    let want = expected_sha256(total);
    if got != total || sha != want {
        let end = if session.is_finished() {
            match session.await {
                Ok(e) => format!(" (session ended: {e})"),
                Err(_) => String::new(),
            }
        } else {
            String::new()
        };
        eprintln!(
            "error: echo differs: {got} of {total} bytes came back, sha256 {sha}, sent {want}{end}"
        );
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    // Let the last acknowledgements go out before the socket closes.
    let mut wr = wr;
    let _ = wr.shutdown().await;
    drop(wr);
    drop(rd);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if let Ok(end) = session.await {
            if end != SessionEnd::Finished {
                tracing::info!("kcp send: session ended: {end}");
            }
        }
    })
    .await;
    Ok(ExitCode::SUCCESS)
}
