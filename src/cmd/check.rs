//! `tunnelbed check`: conformance checkers that play spec-clause cases against a running
//! implementation and print a table (PASS / FAIL / WARN / N/A per case).
//!
//! `check pong` plays every case of `tunnelbed_conformance::pong_check` against any pong
//! remote; `check pong-go-mock` runs a remote with pong-go's known faults so that the
//! checker can be seen to find them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::CarrierUrl;
use tunnelbed_conformance::framework;
use tunnelbed_conformance::pong_check::{self, cases, faulty_remote, CheckConfig};

pub(super) use super::usage;
use super::{EXIT_FAILURE, EXIT_OK};

/// Checker commands.
#[derive(Subcommand, Debug)]
pub enum CheckCmd {
    /// Play the pong cases (seed 001 clauses, stable ids such as PONG-RST-REPEAT-ID)
    /// against a pong remote and print the table. Exit 0 when no case FAILs, 1 when one
    /// does, 2 on a bad command line.
    ///
    /// The checker starts its own destinations (TCP echo and friends, a UDP echo, a
    /// closed port) on --target-ip and asks the remote to dial them, so the remote must
    /// be able to reach that address (by default 127.0.0.1: the remote runs on this
    /// host). MUST cases FAIL on a violation; SHOULD cases only WARN unless --strict.
    Pong(CheckPongArgs),
    /// Run a pong remote with pong-go's known faults (small reads dropped, a finish
    /// ending the whole stream, len < 7 taken, long connect payloads dropped, long rst
    /// descriptions killing the connection) on plain TCP, to watch `check pong` find
    /// them. Prints `pong-go mock listening on tcp://ADDR` once bound; runs until
    /// Ctrl-C. A fixture for loopback only.
    PongGoMock(PongGoMockArgs),
    /// Play the VLESS cases (stable ids such as VLESS-AUTH-UNKNOWN-UUID-SILENT) against
    /// any VLESS server, ours or v2ray's, and print the table. Exit 0 when no case FAILs,
    /// 1 when one does, 2 on a bad command line.
    ///
    /// The checker starts its own destinations (TCP echo and friends, UDP peers) on
    /// --target-ip and asks the server to reach them. v1 cases (CRUMFURS, UMFURS) run
    /// with --version 1 and are N/A otherwise.
    Vless(super::check_vless::CheckVlessArgs),
    /// RFC 4787 NAT behaviour through any SOCKS5 UDP proxy: T1-T4 (mapping, filtering,
    /// true sources, replies from the mapped port), T5 refresh (--mapping-timeout) and
    /// T6 lifetime (--idle), with peers on 127.0.0.2.. it runs itself; prints the table
    /// and the NAT type (full cone, restricted, port-restricted, symmetric).
    Fullcone(super::check_vless::CheckFullconeArgs),
    /// Play the Candy cases (seed 003 and the notes; ids such as CANDY-AUTH-REPLAY) against
    /// a Candy server with fake clients; exit 0 when no case FAILs, 1 when one does.
    Candy(super::candy::CheckCandyArgs),
    /// Play the packetdrill-style scripts of seed 002 (stable ids such as
    /// TCP-ACK-AFTER-READ) against our TCP stack under a virtual clock and, with
    /// --kernel, against the Linux kernel through a TUN device in a network namespace
    /// the command makes (needs root). Exit 0 when no case FAILs.
    Tcpstack(super::tcpstack::CheckTcpstackArgs),
}

/// `check pong` arguments.
#[derive(Args, Debug)]
pub struct CheckPongArgs {
    /// The remote under test: tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT[/PATH],
    /// wss://HOST:PORT[/PATH], h2c://HOST:PORT[/PATH], h2://HOST:PORT[/PATH],
    /// http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH].
    #[arg(long, value_name = "URL", required_unless_present = "list")]
    pub remote: Option<String>,
    /// A client id the remote allows, as a UUID (8-4-4-4-12 hex digits).
    #[arg(
        long = "client-id",
        value_name = "UUID",
        required_unless_present = "list"
    )]
    pub client_id: Option<String>,
    /// SHOULD cases count: a SHOULD violation is a FAIL instead of a WARN.
    #[arg(long)]
    pub strict: bool,
    /// How long any single wait for the remote may take, in seconds; a silent remote
    /// fails each case after a few of these.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub wait: f64,
    /// Address the checker's destinations listen on and the remote is asked to dial.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub target_ip: IpAddr,
    /// Trust the certificate(s) in this PEM file for tls://, wss://, h2:// and https://.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Accept any certificate from the remote.
    #[arg(long)]
    pub insecure: bool,
    /// Which cases, and where the results go.
    #[command(flatten)]
    pub run: CaseArgs,
}

/// What every `check` subcommand takes the same way: which cases run, the case list,
/// JUnit XML and the table's width (one definition, so the checkers cannot drift).
#[derive(Args, Debug)]
pub struct CaseArgs {
    /// Run only these cases: an id, or a prefix ending before a dash (PONG-RST runs every
    /// PONG-RST-* case; VLESS-UDP, CANDY-AUTH, TCP-RST the same). Repeat or separate with
    /// commas. Default: every case.
    #[arg(long = "case", value_name = "ID", value_delimiter = ',')]
    pub cases: Vec<String>,
    /// List the cases (id, level, source, clause) and exit.
    #[arg(long)]
    pub list: bool,
    /// Also write the results as JUnit XML (one testcase per case) to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Width of the clause column in the table (at least 10).
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub clause_width: usize,
}

impl CaseArgs {
    /// The usage error for a clause column too narrow to read.
    pub(super) fn check_width(&self) -> Result<(), String> {
        if self.clause_width < 10 {
            return Err("--clause-width must be at least 10".into());
        }
        Ok(())
    }
}

/// `check pong-go-mock` arguments.
#[derive(Args, Debug)]
pub struct PongGoMockArgs {
    /// Where to listen (plain TCP carrier), e.g. 127.0.0.1:7000; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The one client id the mock accepts, as a UUID.
    #[arg(long = "client-id", value_name = "UUID")]
    pub client_id: String,
}

/// Runs a `check` subcommand.
pub(super) fn run(c: CheckCmd) -> anyhow::Result<ExitCode> {
    match c {
        CheckCmd::Pong(a) => check_pong(a),
        CheckCmd::PongGoMock(a) => pong_go_mock(a),
        CheckCmd::Vless(a) => super::check_vless::check_vless(a),
        CheckCmd::Fullcone(a) => super::check_vless::check_fullcone(a),
        CheckCmd::Candy(a) => super::candy::check(a),
        CheckCmd::Tcpstack(a) => super::tcpstack::check(a),
    }
}

fn list_cases() -> ExitCode {
    let all = cases::all();
    let idw = all.iter().map(|c| c.id.len()).max().unwrap_or(2);
    println!("{:idw$}  {:6}  {:9}  CLAUSE", "ID", "LEVEL", "SOURCE");
    for c in &all {
        println!(
            "{:idw$}  {:6}  {:9}  {}",
            c.id,
            c.level.name(),
            c.source,
            c.clause
        );
    }
    ExitCode::from(EXIT_OK)
}

fn check_pong(a: CheckPongArgs) -> anyhow::Result<ExitCode> {
    if a.run.list {
        return Ok(list_cases());
    }
    let (Some(remote), Some(client_id)) = (&a.remote, &a.client_id) else {
        return usage("--remote and --client-id are required");
    };
    let remote: CarrierUrl = match remote.parse() {
        Ok(u) => u,
        Err(e) => return usage(format!("--remote {e}")),
    };
    let client_id = match pong_check::parse_uuid(client_id) {
        Ok(id) => id,
        Err(e) => return usage(format!("--client-id {e}")),
    };
    let chosen = match pong_check::Checker::select(&a.run.cases) {
        Ok(c) => c,
        Err(e) => return usage(format!("--case: {e}")),
    };
    let wait = match Duration::try_from_secs_f64(a.wait) {
        Ok(w) if !w.is_zero() && w <= Duration::from_secs(600) => w,
        _ => return usage(format!("--wait {}: expected seconds in (0, 600]", a.wait)),
    };
    if let Err(e) = a.run.check_width() {
        return usage(e);
    }
    if remote.kind.uses_tls() && a.ca.is_none() && !a.insecure {
        return usage(format!(
            "--remote {remote}: a TLS carrier needs --ca FILE (the remote's certificate or \
             its CA) or --insecure"
        ));
    }
    let tls = match &a.ca {
        Some(p) => ClientTls::trusting_pem_file(p)
            .with_context(|| format!("reading --ca {}", p.display()))?,
        None => ClientTls::insecure(),
    };
    let mut cfg = CheckConfig::new(remote, tls, client_id);
    cfg.strict = a.strict;
    cfg.wait = wait;
    cfg.target_ip = a.target_ip;
    cfg.cases = chosen;
    let total = cfg.cases.len();
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let mut done = 0usize;
    let report = rt.block_on(pong_check::Checker::run_with(cfg, |c| {
        done += 1;
        eprintln!("[{done}/{total}] {} {}", c.id, c.status.name());
    }));
    finish(&report, "pong", &a.run)
}

/// Prints a checker's table, writes its JUnit XML when asked, and maps the verdict to
/// the exit code (shared by every `check` subcommand on the conformance framework).
pub(super) fn finish(
    report: &framework::Report,
    checker: &str,
    run: &CaseArgs,
) -> anyhow::Result<ExitCode> {
    print!("{}", report.table(run.clause_width));
    if let Some(p) = &run.junit {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(p, framework::to_junit(report, checker))
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("check {checker}: JUnit XML written to {}", p.display());
    }
    Ok(ExitCode::from(if report.passed() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

fn pong_go_mock(a: PongGoMockArgs) -> anyhow::Result<ExitCode> {
    let client_id = match pong_check::parse_uuid(&a.client_id) {
        Ok(id) => id,
        Err(e) => return usage(format!("--client-id {e}")),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        let lsn = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        let bound = lsn.local_addr()?;
        eprintln!("pong-go mock listening on tcp://{bound}");
        eprintln!(
            "expected FAILs from `tunnelbed check pong`: {}",
            faulty_remote::EXPECTED_FAILS.join(", ")
        );
        tokio::select! {
            _ = faulty_remote::serve(lsn, client_id) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(ExitCode::from(EXIT_OK))
    })
}
