//! [`CaptureNet`]: wraps any [`Net`] so every socket it hands out records into a
//! [`CaptureIface`]. The same wrapper serves the simulator and the real binary's `--pcap`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::capture::{CaptureIface, ResetRecorded, TcpFlow};
use crate::net::{Net, TcpConn, TcpListen, UdpSock};

/// A [`Net`] whose sockets record what crosses them.
#[derive(Clone, Debug)]
pub struct CaptureNet<N> {
    inner: N,
    iface: Option<CaptureIface>,
    /// Whether TCP streams record synthesized segments (false when the network below
    /// records the real segments itself, as the simulator's real-TCP mode does).
    record_tcp: bool,
}

impl<N: Net> CaptureNet<N> {
    /// Wraps `inner`, recording into `iface` (one interface per host).
    pub fn new(inner: N, iface: CaptureIface) -> Self {
        Self {
            inner,
            iface: Some(iface),
            record_tcp: true,
        }
    }

    /// Wraps `inner` without recording, so callers can use one type either way.
    pub fn passthrough(inner: N) -> Self {
        Self {
            inner,
            iface: None,
            record_tcp: true,
        }
    }

    /// Wraps `inner`, recording only when `iface` is given.
    pub fn maybe(inner: N, iface: Option<CaptureIface>) -> Self {
        Self {
            inner,
            iface,
            record_tcp: true,
        }
    }

    /// Stops TCP streams from recording synthesized segments, for a network whose TCP
    /// segments are real packets it records itself (UDP and IP links still record here).
    pub fn without_tcp_records(mut self) -> Self {
        self.record_tcp = false;
        self
    }

    fn tcp_iface(&self) -> Option<&CaptureIface> {
        self.iface.as_ref().filter(|_| self.record_tcp)
    }

    /// The wrapped network.
    pub fn inner(&self) -> &N {
        &self.inner
    }

    /// The capture interface sockets record into, when recording.
    pub fn iface(&self) -> Option<&CaptureIface> {
        self.iface.as_ref()
    }
}

/// A UDP socket that records each datagram sent and received.
pub struct CapturedUdp<U> {
    inner: U,
    iface: Option<CaptureIface>,
}

impl<U: UdpSock> UdpSock for CapturedUdp<U> {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        let n = self.inner.send_to(buf, target).await?;
        if let (Some(iface), Ok(local)) = (&self.iface, self.inner.local_addr()) {
            iface.udp(local, target, &buf[..n]);
        }
        Ok(n)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = self.inner.recv_from(buf).await?;
        if let (Some(iface), Ok(local)) = (&self.iface, self.inner.local_addr()) {
            iface.udp(from, local, &buf[..n]);
        }
        Ok((n, from))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn kernel_socket(&self) -> Option<io::Result<std::net::UdpSocket>> {
        // Recording needs every datagram to pass through here.
        match self.iface {
            None => self.inner.kernel_socket(),
            Some(_) => None,
        }
    }
}

/// A TCP stream that records synthesized segments for what is written and read.
pub struct CapturedStream<S> {
    inner: S,
    flow: FlowRec,
}

/// The stream's [`TcpFlow`], when recording; dropping it records the FIN a socket sends
/// when it is closed (unless the flow already ended, e.g. by an abort's RST).
struct FlowRec(Option<Mutex<TcpFlow>>);

impl Drop for FlowRec {
    fn drop(&mut self) {
        if let Some(m) = self.0.as_mut() {
            m.get_mut().unwrap_or_else(|e| e.into_inner()).fin_out();
        }
    }
}

impl<S: TcpConn> CapturedStream<S> {
    fn new(inner: S, iface: Option<&CaptureIface>, we_connected: bool) -> io::Result<Self> {
        let flow = match iface {
            Some(i) => Some(Mutex::new(i.tcp_flow(
                inner.local_addr()?,
                inner.peer_addr()?,
                we_connected,
            ))),
            None => None,
        };
        Ok(Self {
            inner,
            flow: FlowRec(flow),
        })
    }

    fn with_flow(&self, f: impl FnOnce(&mut TcpFlow)) {
        if let Some(m) = &self.flow.0 {
            f(&mut m.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

impl<S: TcpConn> AsyncRead for CapturedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                let eof = got.is_empty() && buf.remaining() > 0;
                this.with_flow(|f| if eof { f.fin_in() } else { f.received(got) });
            }
            // A reset the peer's own capture recorded (the simulator marks the ones it
            // models) is not recorded again: each segment appears once.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                if e.get_ref().is_some_and(|r| r.is::<ResetRecorded>()) {
                    this.with_flow(|f| f.reset_recorded());
                } else {
                    this.with_flow(|f| f.reset(true));
                }
            }
            _ => {}
        }
        r
    }
}

impl<S: TcpConn> AsyncWrite for CapturedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.with_flow(|f| f.sent(&buf[..*n]));
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = &r {
            this.with_flow(|f| f.fin_out());
        }
        r
    }
}

impl<S: TcpConn> TcpConn for CapturedStream<S> {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
    fn abort(self) {
        // Our RST, on our interface; the flow is then over, so no FIN follows.
        self.with_flow(|f| f.reset(false));
        let CapturedStream { inner, flow } = self;
        drop(flow);
        inner.abort();
    }
    fn set_unacked_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        self.inner.set_unacked_timeout(timeout)
    }
}

/// A TCP listener whose accepted streams record.
pub struct CapturedListener<L> {
    inner: L,
    iface: Option<CaptureIface>,
}

impl<L: TcpListen> TcpListen for CapturedListener<L> {
    type Stream = CapturedStream<L::Stream>;
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, a) = self.inner.accept().await?;
        Ok((CapturedStream::new(s, self.iface.as_ref(), false)?, a))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl<N: Net> Net for CaptureNet<N> {
    type Udp = CapturedUdp<N::Udp>;
    type Stream = CapturedStream<N::Stream>;
    type Listener = CapturedListener<N::Listener>;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::Udp> {
        Ok(CapturedUdp {
            inner: self.inner.bind_udp(addr).await?,
            iface: self.iface.clone(),
        })
    }
    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let s = self.inner.connect_tcp(addr).await?;
        CapturedStream::new(s, self.tcp_iface(), true)
    }
    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        Ok(CapturedListener {
            inner: self.inner.listen_tcp(addr).await?,
            iface: self.tcp_iface().cloned(),
        })
    }
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.inner.resolve(host, port).await
    }
    fn data_fault(&self) -> Option<std::sync::Arc<crate::DataFault>> {
        self.inner.data_fault()
    }
    fn quic_seed(&self) -> Option<[u8; 32]> {
        self.inner.quic_seed()
    }
}
