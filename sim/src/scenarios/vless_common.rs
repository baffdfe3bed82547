//! What the VLESS scenarios share: the server host (our `serve` over a socket-counting
//! net, v1 with the full-cone table), the client host (our SOCKS5 front over one tcp
//! carrier per request), the user ids, and a check of the transition trace for VLESS
//! machines that never ended.
//!
//! Topology: `app` -> SOCKS5 -> client host -> tcp carrier -> `server` -> `target`.

use std::collections::BTreeMap;
use std::time::Duration;

use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, Trace, Transition};
use tunnelbed_vless::serve::{serve, ServerConfig};
use tunnelbed_vless::server::ServerSessionConfig;
use tunnelbed_vless::socks::{serve_socks, ClientConfig};
use tunnelbed_vless::wire::Version;

use crate::scenarios::fixture::settle;
use crate::scenarios::pong_common::{Gauged, Gauges};
use crate::simnet::{any, SimWorld};

/// The user the server allows.
pub const USER: [u8; 16] = *b"tunnelbed-vless1";
/// A user the server does not know.
pub const STRANGER: [u8; 16] = *b"tunnelbed-intrud";
/// Where the server listens for carriers.
pub const SERVER_PORT: u16 = 443;
/// Where a client's SOCKS5 front listens.
pub const SOCKS_PORT: u16 = 1080;

/// The server's settings in the scenarios: v1, [`USER`] only, short header and dial
/// timeouts so a failure shows quickly.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        session: ServerSessionConfig {
            users: vec![USER],
            version: Version::V1,
            header_timeout: Duration::from_secs(5),
            ..ServerSessionConfig::default()
        },
        dial_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

/// Runs our VLESS server on host `host` (call inside the host closure), its sockets
/// counted in `gauges` (accepted carriers, dialed targets, UDP sockets); its trace ids
/// are `{name}/c{n}`.
pub async fn run_server(
    world: SimWorld,
    host: &str,
    name: String,
    gauges: Gauges,
) -> Result<(), Box<dyn std::error::Error>> {
    // First, so it is dropped last when the server crashes: its connections then close
    // in a fixed order (the run stays deterministic).
    let _crash = world.crash_guard(host);
    let net = Gauged::new(world.net(host), gauges);
    let lsn = net.listen_tcp(any(SERVER_PORT)).await?;
    let mut cfg = server_config();
    cfg.dial_timeout = world.tcp_mode().connect_bound(cfg.dial_timeout);
    serve(
        net,
        lsn,
        CarrierKind::Tcp,
        None,
        cfg,
        world.trace.clone(),
        name,
    )
    .await?;
    Ok(())
}

/// Runs our VLESS client (v0, tcp carrier to `server`) as user `user` on host `host`
/// with its SOCKS5 front on `port` and relays ended after `idle` without a byte; its
/// sockets are counted in `gauges` (the front's accepted connections, the carriers it
/// dials).
pub async fn run_client(
    world: SimWorld,
    host: &str,
    user: [u8; 16],
    port: u16,
    gauges: Gauges,
    idle: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let net = Gauged::new(world.net(host), gauges);
    let lsn = net.listen_tcp(any(port)).await?;
    let url: CarrierUrl = format!("tcp://server:{SERVER_PORT}").parse()?;
    let mut cfg = ClientConfig::new(url, user, Version::V0);
    cfg.idle_timeout = idle;
    serve_socks(net, lsn, cfg, world.trace.clone()).await?;
    Ok(())
}

/// Adds host `host` running our VLESS client ([`run_client`] as `user`, its SOCKS5 front
/// on [`SOCKS_PORT`], relays idle after `idle`) to `sim`.
pub fn host_client(
    sim: &mut turmoil::Sim<'_>,
    world: &SimWorld,
    host: &'static str,
    user: [u8; 16],
    gauges: &Gauges,
    idle: Duration,
) {
    let (world, g) = (world.clone(), gauges.clone());
    sim.host(host, move || {
        run_client(world.clone(), host, user, SOCKS_PORT, g.clone(), idle)
    });
}

/// Waits (at most `limit`, see [`settle`]) until the server holds no carrier, target
/// connection or UDP socket and the client no carrier. Returns the last look at the
/// server's and the client's gauges, and how long it took.
pub async fn drained(
    server: &Gauges,
    client: &Gauges,
    limit: Duration,
) -> ((i64, i64, i64), (i64, i64, i64), Duration) {
    let ((s, c), took) = settle(limit, || async {
        let (s, c) = (server.get(), client.get());
        (s == (0, 0, 0) && c.1 == 0, (s, c))
    })
    .await;
    (s, c, took)
}

/// VLESS machines (`vless-server[..]`, `vless-client[..]`) whose last state in the trace
/// is not an end (closed, rejected, failed), leaving out those whose id starts with
/// one of `skip` (a crashed server's: a dead process records no end).
pub fn unended(trace: &Trace, skip: &[&str]) -> Vec<String> {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for t in trace.snapshot() {
        let Transition { machine, to, .. } = t;
        let ours = machine.starts_with("vless-server[") || machine.starts_with("vless-client[");
        let skipped = skip
            .iter()
            .any(|p| machine.starts_with(&format!("vless-server[{p}")));
        if ours && !skipped {
            last.insert(machine.into_owned(), to.into_owned());
        }
    }
    last.into_iter()
        .filter(|(_, s)| !matches!(s.as_str(), "closed" | "rejected" | "failed"))
        .map(|(m, s)| format!("{m} ({s})"))
        .collect()
}
