//! `tunnelbed tcpstack serve`: vproxy's user-space TCP stack (seed 002) on a TUN device.
//!
//! Attaches to the TUN device `--tun` (creating it when missing; `--host-addr` gives the
//! kernel's side an address, which routes its prefix into the device, and brings the
//! link up), runs our stack over it and serves on `--addr`:`--port` with one of
//! `--echo`, `--http-source` (`GET /bytes/N`, the bytes of `tunnelbed http-source`) or
//! `--forward HOST:PORT` (each connection relayed to a target through kernel TCP).
//! Prints `tcpstack serve listening on IP:PORT via NAME` on stderr once ready, and exits
//! 0 on Ctrl-C or SIGTERM. This module only parses arguments and calls the library.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use tunnelbed_conformance::tcpstack_check as tcheck;
use tunnelbed_netio::{IpLinkConfig, Ipv4Cidr};
use tunnelbed_tcpstack::serve::{start, ServeConfig, Service};

use super::observe::ObserveArgs;
use super::pong::stop_signal;
use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// The user-space TCP stack on real devices.
#[derive(Subcommand, Debug)]
pub enum TcpstackCmd {
    /// Serve on a TUN device with our TCP stack: echo, bulk HTTP, or a forwarder.
    Serve(ServeArgs),
}

/// `tcpstack serve` arguments.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("service").required(true).args(["echo", "http_source", "forward"])))]
pub struct ServeArgs {
    /// The TUN device to attach to (created when missing, removed on exit if we made it).
    #[arg(long, value_name = "NAME")]
    pub tun: String,
    /// The address our stack answers on (the kernel must route it into the device).
    #[arg(long, value_name = "IP")]
    pub addr: Ipv4Addr,
    /// The port our stack listens on.
    #[arg(long, value_name = "N")]
    pub port: u16,
    /// Echo every byte back.
    #[arg(long)]
    pub echo: bool,
    /// Answer `GET /bytes/N` with N bytes of `tunnelbed http-source`'s pattern.
    #[arg(long)]
    pub http_source: bool,
    /// Relay every connection to HOST:PORT through the kernel's TCP.
    #[arg(long, value_name = "HOST:PORT")]
    pub forward: Option<String>,
    /// Give the kernel's side of the device this address and prefix and bring it up
    /// (without it the device is left as the operator configured it).
    #[arg(long, value_name = "CIDR")]
    pub host_addr: Option<Ipv4Cidr>,
    /// The device's MTU.
    #[arg(long, default_value_t = 1500)]
    pub mtu: usize,
    /// The listener's accept queue.
    #[arg(long, default_value_t = 128)]
    pub backlog: usize,
    /// Largest N `--http-source` serves.
    #[arg(long, default_value_t = 1 << 34)]
    pub max_bytes: u64,
    /// Seed of the initial sequence numbers (default: drawn from the clock and pid).
    #[arg(long)]
    pub isn_seed: Option<u64>,
    /// Drop a connection after this many seconds without progress.
    #[arg(long, default_value_t = 120.0)]
    pub idle_timeout: f64,
    /// `--pcap` records every IPv4 packet on the TUN device as it is (both ways, our
    /// stack's segments as sent); `--trace` records the stack's state transitions and
    /// rule firings (retransmissions, challenge ACKs).
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// Runs a `tcpstack` subcommand.
pub(super) fn run(c: TcpstackCmd) -> anyhow::Result<ExitCode> {
    match c {
        TcpstackCmd::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let service = if a.echo {
        Service::Echo
    } else if a.http_source {
        Service::HttpSource {
            max_bytes: a.max_bytes,
        }
    } else {
        let f = a.forward.clone().unwrap_or_default();
        let Some((host, port)) = f.rsplit_once(':') else {
            eprintln!("error: --forward {f}: expected HOST:PORT");
            return Ok(ExitCode::from(EXIT_USAGE));
        };
        let Ok(port) = port.parse() else {
            eprintln!("error: --forward {f}: bad port");
            return Ok(ExitCode::from(EXIT_USAGE));
        };
        Service::Forward {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        }
    };
    if !(a.idle_timeout.is_finite() && a.idle_timeout > 0.0) {
        eprintln!("error: --idle-timeout must be a positive number of seconds");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let mut link = IpLinkConfig::new(&a.tun, a.host_addr);
    link.mtu = a.mtu;
    if let Err(e) = link.validate() {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let listen = SocketAddrV4::new(a.addr, a.port);
    let mut cfg = ServeConfig::new(link, listen, service);
    cfg.backlog = a.backlog;
    cfg.idle = Duration::from_secs_f64(a.idle_timeout);
    // Real networks want unpredictable ISNs; the simulator seeds them instead.
    cfg.stack.isn_seed = a.isn_seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (u64::from(std::process::id()) << 32)
    });
    // Segments must fit the device: 40 bytes of IPv4 and TCP headers.
    cfg.stack.mss = cfg.stack.mss.min(a.mtu.saturating_sub(40) as u16);
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        let obs = a.observe.start("tcpstack-serve");
        let server = start(obs.net(), cfg, obs.trace())
            .await
            .with_context(|| format!("starting on TUN {}", a.tun))?;
        eprintln!("tcpstack serve listening on {listen} via {}", a.tun);
        let result = tokio::select! {
            biased;
            _ = stop_signal() => Ok(ExitCode::from(EXIT_OK)),
            r = server.run() => match r {
                Ok(()) => Err(anyhow::anyhow!("TUN {}: the stack stopped", a.tun)),
                Err(e) => Err(anyhow::Error::new(e).context(format!("serving on TUN {}", a.tun))),
            },
        };
        obs.finish()?;
        result
    })
}

/// `check tcpstack` arguments.
#[derive(Args, Debug)]
pub struct CheckTcpstackArgs {
    /// Also run every script against the Linux kernel's TCP through a TUN device in a
    /// network namespace made for the run (needs root and /dev/net/tun).
    #[arg(long)]
    pub kernel: bool,
    /// Write the side-by-side Markdown table (ours and the kernel's) to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// SHOULD cases count: a SHOULD violation is a FAIL instead of a WARN.
    #[arg(long)]
    pub strict: bool,
    /// Which cases, and where the results go (with --kernel, the kernel's JUnit XML goes
    /// to the --junit FILE with `-kernel` before the extension).
    #[command(flatten)]
    pub run: super::check::CaseArgs,
}

fn write_file(p: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
}

/// Runs `check tcpstack`.
pub(super) fn check(a: CheckTcpstackArgs) -> anyhow::Result<ExitCode> {
    if a.run.list {
        for c in tcheck::cases::all() {
            let k = match c.body.kernel {
                tcheck::cases::Kernel::Holds => "kernel holds".to_string(),
                tcheck::cases::Kernel::Differs(w) => format!("kernel differs: {w}"),
            };
            println!(
                "{:34} {:6} {:9} {} [{k}]",
                c.id,
                c.level.name(),
                c.source,
                c.clause
            );
        }
        return Ok(ExitCode::from(EXIT_OK));
    }
    let cases = match tcheck::select(&a.run.cases) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: --case: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    if let Err(e) = a.run.check_width() {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let cfg = tcheck::CheckConfig {
        cases,
        strict: a.strict,
        kernel: a.kernel,
        ..Default::default()
    };
    let run = tcheck::run(&cfg, |who, c| {
        eprintln!("[{who}] {} {}", c.id, c.status.name())
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    println!("our stack:");
    print!("{}", run.ours.table(a.run.clause_width));
    if let Some(k) = &run.kernel {
        println!("\nthe kernel:");
        print!("{}", k.table(a.run.clause_width));
    }
    if let Some(p) = &a.run.junit {
        write_file(p, &tcheck::to_junit(&run.ours))?;
        if let Some(k) = &run.kernel {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("junit");
            let ext = p.extension().and_then(|s| s.to_str()).unwrap_or("xml");
            write_file(
                &p.with_file_name(format!("{stem}-kernel.{ext}")),
                &tcheck::to_junit(k),
            )?;
        }
    }
    if let Some(p) = &a.markdown {
        write_file(p, &tcheck::markdown(&run))?;
    }
    Ok(ExitCode::from(if run.passed() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}
