//! The connection task of a stream multiplexer, generic over [`MuxSession`] (issue 10
//! item 2): it owns the session, reads the carrier through a [`CarrierPump`], takes the
//! applications' commands (batched, up to [`CMD_BATCH`] per wake-up, a command the
//! session could not take held and retried first), applies control messages, routes the
//! session's events, and feeds received bytes to the streams' handles ([`MuxStream`],
//! `AsyncRead + AsyncWrite` with no copy task in between).
//!
//! What differs between protocols goes through [`MuxHooks`]: their own events (pong's
//! client hello and dial requests), their own commands (pong's datagrams) and controls
//! (dial replies, approval), and how streams are opened. Stream rules, the same for every
//! protocol: a reset fails reads and writes with `ConnectionReset`; dropping a handle is
//! a finish after the data written, and a reset only when input was still unread; at the
//! connection's end, streams that had ended normally keep what they received.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::PollSender;

use super::pump::CarrierPump;
use crate::idle::Activity;
use crate::mux_session::{MuxEvent, MuxRecv, MuxSession};
use crate::timer::sleep_until;

/// Most application commands the connection task applies before emitting: enough that
/// queued frames leave in one carrier write, few enough that reads are not held up.
pub const CMD_BATCH: usize = 16;

/// Most bytes one stream write turns into one command (one data frame at most).
pub const WRITE_CHUNK: usize = 32 * 1024;

/// Commands queued on a connection's bounded command queue.
pub const CMD_QUEUE: usize = 64;

/// A protocol as the generic driver and its handles see it: the session type and what
/// the protocol adds to the command and control queues.
pub trait MuxProto: Send + Sync + 'static {
    /// The sans-IO session.
    type Session: MuxSession + Send + 'static;
    /// The protocol's own commands (queued in order with data: pong's datagrams).
    type CmdExt: Send + 'static;
    /// The protocol's own control messages (pong's dial replies and approval).
    type CtlExt: Send + 'static;
    /// The protocol's name in handle errors ("pong stream 3: ...").
    const NAME: &'static str;
    /// The byte-stream handle's name in `Debug` output.
    const HANDLE: &'static str;
}

/// The reset cause of protocol `P`'s streams.
pub type Cause<P> = <<P as MuxProto>::Session as MuxSession>::ResetCause;
/// What an application's reset says on the wire in protocol `P`.
pub type Info<P> = <<P as MuxProto>::Session as MuxSession>::ResetInfo;

/// Application data and ends, through a bounded queue (this is what backpressures
/// writers). Ends of writing travel here too, so they stay behind the data before them.
pub enum Cmd<D> {
    /// Bytes to send on a stream.
    Data(u32, Bytes),
    /// The application finished writing.
    Finish(u32),
    /// A handle with nothing more to say either way was dropped (a datagram stream).
    Release(u32),
    /// The protocol's own command.
    Ext(D),
}

/// Control messages, at most a few per stream, so an unbounded queue stays bounded.
pub enum Ctl<I, X> {
    /// The application dropped a stream handle (`true`: with input unread).
    Dropped(u32, bool),
    /// The application aborted a stream.
    Reset(u32, I),
    /// End the whole connection with this reason.
    Shutdown(String),
    /// The protocol's own control message.
    Ext(X),
}

/// The command type of protocol `P`.
pub type CmdOf<P> = Cmd<<P as MuxProto>::CmdExt>;
/// The control type of protocol `P`.
pub type CtlOf<P> = Ctl<Info<P>, <P as MuxProto>::CtlExt>;

/// How a stream ended, as its handles see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd<C> {
    /// The peer ended it normally: read what is left; writes fail with `BrokenPipe`.
    Closed,
    /// Reset either way, or the connection died.
    Reset(C),
}

/// The error a handle's read (`writing` false) or write gives once its stream ended
/// `e`; `None` for a clean end read.
pub fn end_error<C: fmt::Display>(
    name: &str,
    sid: u32,
    e: &StreamEnd<C>,
    writing: bool,
) -> Option<io::Error> {
    match e {
        StreamEnd::Reset(c) => Some(io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("{name} stream {sid}: {c}"),
        )),
        StreamEnd::Closed if writing => Some(io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("{name} stream {sid}: closed by peer"),
        )),
        StreamEnd::Closed => None,
    }
}

/// The error of a call on a connection whose task is gone.
pub fn gone(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("{name} connection is closed"),
    )
}

/// Counters a pool reads without asking the connection task.
#[derive(Debug, Default)]
pub struct ConnStats {
    live: AtomicUsize,
    opened: AtomicUsize,
    /// When the carrier last delivered bytes: a stream that hears nothing is not idle
    /// while its carrier is busy with the others' (its bytes may be queued behind
    /// theirs), see [`MuxStream::carrier_activity`].
    received: Activity,
}

impl ConnStats {
    /// When the carrier last delivered bytes.
    pub fn received(&self) -> &Activity {
        &self.received
    }

    /// Streams the application still holds.
    pub fn live_streams(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Streams opened or accepted so far.
    pub fn opened_streams(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }
}

/// What a new stream's handle talks to the connection task through (see
/// [`Core::attach`]); a protocol's own handles (pong's datagram streams) are built from it.
pub struct Attached<P: MuxProto> {
    /// The stream id.
    pub sid: u32,
    /// Received bytes (or datagrams), in order.
    pub rx: mpsc::Receiver<Bytes>,
    /// How the stream ended, once it did.
    pub end: watch::Receiver<Option<StreamEnd<Cause<P>>>>,
    /// The command queue.
    pub cmd: mpsc::Sender<CmdOf<P>>,
    /// The control queue.
    pub ctl: mpsc::UnboundedSender<CtlOf<P>>,
    /// Wakes the connection task (after taking from `rx`, so it feeds more).
    pub wake: Arc<Notify>,
    /// The connection's counters (when its carrier last delivered bytes).
    pub stats: Arc<ConnStats>,
}

/// The driver's record of one stream.
struct DrvStream<C> {
    /// A datagram stream: its end of input ends it for the driver too.
    datagram: bool,
    to_app: Option<mpsc::Sender<Bytes>>,
    end: watch::Sender<Option<StreamEnd<C>>>,
    reader_done: bool,
    writer_done: bool,
}

/// The connection task's state that hooks may act on: the session, the streams and the
/// queues' senders.
pub struct Core<P: MuxProto, E> {
    /// The session.
    pub m: P::Session,
    streams: BTreeMap<u32, DrvStream<Cause<P>>>,
    stats: Arc<ConnStats>,
    ctl: mpsc::UnboundedSender<CtlOf<P>>,
    cmd: mpsc::Sender<CmdOf<P>>,
    wake: Arc<Notify>,
    /// Why the connection ends, once known (the first reason wins).
    pub end: Option<E>,
    stream_buffer: usize,
    datagram_queue: usize,
}

impl<P: MuxProto, E> Core<P, E> {
    /// A sender on the control queue (for handles the protocol builds itself).
    pub fn ctl(&self) -> &mpsc::UnboundedSender<CtlOf<P>> {
        &self.ctl
    }

    /// Records stream `sid` and returns what its handle needs; `datagram` streams get a
    /// queue of datagrams, byte streams one of chunks.
    pub fn attach(&mut self, sid: u32, datagram: bool) -> Attached<P> {
        let (end_tx, end_rx) = watch::channel(None);
        self.stats.live.fetch_add(1, Ordering::Relaxed);
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        let cap = if datagram {
            self.datagram_queue.max(1)
        } else {
            (self.stream_buffer / (16 * 1024)).max(2)
        };
        let (to_app, rx) = mpsc::channel(cap);
        self.streams.insert(
            sid,
            DrvStream {
                datagram,
                to_app: Some(to_app),
                end: end_tx,
                reader_done: false,
                writer_done: false,
            },
        );
        Attached {
            sid,
            rx,
            end: end_rx,
            cmd: self.cmd.clone(),
            ctl: self.ctl.clone(),
            wake: self.wake.clone(),
            stats: self.stats.clone(),
        }
    }

    /// Records stream `sid` and returns its byte-stream handle.
    pub fn attach_stream(&mut self, sid: u32) -> MuxStream<P> {
        MuxStream::new(self.attach(sid, false))
    }

    /// Tells the handles of `sid` how it ended (only the first end counts).
    pub fn signal(&mut self, sid: u32, e: StreamEnd<Cause<P>>) {
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

    /// Forgets stream `sid` (its handles keep what they were told).
    pub fn forget(&mut self, sid: u32) {
        if self.streams.remove(&sid).is_some() {
            self.stats.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Forgets a stream whose application side is done both ways (closing it if the
    /// session still has it live: both sides finished, nothing more to say).
    fn retire(&mut self, sid: u32, now: Duration) {
        let Some(s) = self.streams.get(&sid) else {
            return;
        };
        if s.reader_done && s.writer_done {
            if self.m.stream_live(sid) {
                let _ = self.m.close(now, sid);
            } else {
                self.m.release(now, sid);
            }
            self.forget(sid);
        }
    }

    /// Moves received data and ends of input from the session to the streams; says
    /// whether anything moved.
    fn feed_streams(&mut self, now: Duration) -> bool {
        let mut any = false;
        let mut ended = Vec::new();
        for (sid, s) in self.streams.iter_mut() {
            let Some(tx) = &s.to_app else { continue };
            while let Ok(permit) = tx.try_reserve() {
                match self.m.recv(now, *sid) {
                    Ok(MuxRecv::Data(b)) => {
                        any = true;
                        permit.send(b);
                    }
                    Ok(MuxRecv::Pending) => break,
                    Ok(MuxRecv::Eof) | Err(_) => {
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
                if s.datagram {
                    s.writer_done = true;
                }
            }
        }
        any
    }
}

/// What a protocol adds to the generic connection task.
pub trait MuxHooks<P: MuxProto>: Sized + Send + 'static {
    /// An open request from the application (with its reply channel).
    type Open: Send + 'static;
    /// How a connection ended.
    type End: Clone + fmt::Display + Send + 'static;
    /// The connection's state as published on a watch.
    type State: Clone + PartialEq + Send + Sync + 'static;

    /// Runs once before the task's loop (a session that sends first: h2tunnel's
    /// handshake).
    fn start(_core: &mut Core<P, Self::End>, _now: Duration) {}
    /// The session's state now.
    fn state(m: &P::Session) -> Self::State;
    /// The state published once the task is over.
    fn closed_state() -> Self::State;
    /// The end for a carrier that failed or closed with `why`.
    fn carrier_lost(why: String) -> Self::End;
    /// The end when the application shut the connection down with `why`.
    fn shut_down(why: String) -> Self::End;
    /// The reason, when `end` is the carrier's loss (the task then stops at once).
    fn lost_reason(end: &Self::End) -> Option<&str>;
    /// The carrier was lost with `why`; the task stops right after (pong shuts its
    /// session down, so that its streams learn why).
    fn lost(core: &mut Core<P, Self::End>, why: &str, now: Duration);
    /// The task is over (answer what is still waiting).
    fn end(&mut self, _core: &mut Core<P, Self::End>) {}
    /// The cause given to live streams when the connection ends with `why`.
    fn conn_cause(why: &Self::End) -> Cause<P>;
    /// The cause the handles of a stream the application reset with `info` report.
    fn sent_cause(info: &Info<P>) -> Cause<P>;
    /// What goes on the wire when a handle is dropped with input unread.
    fn drop_info() -> Info<P>;
    /// The carrier ended (read end of file, or failed).
    fn carrier_closed(core: &mut Core<P, Self::End>, now: Duration);
    /// Whether open requests are taken now.
    fn can_open(&self, core: &Core<P, Self::End>) -> bool;
    /// Acts on one open request.
    fn open(&mut self, core: &mut Core<P, Self::End>, req: Self::Open, now: Duration);
    /// The peer opened `sid` (a [`MuxEvent::Accepted`]).
    fn accepted(&mut self, core: &mut Core<P, Self::End>, sid: u32, now: Duration);
    /// One of the protocol's own events.
    fn event(
        &mut self,
        core: &mut Core<P, Self::End>,
        ev: <P::Session as MuxSession>::Ext,
        now: Duration,
    );
    /// Applies one of the protocol's own commands; returns it when the session could not
    /// take it yet (it is retried once output drains).
    fn command(
        &mut self,
        core: &mut Core<P, Self::End>,
        c: P::CmdExt,
        now: Duration,
    ) -> Option<P::CmdExt>;
    /// Applies one of the protocol's own control messages.
    fn control(&mut self, core: &mut Core<P, Self::End>, c: P::CtlExt, now: Duration);
}

/// Driver settings the generic task needs.
#[derive(Clone, Copy, Debug)]
pub struct ConnConfig {
    /// Received bytes queued towards each byte-stream handle (chunks of about 16 KiB).
    pub stream_buffer: usize,
    /// Datagrams queued towards each datagram-stream handle.
    pub datagram_queue: usize,
    /// How long the writer may take to flush what is queued when the connection ends.
    pub close_delay: Duration,
    /// At the end, offer what is still queued to the writer (pong and h2tunnel both do:
    /// a closed session's last frames, such as a GOAWAY, still go out if they can).
    pub flush_at_end: bool,
}

/// One connection task: build it with [`ConnTask::new`], then `spawn` [`ConnTask::run`].
pub struct ConnTask<P: MuxProto, H: MuxHooks<P>> {
    core: Core<P, H::End>,
    hooks: H,
    cfg: ConnConfig,
    cmd_rx: mpsc::Receiver<CmdOf<P>>,
    ctl_rx: mpsc::UnboundedReceiver<CtlOf<P>>,
    /// A command the session could not take yet (output full).
    held: Option<CmdOf<P>>,
}

impl<P: MuxProto, H: MuxHooks<P>> ConnTask<P, H> {
    /// A task over session `m`; returns it with its control sender and counters.
    pub fn new(
        m: P::Session,
        hooks: H,
        cfg: ConnConfig,
    ) -> (Self, mpsc::UnboundedSender<CtlOf<P>>, Arc<ConnStats>) {
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::channel(CMD_QUEUE);
        let stats = Arc::new(ConnStats::default());
        let core = Core {
            m,
            streams: BTreeMap::new(),
            stats: stats.clone(),
            ctl: ctl_tx.clone(),
            cmd: cmd_tx,
            wake: Arc::new(Notify::new()),
            end: None,
            stream_buffer: cfg.stream_buffer,
            datagram_queue: cfg.datagram_queue,
        };
        let t = Self {
            core,
            hooks,
            cfg,
            cmd_rx,
            ctl_rx,
            held: None,
        };
        (t, ctl_tx, stats)
    }

    /// Access to the core before the task runs (a session that must start first).
    pub fn core_mut(&mut self) -> &mut Core<P, H::End> {
        &mut self.core
    }

    /// Runs the connection over `carrier` until it ends; publishes the state on
    /// `state_tx` and takes open requests from `opens`.
    pub async fn run<C>(
        mut self,
        carrier: C,
        mut opens: mpsc::Receiver<H::Open>,
        state_tx: watch::Sender<H::State>,
    ) -> H::End
    where
        C: AsyncRead + AsyncWrite + Send + 'static,
    {
        let origin = Instant::now();
        let now = move || origin.elapsed();
        let mut pump = CarrierPump::start(carrier, self.core.wake.clone());
        let mut carrier_eof = false;
        let mut opens_gone = false;
        let half_output = self.core.m.max_output() / 2;
        H::start(&mut self.core, now());
        loop {
            // Feed held input, emit, route events, feed streams; repeat while it helps.
            loop {
                pump.feed_held(&mut self.core.m, now());
                if pump.emit(&mut self.core.m).is_err() {
                    self.core
                        .end
                        .get_or_insert_with(|| H::carrier_lost("carrier write failed".into()));
                }
                let mut progressed = self.route_events(now());
                progressed |= self.core.feed_streams(now());
                if let Some(c) = self.held.take() {
                    self.apply(c, now());
                    progressed |= self.held.is_none();
                }
                if !progressed {
                    break;
                }
            }
            let st = H::state(&self.core.m);
            state_tx.send_if_modified(|s| {
                let changed = *s != st;
                *s = st;
                changed
            });
            if self.core.m.is_closed() {
                break;
            }
            if let Some(r) = self
                .core
                .end
                .as_ref()
                .and_then(H::lost_reason)
                .map(str::to_string)
            {
                H::lost(&mut self.core, &r, now());
                break;
            }
            let can_read = !carrier_eof && pump.can_read(&self.core.m);
            let out_room = !pump.has_unsent()
                && self.held.is_none()
                && self.core.m.pending_output() < half_output;
            let can_open = !opens_gone && self.hooks.can_open(&self.core);
            let timeout = self.core.m.poll_timeout().map(|t| origin + t);
            let wake = self.core.wake.clone();
            tokio::select! {
                biased;
                c = self.ctl_rx.recv() => {
                    if let Some(c) = c {
                        self.control(c, now());
                    }
                }
                r = pump.read(), if can_read => match r {
                    Ok(0) => {
                        carrier_eof = true;
                        H::carrier_closed(&mut self.core, now());
                    }
                    // Frozen, so that large payloads reach the streams as slices of the
                    // read buffer; the allocation comes back once they are all read.
                    Ok(n) => {
                        self.core.stats.received.touch();
                        pump.take_read(&mut self.core.m, now(), n);
                    }
                    Err(e) => {
                        carrier_eof = true;
                        self.core.end.get_or_insert_with(|| H::carrier_lost(e.to_string()));
                        H::carrier_closed(&mut self.core, now());
                    }
                },
                _ = wake.notified() => {}
                c = self.cmd_rx.recv(), if out_room => {
                    if let Some(c) = c {
                        // Control messages sent before this command first: on a
                        // multi-threaded runtime a dial's outcome (sent before the
                        // relay's first write) can land after the ctl branch was polled,
                        // and data applied to a stream still dialing would be dropped.
                        while let Ok(x) = self.ctl_rx.try_recv() {
                            self.control(x, now());
                        }
                        self.apply(c, now());
                        // Take what else is already queued (a bounded batch), so that
                        // the frames leave in one carrier write instead of one each.
                        for _ in 0..CMD_BATCH {
                            if self.held.is_some()
                                || self.core.m.pending_output() >= half_output
                            {
                                break;
                            }
                            match self.cmd_rx.try_recv() {
                                Ok(c) => self.apply(c, now()),
                                Err(_) => break,
                            }
                        }
                    }
                }
                r = opens.recv(), if can_open && out_room => match r {
                    None => opens_gone = true,
                    Some(req) => self.hooks.open(&mut self.core, req, now()),
                },
                _ = sleep_until(timeout) => self.core.m.handle_timeout(now()),
            }
        }
        // Drain events so the end reason is known, then tell every stream.
        self.route_events(now());
        let why = self
            .core
            .end
            .clone()
            .unwrap_or_else(|| H::carrier_lost("closed".into()));
        let core = &mut self.core;
        for (sid, s) in core.streams.iter_mut() {
            // A stream that had already ended normally (finish both ways) keeps what it
            // received and the application has not read yet: a carrier the peer closes
            // once its own side is done must not cut it short.
            let mut rest = Vec::new();
            let clean = s.end.borrow().is_none()
                && loop {
                    match core.m.recv(now(), *sid) {
                        Ok(MuxRecv::Data(b)) => rest.push(b),
                        Ok(MuxRecv::Eof) => break true,
                        Ok(MuxRecv::Pending) | Err(_) => break false,
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
                let _ = s.end.send(Some(StreamEnd::Reset(H::conn_cause(&why))));
            }
            s.to_app = None;
        }
        core.stats.live.store(0, Ordering::Relaxed);
        self.hooks.end(core);
        pump.close(&mut core.m, self.cfg.flush_at_end, self.cfg.close_delay)
            .await;
        state_tx.send_replace(H::closed_state());
        why
    }

    /// Acts on the session's events; says whether anything happened.
    fn route_events(&mut self, now: Duration) -> bool {
        let mut any = false;
        while let Some(ev) = self.core.m.poll_event() {
            any = true;
            match ev {
                MuxEvent::Readable(_) => {}
                MuxEvent::Accepted(sid) => self.hooks.accepted(&mut self.core, sid, now),
                MuxEvent::Closed(sid) => self.core.signal(sid, StreamEnd::Closed),
                MuxEvent::Reset(sid, cause) => self.core.signal(sid, StreamEnd::Reset(cause)),
                MuxEvent::Ext(x) => self.hooks.event(&mut self.core, x, now),
            }
        }
        any
    }

    fn apply(&mut self, c: CmdOf<P>, now: Duration) {
        let core = &mut self.core;
        match c {
            Cmd::Data(sid, mut b) => {
                while !b.is_empty() {
                    match core.m.send_bytes(now, sid, &b) {
                        Ok(0) => {
                            // Output full: hold the rest until it drains.
                            self.held = Some(Cmd::Data(sid, b));
                            return;
                        }
                        Ok(n) => b.advance(n),
                        // The stream ended; its handle learns why through `end`.
                        Err(e) => {
                            tracing::debug!("{} stream {sid}: dropped write: {e}", P::NAME);
                            return;
                        }
                    }
                }
            }
            Cmd::Finish(sid) => {
                if let Some(s) = core.streams.get_mut(&sid) {
                    s.reader_done = true;
                    if core.m.stream_live(sid) {
                        let _ = core.m.finish(now, sid);
                    }
                }
                core.retire(sid, now);
            }
            Cmd::Release(sid) => {
                if let Some(s) = core.streams.get_mut(&sid) {
                    s.reader_done = true;
                    s.writer_done = true;
                }
                core.retire(sid, now);
            }
            Cmd::Ext(x) => {
                if let Some(x) = self.hooks.command(core, x, now) {
                    self.held = Some(Cmd::Ext(x));
                }
            }
        }
    }

    fn control(&mut self, c: CtlOf<P>, now: Duration) {
        let core = &mut self.core;
        match c {
            Ctl::Dropped(sid, unread) => {
                if let Some(s) = core.streams.get_mut(&sid) {
                    s.writer_done = true;
                    if unread && core.m.stream_live(sid) {
                        // Dropped with input unread: abort.
                        let _ = core.m.reset(now, sid, H::drop_info());
                        s.reader_done = true;
                    }
                }
                core.retire(sid, now);
            }
            Ctl::Reset(sid, info) => {
                let cause = H::sent_cause(&info);
                if core.m.stream_live(sid) {
                    let _ = core.m.reset(now, sid, info);
                }
                core.m.release(now, sid);
                core.signal(sid, StreamEnd::Reset(cause));
                core.forget(sid);
            }
            Ctl::Shutdown(reason) => {
                core.end.get_or_insert_with(|| H::shut_down(reason.clone()));
                core.m.shutdown(now, &reason);
            }
            Ctl::Ext(x) => self.hooks.control(core, x, now),
        }
    }
}

/// One byte stream, as the application uses it.
///
/// Shutting down its write half sends finish (a half close: the peer may go on sending).
/// Dropping it without a shutdown sends finish too, after what was written; dropping it
/// with input unread is an abort (as a TCP socket closed with unread data).
/// [`MuxStream::reset`] aborts with the protocol's reset information. Reads and writes go
/// straight to the connection task through bounded queues (no copy tasks in between).
pub struct MuxStream<P: MuxProto> {
    sid: u32,
    rx: mpsc::Receiver<Bytes>,
    /// Part of a received chunk the application has not read yet.
    leftover: Bytes,
    eof: bool,
    tx: PollSender<CmdOf<P>>,
    shut: bool,
    /// The finish command is queued (or the connection is gone): the connection task
    /// learns in order that the application will write no more, and may retire the
    /// stream once the handle is dropped too.
    finish_queued: bool,
    end: watch::Receiver<Option<StreamEnd<Cause<P>>>>,
    ctl: mpsc::UnboundedSender<CtlOf<P>>,
    wake: Arc<Notify>,
    released: bool,
    stats: Arc<ConnStats>,
}

impl<P: MuxProto> fmt::Debug for MuxStream<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(P::HANDLE).field("sid", &self.sid).finish()
    }
}

/// Watches one stream for a reset (see [`MuxStream::reset_watch`]).
pub struct ResetWatch<P: MuxProto> {
    sid: u32,
    end: watch::Receiver<Option<StreamEnd<Cause<P>>>>,
}

impl<P: MuxProto> ResetWatch<P> {
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
                    format!("{} stream {}: {c}", P::NAME, self.sid),
                );
            }
            if self.end.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl<P: MuxProto> MuxStream<P> {
    /// The handle over what [`Core::attach`] returned.
    pub fn new(a: Attached<P>) -> Self {
        Self {
            sid: a.sid,
            rx: a.rx,
            leftover: Bytes::new(),
            eof: false,
            tx: PollSender::new(a.cmd),
            shut: false,
            finish_queued: false,
            end: a.end,
            ctl: a.ctl,
            wake: a.wake,
            released: false,
            stats: a.stats,
        }
    }

    /// The stream id on the wire.
    pub fn id(&self) -> u32 {
        self.sid
    }

    /// When this stream's carrier last delivered bytes (for any stream): an idle bound
    /// on the stream waits for the carrier to fall silent too, so a stream whose bytes
    /// are queued behind others' on a congested carrier is not taken for dead.
    pub fn carrier_activity(&self) -> Activity {
        self.stats.received.clone()
    }

    /// A watch that resolves when this stream is reset, for a caller that is not reading
    /// it (a relay waiting on its other side).
    pub fn reset_watch(&self) -> ResetWatch<P> {
        ResetWatch {
            sid: self.sid,
            end: self.end.clone(),
        }
    }

    /// Aborts the stream: a reset with `info` to the peer; unsent and unread bytes are
    /// dropped.
    pub fn reset(mut self, info: Info<P>) {
        self.released = true;
        let _ = self.ctl.send(Ctl::Reset(self.sid, info));
    }

    fn error(&self, writing: bool) -> Option<io::Error> {
        self.end
            .borrow()
            .as_ref()
            .and_then(|e| end_error(P::NAME, self.sid, e, writing))
    }
}

impl<P: MuxProto> AsyncRead for MuxStream<P> {
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

impl<P: MuxProto> AsyncWrite for MuxStream<P> {
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
                format!("{} stream {}: write after shutdown", P::NAME, this.sid),
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(this.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(this.error(true).unwrap_or_else(|| gone(P::NAME))));
        }
        let n = data.len().min(WRITE_CHUNK);
        let item = Cmd::Data(this.sid, Bytes::copy_from_slice(&data[..n]));
        if this.tx.send_item(item).is_err() {
            return Poll::Ready(Err(gone(P::NAME)));
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

impl<P: MuxProto> Drop for MuxStream<P> {
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
pub fn send_in_order<T: Send + 'static>(tx: &mpsc::Sender<T>, c: T) {
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
