//! The async driver: runs one pong [`Session`] (either [`Side`]) over any ordered
//! byte stream (a TCP, TLS or WebSocket carrier) and hands each stream to the
//! application: a [`PongStream`] (`AsyncRead + AsyncWrite`) for connect streams, a
//! [`PongDatagrams`] for relay streams.
//!
//! Tasks, so that nothing deadlocks on a full buffer:
//! - the connection task owns the machine: it reads the carrier, takes application
//!   commands and moves received bytes towards the streams;
//! - a carrier writer task ([`tunnelbed_netio::mux::carrier_writer`], which gathers what
//!   is queued into one write) writes what the machine emits, so the connection task keeps
//!   reading while the carrier is slow (two ends writing bulk at each other would
//!   otherwise wait on each other forever);
//! - per connect stream, a pump from the application (its writes become data frames, its
//!   end of input a finish) and a pump to the application.
//!
//! Backpressure: received bytes wait in the machine's per-stream buffer
//! ([`SessionConfig::stream_rx_cap`]); when one is full the machine holds its input and
//! this task stops reading the carrier until the application reads that stream. pong has
//! no flow control, so a slow reader stalls its whole connection (as in pong-go) instead
//! of losing data. A stream the peer resets, or that dies with its connection, fails reads
//! and writes with `ConnectionReset` (the rst code and description in the message), never
//! a silent end of file. Time is `tokio::time`, virtual inside the simulator.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::PollSender;
use tunnelbed_netio::mux::CarrierPump;
use tunnelbed_netio::Trace;

use crate::session::{
    ConnState, DialError, Event, ProtocolError, Session, SessionConfig, Side, StreamError,
};
use crate::stream::{Recv, ResetCause, StreamKind};
use crate::wire::{Address, RstCode, RstInfo, MAX_PAYLOAD};

/// Driver settings on top of the machine's.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The machine's caps.
    pub session: SessionConfig,
    /// Received bytes queued between the connection task and each [`PongStream`] (in
    /// chunks of about 16 KiB), on top of the machine's per-stream buffer.
    pub stream_buffer: usize,
    /// Datagrams queued towards the application of each relay stream.
    pub datagram_queue: usize,
    /// How long the writer may take to flush what is queued when the connection ends.
    pub close_delay: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            stream_buffer: 64 * 1024,
            datagram_queue: 64,
            close_delay: Duration::from_secs(2),
        }
    }
}

/// How a stream ended, as its handles see it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StreamEnd {
    /// The peer sent close: read what is left; writes fail with `BrokenPipe`.
    Closed,
    /// rst either way, or the connection died.
    Reset(ResetCause),
}

fn end_error(sid: u32, e: &StreamEnd, writing: bool) -> Option<io::Error> {
    match e {
        StreamEnd::Reset(c) => Some(io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("pong stream {sid}: {c}"),
        )),
        StreamEnd::Closed if writing => Some(io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("pong stream {sid}: closed by peer"),
        )),
        StreamEnd::Closed => None,
    }
}

/// One connect (TCP) stream, as the application uses it.
///
/// Shutting down its write half sends finish (a half close: the peer may go on sending).
/// Dropping it without a shutdown sends finish too; dropping it with input unread is an
/// abort (rst, as a TCP socket closed with unread data). [`PongStream::reset`] aborts with
/// a chosen code. Reads and writes go straight to the connection task through bounded
/// queues (no copy tasks in between).
pub struct PongStream {
    sid: u32,
    rx: mpsc::Receiver<Bytes>,
    /// Part of a received chunk the application has not read yet.
    leftover: Bytes,
    eof: bool,
    tx: PollSender<Cmd>,
    shut: bool,
    /// The finish command is queued (or the connection is gone): the connection task
    /// learns in order that the application will write no more, and may retire the
    /// stream once the handle is dropped too.
    finish_queued: bool,
    end: watch::Receiver<Option<StreamEnd>>,
    ctl: mpsc::UnboundedSender<Ctl>,
    wake: Arc<Notify>,
    released: bool,
}

impl std::fmt::Debug for PongStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PongStream")
            .field("sid", &self.sid)
            .finish()
    }
}

/// Most bytes one write turns into one data frame.
const WRITE_CHUNK: usize = 32 * 1024;

/// Most application commands the connection task applies before emitting.
const CMD_BATCH: usize = 16;

/// Watches one stream for a reset (see [`PongStream::reset_watch`]).
pub struct ResetWatch {
    sid: u32,
    end: watch::Receiver<Option<StreamEnd>>,
}

impl ResetWatch {
    /// Resolves once the stream is reset (either way, or with its connection), with the
    /// error a read would give; never for a stream that ends normally.
    pub async fn reset(&mut self) -> io::Error {
        loop {
            let cause = match self.end.borrow().as_ref() {
                Some(StreamEnd::Reset(c)) => Some(c.clone()),
                _ => None,
            };
            if let Some(c) = cause {
                return io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("pong stream {}: {c}", self.sid),
                );
            }
            if self.end.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl PongStream {
    /// The stream id on the wire.
    pub fn id(&self) -> u32 {
        self.sid
    }

    /// A watch that resolves when this stream is reset, for a caller that is not reading
    /// it (a relay waiting on its other side).
    pub fn reset_watch(&self) -> ResetWatch {
        ResetWatch {
            sid: self.sid,
            end: self.end.clone(),
        }
    }

    /// Aborts the stream: rst with `info` to the peer; unsent and unread bytes are dropped.
    pub fn reset(mut self, info: RstInfo) {
        self.released = true;
        let _ = self.ctl.send(Ctl::Reset(self.sid, info));
    }

    fn error(&self, writing: bool) -> Option<io::Error> {
        self.end
            .borrow()
            .as_ref()
            .and_then(|e| end_error(self.sid, e, writing))
    }
}

impl AsyncRead for PongStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.leftover.is_empty() && !this.eof {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => {
                    // Room in the queue: the connection task may feed more.
                    this.wake.notify_one();
                    this.leftover = b;
                }
                Poll::Ready(None) => this.eof = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        if !this.leftover.is_empty() {
            // Hand over every queued chunk that fits: one read (and one write to the
            // application's socket) per buffer instead of per chunk.
            loop {
                let n = this.leftover.len().min(buf.remaining());
                buf.put_slice(&this.leftover.split_to(n));
                if buf.remaining() == 0 || !this.leftover.is_empty() {
                    break;
                }
                match this.rx.try_recv() {
                    Ok(b) => {
                        this.wake.notify_one();
                        this.leftover = b;
                    }
                    Err(_) => break,
                }
            }
            return Poll::Ready(Ok(()));
        }
        // End of input after a reset is the reset, not a clean end.
        match this.error(false) {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for PongStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.error(true) {
            return Poll::Ready(Err(e));
        }
        if this.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("pong stream {}: write after shutdown", this.sid),
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(this.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(this.error(true).unwrap_or_else(gone)));
        }
        let n = data.len().min(WRITE_CHUNK);
        let item = Cmd::Data(this.sid, Bytes::copy_from_slice(&data[..n]));
        if this.tx.send_item(item).is_err() {
            return Poll::Ready(Err(gone()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shut {
            return Poll::Ready(Ok(()));
        }
        if this.error(true).is_some() {
            // Nothing to tell the peer; the finish command still goes to the connection
            // task (when the handle is dropped) so that it retires the stream.
            this.shut = true;
            return Poll::Ready(Ok(()));
        }
        if ready!(this.tx.poll_reserve(cx)).is_err() {
            this.shut = true;
            this.finish_queued = true;
            return Poll::Ready(Ok(()));
        }
        let _ = this.tx.send_item(Cmd::Finish(this.sid));
        this.shut = true;
        this.finish_queued = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for PongStream {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Also after a shutdown that found the stream already ended and queued nothing:
        // without the finish the connection task would keep the stream (and count it
        // live, so its carrier never goes idle) forever.
        if !self.finish_queued {
            if let Some(tx) = self.tx.get_ref() {
                send_in_order(tx, Cmd::Finish(self.sid));
            }
        }
        let unread = !self.eof && (!self.leftover.is_empty() || !self.rx.is_closed());
        let _ = self.ctl.send(Ctl::Dropped(self.sid, unread));
    }
}

/// Queues `c` behind what is already queued, from a context that cannot wait (Drop).
fn send_in_order(tx: &mpsc::Sender<Cmd>, c: Cmd) {
    match tx.try_send(c) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(c)) => {
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                let tx = tx.clone();
                h.spawn(async move {
                    let _ = tx.send(c).await;
                });
            }
        }
    }
}

/// One relay (UDP) stream: each `send` is one datagram (one data frame), each `recv` one
/// datagram back. Dropping it closes the stream.
pub struct PongDatagrams {
    sid: u32,
    rx: mpsc::Receiver<Bytes>,
    end: watch::Receiver<Option<StreamEnd>>,
    cmds: mpsc::Sender<Cmd>,
    ctl: mpsc::UnboundedSender<Ctl>,
    wake: Arc<Notify>,
    released: bool,
}

impl std::fmt::Debug for PongDatagrams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PongDatagrams")
            .field("sid", &self.sid)
            .finish()
    }
}

impl PongDatagrams {
    /// The stream id on the wire.
    pub fn id(&self) -> u32 {
        self.sid
    }

    /// Sends one datagram (at most 65 500 bytes); waits while the connection's output is
    /// full.
    pub async fn send(&self, datagram: Bytes) -> io::Result<()> {
        if datagram.len() > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("datagram of {} bytes exceeds {MAX_PAYLOAD}", datagram.len()),
            ));
        }
        if let Some(e) = self
            .end
            .borrow()
            .as_ref()
            .and_then(|e| end_error(self.sid, e, true))
        {
            return Err(e);
        }
        self.cmds
            .send(Cmd::Datagram(self.sid, datagram))
            .await
            .map_err(|_| gone())
    }

    /// The next datagram; `Ok(None)` once the peer closed the stream, an error when it
    /// was reset or the connection died.
    pub async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        match self.rx.recv().await {
            Some(b) => {
                self.wake.notify_one();
                Ok(Some(b))
            }
            None => match self
                .end
                .borrow()
                .as_ref()
                .and_then(|e| end_error(self.sid, e, false))
            {
                Some(e) => Err(e),
                None => Ok(None),
            },
        }
    }

    /// Aborts the stream with rst `info`.
    pub fn reset(mut self, info: RstInfo) {
        self.released = true;
        let _ = self.ctl.send(Ctl::Reset(self.sid, info));
    }
}

impl Drop for PongDatagrams {
    fn drop(&mut self) {
        // Through the data queue, so datagrams sent before the drop still go out.
        if !self.released {
            send_in_order(&self.cmds, Cmd::Release(self.sid));
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "pong connection is closed")
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnEnd {
    /// The carrier ended or failed (this includes a remote rejecting our client id).
    CarrierLost(String),
    /// The peer broke the framing.
    Protocol(ProtocolError),
    /// We shut it down (idle, too old, rejected client, process exit).
    Shutdown(String),
}

impl std::fmt::Display for ConnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnEnd::CarrierLost(r) => write!(f, "carrier lost: {r}"),
            ConnEnd::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnEnd::Shutdown(r) => write!(f, "shut down: {r}"),
        }
    }
}

/// A stream the application can use: which kind depends on how it was opened.
#[derive(Debug)]
pub enum Opened {
    /// A connect stream.
    Tcp(PongStream),
    /// A relay stream.
    Udp(PongDatagrams),
}

/// Remote side: a stream the local opened. Dial `addr`, then call [`Incoming::dialed`];
/// only after a successful dial may the stream be written.
#[derive(Debug)]
pub struct Incoming {
    /// Stream id.
    pub stream_id: u32,
    /// Destination.
    pub addr: Address,
    /// The stream (its kind tells connect from relay).
    pub stream: Opened,
    dial: DialReply,
}

#[derive(Debug)]
struct DialReply {
    sid: u32,
    ctl: mpsc::UnboundedSender<Ctl>,
}

impl Incoming {
    /// Reports the dial's outcome: on error, the local gets rst with the mapped code and
    /// the stream handle here fails.
    pub fn dialed(&self, r: Result<(), DialError>) {
        let _ = self.dial.ctl.send(Ctl::Dialed(self.dial.sid, r));
    }
}

/// Counters the pool reads without asking the connection task.
#[derive(Debug, Default)]
pub struct ConnStats {
    live: AtomicUsize,
    opened: AtomicUsize,
}

impl ConnStats {
    /// Streams the application still holds.
    pub fn live_streams(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Streams opened or accepted so far.
    pub fn opened_streams(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }
}

type OpenReply = oneshot::Sender<Result<Opened, StreamError>>;

/// A running connection: open streams on it (local side), take the ones the peer opens
/// (remote side), and learn when it ends.
#[derive(Debug)]
pub struct PongConn {
    opens: mpsc::Sender<(StreamKind, Address, OpenReply)>,
    ctl: mpsc::UnboundedSender<Ctl>,
    /// Remote side: streams the local opened, in order.
    pub incoming: mpsc::Receiver<Incoming>,
    /// Remote side: the client id from the connection header (answer with
    /// [`PongConn::approve`]).
    pub hello: Option<oneshot::Receiver<[u8; 16]>>,
    /// Live and total stream counts.
    pub stats: Arc<ConnStats>,
    /// The connection's state as it changes.
    pub state: watch::Receiver<ConnState>,
    /// Resolves when the connection ends.
    pub done: JoinHandle<ConnEnd>,
}

/// Opens streams on a [`PongConn`] without borrowing it: a pool waits for a busy
/// carrier's room with this, not with its lock held (one backed-up carrier would
/// otherwise hold up new streams on every other carrier).
#[derive(Clone, Debug)]
pub struct Opener {
    opens: mpsc::Sender<(StreamKind, Address, OpenReply)>,
}

impl Opener {
    /// Local side: opens a connect stream to `addr` (data may be written at once).
    pub async fn open_connect(&self, addr: Address) -> io::Result<PongStream> {
        match self.open(StreamKind::Tcp, addr).await? {
            Opened::Tcp(s) => Ok(s),
            Opened::Udp(_) => unreachable!("a connect open yields a connect stream"),
        }
    }

    /// Local side: opens a relay stream to `addr` (one datagram per data frame).
    pub async fn open_relay(&self, addr: Address) -> io::Result<PongDatagrams> {
        match self.open(StreamKind::Udp, addr).await? {
            Opened::Udp(s) => Ok(s),
            Opened::Tcp(_) => unreachable!("a relay open yields a relay stream"),
        }
    }

    async fn open(&self, kind: StreamKind, addr: Address) -> io::Result<Opened> {
        let (tx, rx) = oneshot::channel();
        self.opens
            .send((kind, addr, tx))
            .await
            .map_err(|_| gone())?;
        match rx.await.map_err(|_| gone())? {
            Ok(s) => Ok(s),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }
}

impl PongConn {
    /// An [`Opener`] for this connection.
    pub fn opener(&self) -> Opener {
        Opener {
            opens: self.opens.clone(),
        }
    }

    /// Local side: opens a connect stream to `addr` (data may be written at once).
    pub async fn open_connect(&self, addr: Address) -> io::Result<PongStream> {
        self.opener().open_connect(addr).await
    }

    /// Local side: opens a relay stream to `addr` (one datagram per data frame).
    pub async fn open_relay(&self, addr: Address) -> io::Result<PongDatagrams> {
        self.opener().open_relay(addr).await
    }

    /// Remote side: accept (`true`) or reject the client id; a rejected connection closes
    /// without a byte written.
    pub fn approve(&self, ok: bool) {
        let _ = self.ctl.send(Ctl::Approve(ok));
    }

    /// Ends the connection now; live streams fail with `ConnectionReset`.
    pub fn shutdown(&self, reason: &str) {
        let _ = self.ctl.send(Ctl::Shutdown(reason.to_string()));
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.state.borrow() == ConnState::Closed || self.done.is_finished()
    }
}

/// Starts the local end over `carrier`; the connection header goes out at once.
pub fn spawn_local<C>(
    carrier: C,
    client_id: [u8; 16],
    cfg: DriverConfig,
    trace: Trace,
    id: String,
) -> PongConn
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let m = Session::local(cfg.session.clone(), client_id, trace, id);
    start(carrier, m, cfg).0
}

/// Starts the remote end over `carrier`: the client id arrives on `hello`, streams on
/// `incoming`.
pub fn spawn_remote<C>(carrier: C, cfg: DriverConfig, trace: Trace, id: String) -> PongConn
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let m = Session::remote(cfg.session.clone(), trace, id);
    let (mut conn, hello) = start(carrier, m, cfg);
    conn.hello = Some(hello);
    conn
}

fn start<C>(carrier: C, m: Session, cfg: DriverConfig) -> (PongConn, oneshot::Receiver<[u8; 16]>)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let (open_tx, open_rx) = mpsc::channel(64);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (inc_tx, incoming) = mpsc::channel(1024);
    let (hello_tx, hello_rx) = oneshot::channel();
    let (state_tx, state) = watch::channel(m.state());
    let stats = Arc::new(ConnStats::default());
    let task = Task {
        m,
        cfg,
        streams: BTreeMap::new(),
        stats: stats.clone(),
        ctl: ctl_tx.clone(),
        cmd: None,
        wake: Arc::new(Notify::new()),
        end: None,
        hello: Some(hello_tx),
        incoming: inc_tx,
    };
    let done = tokio::spawn(task.run(carrier, open_rx, ctl_rx, state_tx));
    let conn = PongConn {
        opens: open_tx,
        ctl: ctl_tx,
        incoming,
        hello: None,
        stats,
        state,
        done,
    };
    (conn, hello_rx)
}

/// Application data and ends, through a bounded queue (this is what backpressures
/// writers).
/// Ends of writing travel here too, so they stay behind the data written before them.
enum Cmd {
    Data(u32, Bytes),
    Datagram(u32, Bytes),
    /// The application finished writing (finish).
    Finish(u32),
    /// A relay handle was dropped.
    Release(u32),
}

/// Control messages, at most a few per stream, so an unbounded queue stays bounded.
enum Ctl {
    /// The application dropped a connect stream (`true`: with input unread).
    Dropped(u32, bool),
    Reset(u32, RstInfo),
    Dialed(u32, Result<(), DialError>),
    Approve(bool),
    Shutdown(String),
}

struct DrvStream {
    kind: StreamKind,
    to_app: Option<mpsc::Sender<Bytes>>,
    end: watch::Sender<Option<StreamEnd>>,
    reader_done: bool,
    writer_done: bool,
}

struct Task {
    m: Session,
    cfg: DriverConfig,
    streams: BTreeMap<u32, DrvStream>,
    stats: Arc<ConnStats>,
    ctl: mpsc::UnboundedSender<Ctl>,
    /// A command the machine could not take yet (output full).
    cmd: Option<Cmd>,
    wake: Arc<Notify>,
    end: Option<ConnEnd>,
    hello: Option<oneshot::Sender<[u8; 16]>>,
    incoming: mpsc::Sender<Incoming>,
}

impl Task {
    async fn run<C>(
        mut self,
        carrier: C,
        mut opens: mpsc::Receiver<(StreamKind, Address, OpenReply)>,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
        state_tx: watch::Sender<ConnState>,
    ) -> ConnEnd
    where
        C: AsyncRead + AsyncWrite + Send + 'static,
    {
        let origin = Instant::now();
        let now = move || origin.elapsed();
        let mut pump = CarrierPump::start(carrier, self.wake.clone());
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Cmd>(64);
        let mut carrier_eof = false;
        let mut opens_gone = false;
        loop {
            // Feed held input, emit, route events, feed streams; repeat while it helps.
            loop {
                pump.feed_held(&mut self.m, now());
                if pump.emit(&mut self.m).is_err() {
                    self.end
                        .get_or_insert(ConnEnd::CarrierLost("carrier write failed".into()));
                }
                let mut progressed = self.route_events(&cmd_tx, now());
                progressed |= self.feed_streams(now());
                if let Some(c) = self.cmd.take() {
                    self.apply(c, now());
                    progressed |= self.cmd.is_none();
                }
                if !progressed {
                    break;
                }
            }
            state_tx.send_if_modified(|s| {
                let changed = *s != self.m.state();
                *s = self.m.state();
                changed
            });
            if self.m.state() == ConnState::Closed {
                break;
            }
            if let Some(ConnEnd::CarrierLost(r)) = &self.end {
                let r = r.clone();
                self.m.shutdown(now(), &r);
                break;
            }
            let can_read = !carrier_eof && pump.can_read(&self.m);
            let out_room = !pump.has_unsent()
                && self.cmd.is_none()
                && self.m.pending_output() < self.cfg.session.max_output / 2;
            let can_open = !opens_gone && self.m.side() == Side::Local;
            tokio::select! {
                biased;
                c = ctl.recv() => {
                    if let Some(c) = c {
                        self.control(c, now());
                    }
                }
                r = pump.read(), if can_read => match r {
                    Ok(0) => {
                        carrier_eof = true;
                        self.m.handle_carrier_closed(now());
                    }
                    // Frozen, so that large payloads reach the streams as slices of the
                    // read buffer; the allocation comes back once they are all read.
                    Ok(n) => pump.take_read(&mut self.m, now(), n),
                    Err(e) => {
                        carrier_eof = true;
                        self.end.get_or_insert(ConnEnd::CarrierLost(e.to_string()));
                        self.m.handle_carrier_closed(now());
                    }
                },
                _ = self.wake.notified() => {}
                c = cmd_rx.recv(), if out_room => {
                    if let Some(c) = c {
                        // Control messages sent before this command first: on a
                        // multi-threaded runtime a dial's outcome (sent before the
                        // relay's first write) can land after the ctl branch was polled,
                        // and data applied to a stream still dialing would be dropped.
                        while let Ok(x) = ctl.try_recv() {
                            self.control(x, now());
                        }
                        self.apply(c, now());
                        // Take what else is already queued (a bounded batch), so that
                        // the frames leave in one carrier write instead of one each.
                        for _ in 0..CMD_BATCH {
                            if self.cmd.is_some()
                                || self.m.pending_output() >= self.cfg.session.max_output / 2
                            {
                                break;
                            }
                            match cmd_rx.try_recv() {
                                Ok(c) => self.apply(c, now()),
                                Err(_) => break,
                            }
                        }
                    }
                }
                r = opens.recv(), if can_open && out_room => match r {
                    None => opens_gone = true,
                    Some((kind, addr, reply)) => {
                        let r = self.open(kind, &addr, &cmd_tx, now());
                        let _ = reply.send(r);
                    }
                },
            }
        }
        // Drain events so the end reason is known, then tell every stream.
        self.route_events(&cmd_tx, now());
        let why = self
            .end
            .clone()
            .unwrap_or(ConnEnd::CarrierLost("closed".into()));
        for (sid, s) in self.streams.iter_mut() {
            // A stream that had already ended normally (finish both ways) keeps what it
            // received and the application has not read yet: a carrier the peer closes
            // once its own side is done must not cut it short (the remote was still
            // writing a slow target's request when the local closed an idle carrier).
            let mut rest = Vec::new();
            let clean = s.end.borrow().is_none()
                && loop {
                    match self.m.recv(now(), *sid) {
                        Ok(Recv::Data(b)) => rest.push(b),
                        Ok(Recv::Eof) => break true,
                        Ok(Recv::Pending) | Err(_) => break false,
                    }
                };
            if clean {
                if let Some(tx) = s.to_app.take() {
                    tokio::spawn(async move {
                        for b in rest {
                            if tx.send(b).await.is_err() {
                                return;
                            }
                        }
                    });
                }
                continue;
            }
            if s.end.borrow().is_none() {
                let _ = s.end.send(Some(StreamEnd::Reset(ResetCause::Connection(
                    why.to_string(),
                ))));
            }
            s.to_app = None;
        }
        self.stats.live.store(0, Ordering::Relaxed);
        pump.close(&mut self.m, true, self.cfg.close_delay).await;
        state_tx.send_replace(ConnState::Closed);
        why
    }

    /// Acts on the machine's events; says whether anything happened.
    fn route_events(&mut self, cmd_tx: &mpsc::Sender<Cmd>, now: Duration) -> bool {
        let mut any = false;
        while let Some(ev) = self.m.poll_event() {
            any = true;
            match ev {
                Event::ClientHello { client_id } => match self.hello.take() {
                    Some(tx) => {
                        if tx.send(client_id).is_err() {
                            self.reject(now);
                        }
                    }
                    None => self.reject(now),
                },
                Event::Dial {
                    stream_id,
                    kind,
                    addr,
                } => {
                    let stream = self.attach(stream_id, kind, cmd_tx);
                    let inc = Incoming {
                        stream_id,
                        addr,
                        stream,
                        dial: DialReply {
                            sid: stream_id,
                            ctl: self.ctl.clone(),
                        },
                    };
                    if self.incoming.try_send(inc).is_err() {
                        // Nobody takes streams (or the backlog is full): refuse it.
                        if self.m.side() == Side::Remote {
                            let _ = self.m.dial_failed(
                                now,
                                stream_id,
                                &DialError::Other("remote is not accepting streams".into()),
                            );
                        }
                        self.signal(
                            stream_id,
                            StreamEnd::Reset(ResetCause::Connection("not accepted".into())),
                        );
                        self.forget(stream_id);
                    }
                }
                Event::Readable(_) => {}
                Event::Closed(sid) => self.signal(sid, StreamEnd::Closed),
                Event::Reset { stream_id, cause } => {
                    self.signal(stream_id, StreamEnd::Reset(cause));
                }
                Event::ConnectionClosed { error } => {
                    if let Some(e) = error {
                        tracing::warn!("pong connection closed: protocol error: {e}");
                        self.end.get_or_insert(ConnEnd::Protocol(e));
                    }
                }
            }
        }
        any
    }

    fn reject(&mut self, now: Duration) {
        if self.m.side() == Side::Remote {
            let _ = self.m.reject_client(now);
        }
        self.end
            .get_or_insert(ConnEnd::Shutdown("client id not allowed".into()));
    }

    fn signal(&mut self, sid: u32, e: StreamEnd) {
        if let Some(s) = self.streams.get_mut(&sid) {
            s.end.send_if_modified(|cur| {
                if cur.is_none() {
                    *cur = Some(e);
                    true
                } else {
                    false
                }
            });
        }
    }

    fn forget(&mut self, sid: u32) {
        if self.streams.remove(&sid).is_some() {
            self.stats.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn open(
        &mut self,
        kind: StreamKind,
        addr: &Address,
        cmd_tx: &mpsc::Sender<Cmd>,
        now: Duration,
    ) -> Result<Opened, StreamError> {
        if self.m.side() != Side::Local {
            return Err(StreamError::Connection(self.m.state()));
        }
        let sid = match kind {
            StreamKind::Tcp => self.m.open_connect(now, addr)?,
            StreamKind::Udp => self.m.open_relay(now, addr)?,
        };
        Ok(self.attach(sid, kind, cmd_tx))
    }

    /// Creates the application's handle for stream `sid` (and, for connect streams, the
    /// two pumps behind it).
    fn attach(&mut self, sid: u32, kind: StreamKind, cmd_tx: &mpsc::Sender<Cmd>) -> Opened {
        let (end_tx, end_rx) = watch::channel(None);
        self.stats.live.fetch_add(1, Ordering::Relaxed);
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        match kind {
            StreamKind::Udp => {
                let (to_app, rx) = mpsc::channel(self.cfg.datagram_queue.max(1));
                self.streams.insert(
                    sid,
                    DrvStream {
                        kind,
                        to_app: Some(to_app),
                        end: end_tx,
                        reader_done: false,
                        writer_done: false,
                    },
                );
                Opened::Udp(PongDatagrams {
                    sid,
                    rx,
                    end: end_rx,
                    cmds: cmd_tx.clone(),
                    ctl: self.ctl.clone(),
                    wake: self.wake.clone(),
                    released: false,
                })
            }
            StreamKind::Tcp => {
                let (to_app, rx) =
                    mpsc::channel::<Bytes>((self.cfg.stream_buffer / (16 * 1024)).max(2));
                self.streams.insert(
                    sid,
                    DrvStream {
                        kind,
                        to_app: Some(to_app),
                        end: end_tx,
                        reader_done: false,
                        writer_done: false,
                    },
                );
                Opened::Tcp(PongStream {
                    sid,
                    rx,
                    leftover: Bytes::new(),
                    eof: false,
                    tx: PollSender::new(cmd_tx.clone()),
                    shut: false,
                    finish_queued: false,
                    end: end_rx,
                    ctl: self.ctl.clone(),
                    wake: self.wake.clone(),
                    released: false,
                })
            }
        }
    }

    fn apply(&mut self, c: Cmd, now: Duration) {
        match c {
            Cmd::Data(sid, mut b) => {
                while !b.is_empty() {
                    match self.m.send_bytes(now, sid, &b) {
                        Ok(0) => {
                            // Output full: hold the rest until it drains.
                            self.cmd = Some(Cmd::Data(sid, b));
                            return;
                        }
                        Ok(n) => b.advance(n),
                        // The stream ended; its handle learns why through `end`.
                        Err(e) => {
                            tracing::debug!("pong stream {sid}: dropped write: {e}");
                            return;
                        }
                    }
                }
            }
            Cmd::Datagram(sid, b) => match self.m.send_datagram(now, sid, &b) {
                Ok(()) => {}
                Err(StreamError::OutputFull) => self.cmd = Some(Cmd::Datagram(sid, b)),
                Err(e) => tracing::debug!("pong stream {sid}: dropped datagram: {e}"),
            },
            Cmd::Finish(sid) => {
                if let Some(s) = self.streams.get_mut(&sid) {
                    s.reader_done = true;
                    if self.m.stream_state(sid).is_some_and(|s| !s.is_terminal()) {
                        let _ = self.m.finish(now, sid);
                    }
                }
                self.retire(sid, now);
            }
            Cmd::Release(sid) => {
                if let Some(s) = self.streams.get_mut(&sid) {
                    s.reader_done = true;
                    s.writer_done = true;
                }
                self.retire(sid, now);
            }
        }
    }

    fn control(&mut self, c: Ctl, now: Duration) {
        match c {
            Ctl::Dropped(sid, unread) => {
                if let Some(s) = self.streams.get_mut(&sid) {
                    s.writer_done = true;
                    if unread && self.m.stream_state(sid).is_some_and(|s| !s.is_terminal()) {
                        // Dropped with input unread: abort.
                        let _ = self.m.reset(
                            now,
                            sid,
                            RstInfo::with_description(
                                RstCode::ConnTimeout,
                                "application closed the stream",
                            ),
                        );
                        s.reader_done = true;
                    }
                }
                self.retire(sid, now);
            }
            Ctl::Reset(sid, info) => {
                if self.m.stream_state(sid).is_some_and(|s| !s.is_terminal()) {
                    let _ = self.m.reset(now, sid, info.clone());
                }
                self.signal(sid, StreamEnd::Reset(ResetCause::Sent(info)));
                self.forget(sid);
            }
            Ctl::Dialed(sid, r) => {
                if self.m.side() == Side::Remote {
                    match r {
                        Ok(()) => {
                            let _ = self.m.dial_succeeded(now, sid);
                        }
                        Err(e) => {
                            let info = e.rst();
                            let _ = self.m.dial_failed(now, sid, &e);
                            self.signal(sid, StreamEnd::Reset(ResetCause::Sent(info)));
                            self.forget(sid);
                        }
                    }
                }
            }
            Ctl::Approve(ok) => {
                if self.m.side() == Side::Remote {
                    if ok {
                        let _ = self.m.accept_client(now);
                    } else {
                        self.reject(now);
                    }
                }
            }
            Ctl::Shutdown(reason) => {
                self.end.get_or_insert(ConnEnd::Shutdown(reason.clone()));
                self.m.shutdown(now, &reason);
            }
        }
    }

    /// Forgets a stream whose application side is done both ways (closing it if the
    /// machine still has it live: the peer finished, we finished, nothing more to say).
    fn retire(&mut self, sid: u32, now: Duration) {
        let Some(s) = self.streams.get(&sid) else {
            return;
        };
        if s.reader_done && s.writer_done {
            if self.m.stream_state(sid).is_some_and(|s| !s.is_terminal()) {
                let _ = self.m.close(now, sid);
            }
            self.forget(sid);
        }
    }

    /// Moves received data and ends of input from the machine to the streams; says
    /// whether anything moved.
    fn feed_streams(&mut self, now: Duration) -> bool {
        let mut any = false;
        let mut ended = Vec::new();
        for (sid, s) in self.streams.iter_mut() {
            let Some(tx) = &s.to_app else { continue };
            while let Ok(permit) = tx.try_reserve() {
                match self.m.recv(now, *sid) {
                    Ok(Recv::Data(b)) => {
                        any = true;
                        permit.send(b);
                    }
                    Ok(Recv::Pending) => break,
                    Ok(Recv::Eof) | Err(_) => {
                        ended.push(*sid);
                        break;
                    }
                }
            }
        }
        for sid in ended {
            if let Some(s) = self.streams.get_mut(&sid) {
                s.to_app = None;
                any = true;
                if s.kind == StreamKind::Udp {
                    s.writer_done = true;
                }
            }
        }
        any
    }
}
