//! `tunnelbed vless`: VLESS v0/v1 (seed 004) on real sockets.
//!
//! `vless server` accepts carriers (`tcp://`, `tls://`, `ws://`, `wss://`), checks each
//! request's user id (an unknown one is closed with nothing written and nothing dialed,
//! or handed to `--fallback`), relays TCP, and serves UDP (v1: full cone through the
//! user's CRUMFURS channel). `vless client` is a SOCKS5 server (CONNECT, UDP ASSOCIATE;
//! no authentication) that carries each request as a VLESS connection.
//!
//! Both print one banner line on stderr once bound (`vless server listening on URL`,
//! `vless client: SOCKS5 on ADDR`, with the real port when 0 was asked for), and exit 0
//! on Ctrl-C or SIGTERM. This module only parses arguments and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_netio::{TcpListen, TokioNet, Trace};
use tunnelbed_pong::wire::parse_uuid;
use tunnelbed_vless::cone::{ConeConfig, MappingRule};
use tunnelbed_vless::serve::{serve, ServerConfig};
use tunnelbed_vless::server::ServerSessionConfig;
use tunnelbed_vless::socks::{serve_socks, ClientConfig};
use tunnelbed_vless::wire::Version;

use super::pong::{listen_addr, server_tls_from, stop_signal};
use super::{runtime, usage, EXIT_OK};

/// VLESS roles on real sockets.
#[derive(Subcommand, Debug)]
pub enum VlessCmd {
    /// The server: accepts carriers, checks user ids, relays TCP and UDP (v1: full-cone
    /// UDP with CRUMFURS). Prints `vless server listening on URL` on stderr once bound.
    Server(ServerArgs),
    /// The client: a SOCKS5 server (CONNECT, UDP ASSOCIATE; no authentication) whose
    /// requests travel as VLESS connections. Prints `vless client: SOCKS5 on ADDR` on
    /// stderr once bound.
    Client(ClientArgs),
}

/// `vless server` arguments.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Carrier to listen on: tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT[/PATH] or
    /// wss://HOST:PORT[/PATH] (port 0 picks a free one; WebSocket accepts any path).
    #[arg(long, value_name = "URL")]
    pub listen: String,
    /// A user id allowed in, as a UUID (8-4-4-4-12 hex digits). Repeat for several.
    #[arg(long = "uuid", value_name = "UUID", required = true)]
    pub uuids: Vec<String>,
    /// Highest version served: 0 (v2ray's VLESS only) or 1 (also the seed's v1 with
    /// CRUMFURS full-cone UDP).
    #[arg(long, value_name = "0|1", default_value_t = 1)]
    pub version: u8,
    /// Hand rejected connections (with the bytes read so far) to this TCP address
    /// instead of closing them.
    #[arg(long, value_name = "ADDR")]
    pub fallback: Option<SocketAddr>,
    /// A v1 UDP mapping with no outbound datagram for this long is dropped, in seconds
    /// (RFC 4787 asks for at least 120; shorter only for tests).
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub udp_timeout: f64,
    /// A TCP relay that moved no byte either way for this long is ended, in seconds
    /// (v2ray's `connIdle`; a carrier to a crashed server otherwise stays open for good).
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub idle_timeout: f64,
    /// v1: where a datagram to a destination no socket knows (neither dialed nor heard
    /// from) leaves from. `independent` (default) reuses the user's socket, so every
    /// destination sees the same port: endpoint-independent mapping, a full cone on every
    /// `check fullcone` test. `seed` binds a new socket, as seed 004's rule 3 literally
    /// says; RFC 4787 calls that endpoint-dependent mapping (T1 and T4 fail), so it is
    /// kept only to compare with the seed's design. Both follow the seed's other rules.
    #[arg(long, value_name = "independent|seed", default_value = "independent", value_parser = ["independent", "seed"])]
    pub udp_mapping: String,
    /// Certificate chain (PEM) for tls:// and wss://.
    #[arg(
        long,
        value_name = "FILE",
        requires = "key",
        conflicts_with = "self_signed_cert_out"
    )]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// For tls:// and wss:// without --cert: make a self-signed certificate and write it
    /// as PEM to FILE, for clients to trust with --ca FILE.
    #[arg(long, value_name = "FILE")]
    pub self_signed_cert_out: Option<PathBuf>,
}

/// `vless client` arguments.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Where SOCKS5 clients connect, e.g. 127.0.0.1:1080 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub socks: SocketAddr,
    /// The server: tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT[/PATH] or
    /// wss://HOST:PORT[/PATH].
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Our user id, as a UUID (8-4-4-4-12 hex digits).
    #[arg(long, value_name = "UUID")]
    pub uuid: String,
    /// Version spoken: 0 (interoperable with v2ray) or 1 (full-cone UDP via CRUMFURS;
    /// needs a v1 server).
    #[arg(long, value_name = "0|1", default_value_t = 0)]
    pub version: u8,
    /// Trust the certificate(s) in this PEM file for tls:// and wss://.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Accept any certificate from the server (tests against throwaway servers only).
    #[arg(long)]
    pub insecure: bool,
    /// A TCP relay that moved no byte either way for this long is ended, in seconds
    /// (v2ray's `connIdle`; a carrier to a crashed server otherwise stays open for good).
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub idle_timeout: f64,
}

/// `--idle-timeout` as a duration (seconds, more than zero).
fn idle_timeout(secs: f64) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("--idle-timeout {secs}: expected seconds > 0")),
    }
}

fn version(v: u8, what: &str) -> Result<Version, String> {
    Version::from_byte(v).ok_or_else(|| format!("{what} {v}: expected 0 or 1"))
}

fn needs_tls(kind: CarrierKind) -> bool {
    matches!(kind, CarrierKind::Tls | CarrierKind::Wss)
}

/// Runs a `vless` subcommand.
pub(super) fn run(c: VlessCmd) -> anyhow::Result<ExitCode> {
    match c {
        VlessCmd::Server(a) => {
            let listen = match CarrierUrl::parse_among(&a.listen, &CarrierKind::TCP_TLS_WS) {
                Ok(u) => u,
                Err(e) => return usage(format!("--listen {e}")),
            };
            let mut users = Vec::new();
            for s in &a.uuids {
                match parse_uuid(s) {
                    Ok(id) => users.push(id),
                    Err(e) => return usage(format!("--uuid {e}")),
                }
            }
            let version = match version(a.version, "--version") {
                Ok(v) => v,
                Err(e) => return usage(e),
            };
            let udp_timeout = match Duration::try_from_secs_f64(a.udp_timeout) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    return usage(format!(
                        "--udp-timeout {}: expected seconds > 0",
                        a.udp_timeout
                    ))
                }
            };
            let idle = match idle_timeout(a.idle_timeout) {
                Ok(d) => d,
                Err(e) => return usage(e),
            };
            let Some(mapping) = MappingRule::from_name(&a.udp_mapping) else {
                return usage(format!(
                    "--udp-mapping {}: expected independent or seed",
                    a.udp_mapping
                ));
            };
            let has_cert = a.cert.is_some() || a.self_signed_cert_out.is_some();
            if needs_tls(listen.kind) && !has_cert {
                return usage(format!(
                    "--listen {listen}: a TLS carrier needs --cert FILE --key FILE or \
                     --self-signed-cert-out FILE"
                ));
            }
            if !needs_tls(listen.kind) && has_cert {
                return usage(format!(
                    "--listen {listen}: certificates are only for tls:// and wss://"
                ));
            }
            let cfg = ServerConfig {
                session: ServerSessionConfig {
                    users,
                    version,
                    ..ServerSessionConfig::default()
                },
                cone: ConeConfig {
                    timeout: udp_timeout,
                    mapping,
                    ..ConeConfig::default()
                },
                fallback: a.fallback,
                udp_idle: udp_timeout,
                idle_timeout: idle,
                ..ServerConfig::default()
            };
            runtime()?.block_on(server(a, listen, cfg))
        }
        VlessCmd::Client(a) => {
            let url = match CarrierUrl::parse_among(&a.server, &CarrierKind::TCP_TLS_WS) {
                Ok(u) => u,
                Err(e) => return usage(format!("--server {e}")),
            };
            let uuid = match parse_uuid(&a.uuid) {
                Ok(id) => id,
                Err(e) => return usage(format!("--uuid {e}")),
            };
            let version = match version(a.version, "--version") {
                Ok(v) => v,
                Err(e) => return usage(e),
            };
            if needs_tls(url.kind) && a.ca.is_none() && !a.insecure {
                return usage(format!(
                    "--server {url}: a TLS carrier needs --ca FILE (the server's certificate \
                     or its CA) or --insecure"
                ));
            }
            let tls = match &a.ca {
                Some(p) => ClientTls::trusting_pem_file(p)
                    .with_context(|| format!("reading --ca {}", p.display()))?,
                None => ClientTls::insecure(),
            };
            let mut cfg = ClientConfig::new(url, uuid, version);
            cfg.tls = Arc::new(tls);
            cfg.idle_timeout = match idle_timeout(a.idle_timeout) {
                Ok(d) => d,
                Err(e) => return usage(e),
            };
            runtime()?.block_on(client(a.socks, cfg))
        }
    }
}

async fn server(a: ServerArgs, listen: CarrierUrl, cfg: ServerConfig) -> anyhow::Result<ExitCode> {
    let tls = server_tls_from(
        a.cert.as_deref(),
        a.key.as_deref(),
        a.self_signed_cert_out.as_deref(),
        &listen,
    )?;
    let addr = listen_addr(&listen).await?;
    let net = TokioNet;
    let lsn = listen_deep(addr).with_context(|| format!("binding {addr}"))?;
    let bound = TcpListen::local_addr(&lsn)?;
    let mut shown = listen.clone();
    shown.port = bound.port();
    tracing::info!(
        "vless server: {} user(s), up to {}, udp timeout {:?}, udp mapping {}, fallback {:?}",
        cfg.session.users.len(),
        cfg.session.version,
        cfg.cone.timeout,
        cfg.cone.mapping.name(),
        cfg.fallback
    );
    eprintln!("vless server listening on {shown}");
    let kind = listen.kind;
    tokio::select! {
        r = serve(net, lsn, kind, tls, cfg, Trace::disabled(), "server".into()) => {
            r.with_context(|| format!("serving {shown}"))?;
            anyhow::bail!("{shown}: the listener stopped");
        }
        _ = stop_signal() => {
            tracing::info!("vless server: stopping");
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}

/// Accept queue of the server's and the client's listeners.
const BACKLOG: u32 = 4096;

/// A TCP listener with a [`BACKLOG`]-deep accept queue (the kernel caps it at
/// `net.core.somaxconn`), as `TokioNet::listen_tcp` would give but deeper: its 128 made
/// 200 connections opened at once through the client (`bench vless`) overflow the queue,
/// and each dropped SYN cost its application a 1 s retransmission.
fn listen_deep(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(BACKLOG)
}

async fn client(socks: SocketAddr, cfg: ClientConfig) -> anyhow::Result<ExitCode> {
    let net = TokioNet;
    let lsn = listen_deep(socks).with_context(|| format!("binding {socks}"))?;
    let bound = TcpListen::local_addr(&lsn)?;
    tracing::info!("vless client: server {}, {}", cfg.server, cfg.version);
    eprintln!("vless client: SOCKS5 on {bound}");
    tokio::select! {
        r = serve_socks(net, lsn, cfg, Trace::disabled()) => {
            r.with_context(|| format!("SOCKS5 on {bound}"))?;
            anyhow::bail!("SOCKS5 on {bound}: the listener stopped");
        }
        _ = stop_signal() => {
            tracing::info!("vless client: stopping");
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}
