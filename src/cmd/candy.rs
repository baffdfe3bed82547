//! `tunnelbed candy`: Candy's WebSocket VPN (seed 003) on real sockets.
//!
//! `candy server` accepts WebSocket clients and routes their packets; `candy client`
//! connects to a server, creates its TUN device, gives it the address (static, or from
//! the server's DHCP) and brings it up. Both print one line on stderr when ready
//! (`candy server listening on ws://ADDR:PORT` or `wss://`, `candy client up: NAME ADDR/PREFIX`) and
//! exit 0 on Ctrl-C or SIGTERM. This module only parses arguments and calls the library.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use rand::SeedableRng;
use tunnelbed_candy::client::{parse_vmac, random_vmac, AddrMode, ClientConfig};
use tunnelbed_candy::connect::{run_client, ConnectConfig, Status};
use tunnelbed_candy::serve::{serve, ServeConfig};
use tunnelbed_candy::server::ServerConfig;
use tunnelbed_candy::ws::{UnixClock, WsUrl};
use tunnelbed_carrier::tls::{ClientTls, ServerTls};
use tunnelbed_netio::{Ipv4Cidr, Net, TcpListen, TokioNet, Trace};

use super::pong::stop_signal;
use super::{EXIT_OK, EXIT_USAGE};

/// Candy roles on real sockets.
#[derive(Subcommand, Debug)]
pub enum CandyCmd {
    /// The server: routes packets between authenticated clients. Prints `candy server
    /// listening on ws://ADDR:PORT` on stderr once bound.
    Server(ServerArgs),
    /// The client: a TUN device whose packets travel through the server. Prints `candy
    /// client up: NAME ADDR/PREFIX` on stderr each time the address is set.
    Client(ClientArgs),
}

/// `candy server` arguments.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where to listen: ws://HOST:PORT or wss://HOST:PORT (with --tls-cert and
    /// --tls-key); port 0 picks a free one; any path is accepted.
    #[arg(long, value_name = "URL")]
    pub listen: String,
    /// The certificate chain (PEM) a wss:// server presents.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The shared password (empty by default, as Candy's).
    #[arg(long, default_value = "")]
    pub password: String,
    /// Address pool for DHCP clients, e.g. 10.77.0.0/24 (without it DHCP is refused).
    #[arg(long, value_name = "CIDR")]
    pub dhcp: Option<Ipv4Cidr>,
    /// AUTH/DHCP/VMAC timestamps further than this many seconds from now are replays.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub replay_window: u64,
    /// Most clients at once.
    #[arg(long, default_value_t = 1024)]
    pub max_clients: usize,
    /// Deliver FORWARD packets whatever their source (Candy 6.0.3 and later); by default
    /// a packet whose source is not the sender's address is dropped.
    #[arg(long)]
    pub no_source_check: bool,
}

/// `candy client` arguments.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The server: ws://HOST:PORT[/PATH] or wss://HOST:PORT[/PATH] (with --tls-ca or
    /// --insecure).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// For wss://: trust the certificate(s) in this PEM file (the server's own or its CA).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// For wss://: accept any server certificate (tests against throwaway servers only).
    #[arg(long)]
    pub insecure: bool,
    /// The shared password.
    #[arg(long, default_value = "")]
    pub password: String,
    /// The TUN device to create (at most 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub tun: String,
    /// A static address, e.g. 10.77.0.11/24.
    #[arg(
        long,
        value_name = "CIDR",
        conflicts_with = "dhcp",
        required_unless_present = "dhcp"
    )]
    pub ip: Option<Ipv4Cidr>,
    /// Ask the server for an address (optionally the one to ask for first).
    #[arg(long, value_name = "CIDR", num_args = 0..=1, default_missing_value = "0.0.0.0/0")]
    pub dhcp: Option<Ipv4Cidr>,
    /// The vmac: 16 characters (Candy's form) or 32 hex digits; random when absent.
    #[arg(long, value_name = "HEX")]
    pub vmac: Option<String>,
    /// The TUN device's MTU (Candy's server drops messages over 1500 bytes).
    #[arg(long, default_value_t = 1400)]
    pub mtu: usize,
}

fn usage(e: String) -> anyhow::Result<ExitCode> {
    eprintln!("error: {e}");
    Ok(ExitCode::from(EXIT_USAGE))
}

fn clock() -> UnixClock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the tokio runtime")
}

/// Runs a `candy` subcommand.
pub(super) fn run(c: CandyCmd) -> anyhow::Result<ExitCode> {
    match c {
        CandyCmd::Server(a) => {
            let url = match WsUrl::parse(&a.listen) {
                Ok(u) => u,
                Err(e) => return usage(format!("--listen {e}")),
            };
            if let Some(p) = a.dhcp {
                if let Err(e) = tunnelbed_candy::pool::Pool::new(p) {
                    return usage(format!("--dhcp {e}"));
                }
            }
            let tls = match (url.tls, &a.tls_cert, &a.tls_key) {
                (true, Some(cert), Some(key)) => Some(Arc::new(
                    ServerTls::from_pem_files(cert, key).with_context(|| {
                        format!(
                            "loading the certificate {} and key {}",
                            cert.display(),
                            key.display()
                        )
                    })?,
                )),
                (true, _, _) => {
                    return usage("--listen wss:// needs --tls-cert and --tls-key".into())
                }
                (false, None, None) => None,
                (false, _, _) => {
                    return usage("--tls-cert/--tls-key are only for a wss:// listener".into())
                }
            };
            let cfg = ServeConfig {
                server: ServerConfig {
                    password: a.password.into_bytes(),
                    pool: a.dhcp,
                    replay_window: Duration::from_secs(a.replay_window),
                    max_clients: a.max_clients,
                    check_source: !a.no_source_check,
                    seed: rand_chacha::ChaCha8Rng::from_entropy().get_seed()[0].into(),
                    ..ServerConfig::default()
                },
                clock: clock(),
                handshake_timeout: Duration::from_secs(10),
                accept_unmasked: false,
                tls,
            };
            runtime()?.block_on(server(url, cfg))
        }
        CandyCmd::Client(a) => {
            let url = match WsUrl::parse(&a.server) {
                Ok(u) => u,
                Err(e) => return usage(format!("--server {e}")),
            };
            let addr = match (a.ip, a.dhcp) {
                (Some(ip), _) => AddrMode::Static(ip),
                (None, Some(want)) if want.addr.is_unspecified() => AddrMode::Dhcp(None),
                (None, want) => AddrMode::Dhcp(want),
            };
            let mut rng = rand_chacha::ChaCha8Rng::from_entropy();
            let vmac = match &a.vmac {
                Some(v) => match parse_vmac(v) {
                    Some(v) => v,
                    None => {
                        return usage(format!(
                            "--vmac {v:?}: expected 16 characters or 32 hex digits"
                        ))
                    }
                },
                None => random_vmac(&mut rng),
            };
            if !(68..=65_535).contains(&a.mtu) {
                return usage(format!("--mtu {}: expected 68..=65535", a.mtu));
            }
            let tls = match (url.tls, &a.tls_ca, a.insecure) {
                (true, Some(ca), _) => Some(Arc::new(
                    ClientTls::trusting_pem_file(ca)
                        .with_context(|| format!("loading {}", ca.display()))?,
                )),
                (true, None, true) => Some(Arc::new(ClientTls::insecure())),
                (true, None, false) => {
                    return usage("--server wss:// needs --tls-ca FILE or --insecure".into())
                }
                (false, None, false) => None,
                (false, _, _) => return usage("--tls-ca/--insecure are only for wss://".into()),
            };
            let mut client = ClientConfig::new(a.password.as_bytes(), vmac, addr);
            client.seed = rand::Rng::gen(&mut rng);
            let cfg = ConnectConfig {
                client,
                server: url,
                link_name: a.tun,
                mtu: a.mtu,
                clock: clock(),
                connect_timeout: Duration::from_secs(10),
                unmasked_seed: None,
                tls,
            };
            runtime()?.block_on(client_role(cfg))
        }
    }
}

async fn server(url: WsUrl, cfg: ServeConfig) -> anyhow::Result<ExitCode> {
    let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .with_context(|| format!("resolving {}", url.host))?
        .next()
        .with_context(|| format!("{}: no address", url.host))?;
    let lsn = TokioNet
        .listen_tcp(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = TcpListen::local_addr(&lsn)?;
    let shown = WsUrl {
        port: bound.port(),
        ..url
    };
    eprintln!("candy server listening on {}", shown.to_url());
    tokio::select! {
        r = serve::<TokioNet>(lsn, cfg, Trace::disabled()) => {
            r.with_context(|| format!("serving {}", shown.to_url()))?;
            anyhow::bail!("the listener stopped");
        }
        _ = stop_signal() => Ok(ExitCode::from(EXIT_OK)),
    }
}

async fn client_role(cfg: ConnectConfig) -> anyhow::Result<ExitCode> {
    let name = cfg.link_name.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let banner = tokio::spawn(async move {
        while let Some(s) = rx.recv().await {
            match s {
                Status::Up(c) => eprintln!("candy client up: {name} {c}"),
                Status::Down => eprintln!("candy client: connection lost, reconnecting"),
                Status::Joined(c) => tracing::info!("candy client joined as {c}"),
            }
        }
    });
    let r = tokio::select! {
        r = run_client(TokioNet, TokioNet, cfg, Trace::disabled(), tx) => {
            r.context("candy client")?;
            Ok(ExitCode::from(EXIT_OK))
        }
        _ = stop_signal() => Ok(ExitCode::from(EXIT_OK)),
    };
    banner.abort();
    r
}

/// `check candy` arguments.
#[derive(Args, Debug)]
pub struct CheckCandyArgs {
    /// The server under test: ws://HOST:PORT or wss://HOST:PORT (with --tls-ca or
    /// --insecure).
    #[arg(long, value_name = "URL", required_unless_present = "list")]
    pub server: Option<String>,
    /// For wss://: trust the certificate(s) in this PEM file (the server's own or its CA).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// For wss://: accept any server certificate (throwaway servers only).
    #[arg(long)]
    pub insecure: bool,
    /// Its password.
    #[arg(long, default_value = "")]
    pub password: String,
    /// Where the checker's static addresses come from (it counts down from the top).
    #[arg(long, value_name = "CIDR", default_value = "10.77.0.0/24")]
    pub net: Ipv4Cidr,
    /// Seconds each wait may take.
    #[arg(long, default_value_t = 3.0)]
    pub wait: f64,
    /// SHOULD cases count: a failure FAILs instead of WARNs.
    #[arg(long)]
    pub strict: bool,
    /// Write the results as a Markdown table here (for `reports/`).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<std::path::PathBuf>,
    /// Which cases, and where the results go.
    #[command(flatten)]
    pub run: super::check::CaseArgs,
}

/// Runs `check candy`.
pub(super) fn check(a: CheckCandyArgs) -> anyhow::Result<ExitCode> {
    use tunnelbed_conformance::candy_check::{self, cases, CheckConfig};
    if a.run.list {
        return Ok(super::check_vless::list(&cases::all()));
    }
    let Some(server) = &a.server else {
        return usage("--server is required".into());
    };
    let url = match WsUrl::parse(server) {
        Ok(u) => u,
        Err(e) => return usage(format!("--server {e}")),
    };
    let chosen = match candy_check::Checker::select(&a.run.cases) {
        Ok(c) => c,
        Err(e) => return usage(format!("--case: {e}")),
    };
    let wait = match super::check_vless::wait_secs(a.wait) {
        Ok(w) => w,
        Err(e) => return usage(e),
    };
    if let Err(e) = a.run.check_width() {
        return usage(e);
    }
    let tls = match (url.tls, &a.tls_ca, a.insecure) {
        (true, Some(ca), _) => Some(Arc::new(
            ClientTls::trusting_pem_file(ca)
                .with_context(|| format!("loading {}", ca.display()))?,
        )),
        (true, None, true) => Some(Arc::new(ClientTls::insecure())),
        (true, None, false) => {
            return usage("--server wss:// needs --tls-ca FILE or --insecure".into())
        }
        (false, None, false) => None,
        (false, _, _) => return usage("--tls-ca/--insecure are only for wss://".into()),
    };
    let mut cfg = CheckConfig::new(url, a.password.as_bytes());
    cfg.tls = tls;
    cfg.net = a.net;
    cfg.wait = wait;
    cfg.strict = a.strict;
    cfg.cases = chosen;
    let total = cfg.cases.len();
    let mut done = 0usize;
    let report = runtime()?.block_on(candy_check::Checker::run_with(cfg, |c| {
        done += 1;
        eprintln!("[{done}/{total}] {} {}", c.id, c.status.name());
    }));
    let code = super::check::finish(&report, "candy", &a.run)?;
    if let Some(p) = &a.markdown {
        let md = tunnelbed_conformance::framework::markdown_table(&report.cases, "Candy");
        std::fs::write(p, md).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(code)
}
