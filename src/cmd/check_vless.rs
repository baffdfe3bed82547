//! `tunnelbed check vless` (and `check fullcone`): argument parsing for the VLESS and
//! NAT-behaviour checkers of `tunnelbed_conformance`; the checkers live in the library.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_conformance::framework::{Case, Level};
use tunnelbed_conformance::vless_check::{self, cases, CheckConfig};
use tunnelbed_pong::wire::parse_uuid;
use tunnelbed_vless::wire::Version;

use super::check::{finish, CaseArgs};
use super::{runtime, usage, EXIT_OK};

/// `check vless` arguments.
#[derive(Args, Debug)]
pub struct CheckVlessArgs {
    /// The server under test: tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT[/PATH] or
    /// wss://HOST:PORT[/PATH].
    #[arg(long, value_name = "URL", required_unless_present = "list")]
    pub server: Option<String>,
    /// A user id the server allows, as a UUID (8-4-4-4-12 hex digits).
    #[arg(long, value_name = "UUID", required_unless_present = "list")]
    pub uuid: Option<String>,
    /// Highest version the server serves: 0 (v2ray's VLESS) or 1 (the seed's v1 with
    /// CRUMFURS); v1 cases are N/A with 0.
    #[arg(long, value_name = "0|1", default_value_t = 0)]
    pub version: u8,
    /// SHOULD cases count: a SHOULD violation is a FAIL instead of a WARN.
    #[arg(long)]
    pub strict: bool,
    /// How long any single wait for the server may take, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub wait: f64,
    /// Address the checker's destinations listen on and the server is asked to reach.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub target_ip: IpAddr,
    /// Trust the certificate(s) in this PEM file for tls:// and wss://.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Accept any certificate from the server.
    #[arg(long)]
    pub insecure: bool,
    /// Which cases, and where the results go.
    #[command(flatten)]
    pub run: CaseArgs,
}

/// Prints a case list: id, level, source, clause.
pub(super) fn list<B>(all: &[Case<B>]) -> ExitCode {
    let idw = all.iter().map(|c| c.id.len()).max().unwrap_or(2);
    println!("{:idw$}  {:6}  {:9}  CLAUSE", "ID", "LEVEL", "SOURCE");
    for c in all {
        let level = match c.level {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
        };
        println!("{:idw$}  {level:6}  {:9}  {}", c.id, c.source, c.clause);
    }
    ExitCode::from(EXIT_OK)
}

/// A `--wait` in seconds, in (0, 600].
pub(super) fn wait_secs(w: f64) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(w) {
        Ok(d) if !d.is_zero() && d <= Duration::from_secs(600) => Ok(d),
        _ => Err(format!("--wait {w}: expected seconds in (0, 600]")),
    }
}

/// Runs `check vless`.
pub(super) fn check_vless(a: CheckVlessArgs) -> anyhow::Result<ExitCode> {
    if a.run.list {
        return Ok(list(&cases::all()));
    }
    let (Some(server), Some(uuid)) = (a.server, a.uuid) else {
        return usage("--server and --uuid are required");
    };
    let server = match CarrierUrl::parse_among(&server, &CarrierKind::TCP_TLS_WS) {
        Ok(u) => u,
        Err(e) => return usage(format!("--server {e}")),
    };
    let uuid = match parse_uuid(&uuid) {
        Ok(id) => id,
        Err(e) => return usage(format!("--uuid {e}")),
    };
    let Some(version) = Version::from_byte(a.version) else {
        return usage(format!("--version {}: expected 0 or 1", a.version));
    };
    let chosen = match vless_check::Checker::select(&a.run.cases) {
        Ok(c) => c,
        Err(e) => return usage(format!("--case: {e}")),
    };
    let wait = match wait_secs(a.wait) {
        Ok(w) => w,
        Err(e) => return usage(e),
    };
    if let Err(e) = a.run.check_width() {
        return usage(e);
    }
    let tls_carrier = matches!(server.kind, CarrierKind::Tls | CarrierKind::Wss);
    if tls_carrier && a.ca.is_none() && !a.insecure {
        return usage(format!(
            "--server {server}: a TLS carrier needs --ca FILE or --insecure"
        ));
    }
    let tls = match &a.ca {
        Some(p) => ClientTls::trusting_pem_file(p)
            .with_context(|| format!("reading --ca {}", p.display()))?,
        None => ClientTls::insecure(),
    };
    let mut cfg = CheckConfig::new(server, tls, uuid);
    cfg.version = version;
    cfg.strict = a.strict;
    cfg.wait = wait;
    cfg.target_ip = a.target_ip;
    cfg.cases = chosen;
    let total = cfg.cases.len();
    let rt = runtime()?;
    let mut done = 0usize;
    let report = rt.block_on(vless_check::Checker::run_with(cfg, |c| {
        done += 1;
        eprintln!("[{done}/{total}] {} {}", c.id, c.status.name());
    }));
    finish(&report, "vless", &a.run)
}

/// `check fullcone` arguments.
#[derive(Args, Debug)]
pub struct CheckFullconeArgs {
    /// The SOCKS5 proxy with UDP ASSOCIATE under test (e.g. `tunnelbed vless client`).
    #[arg(long, value_name = "ADDR", required_unless_present = "list")]
    pub socks: Option<std::net::SocketAddr>,
    /// Outside addresses the checker's peers listen on: the first is contacted, the
    /// others are fresh (at least two; loopback, e.g. 127.0.0.2).
    #[arg(
        long = "peer-ip",
        value_name = "IP",
        value_delimiter = ',',
        default_value = "127.0.0.2,127.0.0.3,127.0.0.4"
    )]
    pub peer_ips: Vec<IpAddr>,
    /// The proxy's UDP mapping timeout in seconds: T5 (refresh) runs only when given.
    #[arg(long, value_name = "SECS")]
    pub mapping_timeout: Option<f64>,
    /// T6: leave a mapping idle this long, then check it still works (119 checks RFC
    /// 4787's floor: a mapping must live 120 s after its last outbound datagram); T6
    /// runs only when given.
    #[arg(long, value_name = "SECS")]
    pub idle: Option<f64>,
    /// How long any single exchange may take, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub wait: f64,
    /// Which cases, and where the results go.
    #[command(flatten)]
    pub run: CaseArgs,
}

/// Runs `check fullcone`.
pub(super) fn check_fullcone(a: CheckFullconeArgs) -> anyhow::Result<ExitCode> {
    use tunnelbed_conformance::fullcone_check::{self, app::bindable, Setup, Timers};
    if a.run.list {
        return Ok(list(&fullcone_check::cases::all()));
    }
    let chosen = match fullcone_check::select(&a.run.cases) {
        Ok(c) => c,
        Err(e) => return usage(format!("--case: {e}")),
    };
    let wait = match wait_secs(a.wait) {
        Ok(w) => w,
        Err(e) => return usage(e),
    };
    let secs = |v: Option<f64>, what: &str| -> Result<Option<Duration>, String> {
        v.map(|s| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
                .ok_or_else(|| format!("--{what} {s}: expected seconds in (0, 3600]"))
        })
        .transpose()
    };
    let timers = match (
        secs(a.mapping_timeout, "mapping-timeout"),
        secs(a.idle, "idle"),
    ) {
        (Ok(m), Ok(i)) => Timers {
            mapping_timeout: m,
            idle: i,
        },
        (Err(e), _) | (_, Err(e)) => return usage(e),
    };
    if a.peer_ips.len() < 2 {
        return usage("--peer-ip: at least two addresses".to_string());
    }
    if let Some(ip) = a.peer_ips.iter().find(|ip| !bindable(**ip)) {
        return usage(format!("--peer-ip {ip}: cannot bind a UDP socket there"));
    }
    if let Err(e) = a.run.check_width() {
        return usage(e);
    }
    let Some(socks) = a.socks else {
        return usage("--socks is required");
    };
    let setup = Setup {
        socks,
        peer_ips: a.peer_ips,
        wait,
    };
    let total = if chosen.is_empty() {
        fullcone_check::cases::all().len()
    } else {
        chosen.len()
    };
    let rt = runtime()?;
    let mut done = 0usize;
    let r = rt.block_on(fullcone_check::run(setup, timers, chosen, |c| {
        done += 1;
        eprintln!("[{done}/{total}] {} {}", c.id, c.status.name());
    }));
    let code = finish(&r.report, "fullcone", &a.run);
    match &r.behaviour {
        Some(b) => println!("NAT behaviour: {b}"),
        None => println!(
            "NAT behaviour: unknown ({})",
            r.survey.error.as_deref().unwrap_or("survey not run")
        ),
    }
    code
}
