//! What the h2tunnel scenarios share: a server that runs one tunnel per KCP session (as
//! vproxy keeps one KCP per remote address), a client that connects one, and the
//! deterministic payloads they exchange.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tunnelbed_h2tunnel::{DriverConfig, Role, Running, TunnelStream};
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{self, ArqOptions, ArqServer};
use tunnelbed_netio::{Net, Trace};

use crate::simnet::any;

/// vproxy's tunnel runs KCP with conv 0.
pub const CONV: u32 = 0;

/// Driver options for the KCP sessions under a tunnel.
pub fn arq_options(idle: Duration) -> ArqOptions {
    ArqOptions {
        idle_timeout: idle,
        ..ArqOptions::default()
    }
}

/// Runs the tunnel server on `port` until the host stops: each KCP session (vproxy's
/// `fast4`) carries one server-side tunnel; `handle` runs for every stream it accepts.
/// `live` counts the server's tunnels that have not ended.
pub async fn serve<N, F, Fut>(
    net: N,
    port: u16,
    trace: Trace,
    opts: ArqOptions,
    live: Arc<AtomicUsize>,
    handle: F,
) -> std::io::Result<()>
where
    N: Net,
    F: Fn(TunnelStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let kcp_trace = trace.clone();
    let mut srv = ArqServer::bind(
        &net,
        any(port),
        move |peer, first: &[u8]| {
            if !starts_session(first) {
                return None;
            }
            Some(Kcp::new(
                CONV,
                &KcpConfig::fast4(),
                kcp_trace.clone(),
                format!("kcp[server<-{peer}]"),
            ))
        },
        opts,
    )
    .await?;
    while let Some((carrier, peer)) = srv.accept().await {
        let running = tunnelbed_h2tunnel::driver::spawn(
            carrier,
            Role::Server,
            DriverConfig::default(),
            trace.clone(),
            format!("h2t[server<-{peer}]"),
        );
        let Running {
            mut accepted, done, ..
        } = running;
        let handle = handle.clone();
        let live = live.clone();
        live.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let streams = tokio::spawn(async move {
                while let Some(s) = accepted.recv().await {
                    tokio::spawn(handle(s));
                }
            });
            let _ = done.await;
            streams.abort();
            live.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

/// Whether a datagram from an unknown address can start a session (see
/// [`tunnelbed_kcp::wire::starts_session`]).
pub fn starts_session(first: &[u8]) -> bool {
    tunnelbed_kcp::wire::starts_session(first, CONV)
}

/// A client tunnel over a new KCP session (vproxy's `clientFast4`) to `server`.
pub async fn connect<N: Net>(
    net: &N,
    server: SocketAddr,
    trace: Trace,
    opts: ArqOptions,
    name: String,
) -> std::io::Result<Running> {
    let kcp = Kcp::new(
        CONV,
        &KcpConfig::client_fast4(),
        trace.clone(),
        format!("kcp[{name}]"),
    );
    let (carrier, _session) = arq::connect(net, any(0), server, kcp, opts).await?;
    Ok(tunnelbed_h2tunnel::driver::spawn(
        carrier,
        Role::Client,
        DriverConfig::default(),
        trace,
        name,
    ))
}

/// Connects tunnels (a new KCP session each time, named `{name}#N`) until one completes
/// its handshake, as vproxy's client reconnects after a failed tunnel: a burst of loss
/// longer than the 5 s handshake timer fails an attempt, not the client. Gives up after
/// `max_attempts`. Returns the tunnel and the attempt number.
pub async fn connect_ready<N: Net>(
    net: &N,
    server: SocketAddr,
    trace: Trace,
    opts: ArqOptions,
    name: &str,
    first_attempt: u32,
    max_attempts: u32,
) -> std::io::Result<(Running, u32)> {
    let mut attempt = first_attempt;
    loop {
        let mut t = connect(
            net,
            server,
            trace.clone(),
            opts.clone(),
            format!("{name}#{attempt}"),
        )
        .await?;
        match t.ready().await {
            Ok(()) => return Ok((t, attempt)),
            Err(state) if attempt + 1 - first_attempt >= max_attempts => {
                return Err(std::io::Error::other(format!(
                    "no tunnel after {max_attempts} attempts (last one {state})"
                )))
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
