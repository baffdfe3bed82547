//! [`Net`] over real tokio sockets: what the `tunnelbed` binary uses on a real network.

use std::io;
use std::net::SocketAddr;

use crate::net::{Net, TcpConn, TcpListen, UdpSock};

/// Real sockets from the operating system.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl UdpSock for tokio::net::UdpSocket {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        tokio::net::UdpSocket::send_to(self, buf, target).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        tokio::net::UdpSocket::recv_from(self, buf).await
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
    fn kernel_socket(&self) -> Option<io::Result<std::net::UdpSocket>> {
        use std::os::fd::AsFd;
        Some(
            self.as_fd()
                .try_clone_to_owned()
                .map(std::net::UdpSocket::from),
        )
    }
}

impl TcpConn for tokio::net::TcpStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpStream::local_addr(self)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpStream::peer_addr(self)
    }
    fn abort(self) {
        // SO_LINGER of zero: closing sends RST and discards unsent data (closing never
        // blocks with a zero linger).
        if let Err(e) = self.set_zero_linger() {
            tracing::debug!("abort: SO_LINGER 0 failed ({e}); closing with a FIN instead");
        }
        drop(self);
    }
    fn set_unacked_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        set_user_timeout(self, timeout)
    }
}

/// `TCP_USER_TIMEOUT` in milliseconds (Linux; elsewhere a no-op).
#[cfg(target_os = "linux")]
fn set_user_timeout(s: &tokio::net::TcpStream, timeout: std::time::Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ms = libc::c_uint::try_from(timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: setsockopt on a socket we own, with a correctly sized unsigned int.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            &ms as *const libc::c_uint as *const libc::c_void,
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_user_timeout(_s: &tokio::net::TcpStream, _timeout: std::time::Duration) -> io::Result<()> {
    Ok(())
}

impl TcpListen for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, a) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, a))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

impl Net for TokioNet {
    type Udp = tokio::net::UdpSocket;
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::Udp> {
        tokio::net::UdpSocket::bind(addr).await
    }
    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: no address"),
            ));
        }
        Ok(addrs)
    }
}
