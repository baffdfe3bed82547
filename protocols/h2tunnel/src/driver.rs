//! The async driver: runs a [`Tunnel`] over any ordered byte stream (a KCP session from
//! `tunnelbed_netio::arq`, a TCP stream, ...) and hands each stream to the application as
//! a [`TunnelStream`] (`AsyncRead + AsyncWrite`).
//!
//! Tasks, so that nothing can deadlock on a full buffer:
//! - the tunnel task owns the machine: it reads the carrier, runs timers, takes
//!   application commands, and moves received bytes towards the streams. It is the
//!   generic [`tunnelbed_netio::mux::ConnTask`] (pong's too); what is h2tunnel's own
//!   (opens waiting for the handshake, accepted streams, failure and GOAWAY) is its
//!   `MuxHooks` here;
//! - a carrier writer task ([`tunnelbed_netio::mux::carrier_writer`], shared with pong)
//!   writes what the machine emits, gathering what is queued into one (vectored) write,
//!   so the tunnel task keeps reading while the carrier is slow to take bytes;
//! - no task per stream: a [`TunnelStream`] writes commands to the tunnel task's bounded
//!   queue and reads the chunks it fed (the generic [`MuxStream`]).
//!
//! Stream rules (the generic driver's, pong's): a reset (RST either way, or the tunnel
//! ending) fails reads and writes with `ConnectionReset`, never a silent end of file;
//! dropping a stream sends FIN after what was written, and RST instead when its input
//! was still unread at the drop (the peer had not finished); when the tunnel ends,
//! streams that had already ended cleanly both ways keep what they received.
//!
//! Backpressure: the tunnel task stops reading the carrier while the machine holds its
//! input ([`Tunnel::input_blocked`]: the streams hold [`TunnelConfig::max_buffered`]
//! received bytes or more that the applications have not taken).
//! The protocol has no per-stream flow control, so one slow reader slows the whole tunnel
//! (as in vproxy) rather than losing data. Time is `tokio::time`, virtual inside the
//! simulator.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tunnelbed_netio::mux::{ConnConfig, ConnTask, Core, MuxHooks, MuxProto, MuxStream};
use tunnelbed_netio::Trace;

use crate::stream::ResetCause;
use crate::tunnel::{Event, Role, StreamError, Tunnel, TunnelConfig, TunnelState};

/// Driver settings on top of the machine's.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The machine's timers and caps.
    pub tunnel: TunnelConfig,
    /// Received bytes queued towards each [`TunnelStream`] (in chunks of about 16 KiB).
    pub stream_buffer: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            tunnel: TunnelConfig::default(),
            stream_buffer: 64 * 1024,
        }
    }
}

/// h2tunnel as the generic driver sees it ([`MuxProto`]): its session, and nothing of
/// its own on the command and control queues.
#[derive(Debug)]
pub struct H2Tunnel;

impl MuxProto for H2Tunnel {
    type Session = Tunnel;
    type CmdExt = Infallible;
    type CtlExt = Infallible;
    const NAME: &'static str = "h2tunnel";
    const HANDLE: &'static str = "TunnelStream";
}

/// One stream of the tunnel, as the application uses it (a thin wrapper of the generic
/// [`MuxStream`]).
///
/// Shutting down its write half sends FIN (the peer may go on sending). Dropping it sends
/// FIN after what was written, as vproxy's `close()` without linger 0, unless input was
/// still unread at the drop: then RST, as a TCP socket closed with unread data.
/// [`TunnelStream::reset`] is the abortive close (RST).
#[derive(Debug)]
pub struct TunnelStream(MuxStream<H2Tunnel>);

impl TunnelStream {
    /// The stream id on the wire.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Aborts the stream: RST to the peer, unsent and unread bytes are discarded.
    pub fn reset(self) {
        self.0.reset(());
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// How a tunnel ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    /// We failed it (or shut it down) with this reason.
    Failed(String),
    /// The peer sent GOAWAY with this reason.
    PeerShutdown(String),
    /// The carrier ended or failed.
    CarrierLost(String),
}

impl std::fmt::Display for TunnelEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelEnd::Failed(r) => write!(f, "failed: {r}"),
            TunnelEnd::PeerShutdown(r) => write!(f, "peer shut down: {r}"),
            TunnelEnd::CarrierLost(r) => write!(f, "carrier lost: {r}"),
        }
    }
}

type OpenReply = oneshot::Sender<Result<TunnelStream, StreamError>>;

/// Client side: opens streams on a running tunnel.
#[derive(Clone, Debug)]
pub struct Opener {
    tx: mpsc::Sender<OpenReply>,
}

impl Opener {
    /// Opens a stream (waits for the handshake if it is still running).
    pub async fn open(&self) -> io::Result<TunnelStream> {
        let (tx, rx) = oneshot::channel();
        let gone = || io::Error::new(io::ErrorKind::NotConnected, "tunnel is closed");
        self.tx.send(tx).await.map_err(|_| gone())?;
        match rx.await.map_err(|_| gone())? {
            Ok(s) => Ok(s),
            Err(e) => Err(io::Error::new(io::ErrorKind::NotConnected, e.to_string())),
        }
    }
}

/// A running tunnel.
#[derive(Debug)]
pub struct Running {
    /// Client role: opens streams.
    pub opener: Opener,
    /// Server role: streams the client opened, as they arrive.
    pub accepted: mpsc::Receiver<TunnelStream>,
    /// The tunnel's state as it changes (`ready` after the handshake).
    pub state: watch::Receiver<TunnelState>,
    /// Resolves when the tunnel ends.
    pub done: JoinHandle<TunnelEnd>,
}

impl Running {
    /// Waits for the handshake: Ok once the tunnel is ready, Err with the state it ended
    /// in when it failed or closed first.
    pub async fn ready(&mut self) -> Result<(), TunnelState> {
        loop {
            let s = *self.state.borrow_and_update();
            match s {
                TunnelState::Ready => return Ok(()),
                TunnelState::Failed | TunnelState::Closed => return Err(s),
                TunnelState::Init | TunnelState::HandshakeSent => {}
            }
            if self.state.changed().await.is_err() {
                return Err(TunnelState::Closed);
            }
        }
    }
}

/// Starts a tunnel over `carrier` in `role`. `id` names the machine in the trace.
pub fn spawn<C>(carrier: C, role: Role, cfg: DriverConfig, trace: Trace, id: String) -> Running
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let (open_tx, open_rx) = mpsc::channel(64);
    let (acc_tx, accepted) = mpsc::channel(256);
    let machine = Tunnel::new(role, cfg.tunnel.clone(), trace, id);
    let (state_tx, state) = watch::channel(TunnelState::Init);
    let hooks = Hooks {
        accepted: acc_tx,
        waiting: Vec::new(),
    };
    let conn_cfg = ConnConfig {
        stream_buffer: cfg.stream_buffer,
        datagram_queue: 1,
        close_delay: cfg.tunnel.close_delay,
        // What is still queued (its GOAWAY) is offered to the writer at the end, which
        // gets `close_delay` for it; waiting for it instead would hang on a carrier that
        // takes nothing more (a partition).
        flush_at_end: true,
    };
    let (task, _ctl, _stats) = ConnTask::new(machine, hooks, conn_cfg);
    let done = tokio::spawn(task.run(carrier, open_rx, state_tx));
    Running {
        opener: Opener { tx: open_tx },
        accepted,
        state,
        done,
    }
}

/// What h2tunnel adds to the generic connection task.
struct Hooks {
    accepted: mpsc::Sender<TunnelStream>,
    /// Opens that arrived before the handshake completed.
    waiting: Vec<OpenReply>,
}

type TunnelCore = Core<H2Tunnel, TunnelEnd>;

fn open_stream(core: &mut TunnelCore, now: Duration) -> Result<TunnelStream, StreamError> {
    let sid = core.m.open(now)?;
    Ok(TunnelStream(core.attach_stream(sid)))
}

impl MuxHooks<H2Tunnel> for Hooks {
    type Open = OpenReply;
    type End = TunnelEnd;
    type State = TunnelState;

    fn start(core: &mut TunnelCore, now: Duration) {
        core.m.start(now);
    }

    fn state(m: &Tunnel) -> TunnelState {
        m.state()
    }

    fn closed_state() -> TunnelState {
        TunnelState::Closed
    }

    fn carrier_lost(why: String) -> TunnelEnd {
        TunnelEnd::CarrierLost(why)
    }

    fn shut_down(why: String) -> TunnelEnd {
        TunnelEnd::Failed(why)
    }

    fn lost_reason(end: &TunnelEnd) -> Option<&str> {
        match end {
            TunnelEnd::CarrierLost(r) => Some(r),
            _ => None,
        }
    }

    /// Nothing more can be written: the tunnel stops where it is (no GOAWAY).
    fn lost(_core: &mut TunnelCore, _why: &str, _now: Duration) {}

    fn conn_cause(why: &TunnelEnd) -> ResetCause {
        ResetCause::TunnelEnded(why.to_string())
    }

    fn sent_cause(_info: &()) -> ResetCause {
        ResetCause::Local("application reset".into())
    }

    fn drop_info() {}

    /// The carrier's end ends the tunnel, unless it already failed (its GOAWAY timer
    /// then closes it).
    fn carrier_closed(core: &mut TunnelCore, _now: Duration) {
        if core.m.state() != TunnelState::Failed {
            core.end
                .get_or_insert(TunnelEnd::CarrierLost("carrier closed".into()));
        }
    }

    fn can_open(&self, core: &TunnelCore) -> bool {
        matches!(
            core.m.state(),
            TunnelState::Ready | TunnelState::HandshakeSent
        )
    }

    fn open(&mut self, core: &mut TunnelCore, reply: OpenReply, now: Duration) {
        if core.m.state() == TunnelState::Ready {
            let _ = reply.send(open_stream(core, now));
        } else {
            self.waiting.push(reply);
        }
    }

    fn accepted(&mut self, core: &mut TunnelCore, sid: u32, now: Duration) {
        let s = TunnelStream(core.attach_stream(sid));
        if self.accepted.try_send(s).is_err() {
            // Nobody accepts (or the backlog is full): refuse this stream.
            let _ = core.m.reset(now, sid);
            core.forget(sid);
        }
    }

    fn event(&mut self, core: &mut TunnelCore, ev: Event, now: Duration) {
        match ev {
            Event::Ready => {
                for reply in std::mem::take(&mut self.waiting) {
                    let _ = reply.send(open_stream(core, now));
                }
            }
            Event::Failed(r) => {
                core.end.get_or_insert(TunnelEnd::Failed(r));
            }
            Event::PeerShutdown(r) => {
                core.end.get_or_insert(TunnelEnd::PeerShutdown(r));
            }
            Event::Established(_)
            | Event::Closed
            | Event::Readable(_)
            | Event::Accepted(_)
            | Event::Reset(..) => {}
        }
    }

    fn end(&mut self, core: &mut TunnelCore) {
        for reply in self.waiting.drain(..) {
            let _ = reply.send(Err(StreamError::NotReady(core.m.state())));
        }
    }

    fn command(
        &mut self,
        _core: &mut TunnelCore,
        c: Infallible,
        _now: Duration,
    ) -> Option<Infallible> {
        match c {}
    }

    fn control(&mut self, _core: &mut TunnelCore, c: Infallible, _now: Duration) {
        match c {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair(cfg: DriverConfig) -> (Running, Running) {
        let (a, b) = tokio::io::duplex(8 * 1024);
        let client = spawn(a, Role::Client, cfg.clone(), Trace::disabled(), "c".into());
        let server = spawn(b, Role::Server, cfg, Trace::disabled(), "s".into());
        (client, server)
    }

    fn pattern(seed: u32, n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed) as u8)
            .collect()
    }

    /// Many streams, each writing a large payload both ways at once (the case that
    /// deadlocks a driver that writes the carrier from the tunnel task), then half-close.
    #[tokio::test]
    async fn concurrent_bidirectional_bulk_streams_arrive_intact() {
        let (client, mut server) = pair(DriverConfig::default());
        let srv = tokio::spawn(async move {
            let mut tasks = Vec::new();
            while let Some(s) = server.accepted.recv().await {
                tasks.push(tokio::spawn(async move {
                    let (mut rd, mut wr) = tokio::io::split(s);
                    let echo = async {
                        let mut got = Vec::new();
                        rd.read_to_end(&mut got).await.unwrap();
                        got
                    };
                    let send = async {
                        wr.write_all(&pattern(7, 300_000)).await.unwrap();
                        wr.shutdown().await.unwrap();
                    };
                    let (got, ()) = tokio::join!(echo, send);
                    got
                }));
                if tasks.len() == 8 {
                    break;
                }
            }
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await.unwrap());
            }
            all
        });
        let mut clients = Vec::new();
        for i in 0..8u32 {
            let s = client.opener.open().await.unwrap();
            assert_eq!(s.id(), 2 * i + 1);
            clients.push(tokio::spawn(async move {
                let (mut rd, mut wr) = tokio::io::split(s);
                let data = pattern(i, 200_000 + i as usize * 1000);
                let send = async {
                    wr.write_all(&data).await.unwrap();
                    wr.shutdown().await.unwrap();
                };
                let recv = async {
                    let mut got = Vec::new();
                    rd.read_to_end(&mut got).await.unwrap();
                    got
                };
                let ((), got) = tokio::join!(send, recv);
                assert_eq!(got, pattern(7, 300_000));
                data.len()
            }));
        }
        let mut sent = Vec::new();
        for c in clients {
            sent.push(c.await.unwrap());
        }
        let got = srv.await.unwrap();
        let mut lens: Vec<usize> = got.iter().map(|g| g.len()).collect();
        lens.sort_unstable();
        sent.sort_unstable();
        assert_eq!(lens, sent);
    }

    /// A stream reset by the peer fails reads and writes instead of ending cleanly.
    #[tokio::test]
    async fn reset_is_an_error_not_an_end_of_file() {
        let (client, mut server) = pair(DriverConfig::default());
        let mut c = client.opener.open().await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut s = server.accepted.recv().await.unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.unwrap();
        s.reset();
        let mut rest = Vec::new();
        let e = c.read_to_end(&mut rest).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        let e = c.write_all(b"x").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    /// Dropping a stream whose input ended is a graceful close: the peer reads
    /// everything, then the end. (The client now finishes first: a drop with input
    /// unread is a reset, see tests/driver_rules.rs.)
    #[tokio::test]
    async fn drop_is_fin_after_the_data() {
        let (client, mut server) = pair(DriverConfig::default());
        let mut c = client.opener.open().await.unwrap();
        c.write_all(b"ping").await.unwrap();
        c.shutdown().await.unwrap();
        let mut s = server.accepted.recv().await.unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).await.unwrap();
        assert_eq!(b, b"ping");
        s.write_all(&pattern(1, 100_000)).await.unwrap();
        drop(s);
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, pattern(1, 100_000));
    }

    /// A carrier that dies takes every stream down with an error, and `done` says why.
    #[tokio::test]
    async fn carrier_loss_resets_streams() {
        let (a, b) = tokio::io::duplex(8 * 1024);
        let client = spawn(
            a,
            Role::Client,
            DriverConfig::default(),
            Trace::disabled(),
            "c".into(),
        );
        let mut server = spawn(
            b,
            Role::Server,
            DriverConfig::default(),
            Trace::disabled(),
            "s".into(),
        );
        let mut c = client.opener.open().await.unwrap();
        c.write_all(b"x").await.unwrap();
        let s = server.accepted.recv().await.unwrap();
        server.done.abort();
        drop(server);
        drop(s);
        let mut rest = Vec::new();
        let e = c.read_to_end(&mut rest).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        let end = client.done.await.unwrap();
        assert!(matches!(end, TunnelEnd::CarrierLost(_)), "{end}");
    }
}
