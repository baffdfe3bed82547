//! The [`Net`] trait: every socket a driver uses comes from here, so one driver runs on
//! real sockets ([`crate::TokioNet`]) and inside the simulator (`tunnelbed-sim`'s `SimNet`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::fault::DataFault;

/// A UDP socket handed out by a [`Net`].
pub trait UdpSock: Send + Sync + 'static {
    /// Sends one datagram; like `tokio::net::UdpSocket::send_to`.
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;
    /// Receives one datagram; like `tokio::net::UdpSocket::recv_from`.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The kernel socket itself (a duplicate descriptor of it), when this is a plain OS
    /// socket with nothing recording or simulating in between: a QUIC stack can then use
    /// its own batched system calls (GSO/GRO) instead of one datagram per call through
    /// this trait. `None` (the default) where every datagram must pass through here.
    fn kernel_socket(&self) -> Option<io::Result<std::net::UdpSocket>> {
        None
    }
}

/// A TCP listener handed out by a [`Net`].
pub trait TcpListen: Send + Sync + 'static {
    /// The stream type accepted connections have.
    type Stream: TcpConn;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A connected TCP byte stream handed out by a [`Net`].
pub trait TcpConn: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Our end's address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The other end's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Aborts the connection: the peer learns of it as a reset (TCP RST), not as a clean
    /// end of stream, and unsent bytes are dropped. What a proxy does to tell an
    /// application that the far side of its connection failed.
    ///
    /// Every wrapper must forward this to the stream it wraps (dropping instead would
    /// send a FIN, which the peer reads as a clean end).
    fn abort(self)
    where
        Self: Sized;
    /// Bounds how long bytes we wrote may stay unacknowledged by the peer's TCP before
    /// the connection fails with `TimedOut` (Linux `TCP_USER_TIMEOUT`). Without it, a
    /// peer whose kernel dropped the connection silently (an accept-queue overflow with
    /// SYN cookies: our connect succeeded, the server never got a socket) keeps our
    /// writes retransmitting for about 15 minutes while the application waits.
    /// Stacks without such an option (the simulator's) keep the default no-op; every
    /// wrapper must forward it.
    fn set_unacked_timeout(&self, _timeout: std::time::Duration) -> io::Result<()> {
        Ok(())
    }
}

/// The network a driver runs on: real (tokio) or simulated (turmoil + link model).
pub trait Net: Clone + Send + Sync + 'static {
    /// UDP socket type.
    type Udp: UdpSock;
    /// Connected TCP stream type.
    type Stream: TcpConn;
    /// TCP listener type.
    type Listener: TcpListen<Stream = Self::Stream>;

    /// Binds a UDP socket.
    fn bind_udp(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Udp>> + Send;
    /// Connects a TCP stream.
    fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Binds a TCP listener.
    fn listen_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// Resolves a host name (or literal address) to socket addresses.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
    /// A deliberate data-path fault that drivers must apply (drop the chunk it picks);
    /// only the simulator's sabotage runs have one, real networks never do.
    fn data_fault(&self) -> Option<Arc<DataFault>> {
        None
    }
    /// A fresh 32-byte seed for the randomness of one QUIC endpoint (connection ids,
    /// keys), so simulated runs replay; each call gives another. Real networks return
    /// `None`: the endpoint draws from the OS.
    fn quic_seed(&self) -> Option<[u8; 32]> {
        None
    }
}
