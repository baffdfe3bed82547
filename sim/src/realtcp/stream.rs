//! [`RealStream`] and [`RealListener`]: the application's side of a [`HostStack`]'s
//! sockets, with the same behaviour a kernel socket shows a tokio program.

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use smoltcp::socket::tcp;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tunnelbed_netio::DataFault;

use super::conns::ConnId;
use super::stack::{HostStack, CONNECT_TIMEOUT};

/// A TCP connection on a host's smoltcp stack.
pub struct RealStream {
    stack: Arc<HostStack>,
    h: ConnId,
    local: SocketAddr,
    peer: SocketAddr,
    data_fault: Option<Arc<DataFault>>,
    /// Set once the socket went back to the stack (abort).
    released: bool,
}

impl RealStream {
    /// Connects from the host of `stack` to `remote`, waiting for the handshake (at most
    /// [`CONNECT_TIMEOUT`]): `ConnectionRefused` on a reset, `TimedOut` on silence.
    pub async fn connect(
        stack: Arc<HostStack>,
        remote: SocketAddrV4,
        data_fault: Option<Arc<DataFault>>,
    ) -> io::Result<RealStream> {
        let (h, local) = stack.lock().connect(remote)?;
        stack.kick();
        let start = turmoil::sim_elapsed().unwrap_or_default();
        let stream = RealStream {
            stack,
            h,
            local,
            peer: SocketAddr::V4(remote),
            data_fault,
            released: false,
        };
        poll_fn(|cx| {
            let mut g = stream.stack.lock();
            if g.dead() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the host's TCP stack is gone",
                )));
            }
            let s = g.tcp(stream.h);
            match s.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
                tcp::State::Closed | tcp::State::TimeWait => {
                    let now = turmoil::sim_elapsed().unwrap_or_default();
                    Poll::Ready(Err(if now.saturating_sub(start) >= CONNECT_TIMEOUT {
                        io::Error::new(io::ErrorKind::TimedOut, "connect timed out")
                    } else {
                        io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused")
                    }))
                }
                _ => {
                    // Handshaken: no timeout on unacknowledged data from now on.
                    s.set_timeout(None);
                    Poll::Ready(Ok(()))
                }
            }
        })
        .await?;
        Ok(stream)
    }

    /// An accepted connection on `h`. One the peer reset while it waited in the queue is
    /// still handed out, as Linux's accept(2) does: its reads give what arrived before
    /// the reset, then `ConnectionReset` (skipping it, as we did, hid the reset from the
    /// application; test: `sim/tests/realtcp_stack.rs`).
    pub(crate) fn accepted(
        stack: Arc<HostStack>,
        h: ConnId,
        data_fault: Option<Arc<DataFault>>,
    ) -> io::Result<RealStream> {
        let (local, peer) = {
            let mut g = stack.lock();
            let ip = g.ip();
            let tuple = g.tuple(h);
            let s = g.tcp(h);
            match (s.local_endpoint(), s.remote_endpoint(), tuple) {
                (Some(l), Some(r), _) => (endpoint(l), endpoint(r)),
                (_, _, Some((port, peer_ip, peer_port))) => (
                    SocketAddr::V4(SocketAddrV4::new(ip, port)),
                    SocketAddr::V4(SocketAddrV4::new(peer_ip, peer_port)),
                ),
                _ => {
                    drop(g);
                    stack.lock().release(h, true);
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "connection reset before accept",
                    ));
                }
            }
        };
        Ok(RealStream {
            stack,
            h,
            local,
            peer,
            data_fault,
            released: false,
        })
    }

    /// Our address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Resets the connection (the peer reads `ConnectionReset`).
    pub fn abort(mut self) {
        self.released = true;
        self.stack.lock().release(self.h, true);
        self.stack.kick();
    }

    /// Bounds how long written bytes may stay unacknowledged, as Linux's
    /// `TCP_USER_TIMEOUT` does: armed only while bytes wait in the send buffer (see
    /// [`Conns::set_user_timeout`](super::conns::Conns::set_user_timeout)).
    pub fn set_unacked_timeout(&self, timeout: Duration) {
        self.stack.lock().set_user_timeout(self.h, timeout);
    }
}

fn endpoint(e: smoltcp::wire::IpEndpoint) -> SocketAddr {
    match e.addr {
        smoltcp::wire::IpAddress::Ipv4(a) => SocketAddr::V4(SocketAddrV4::new(a, e.port)),
        // Only reachable if another crate turns smoltcp's IPv6 on; our stacks are IPv4.
        #[allow(unreachable_patterns)]
        _ => SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, e.port)),
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")
}

impl Drop for RealStream {
    fn drop(&mut self) {
        if !self.released {
            self.stack.lock().release(self.h, false);
            self.stack.kick();
        }
    }
}

impl AsyncRead for RealStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut g = this.stack.lock();
        if g.dead() {
            return Poll::Ready(Err(reset()));
        }
        if let Some(kept) = g.leftover(this.h) {
            if !kept.data.is_empty() {
                let n = kept.data.len().min(buf.remaining());
                let (a, b) = kept.data.as_slices();
                let from_a = n.min(a.len());
                buf.put_slice(&a[..from_a]);
                buf.put_slice(&b[..n - from_a]);
                kept.data.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if kept.clean_end {
                // Both FINs went and TIME-WAIT ran out: the end of the stream.
                return Poll::Ready(Ok(()));
            }
        }
        let s = g.tcp(this.h);
        match s.recv_slice(buf.initialize_unfilled()) {
            Ok(0) if buf.remaining() > 0 => {
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                buf.advance(n);
                drop(g);
                // The window opened: the driver may owe the peer an update.
                this.stack.kick();
                Poll::Ready(Ok(()))
            }
            Err(tcp::RecvError::Finished) => Poll::Ready(Ok(())),
            Err(tcp::RecvError::InvalidState) => Poll::Ready(Err(reset())),
        }
    }
}

impl AsyncWrite for RealStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if b.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut g = this.stack.lock();
        if g.dead() {
            return Poll::Ready(Err(reset()));
        }
        let s = g.tcp(this.h);
        if !s.may_send() {
            let clean =
                s.state() == tcp::State::Closed && g.leftover(this.h).is_some_and(|k| k.clean_end);
            let s = g.tcp(this.h);
            return Poll::Ready(Err(match s.state() {
                tcp::State::Closed if !clean => reset(),
                _ => io::Error::new(io::ErrorKind::BrokenPipe, "stream already shut down"),
            }));
        }
        if this
            .data_fault
            .as_ref()
            .is_some_and(|f| f.drop_chunk(b.len()))
        {
            // The data-path sabotage: these bytes are reported written and never sent.
            return Poll::Ready(Ok(b.len()));
        }
        match s.send_slice(b) {
            Ok(0) => {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                drop(g);
                this.stack.kick();
                Poll::Ready(Ok(n))
            }
            Err(_) => Poll::Ready(Err(reset())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // As with a kernel socket: written bytes are the stack's to deliver.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            let mut g = this.stack.lock();
            if g.dead() {
                return Poll::Ready(Err(reset()));
            }
            g.tcp(this.h).close();
        }
        this.stack.kick();
        Poll::Ready(Ok(()))
    }
}

/// A listening port on a host's smoltcp stack.
pub struct RealListener {
    stack: Arc<HostStack>,
    port: u16,
    local: SocketAddr,
    data_fault: Option<Arc<DataFault>>,
}

impl RealListener {
    /// Listens on `port` (0: an ephemeral one) of the host of `stack`.
    pub fn bind(
        stack: Arc<HostStack>,
        port: u16,
        data_fault: Option<Arc<DataFault>>,
    ) -> io::Result<RealListener> {
        let (port, ip) = {
            let mut g = stack.lock();
            (g.listen(port)?, g.ip())
        };
        stack.kick();
        Ok(RealListener {
            stack,
            port,
            local: SocketAddr::V4(SocketAddrV4::new(ip, port)),
            data_fault,
        })
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(RealStream, SocketAddr)> {
        loop {
            let h = poll_fn(|cx| self.stack.lock().poll_accept(self.port, cx.waker())).await?;
            // A connection reset while it waited in the queue is handed out (see
            // `accepted`); only one whose addresses are unknown is skipped.
            if let Ok(s) = RealStream::accepted(self.stack.clone(), h, self.data_fault.clone()) {
                let peer = s.peer_addr();
                return Ok((s, peer));
            }
        }
    }

    /// The bound address (the host's own address).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for RealListener {
    fn drop(&mut self) {
        self.stack.lock().unlisten(self.port);
        self.stack.kick();
    }
}
