//! quinn's socket abstraction over a [`Net`] UDP socket, so the `h3://` carrier runs on
//! real sockets and inside the simulator (over the link model, where the capture sees
//! every QUIC packet) with the same code.
//!
//! [`UdpSock`] is async-fn shaped and quinn's [`AsyncUdpSocket`] poll shaped, so two
//! small tasks own the socket: one receives into a bounded queue that
//! [`AsyncUdpSocket::poll_recv`] drains, the other sends what
//! [`AsyncUdpSocket::try_send`] queued (a full queue is `WouldBlock`, and the poller
//! waits for room). Both tasks end when the adapter is dropped.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;
use tunnelbed_netio::UdpSock;

/// Datagrams queued each way between quinn and the socket tasks.
pub const QUEUE: usize = 256;
/// Largest datagram received (bigger ones are truncated, which QUIC then drops).
pub const MAX_DATAGRAM: usize = 65_535;

type Datagram = (Vec<u8>, SocketAddr);

/// A [`Net`](tunnelbed_netio::Net) UDP socket seen by quinn.
pub struct NetUdp {
    local: SocketAddr,
    out: mpsc::Sender<Datagram>,
    inbox: Mutex<mpsc::Receiver<Datagram>>,
}

impl fmt::Debug for NetUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetUdp")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl NetUdp {
    /// Takes `sock` over; its two tasks run on the current tokio runtime.
    pub fn new<U: UdpSock>(sock: U) -> io::Result<Self> {
        let local = sock.local_addr()?;
        let sock = Arc::new(sock);
        let (out, mut out_rx) = mpsc::channel::<Datagram>(QUEUE);
        let (in_tx, inbox) = mpsc::channel::<Datagram>(QUEUE);
        let tx_sock = sock.clone();
        tokio::spawn(async move {
            while let Some((d, to)) = out_rx.recv().await {
                if let Err(e) = tx_sock.send_to(&d, to).await {
                    // UDP: a failed send is a lost datagram, which QUIC recovers from.
                    tracing::debug!("h3 carrier: udp send to {to}: {e}");
                }
            }
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                // biased: fixed order, so simulated runs replay.
                let r = tokio::select! {
                    biased;
                    _ = in_tx.closed() => return,
                    r = sock.recv_from(&mut buf) => r,
                };
                match r {
                    Ok((n, from)) => {
                        if in_tx.send((buf[..n].to_vec(), from)).await.is_err() {
                            return;
                        }
                    }
                    // An ICMP error reported on the socket: one lost datagram.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                        ) => {}
                    Err(e) => {
                        tracing::debug!("h3 carrier: udp receive on {local}: {e}; stopping");
                        return;
                    }
                }
            }
        });
        Ok(Self {
            local,
            out,
            inbox: Mutex::new(inbox),
        })
    }
}

impl AsyncUdpSocket for NetUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(RoomPoller {
            out: self.out.clone(),
            waiting: Mutex::new(None),
        })
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        let n = t.contents.len().div_ceil(seg);
        let permits = match self.out.try_reserve_many(n.max(1)) {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(_)) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "h3 carrier: the udp socket task ended",
                ))
            }
        };
        for (permit, chunk) in permits.zip(t.contents.chunks(seg)) {
            permit.send((chunk.to_vec(), t.destination));
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut inbox = match self.inbox.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match inbox.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "h3 carrier: the udp socket task ended",
            ))),
            Poll::Ready(Some((d, from))) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                *m = RecvMeta {
                    addr: from,
                    len: n,
                    stride: n,
                    ecn: None,
                    dst_ip: None,
                };
                Poll::Ready(Ok(1))
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

type RoomFuture = Pin<Box<dyn std::future::Future<Output = io::Result<()>> + Send>>;

/// Waits until the send queue has room again.
struct RoomPoller {
    out: mpsc::Sender<Datagram>,
    waiting: Mutex<Option<RoomFuture>>,
}

impl fmt::Debug for RoomPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomPoller").finish_non_exhaustive()
    }
}

impl UdpPoller for RoomPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waiting = match this.waiting.get_mut() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        let fut = waiting.get_or_insert_with(|| {
            let out = this.out.clone();
            Box::pin(async move {
                // A permit taken and dropped at once: room for one datagram now.
                out.reserve().await.map(drop).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "h3 carrier: the udp socket task ended",
                    )
                })
            })
        });
        let r = fut.as_mut().poll(cx);
        if r.is_ready() {
            *waiting = None;
        }
        r
    }
}
