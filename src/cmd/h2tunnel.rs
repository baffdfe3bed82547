//! `tunnelbed h2tunnel`: vproxy's KCP tunnel (seed 000) on real sockets. Parses the
//! arguments and runs the library roles of `tunnelbed_h2tunnel::roles` (the code the
//! simulator runs) over real sockets, with `--pcap`/`--trace` as in the simulator.
//!
//! The client accepts TCP connections and carries each as a stream of one tunnel to the
//! server; the server connects each stream to a fixed target, or serves SOCKS5 inside it.
//! The carrier is KCP over UDP (`udp://`, one KCP session per client address, as vproxy)
//! or plain TCP (`tcp://`). The client keeps one tunnel and reconnects with a new carrier
//! after it fails. Half-closes cross the tunnel (TCP FIN <-> tunnel FIN); a reset on
//! either side resets the other (TCP RST <-> tunnel RST).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tunnelbed_h2tunnel::roles::{
    Carrier, ClientConfig, ServerConfig, Target, TunnelClient, TunnelServer,
};
use tunnelbed_kcp::KcpConfig;

use super::observe::ObserveArgs;
use super::{runtime, usage};

/// h2tunnel roles on real sockets.
#[derive(Subcommand, Debug)]
pub enum H2tunnelCmd {
    /// The tunnel server: each stream goes to `--forward`, or is a SOCKS5 request.
    /// Prints `listening ADDR` on stdout once bound.
    Server(ServerArgs),
    /// The tunnel client: each TCP connection to `--listen` becomes a stream. Prints
    /// `listening ADDR` on stdout once bound.
    Client(ClientArgs),
}

/// `h2tunnel server` arguments.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Carrier to listen on: `udp://ADDR` (KCP) or `tcp://ADDR`.
    #[arg(long)]
    pub listen: String,
    /// Connect every stream to this TCP address.
    #[arg(long, conflicts_with = "socks5", required_unless_present = "socks5")]
    pub forward: Option<SocketAddr>,
    /// Serve SOCKS5 (no authentication, CONNECT) inside every stream.
    #[arg(long)]
    pub socks5: bool,
    /// KCP preset for `udp://` (vproxy's server default is fast4).
    #[arg(long, default_value = "fast4")]
    pub profile: String,
    /// KCP conversation id (vproxy uses 0).
    #[arg(long, default_value_t = 0)]
    pub conv: u32,
    /// Seconds a stream's target connect may take before the stream is reset.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub dial_timeout: u64,
    /// Seconds a stream may stay with nothing moving either way before it is reset
    /// (with its target connection): a target that accepted and never answers ends the
    /// stream with an error at the application instead of hanging it.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Seconds bytes written to a target may stay unacknowledged by its TCP before the
    /// connection fails (Linux TCP_USER_TIMEOUT).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub target_ack_timeout: u64,
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// `h2tunnel client` arguments.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Where applications connect: `tcp://ADDR`.
    #[arg(long)]
    pub listen: String,
    /// The tunnel server: `udp://ADDR` (KCP) or `tcp://ADDR`.
    #[arg(long)]
    pub server: String,
    /// KCP preset for `udp://` (vproxy's client default is clientFast4).
    #[arg(long, default_value = "clientFast4")]
    pub profile: String,
    /// KCP conversation id (vproxy uses 0).
    #[arg(long, default_value_t = 0)]
    pub conv: u32,
    /// How long a new connection waits for a tunnel (while reconnecting) before it is
    /// refused, in seconds.
    #[arg(long, default_value_t = 15)]
    pub wait_secs: u64,
    /// Seconds a connection may stay with nothing moving either way before it is reset
    /// (with its stream).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// The KCP preset `name` in stream mode (the tunnel is a byte stream).
fn kcp_config(name: &str) -> Result<KcpConfig, String> {
    let mut c = KcpConfig::preset(name).ok_or_else(|| {
        format!(
            "unknown KCP profile {name:?} (known: {})",
            KcpConfig::PRESETS.join(", ")
        )
    })?;
    c.stream = true;
    Ok(c)
}

/// Runs an `h2tunnel` subcommand.
pub(super) fn run(cmd: H2tunnelCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        H2tunnelCmd::Server(a) => {
            let listen: Carrier = match a.listen.parse() {
                Ok(c) => c,
                Err(e) => return usage(format!("--listen {e}")),
            };
            let kcp = match kcp_config(&a.profile) {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            let target = match a.forward {
                Some(f) => Target::Forward(f),
                None => Target::Socks5,
            };
            let mut cfg = ServerConfig::new(listen, target);
            cfg.kcp = kcp;
            cfg.conv = a.conv;
            cfg.dial_timeout = Duration::from_secs(a.dial_timeout);
            cfg.idle_timeout = Duration::from_secs(a.idle_timeout);
            cfg.target_ack_timeout = Duration::from_secs(a.target_ack_timeout);
            runtime()?.block_on(async move {
                let obs = a.observe.start("h2tunnel-server");
                cfg.trace = obs.trace();
                let srv = TunnelServer::bind(obs.net(), cfg).await?;
                println!("listening {}", srv.local_addr());
                obs.run(srv.run()).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
        H2tunnelCmd::Client(a) => {
            let listen = match a.listen.parse() {
                Ok(Carrier::Tcp(addr)) => addr,
                Ok(Carrier::Udp(_)) => return usage("--listen must be tcp://ADDR"),
                Err(e) => return usage(format!("--listen {e}")),
            };
            let server: Carrier = match a.server.parse() {
                Ok(c) => c,
                Err(e) => return usage(format!("--server {e}")),
            };
            let kcp = match kcp_config(&a.profile) {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            let mut cfg = ClientConfig::new(listen, server);
            cfg.kcp = kcp;
            cfg.conv = a.conv;
            cfg.wait = Duration::from_secs(a.wait_secs.max(1));
            cfg.idle_timeout = Duration::from_secs(a.idle_timeout);
            runtime()?.block_on(async move {
                let obs = a.observe.start("h2tunnel-client");
                cfg.trace = obs.trace();
                let client = TunnelClient::bind(obs.net(), cfg).await?;
                println!("listening {}", client.local_addr());
                obs.run(client.run()).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}
