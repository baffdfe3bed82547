//! [`SimNet`]: the [`Net`] that scenarios hand to drivers. Datagrams pass through the
//! [`LinkModel`] before turmoil carries them; TCP uses turmoil's streams (reliable, with
//! latency, holds, partitions and crashes). Every socket can record into the run's capture.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tunnelbed_netio::{Capture, CaptureNet, Net, TcpConn, TcpListen, Trace, UdpSock};

use crate::link::LinkModel;

/// Shared state of one simulation run: link model, capture, trace and host names.
#[derive(Clone)]
pub struct SimWorld {
    /// The datagram link model.
    pub link: LinkModel,
    /// The run's capture, when one was asked for.
    pub capture: Option<Capture>,
    /// The run's transition trace.
    pub trace: Trace,
    hosts: Arc<Mutex<BTreeSet<String>>>,
}

impl SimWorld {
    /// A world with the given link model; capture only when `capture` is true.
    pub fn new(link: LinkModel, capture: bool) -> Self {
        let capture =
            capture.then(|| Capture::new(Arc::new(|| turmoil::sim_elapsed().unwrap_or_default())));
        Self {
            link,
            capture,
            // One timeline for every machine: simulated time, not each driver's origin.
            trace: Trace::with_clock(Arc::new(|| turmoil::sim_elapsed().unwrap_or_default())),
            hosts: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// Registers a host name so that resolving it succeeds (unknown names fail as NXDOMAIN would).
    pub fn register_host(&self, name: &str) {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
    }

    /// The network as seen from host `name` (call inside that host's closure).
    pub fn net(&self, name: &str) -> HostNet {
        self.register_host(name);
        let iface = self.capture.as_ref().map(|c| c.interface(name));
        CaptureNet::maybe(
            SimNet {
                host: Arc::from(name),
                world: self.clone(),
            },
            iface,
        )
    }

    fn knows(&self, name: &str) -> bool {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }
}

/// What scenario hosts use: the simulated network, recording when the run captures.
pub type HostNet = CaptureNet<SimNet>;

/// The simulated network of one host.
#[derive(Clone)]
pub struct SimNet {
    host: Arc<str>,
    world: SimWorld,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

fn host_ip(host: &str) -> IpAddr {
    turmoil::lookup(host)
}

fn resolve_local(addr: SocketAddr, host: &str) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(host_ip(host), addr.port())
    } else {
        addr
    }
}

/// A UDP socket whose datagrams go through the link model.
pub struct SimUdp {
    sock: Arc<turmoil::net::UdpSocket>,
    local: SocketAddr,
    link: LinkModel,
}

impl UdpSock for SimUdp {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        if buf.len() > 65_507 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram larger than 65507 bytes",
            ));
        }
        let deliveries = self.link.transmit(now(), self.local.ip(), target.ip(), buf);
        for d in deliveries {
            if d.extra_delay.is_zero() {
                // A partitioned or unknown destination loses the datagram, as UDP does.
                let _ = self.sock.send_to(&d.payload, target).await;
            } else {
                let sock = self.sock.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d.extra_delay).await;
                    let _ = sock.send_to(&d.payload, target).await;
                });
            }
        }
        Ok(buf.len())
    }
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf).await
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A turmoil TCP stream (reliable; stalls under holds and partitions).
pub struct SimStream(turmoil::net::TcpStream);

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl TcpConn for SimStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

/// A turmoil TCP listener.
pub struct SimListener(turmoil::net::TcpListener, Arc<str>);

impl TcpListen for SimListener {
    type Stream = SimStream;
    async fn accept(&self) -> io::Result<(SimStream, SocketAddr)> {
        let (s, a) = self.0.accept().await?;
        Ok((SimStream(s), a))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(resolve_local(self.0.local_addr()?, &self.1))
    }
}

impl Net for SimNet {
    type Udp = SimUdp;
    type Stream = SimStream;
    type Listener = SimListener;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<SimUdp> {
        let sock = turmoil::net::UdpSocket::bind(addr).await?;
        let local = resolve_local(sock.local_addr()?, &self.host);
        Ok(SimUdp {
            sock: Arc::new(sock),
            local,
            link: self.world.link.clone(),
        })
    }
    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<SimStream> {
        Ok(SimStream(turmoil::net::TcpStream::connect(addr).await?))
    }
    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<SimListener> {
        Ok(SimListener(
            turmoil::net::TcpListener::bind(addr).await?,
            self.host.clone(),
        ))
    }
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if !self.world.knows(host) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: no such host in the simulation"),
            ));
        }
        Ok(vec![SocketAddr::new(host_ip(host), port)])
    }
}

/// The unspecified IPv4 address with `port`: what servers bind to in scenarios.
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}
