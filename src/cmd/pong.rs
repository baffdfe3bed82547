//! `tunnelbed pong`: the pong multiplexed proxy (seed 001) on real sockets.
//!
//! `pong remote` accepts carriers (`tcp://`, `tls://`, `ws://`, `wss://`, `h2c://`,
//! `h2://`, `http://`, `https://`), checks each
//! connection's client id against the allow list (an unknown id is closed with nothing
//! written back) and dials the destination of every stream (TCP for connect streams,
//! UDP for relay streams). `pong local` is a SOCKS5 server (no authentication; CONNECT
//! and UDP ASSOCIATE) that carries each request as a pong stream over a pool of carrier
//! connections to one remote (a new carrier when every open one has its maximum of live
//! streams or is too old; idle carriers close; a dead carrier is replaced by the next
//! request).
//!
//! Both print one banner line on stderr once bound (`pong remote listening on URL`,
//! `pong local: SOCKS5 on ADDR`, with the real port when 0 was asked for), log through
//! `tracing`, and exit 0 on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tunnelbed_carrier::http3::{H3Listener, QuicSeed as H3Seed};
use tunnelbed_carrier::tls::{ClientTls, ServerTls};
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, TcpListen};
use tunnelbed_pong::local::serve_socks;
use tunnelbed_pong::pool::{Pool, PoolConfig};
use tunnelbed_pong::remote::{serve, serve_h3, RemoteConfig};
use tunnelbed_pong::wire::parse_uuid;

use super::observe::ObserveArgs;
use super::{runtime, usage, EXIT_OK};

/// pong roles on real sockets.
#[derive(Subcommand, Debug)]
pub enum PongCmd {
    /// The remote: accepts carriers from locals whose client id is allowed and dials
    /// each stream's destination. Prints `pong remote listening on URL` on stderr once
    /// bound.
    Remote(RemoteArgs),
    /// The local: a SOCKS5 server (CONNECT, UDP ASSOCIATE; no authentication) whose
    /// requests travel as pong streams to one remote. Prints `pong local: SOCKS5 on ADDR`
    /// on stderr once bound.
    Local(LocalArgs),
}

/// `pong remote` arguments.
#[derive(Args, Debug)]
pub struct RemoteArgs {
    /// Carrier to listen on: tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT[/PATH],
    /// wss://HOST:PORT[/PATH], h2c://HOST:PORT[/PATH], h2://HOST:PORT[/PATH],
    /// h3://HOST:PORT[/PATH] (QUIC: a UDP port), http://HOST[:PORT][/PATH] or
    /// https://HOST[:PORT][/PATH] (port 0 picks a free one; WebSocket and HTTP listeners
    /// accept any path).
    #[arg(long, value_name = "URL")]
    pub listen: String,
    /// A client id allowed to connect, as a UUID (8-4-4-4-12 hex digits). Repeat for
    /// several.
    #[arg(long = "client-id", value_name = "UUID", required = true)]
    pub client_ids: Vec<String>,
    /// Certificate chain (PEM) for tls://, wss://, h2:// and https://.
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
    /// For tls://, wss://, h2:// and https:// without --cert: make a self-signed certificate for the
    /// listen host (and localhost, 127.0.0.1, ::1) and write it as PEM to FILE, for
    /// locals to trust with --ca FILE.
    #[arg(long, value_name = "FILE")]
    pub self_signed_cert_out: Option<PathBuf>,
    /// How long dialing a stream's destination may take before the stream is answered
    /// with rst 10 (dial timeout), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub dial_timeout: f64,
    /// A connect stream with no byte either way for this long, while its carrier too
    /// delivered nothing, fails (rst 6 to the local, RST to the target), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub idle_timeout: f64,
    /// How long bytes written to a destination may stay unacknowledged by its TCP before
    /// the stream fails (TCP_USER_TIMEOUT; catches a destination whose kernel dropped
    /// the connection after an accept-queue overflow), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub target_ack_timeout: f64,
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// `pong local` arguments.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Where SOCKS5 clients connect, e.g. 127.0.0.1:1080 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub socks: SocketAddr,
    /// The remote: tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT[/PATH],
    /// wss://HOST:PORT[/PATH], h2c://HOST:PORT[/PATH], h2://HOST:PORT[/PATH],
    /// http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH].
    #[arg(long, value_name = "URL")]
    pub remote: String,
    /// Our client id, as a UUID (8-4-4-4-12 hex digits).
    #[arg(long = "client-id", value_name = "UUID")]
    pub client_id: String,
    /// Trust the certificate(s) in this PEM file for tls://, wss://, h2:// and https:// (a CA, or the
    /// remote's self-signed certificate).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Accept any certificate from the remote (tests against throwaway remotes only).
    #[arg(long)]
    pub insecure: bool,
    /// Live streams one carrier takes before another carrier is opened (pong-go: 30).
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub max_streams_per_conn: usize,
    /// A carrier with no live stream for this long is closed, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub idle_close: f64,
    /// A carrier this old takes no new streams (it closes after its last one), in
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600.0)]
    pub max_age: f64,
    /// A SOCKS5 stream with no byte either way for this long fails (RST to the
    /// application, rst 6 to the remote), in seconds: the bound that ends a download
    /// whose remote host crashed (a dead remote sends nothing, not even a reset). Not
    /// --idle-close, which closes carriers that carry no stream.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub idle_timeout: f64,
    #[command(flatten)]
    pub observe: ObserveArgs,
}

fn parse_url(s: &str, what: &str) -> Result<CarrierUrl, String> {
    s.parse::<CarrierUrl>().map_err(|e| format!("{what} {e}"))
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("{what} {v}: expected seconds >= 0"))
}

fn needs_tls(kind: CarrierKind) -> bool {
    kind.uses_tls()
}

/// Runs a `pong` subcommand.
pub(super) fn run(c: PongCmd) -> anyhow::Result<ExitCode> {
    if matches!(c, PongCmd::Remote(_) | PongCmd::Local(_)) {
        crate::heap::keep_freed_heap();
    }
    match c {
        PongCmd::Remote(a) => {
            let listen = match parse_url(&a.listen, "--listen") {
                Ok(u) => u,
                Err(e) => return usage(e),
            };
            let mut allowed = Vec::new();
            for s in &a.client_ids {
                match parse_uuid(s) {
                    Ok(id) => allowed.push(id),
                    Err(e) => return usage(format!("--client-id {e}")),
                }
            }
            let dial_timeout = match secs(a.dial_timeout, "--dial-timeout") {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => return usage("--dial-timeout must be more than 0"),
                Err(e) => return usage(e),
            };
            let idle_timeout = match secs(a.idle_timeout, "--idle-timeout") {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => return usage("--idle-timeout must be more than 0"),
                Err(e) => return usage(e),
            };
            let target_ack_timeout = match secs(a.target_ack_timeout, "--target-ack-timeout") {
                Ok(d) if d >= Duration::from_millis(1) => d,
                Ok(_) => return usage("--target-ack-timeout must be at least 0.001"),
                Err(e) => return usage(e),
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
                    "--listen {listen}: certificates are only for tls://, wss://, h2://, h3:// and https://"
                ));
            }
            let cfg = RemoteConfig {
                allowed,
                dial_timeout,
                idle_timeout,
                target_ack_timeout,
                ..RemoteConfig::default()
            };
            runtime()?.block_on(remote(a, listen, cfg))
        }
        PongCmd::Local(a) => {
            let url = match parse_url(&a.remote, "--remote") {
                Ok(u) => u,
                Err(e) => return usage(e),
            };
            let client_id = match parse_uuid(&a.client_id) {
                Ok(id) => id,
                Err(e) => return usage(format!("--client-id {e}")),
            };
            if a.max_streams_per_conn == 0 {
                return usage("--max-streams-per-conn must be at least 1");
            }
            let (idle_close, max_age) = match (
                secs(a.idle_close, "--idle-close"),
                secs(a.max_age, "--max-age"),
            ) {
                (Ok(i), Ok(m)) => (i, m),
                (Err(e), _) | (_, Err(e)) => return usage(e),
            };
            let idle_timeout = match secs(a.idle_timeout, "--idle-timeout") {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => return usage("--idle-timeout must be more than 0"),
                Err(e) => return usage(e),
            };
            if needs_tls(url.kind) && a.ca.is_none() && !a.insecure {
                return usage(format!(
                    "--remote {url}: a TLS carrier needs --ca FILE (the remote's certificate \
                     or its CA) or --insecure"
                ));
            }
            let tls = match &a.ca {
                Some(p) => ClientTls::trusting_pem_file(p)
                    .with_context(|| format!("reading --ca {}", p.display()))?,
                // Without TLS the client settings are never used.
                None => ClientTls::insecure(),
            };
            let mut cfg = PoolConfig::new(url, client_id);
            cfg.max_streams_per_conn = a.max_streams_per_conn;
            cfg.idle_close = idle_close;
            cfg.max_age = max_age;
            cfg.idle_timeout = idle_timeout;
            runtime()?.block_on(local(a.socks, cfg, Arc::new(tls), a.observe))
        }
    }
}

/// Resolves to the first address of `host:port`.
pub(super) async fn listen_addr(url: &CarrierUrl) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .with_context(|| format!("resolving {}", url.host))?
        .next()
        .with_context(|| format!("{}: no address", url.host))
}

pub(super) use super::observe::stop_signal;

/// The certificate names of a self-signed certificate for `host`.
fn cert_names(host: &str) -> Vec<String> {
    let mut names = Vec::new();
    let unspecified = host
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.is_unspecified())
        .unwrap_or(false);
    if !unspecified {
        names.push(host.to_string());
    }
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    names
}

fn server_tls(a: &RemoteArgs, listen: &CarrierUrl) -> anyhow::Result<Option<Arc<ServerTls>>> {
    server_tls_from(
        a.cert.as_deref(),
        a.key.as_deref(),
        a.self_signed_cert_out.as_deref(),
        listen,
    )
}

/// TLS settings of a listener from `--cert`/`--key` or `--self-signed-cert-out` (none
/// when neither is given); shared by the server roles of every protocol.
pub(super) fn server_tls_from(
    cert: Option<&Path>,
    key: Option<&Path>,
    self_signed_out: Option<&Path>,
    listen: &CarrierUrl,
) -> anyhow::Result<Option<Arc<ServerTls>>> {
    if let (Some(cert), Some(key)) = (cert, key) {
        let t = ServerTls::from_pem_files(cert, key).with_context(|| {
            format!(
                "loading the certificate {} and key {}",
                cert.display(),
                key.display()
            )
        })?;
        return Ok(Some(Arc::new(t)));
    }
    if let Some(out) = self_signed_out {
        let names = cert_names(&listen.host);
        let t = ServerTls::self_signed(&names).context("making a self-signed certificate")?;
        write_pem(out, &t.cert_pem())?;
        tracing::info!(
            "self-signed certificate for {} written to {}",
            names.join(", "),
            out.display()
        );
        return Ok(Some(Arc::new(t)));
    }
    Ok(None)
}

/// Writes `pem` to `path` completely before anyone is told to read it (a temporary file
/// renamed into place).
fn write_pem(path: &Path, pem: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, pem).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

async fn remote(a: RemoteArgs, listen: CarrierUrl, cfg: RemoteConfig) -> anyhow::Result<ExitCode> {
    let tls = server_tls(&a, &listen)?;
    let addr = listen_addr(&listen).await?;
    let obs = a.observe.start("pong-remote");
    let net = obs.net();
    let cfg = Arc::new(cfg);
    let mut shown = listen.clone();
    let server: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>> =
        if listen.kind.uses_udp() {
            let Some(tls) = tls.as_deref() else {
                anyhow::bail!("--listen {listen}: h3:// needs a certificate");
            };
            let seed = H3Seed(net.quic_seed());
            let lsn = H3Listener::bind(&net, addr, tls, &seed)
                .await
                .with_context(|| format!("binding UDP {addr}"))?;
            shown.port = lsn.local_addr()?.port();
            Box::pin(serve_h3(
                net,
                lsn,
                cfg.clone(),
                obs.trace(),
                "remote".into(),
            ))
        } else {
            let lsn = net
                .listen_tcp(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            shown.port = TcpListen::local_addr(&lsn)?.port();
            Box::pin(serve(
                net,
                lsn,
                listen.kind,
                tls,
                cfg.clone(),
                obs.trace(),
                "remote".into(),
            ))
        };
    tracing::info!(
        "pong remote: {} client id(s) allowed, dial timeout {:?}, idle timeout {:?}, target ack timeout {:?}",
        cfg.allowed.len(),
        cfg.dial_timeout,
        cfg.idle_timeout,
        cfg.target_ack_timeout
    );
    eprintln!("pong remote listening on {shown}");
    let give_back = tokio::spawn(crate::heap::give_back_freed_heap());
    let result = tokio::select! {
        biased;
        _ = stop_signal() => {
            tracing::info!("pong remote: stopping");
            Ok(ExitCode::from(EXIT_OK))
        }
        r = server => match r {
            Ok(()) => Err(anyhow::anyhow!("{shown}: the listener stopped")),
            Err(e) => Err(anyhow::Error::new(e).context(format!("serving {shown}"))),
        },
    };
    give_back.abort();
    obs.finish()?;
    result
}

async fn local(
    socks: SocketAddr,
    cfg: PoolConfig,
    tls: Arc<ClientTls>,
    observe: ObserveArgs,
) -> anyhow::Result<ExitCode> {
    let obs = observe.start("pong-local");
    let net = obs.net();
    let lsn = net
        .listen_tcp(socks)
        .await
        .with_context(|| format!("binding {socks}"))?;
    let bound = TcpListen::local_addr(&lsn)?;
    tracing::info!(
        "pong local: remote {}, at most {} streams per carrier, idle close {:?}, max age {:?}, stream idle timeout {:?}",
        cfg.remote,
        cfg.max_streams_per_conn,
        cfg.idle_close,
        cfg.max_age,
        cfg.idle_timeout
    );
    let pool = Arc::new(Pool::new(
        net.clone(),
        cfg,
        tls,
        obs.trace(),
        "local".into(),
    ));
    let maintenance = tokio::spawn(pool.clone().run_maintenance());
    let give_back = tokio::spawn(crate::heap::give_back_freed_heap());
    eprintln!("pong local: SOCKS5 on {bound}");
    let result = tokio::select! {
        biased;
        _ = stop_signal() => {
            tracing::info!("pong local: stopping");
            Ok(ExitCode::from(EXIT_OK))
        }
        r = serve_socks(net, lsn, pool.clone()) => {
            match r {
                Ok(()) => Err(anyhow::anyhow!("SOCKS5 on {bound}: the listener stopped")),
                Err(e) => Err(anyhow::Error::new(e).context(format!("SOCKS5 on {bound}"))),
            }
        }
    };
    maintenance.abort();
    give_back.abort();
    pool.shutdown().await;
    obs.finish()?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_names() {
        assert_eq!(
            cert_names("0.0.0.0"),
            ["localhost", "127.0.0.1", "::1"].map(String::from)
        );
        assert_eq!(
            cert_names("pong.test"),
            ["pong.test", "localhost", "127.0.0.1", "::1"].map(String::from)
        );
        assert_eq!(cert_names("127.0.0.1").len(), 3);
    }
}
