//! `tunnelbed netem`: a real-socket UDP relay applying the simulator's link model, so real
//! binaries can be tested under loss, jitter and duplication on any machine (kernel netem
//! is often unavailable).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tunnelbed_sim::link::LinkModel;
use tunnelbed_sim::profile;

use super::{EXIT_OK, EXIT_USAGE};

#[derive(Args, Debug)]
pub struct NetemArgs {
    /// Address clients send to, e.g. 127.0.0.1:4000.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address datagrams are relayed to, e.g. 127.0.0.1:5000.
    #[arg(long)]
    pub forward: SocketAddr,
    /// Link profile (clean, lossy, hostile, swarm); overridden field by field below.
    #[arg(long, default_value = "clean")]
    pub profile: String,
    /// Seed for the link model's random choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override: i.i.d. loss in percent, both directions (e.g. 10).
    #[arg(long)]
    pub loss: Option<f64>,
    /// Override: one-way added latency in milliseconds.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Override: jitter in milliseconds (reorders datagrams).
    #[arg(long)]
    pub jitter_ms: Option<u64>,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Most client addresses relayed at once; new ones beyond it are dropped.
    #[arg(long, default_value_t = 1024)]
    pub max_clients: usize,
}

// The model keys directions by address; on loopback both ends share one IP, so use
// two fixed labels for the two directions.
const UP_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1));
const UP_DST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 255, 0, 2));

pub(super) fn run(a: NetemArgs) -> anyhow::Result<ExitCode> {
    let Some(mut params) = profile::params(&a.profile, a.seed) else {
        eprintln!(
            "error: unknown profile {:?}; known: {}",
            a.profile,
            profile::ALL.join(", ")
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    };
    if let Some(l) = a.loss {
        if !(0.0..=100.0).contains(&l) {
            eprintln!("error: --loss must be a percentage from 0 to 100");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        params.loss = l / 100.0;
        params.burst = None;
    }
    if let Some(ms) = a.latency_ms {
        params.latency = Duration::from_millis(ms);
    }
    if let Some(ms) = a.jitter_ms {
        params.jitter = Duration::from_millis(ms);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(relay(a, params))
}

struct Relay {
    model: LinkModel,
    latency: Duration,
    start: tokio::time::Instant,
}

impl Relay {
    fn send(&self, sock: Arc<UdpSocket>, to: SocketAddr, up: bool, data: &[u8]) {
        let now = self.start.elapsed();
        let (s, d) = if up {
            (UP_SRC, UP_DST)
        } else {
            (UP_DST, UP_SRC)
        };
        for dl in self.model.transmit(now, s, d, data) {
            let delay = self.latency + dl.extra_delay;
            let sock = sock.clone();
            if delay.is_zero() {
                let _ = sock.try_send_to(&dl.payload, to);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = sock.send_to(&dl.payload, to).await;
                });
            }
        }
    }
}

async fn relay(a: NetemArgs, params: tunnelbed_sim::link::LinkParams) -> anyhow::Result<ExitCode> {
    let front = Arc::new(
        UdpSocket::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?,
    );
    eprintln!(
        "netem: {} -> {} profile {} seed {}: {}",
        front.local_addr()?,
        a.forward,
        a.profile,
        a.seed,
        profile::describe(&params)
    );
    let relay = Arc::new(Relay {
        model: LinkModel::new(a.seed, params.clone()),
        latency: params.latency,
        start: tokio::time::Instant::now(),
    });
    // One upstream socket per client address, so replies find their way back.
    let clients: Arc<Mutex<BTreeMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let bind_any = if a.forward.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let main = async {
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, from) = front.recv_from(&mut buf).await?;
            let up = {
                let mut m = clients.lock().await;
                match m.get(&from) {
                    Some(s) => s.clone(),
                    None => {
                        if m.len() >= a.max_clients {
                            tracing::warn!("netem: client limit reached, dropping {from}");
                            continue;
                        }
                        let s = Arc::new(UdpSocket::bind(bind_any).await?);
                        m.insert(from, s.clone());
                        let (s2, front2, relay2) = (s.clone(), front.clone(), relay.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok((n, _)) = s2.recv_from(&mut buf).await {
                                relay2.send(front2.clone(), from, false, &buf[..n]);
                            }
                        });
                        s
                    }
                }
            };
            relay.send(up, a.forward, true, &buf[..n]);
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    let stop = async {
        match a.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::select! {
        biased;
        _ = stop => {}
        r = main => r?,
    }
    let s = relay.model.stats();
    eprintln!(
        "netem: sent {} delivered {} dropped {} duplicated {} corrupted {}",
        s.sent,
        s.delivered,
        s.dropped(),
        s.duplicated,
        s.corrupted
    );
    Ok(ExitCode::from(EXIT_OK))
}
