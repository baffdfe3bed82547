//! Roles that put the stack on an IP link and serve something on it: the library half
//! of `tunnelbed tcpstack serve`. Generic over `N: Net + IpNet`, so the same code runs
//! on a TUN device (`TokioNet`) and inside the simulator (`SimNet`).
//!
//! [`start`] opens the link, starts the stack's driver and listens; [`Server::run`]
//! accepts connections and serves each with the chosen [`Service`] in its own task.

mod http;
mod link_io;
mod relay;

use std::io;
use std::net::SocketAddrV4;
use std::time::Duration;

use thiserror::Error;
use tokio::task::JoinHandle;
use tunnelbed_netio::{IpLinkConfig, IpLinkError, IpNet, Net, Trace};

use crate::socket::{TcpStack, TcpStackListener, TcpStackStream};
use crate::StackConfig;

pub use http::{fill_pattern, pattern_byte, serve_http};
pub use link_io::IpLinkIo;
pub use relay::{echo, forward};

/// What each accepted connection gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Service {
    /// Every byte read is written back; the client's FIN is answered with ours.
    Echo,
    /// `GET /bytes/N`: N bytes of `tunnelbed http-source`'s pattern (N up to the bound).
    HttpSource {
        /// Largest N served.
        max_bytes: u64,
    },
    /// Relays the connection to `host:port`, dialled through the network (kernel TCP on
    /// a real one).
    Forward {
        /// Target host name or address.
        host: String,
        /// Target port.
        port: u16,
    },
}

/// Everything [`start`] needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The IP link to open (a TUN device's name and the kernel side's address).
    pub link: IpLinkConfig,
    /// Where the stack listens (an address routed into the link).
    pub listen: SocketAddrV4,
    /// The accept queue of the listener.
    pub backlog: usize,
    /// What connections get.
    pub service: Service,
    /// The stack's tunables.
    pub stack: StackConfig,
    /// A connection with no progress for this long is dropped.
    pub idle: Duration,
    /// How long a finished connection waits for the peer to acknowledge our FIN before
    /// it is dropped (and reset): longer than `idle`, because a lost FIN is only sent
    /// again after the retransmission timeout, which doubles each time.
    pub linger: Duration,
}

impl ServeConfig {
    /// `service` on `listen` over `link`, with vproxy's defaults.
    pub fn new(link: IpLinkConfig, listen: SocketAddrV4, service: Service) -> Self {
        Self {
            link,
            listen,
            backlog: 128,
            service,
            stack: StackConfig::default(),
            idle: Duration::from_secs(120),
            linger: Duration::from_secs(120),
        }
    }
}

/// Why serving stopped.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The IP link could not be opened.
    #[error("opening the IP link: {0}")]
    Link(#[from] IpLinkError),
    /// The listener could not be made.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddrV4,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The packet driver ended: the link failed.
    #[error("the stack's packet driver stopped: {0}")]
    Driver(#[source] io::Error),
    /// The driver task panicked or was cancelled.
    #[error("the stack's packet driver task ended abnormally")]
    DriverTask,
}

/// A stack listening on an IP link.
pub struct Server<N> {
    net: N,
    stack: TcpStack,
    driver: JoinHandle<io::Result<()>>,
    listener: TcpStackListener,
    service: Service,
    idle: Duration,
    linger: Duration,
}

/// Opens the link `cfg.link` on `net`, starts the stack over it and listens on
/// `cfg.listen`. Connections are served once [`Server::run`] is called.
pub async fn start<N: Net + IpNet>(
    net: N,
    cfg: ServeConfig,
    trace: Trace,
) -> Result<Server<N>, ServeError> {
    let link = net.open_ip_link(cfg.link.clone()).await?;
    let (stack, driver) = TcpStack::spawn(IpLinkIo::new(link), cfg.stack.clone(), trace);
    let listener = stack
        .listen(cfg.listen, cfg.backlog)
        .map_err(|source| ServeError::Listen {
            addr: cfg.listen,
            source,
        })?;
    Ok(Server {
        net,
        stack,
        driver,
        listener,
        service: cfg.service,
        idle: cfg.idle,
        linger: cfg.linger,
    })
}

impl<N: Net> Server<N> {
    /// The stack (its counters and connection table, for tests and logs).
    pub fn stack(&self) -> &TcpStack {
        &self.stack
    }

    /// Accepts and serves connections until the packet driver stops; returns why.
    pub async fn run(mut self) -> Result<(), ServeError> {
        loop {
            tokio::select! {
                biased;
                r = &mut self.driver => {
                    return match r {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(ServeError::Driver(e)),
                        Err(_) => Err(ServeError::DriverTask),
                    };
                }
                s = self.listener.accept() => {
                    // The listener only fails when it is gone, which `run` never does.
                    let Ok(s) = s else { return Ok(()) };
                    tokio::spawn(serve_one(
                        self.net.clone(),
                        s,
                        self.service.clone(),
                        self.idle,
                        self.linger,
                    ));
                }
            }
        }
    }
}

async fn serve_one<N: Net>(
    net: N,
    s: TcpStackStream,
    service: Service,
    idle: Duration,
    linger: Duration,
) {
    let peer = s.addrs().map(|(_, r)| r);
    let r = match service {
        Service::Echo => echo(s, idle, linger, net.data_fault()).await,
        Service::HttpSource { max_bytes } => serve_http(s, max_bytes, idle, linger).await,
        Service::Forward { host, port } => forward(&net, s, &host, port, idle, linger).await,
    };
    if let Err(e) = r {
        tracing::debug!("tcpstack serve: {peer:?}: {e}");
    }
}
