//! An async socket API over the sans-IO [`Stack`]: a listener whose `accept` gives
//! streams that implement tokio's `AsyncRead` + `AsyncWrite`, and an active `connect`.
//! It runs over any [`PacketIo`] (send one IPv4 packet, receive one), so the IP-packet
//! link (a TUN device, the simulator's link) plugs in with a few lines. Time is tokio's
//! (virtual inside turmoil); the stack itself stays free of tokio.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tunnelbed_netio::Trace;

use crate::{ConnId, Event, ListenerId, Stack, StackConfig, StackError, State};

/// What carries the stack's packets: one raw IPv4 packet per call.
pub trait PacketIo: Send + Sync + 'static {
    /// Sends one packet.
    fn send(&self, packet: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Receives one packet. Must be cancel-safe (the driver selects on it).
    fn recv(&self) -> impl Future<Output = io::Result<Bytes>> + Send;
    /// A packet that is already waiting, without waiting (`Ok(None)`: none). The driver
    /// calls it between the packets of a burst, so answers the peer gives at once are
    /// read before they overflow whatever queue holds them (see [`drive`]).
    fn try_recv(&self) -> io::Result<Option<Bytes>> {
        Ok(None)
    }
}

#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
}

struct Inner {
    stack: Stack,
    conns: BTreeMap<ConnId, Wakers>,
    accept: BTreeMap<ListenerId, Waker>,
}

struct Shared {
    inner: Mutex<Inner>,
    origin: Instant,
    kick: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Duration {
        Instant::now().duration_since(self.origin)
    }
}

fn io_error(e: StackError) -> io::Error {
    let kind = match e {
        StackError::WouldBlock => io::ErrorKind::WouldBlock,
        StackError::Reset => io::ErrorKind::ConnectionReset,
        StackError::Refused => io::ErrorKind::ConnectionRefused,
        StackError::TimedOut => io::ErrorKind::TimedOut,
        StackError::NotConnected => io::ErrorKind::NotConnected,
        StackError::AddrInUse => io::ErrorKind::AddrInUse,
        StackError::Shutdown => io::ErrorKind::BrokenPipe,
        StackError::Closed | StackError::NoSuchHandle => io::ErrorKind::NotConnected,
        StackError::TooManyConnections => io::ErrorKind::OutOfMemory,
    };
    io::Error::new(kind, e)
}

/// A stack driven by a background task over a [`PacketIo`]. Cloning shares the stack.
#[derive(Clone)]
pub struct TcpStack {
    shared: Arc<Shared>,
}

impl TcpStack {
    /// Starts the driver task on the current tokio runtime. The task ends when the
    /// packet I/O fails (its error is returned by the join handle).
    pub fn spawn<P: PacketIo>(
        io: P,
        cfg: StackConfig,
        trace: Trace,
    ) -> (TcpStack, tokio::task::JoinHandle<io::Result<()>>) {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                stack: Stack::new(cfg, trace),
                conns: BTreeMap::new(),
                accept: BTreeMap::new(),
            }),
            origin: Instant::now(),
            kick: Notify::new(),
        });
        let task = tokio::spawn(drive(shared.clone(), io));
        (TcpStack { shared }, task)
    }

    /// Listens on `addr` with an accept queue of `backlog`.
    pub fn listen(&self, addr: SocketAddrV4, backlog: usize) -> io::Result<TcpStackListener> {
        let now = self.shared.now();
        let id = self
            .shared
            .lock()
            .stack
            .listen(now, addr, backlog)
            .map_err(io_error)?;
        Ok(TcpStackListener {
            shared: self.shared.clone(),
            id,
        })
    }

    /// Opens a connection from `local` to `remote` and waits for the handshake.
    pub async fn connect(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> io::Result<TcpStackStream> {
        let now = self.shared.now();
        let id = {
            let mut g = self.shared.lock();
            let id = g.stack.connect(now, local, remote).map_err(io_error)?;
            g.conns.insert(id, Wakers::default());
            id
        };
        self.shared.kick.notify_one();
        let stream = TcpStackStream {
            shared: self.shared.clone(),
            id,
        };
        std::future::poll_fn(|cx| {
            let mut g = stream.shared.lock();
            match g.stack.state(id) {
                Some(State::SynSent) => {
                    if let Some(w) = g.conns.get_mut(&id) {
                        w.write = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
                Some(State::Closed) | None => {
                    let mut b = [0u8; 0];
                    let e = g
                        .stack
                        .read(now, id, &mut b)
                        .err()
                        .unwrap_or(StackError::Refused);
                    Poll::Ready(Err(io_error(e)))
                }
                Some(_) => Poll::Ready(Ok(())),
            }
        })
        .await?;
        Ok(stream)
    }

    /// Counters of the stack.
    pub fn stats(&self) -> crate::Stats {
        self.shared.lock().stack.stats()
    }

    /// Connections in the stack's table.
    pub fn connection_count(&self) -> usize {
        self.shared.lock().stack.connection_count()
    }
}

/// Most packets the driver sends in a row before it handles what the peer answered.
const SEND_BURST: usize = 16;

/// The driver: packets in, timers, packets out, wakers.
///
/// Packets out go in bursts of at most [`SEND_BURST`], each followed by every packet
/// already waiting ([`PacketIo::try_recv`]). A kernel behind a TUN device answers each of
/// our segments inside our write, into a queue of 500 packets that only our reads empty:
/// when the driver wrote a whole go-back-N round of every connection (thousands of
/// segments) before reading again, the answers to the last ones were dropped there. The
/// connections last in the table lost every ACK of every round, doubled their
/// retransmission timeout round after round, and one passed the 120 s idle bound
/// (100 parallel downloads at 10% loss).
async fn drive<P: PacketIo>(shared: Arc<Shared>, io: P) -> io::Result<()> {
    loop {
        let (out, deadline) = {
            let mut g = shared.lock();
            // Timers that are due run even while packets keep coming (the receive arm
            // below is biased and a busy peer never lets the timer arm win).
            let now = shared.now();
            if g.stack.poll_timeout().is_some_and(|t| t <= now) {
                g.stack.handle_timeout(now);
            }
            let mut out = Vec::new();
            while let Some(p) = g.stack.poll_transmit() {
                out.push(p);
            }
            while let Some(e) = g.stack.poll_event() {
                let inner = &mut *g;
                match e {
                    Event::Acceptable(l) => {
                        if let Some(w) = inner.accept.remove(&l) {
                            w.wake();
                        }
                    }
                    Event::Readable(c)
                    | Event::Writable(c)
                    | Event::Connected(c)
                    | Event::Closed(c, _) => {
                        if let Some(w) = inner.conns.get_mut(&c) {
                            let read = matches!(e, Event::Readable(_) | Event::Closed(..));
                            let write = !matches!(e, Event::Readable(_));
                            if read {
                                if let Some(x) = w.read.take() {
                                    x.wake();
                                }
                            }
                            if write {
                                if let Some(x) = w.write.take() {
                                    x.wake();
                                }
                            }
                        }
                    }
                }
            }
            (out, g.stack.poll_timeout())
        };
        let mut took = false;
        for (i, p) in out.into_iter().enumerate() {
            io.send(p).await?;
            if (i + 1) % SEND_BURST == 0 {
                took |= take_waiting(&shared, &io)?;
            }
        }
        if take_waiting(&shared, &io)? || took {
            // What they made the stack send (and their events) first.
            continue;
        }
        let sleep = deadline.map(|d| tokio::time::sleep_until(shared.origin + d));
        tokio::select! {
            biased;
            r = io.recv() => {
                let p = r?;
                let now = shared.now();
                // Bad packets are counted in the stack's stats and change nothing.
                let _ = shared.lock().stack.handle_input(now, &p);
            }
            _ = shared.kick.notified() => {}
            _ = async { if let Some(s) = sleep { s.await } else { std::future::pending::<()>().await } } => {
                let now = shared.now();
                shared.lock().stack.handle_timeout(now);
            }
        }
    }
}

/// Hands every packet already waiting on `io` to the stack (what they make the stack
/// send goes out on the driver's next round); says whether there was any.
fn take_waiting<P: PacketIo>(shared: &Shared, io: &P) -> io::Result<bool> {
    let mut any = false;
    while let Some(p) = io.try_recv()? {
        any = true;
        let now = shared.now();
        // Bad packets are counted in the stack's stats and change nothing.
        let _ = shared.lock().stack.handle_input(now, &p);
    }
    Ok(any)
}

/// A listening socket.
pub struct TcpStackListener {
    shared: Arc<Shared>,
    id: ListenerId,
}

impl TcpStackListener {
    /// Waits for the next established connection.
    pub async fn accept(&self) -> io::Result<TcpStackStream> {
        std::future::poll_fn(|cx| {
            let mut g = self.shared.lock();
            match g.stack.accept(self.id) {
                Some(c) => {
                    g.conns.insert(c, Wakers::default());
                    drop(g);
                    self.shared.kick.notify_one();
                    Poll::Ready(Ok(TcpStackStream {
                        shared: self.shared.clone(),
                        id: c,
                    }))
                }
                None => {
                    if g.stack.listener_backlog(self.id).is_none() {
                        return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected)));
                    }
                    g.accept.insert(self.id, cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for TcpStackListener {
    fn drop(&mut self) {
        let now = self.shared.now();
        let _ = self.shared.lock().stack.close_listener(now, self.id);
        self.shared.kick.notify_one();
    }
}

/// A connection: `AsyncRead` + `AsyncWrite`. `poll_shutdown` sends FIN; dropping it
/// closes it the seed's way (RST at once, or after the pending data is acked).
pub struct TcpStackStream {
    shared: Arc<Shared>,
    id: ConnId,
}

impl TcpStackStream {
    /// The (local, remote) addresses.
    pub fn addrs(&self) -> Option<(SocketAddrV4, SocketAddrV4)> {
        self.shared.lock().stack.addrs(self.id)
    }
}

impl TcpStackStream {
    /// After `shutdown`: waits until every byte written and the FIN are acknowledged,
    /// or the connection ends. Dropping the stream resets the connection (seed 002),
    /// and that RST is never sent again: an application that wants its peer to see the
    /// FIN, not a lost RST, lingers here first.
    pub async fn linger(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut g = self.shared.lock();
            if g.stack.fin_acked(self.id) {
                return Poll::Ready(Ok(()));
            }
            match g.stack.state(self.id) {
                None | Some(State::Closed) => Poll::Ready(Ok(())),
                Some(_) => {
                    if let Some(w) = g.conns.get_mut(&self.id) {
                        w.write = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl AsyncRead for TcpStackStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let now = self.shared.now();
        let mut g = self.shared.lock();
        let dst = buf.initialize_unfilled();
        match g.stack.read(now, self.id, dst) {
            Ok(n) => {
                buf.advance(n);
                drop(g);
                // The read may allow an ACK: let the driver see the new timer.
                self.shared.kick.notify_one();
                Poll::Ready(Ok(()))
            }
            Err(StackError::WouldBlock) => {
                if let Some(w) = g.conns.get_mut(&self.id) {
                    w.read = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

impl AsyncWrite for TcpStackStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let now = self.shared.now();
        let mut g = self.shared.lock();
        match g.stack.write(now, self.id, data) {
            Ok(n) => {
                drop(g);
                self.shared.kick.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(StackError::WouldBlock) => {
                if let Some(w) = g.conns.get_mut(&self.id) {
                    w.write = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let now = self.shared.now();
        let r = self.shared.lock().stack.shutdown(now, self.id);
        self.shared.kick.notify_one();
        Poll::Ready(r.map_err(io_error))
    }
}

impl Drop for TcpStackStream {
    fn drop(&mut self) {
        let now = self.shared.now();
        let mut g = self.shared.lock();
        let _ = g.stack.close(now, self.id);
        g.conns.remove(&self.id);
        drop(g);
        self.shared.kick.notify_one();
    }
}
