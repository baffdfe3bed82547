//! The async driver: runs one pong [`Session`] (either [`Side`]) over any ordered
//! byte stream (a TCP, TLS or WebSocket carrier) and hands each stream to the
//! application: a [`PongStream`] (`AsyncRead + AsyncWrite`) for connect streams, a
//! [`PongDatagrams`] for relay streams.
//!
//! Tasks, so that nothing deadlocks on a full buffer:
//! - the connection task owns the machine: it reads the carrier, takes application
//!   commands and moves received bytes towards the streams. It is the generic
//!   [`tunnelbed_netio::mux::ConnTask`]; what is pong's own (client hello, dial requests
//!   and replies, approval, relay streams' datagrams, opens) is its `MuxHooks` here;
//! - a carrier writer task ([`tunnelbed_netio::mux::carrier_writer`], which gathers what
//!   is queued into one write) writes what the machine emits, so the connection task keeps
//!   reading while the carrier is slow (two ends writing bulk at each other would
//!   otherwise wait on each other forever);
//! - no task per stream: a [`PongStream`] ([`MuxStream`]) writes commands to the
//!   connection task's bounded queue and reads chunks it fed, without copies in between.
//!
//! Backpressure: received bytes wait in the machine's per-stream buffer
//! ([`SessionConfig::stream_rx_cap`]); when one is full the machine holds its input and
//! this task stops reading the carrier until the application reads that stream. pong has
//! no flow control, so a slow reader stalls its whole connection (as in pong-go) instead
//! of losing data. A stream the peer resets, or that dies with its connection, fails reads
//! and writes with `ConnectionReset` (the rst code and description in the message), never
//! a silent end of file. Time is `tokio::time`, virtual inside the simulator.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
pub use tunnelbed_netio::mux::ConnStats;
use tunnelbed_netio::mux::{
    end_error, send_in_order, CmdOf, ConnConfig, ConnTask, Core, CtlOf, MuxHooks, MuxProto,
    MuxStream, StreamEnd,
};
use tunnelbed_netio::Trace;

use crate::session::{
    ConnState, DialError, Event, ProtocolError, Session, SessionConfig, Side, StreamError,
};
use crate::stream::{ResetCause, StreamKind};
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

/// pong as the generic driver sees it ([`tunnelbed_netio::mux::MuxProto`]): its
/// session, its datagram command and its dial/approval controls.
#[derive(Debug)]
pub struct Pong;

impl MuxProto for Pong {
    type Session = Session;
    type CmdExt = Datagram;
    type CtlExt = PongCtl;
    const NAME: &'static str = "pong";
    const HANDLE: &'static str = "PongStream";
}

/// One connect (TCP) stream, as the application uses it: the generic
/// [`MuxStream`] (`AsyncRead + AsyncWrite`).
///
/// Shutting down its write half sends finish (a half close: the peer may go on sending).
/// Dropping it without a shutdown sends finish too; dropping it with input unread is an
/// abort (rst, as a TCP socket closed with unread data). `reset` aborts with a chosen
/// [`RstInfo`]. Reads and writes go straight to the connection task through bounded
/// queues (no copy tasks in between).
pub type PongStream = MuxStream<Pong>;

/// Watches one stream for a reset (see [`MuxStream::reset_watch`]).
pub type ResetWatch = tunnelbed_netio::mux::ResetWatch<Pong>;

/// A datagram sent on a relay stream (pong's own command, queued in order with data).
pub struct Datagram(u32, Bytes);

/// pong's own control messages.
pub enum PongCtl {
    /// The remote's dial outcome for a stream.
    Dialed(u32, Result<(), DialError>),
    /// The remote's verdict on the client id.
    Approve(bool),
}

type Cmd = CmdOf<Pong>;
type Ctl = CtlOf<Pong>;

/// One relay (UDP) stream: each `send` is one datagram (one data frame), each `recv` one
/// datagram back. Dropping it closes the stream.
pub struct PongDatagrams {
    sid: u32,
    rx: mpsc::Receiver<Bytes>,
    end: watch::Receiver<Option<StreamEnd<ResetCause>>>,
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
            .and_then(|e| end_error("pong", self.sid, e, true))
        {
            return Err(e);
        }
        self.cmds
            .send(Cmd::Ext(Datagram(self.sid, datagram)))
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
                .and_then(|e| end_error("pong", self.sid, e, false))
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
    tunnelbed_netio::mux::gone("pong")
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
        let _ = self
            .dial
            .ctl
            .send(Ctl::Ext(PongCtl::Dialed(self.dial.sid, r)));
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
        let _ = self.ctl.send(Ctl::Ext(PongCtl::Approve(ok)));
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

type OpenReq = (StreamKind, Address, OpenReply);

fn start<C>(carrier: C, m: Session, cfg: DriverConfig) -> (PongConn, oneshot::Receiver<[u8; 16]>)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let (open_tx, open_rx) = mpsc::channel(64);
    let (inc_tx, incoming) = mpsc::channel(1024);
    let (hello_tx, hello_rx) = oneshot::channel();
    let (state_tx, state) = watch::channel(m.state());
    let hooks = Hooks {
        hello: Some(hello_tx),
        incoming: inc_tx,
    };
    let conn_cfg = ConnConfig {
        stream_buffer: cfg.stream_buffer,
        datagram_queue: cfg.datagram_queue,
        close_delay: cfg.close_delay,
        flush_at_end: true,
    };
    let (task, ctl_tx, stats) = ConnTask::new(m, hooks, conn_cfg);
    let done = tokio::spawn(task.run(carrier, open_rx, state_tx));
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

/// What pong adds to the generic connection task: the client hello, dial requests and
/// replies, relay streams' datagrams and opens on the local side.
struct Hooks {
    hello: Option<oneshot::Sender<[u8; 16]>>,
    incoming: mpsc::Sender<Incoming>,
}

type PongCore = Core<Pong, ConnEnd>;

impl MuxHooks<Pong> for Hooks {
    type Open = OpenReq;
    type End = ConnEnd;
    type State = ConnState;

    fn state(m: &Session) -> ConnState {
        m.state()
    }

    fn closed_state() -> ConnState {
        ConnState::Closed
    }

    fn carrier_lost(why: String) -> ConnEnd {
        ConnEnd::CarrierLost(why)
    }

    fn shut_down(why: String) -> ConnEnd {
        ConnEnd::Shutdown(why)
    }

    fn lost_reason(end: &ConnEnd) -> Option<&str> {
        match end {
            ConnEnd::CarrierLost(r) => Some(r),
            _ => None,
        }
    }

    /// The session is shut down, so that every stream learns why.
    fn lost(core: &mut PongCore, why: &str, now: Duration) {
        core.m.shutdown(now, why);
    }

    fn conn_cause(why: &ConnEnd) -> ResetCause {
        ResetCause::Connection(why.to_string())
    }

    fn sent_cause(info: &RstInfo) -> ResetCause {
        ResetCause::Sent(info.clone())
    }

    fn drop_info() -> RstInfo {
        RstInfo::with_description(RstCode::ConnTimeout, "application closed the stream")
    }

    fn carrier_closed(core: &mut PongCore, now: Duration) {
        core.m.handle_carrier_closed(now);
    }

    fn can_open(&self, core: &PongCore) -> bool {
        core.m.side() == Side::Local
    }

    fn open(&mut self, core: &mut PongCore, (kind, addr, reply): OpenReq, now: Duration) {
        let r = open(core, kind, &addr, now);
        let _ = reply.send(r);
    }

    /// pong's openings carry an address: they come as dial events.
    fn accepted(&mut self, _core: &mut PongCore, _sid: u32, _now: Duration) {}

    fn event(&mut self, core: &mut PongCore, ev: Event, now: Duration) {
        match ev {
            Event::ClientHello { client_id } => match self.hello.take() {
                Some(tx) => {
                    if tx.send(client_id).is_err() {
                        reject(core, now);
                    }
                }
                None => reject(core, now),
            },
            Event::Dial {
                stream_id,
                kind,
                addr,
            } => {
                let stream = attach(core, stream_id, kind);
                let inc = Incoming {
                    stream_id,
                    addr,
                    stream,
                    dial: DialReply {
                        sid: stream_id,
                        ctl: core.ctl().clone(),
                    },
                };
                if self.incoming.try_send(inc).is_err() {
                    // Nobody takes streams (or the backlog is full): refuse it.
                    if core.m.side() == Side::Remote {
                        let _ = core.m.dial_failed(
                            now,
                            stream_id,
                            &DialError::Other("remote is not accepting streams".into()),
                        );
                    }
                    core.signal(
                        stream_id,
                        StreamEnd::Reset(ResetCause::Connection("not accepted".into())),
                    );
                    core.forget(stream_id);
                }
            }
            Event::ConnectionClosed { error } => {
                if let Some(e) = error {
                    tracing::warn!("pong connection closed: protocol error: {e}");
                    core.end.get_or_insert(ConnEnd::Protocol(e));
                }
            }
            // Mapped to the generic events by the session's `MuxSession` impl.
            Event::Readable(_) | Event::Closed(_) | Event::Reset { .. } => {}
        }
    }

    fn command(&mut self, core: &mut PongCore, c: Datagram, now: Duration) -> Option<Datagram> {
        let Datagram(sid, b) = c;
        match core.m.send_datagram(now, sid, &b) {
            Ok(()) => None,
            Err(StreamError::OutputFull) => Some(Datagram(sid, b)),
            Err(e) => {
                tracing::debug!("pong stream {sid}: dropped datagram: {e}");
                None
            }
        }
    }

    fn control(&mut self, core: &mut PongCore, c: PongCtl, now: Duration) {
        match c {
            PongCtl::Dialed(sid, r) => {
                if core.m.side() == Side::Remote {
                    match r {
                        Ok(()) => {
                            let _ = core.m.dial_succeeded(now, sid);
                        }
                        Err(e) => {
                            let info = e.rst();
                            let _ = core.m.dial_failed(now, sid, &e);
                            core.signal(sid, StreamEnd::Reset(ResetCause::Sent(info)));
                            core.forget(sid);
                        }
                    }
                }
            }
            PongCtl::Approve(ok) => {
                if core.m.side() == Side::Remote {
                    if ok {
                        let _ = core.m.accept_client(now);
                    } else {
                        reject(core, now);
                    }
                }
            }
        }
    }
}

fn reject(core: &mut PongCore, now: Duration) {
    if core.m.side() == Side::Remote {
        let _ = core.m.reject_client(now);
    }
    core.end
        .get_or_insert(ConnEnd::Shutdown("client id not allowed".into()));
}

fn open(
    core: &mut PongCore,
    kind: StreamKind,
    addr: &Address,
    now: Duration,
) -> Result<Opened, StreamError> {
    if core.m.side() != Side::Local {
        return Err(StreamError::Connection(core.m.state()));
    }
    let sid = match kind {
        StreamKind::Tcp => core.m.open_connect(now, addr)?,
        StreamKind::Udp => core.m.open_relay(now, addr)?,
    };
    Ok(attach(core, sid, kind))
}

/// Creates the application's handle for stream `sid`.
fn attach(core: &mut PongCore, sid: u32, kind: StreamKind) -> Opened {
    match kind {
        StreamKind::Udp => {
            let a = core.attach(sid, true);
            Opened::Udp(PongDatagrams {
                sid,
                rx: a.rx,
                end: a.end,
                cmds: a.cmd,
                ctl: a.ctl,
                wake: a.wake,
                released: false,
            })
        }
        StreamKind::Tcp => Opened::Tcp(core.attach_stream(sid)),
    }
}
