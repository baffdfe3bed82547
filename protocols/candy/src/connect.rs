//! The client role over any [`Net`]: pumps the sans-IO [`Client`] machine between a
//! WebSocket to the server (over the Net's TCP) and the client's virtual interface (an
//! [`IpLink`]: a TUN device for real, an in-memory link in the simulator). The link is
//! opened once the address is known and kept across reconnects (reopened only if the
//! address changes).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::BoxStream;
use tunnelbed_netio::{IpLink, IpLinkConfig, IpLinkError, IpNet, Ipv4Cidr, Net, Trace};

use crate::client::{Client, ClientConfig, ClientEvent, ClientStats};
use crate::ws::{self, UnixClock, WsUrl};

/// Opens the client's virtual interface for an address: any [`IpNet`] does (a TUN
/// device), and the simulator passes an in-memory link whose other end is the host's
/// IP endpoint.
pub trait OpenLink: Send + Sync + 'static {
    /// The link type.
    type Link: IpLink;
    /// Opens the link `cfg` describes.
    fn open(
        &self,
        cfg: IpLinkConfig,
    ) -> impl Future<Output = Result<Self::Link, IpLinkError>> + Send;
}

impl<T: IpNet> OpenLink for T {
    type Link = T::Link;
    fn open(
        &self,
        cfg: IpLinkConfig,
    ) -> impl Future<Output = Result<Self::Link, IpLinkError>> + Send {
        self.open_ip_link(cfg)
    }
}

/// Settings of the client role.
#[derive(Clone)]
pub struct ConnectConfig {
    /// The machine's settings.
    pub client: ClientConfig,
    /// The server.
    pub server: WsUrl,
    /// The interface name.
    pub link_name: String,
    /// The interface MTU (Candy's server drops clients whose messages exceed 1500 bytes,
    /// so keep it at or below 1499; Candy uses 1400).
    pub mtu: usize,
    /// The Unix time.
    pub clock: UnixClock,
    /// How long connecting and the WebSocket handshake may take.
    pub connect_timeout: Duration,
    /// The simulator's deterministic handshake ([`ws::connect_unmasked`]) seeded with
    /// this; `None` (real networks): a standard masked WebSocket client.
    pub unmasked_seed: Option<u64>,
    /// Whom to trust for a `wss://` server (a `wss://` URL without it fails to connect).
    pub tls: Option<Arc<ClientTls>>,
}

/// Why the client role stopped.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The virtual interface failed.
    #[error("virtual interface: {0}")]
    Link(#[from] IpLinkError),
}

/// What the role reports as it goes (for the CLI's banner and for tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The interface is up with this address.
    Up(Ipv4Cidr),
    /// The connection to the server was lost (it will reconnect).
    Down,
    /// AUTH went out on a new connection with this address: once per connection (`Up`
    /// comes only when the interface changes), so a reconnect that kept its address
    /// shows as a `Joined` with the same address and no new `Up`.
    Joined(Ipv4Cidr),
}

/// Resolves the server and opens a WebSocket to it (inside TLS for `wss://`, checked
/// with `tls`): the masked standard handshake, or the simulator's deterministic one
/// when `unmasked` has a seed.
pub(crate) async fn open_ws<N: Net>(
    net: &N,
    url: &WsUrl,
    max: usize,
    unmasked: Option<u64>,
    tls: Option<&ClientTls>,
) -> io::Result<WebSocketStream<BoxStream>> {
    let addrs = net.resolve(&url.host, url.port).await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match net.connect_tcp(a).await {
            Ok(tcp) => {
                let tcp: BoxStream = match (url.tls, tls) {
                    (false, _) => Box::new(tcp),
                    (true, Some(t)) => Box::new(t.connect(&url.host, tcp).await?),
                    (true, None) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "wss:// needs a TLS trust setting",
                        ))
                    }
                };
                return match unmasked {
                    Some(seed) => ws::connect_unmasked(tcp, url, max, seed).await,
                    None => ws::connect(tcp, &url.to_url(), max).await,
                };
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Runs a client until its interface fails; reconnects to the server forever.
/// `status` gets every [`Status`] change.
pub async fn run_client<N: Net, O: OpenLink>(
    net: N,
    opener: O,
    cfg: ConnectConfig,
    trace: Trace,
    status: mpsc::UnboundedSender<Status>,
) -> Result<(), ConnectError> {
    let name = cfg.link_name.clone();
    let mut m = Client::new(cfg.client.clone(), &name, trace);
    let max = cfg.mtu + 1 + crate::wire::MAX_CONFUSION + crate::wire::DHCP_LEN;
    let mut conn: Option<WebSocketStream<BoxStream>> = None;
    let mut link: Option<Arc<O::Link>> = None;
    let mut reader: Option<tokio::task::JoinHandle<()>> = None;
    let (pkt_tx, mut pkt_rx) = mpsc::channel::<Result<Vec<u8>, IpLinkError>>(256);
    let now = || (cfg.clock)();
    let mut attempts = 0u64;
    let mut joined = false;
    loop {
        while let Some(ev) = m.poll_event() {
            match ev {
                ClientEvent::Connect => {
                    attempts += 1;
                    let seed = cfg.unmasked_seed.map(|s| s.wrapping_add(attempts));
                    let open = open_ws(&net, &cfg.server, max, seed, cfg.tls.as_deref());
                    let r = tokio::time::timeout(cfg.connect_timeout, open).await;
                    match r {
                        Ok(Ok(ws)) => {
                            conn = Some(ws);
                            m.handle_connected(now());
                        }
                        Ok(Err(e)) => {
                            tracing::info!("candy client: connect failed: {e}");
                            m.handle_disconnected(now());
                        }
                        Err(_) => {
                            tracing::info!("candy client: connect timed out");
                            m.handle_disconnected(now());
                        }
                    }
                }
                ClientEvent::Up(cidr) => {
                    if let Some(r) = reader.take() {
                        r.abort();
                    }
                    drop(link.take());
                    let mut lc = IpLinkConfig::new(&cfg.link_name, Some(cidr));
                    lc.mtu = cfg.mtu;
                    let l = Arc::new(opener.open(lc).await?);
                    let (l2, tx) = (l.clone(), pkt_tx.clone());
                    reader = Some(tokio::spawn(async move {
                        let mut buf = vec![0u8; l2.mtu()];
                        loop {
                            let r = l2.recv(&mut buf).await.map(|n| buf[..n].to_vec());
                            let stop = r.is_err();
                            if tx.send(r).await.is_err() || stop {
                                return;
                            }
                        }
                    }));
                    link = Some(l);
                    let _ = status.send(Status::Up(cidr));
                }
                ClientEvent::Packet(p) => {
                    if let Some(l) = &link {
                        match l.send(&p).await {
                            Ok(()) => {}
                            Err(IpLinkError::Closed) => return Err(IpLinkError::Closed.into()),
                            Err(e) => tracing::debug!("candy client: packet not delivered: {e}"),
                        }
                    }
                }
                ClientEvent::Ping => {
                    if let Some(ws) = &mut conn {
                        let _ = ws.feed(WsMessage::Ping(Bytes::new())).await;
                    }
                }
                ClientEvent::Drop => {
                    conn = None;
                    let _ = status.send(Status::Down);
                }
                ClientEvent::Routes(r) => {
                    tracing::info!("candy client: server pushed {} route(s)", r.len());
                }
            }
        }
        if m.is_up() != joined {
            joined = m.is_up();
            if let (true, Some(a)) = (joined, m.addr()) {
                let _ = status.send(Status::Joined(a));
            }
        }
        if let Some(ws) = &mut conn {
            let mut failed = false;
            let mut any = false;
            while let Some(b) = m.poll_transmit() {
                any = true;
                if ws.feed(WsMessage::Binary(b)).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if !failed && any {
                failed = ws.flush().await.is_err();
            }
            if failed {
                conn = None;
                m.handle_disconnected(now());
                let _ = status.send(Status::Down);
                continue;
            }
        }
        let deadline = m.poll_timeout().map(|t| {
            let wait = t.saturating_sub(now());
            tokio::time::Instant::now() + wait
        });
        let sleep = tunnelbed_netio::sleep_until(deadline);
        tokio::select! {
            biased;
            msg = async {
                match &mut conn {
                    Some(ws) => ws.next().await,
                    None => std::future::pending().await,
                }
            } => match msg {
                Some(Ok(WsMessage::Binary(b))) => m.handle_input(now(), &b),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                    conn = None;
                    m.handle_disconnected(now());
                    let _ = status.send(Status::Down);
                }
                Some(Ok(_)) => m.handle_activity(now()),
            },
            p = pkt_rx.recv() => match p {
                Some(Ok(p)) => m.handle_packet(now(), &p),
                Some(Err(e)) => return Err(e.into()),
                None => {}
            },
            _ = sleep => m.handle_timeout(now()),
        }
    }
}

/// The counters of a client machine (re-exported for the CLI's exit summary).
pub type Stats = ClientStats;
