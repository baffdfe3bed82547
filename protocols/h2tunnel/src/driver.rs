//! The async driver: runs a [`Tunnel`] over any ordered byte stream (a KCP session from
//! `tunnelbed_netio::arq`, a TCP stream, ...) and hands each stream to the application as
//! a [`TunnelStream`] (`AsyncRead + AsyncWrite`).
//!
//! Tasks, so that nothing can deadlock on a full buffer:
//! - the tunnel task owns the machine: it reads the carrier, runs timers, takes
//!   application commands, and moves received bytes towards the streams;
//! - a carrier writer task ([`tunnelbed_netio::mux::carrier_writer`], shared with pong)
//!   writes what the machine emits, gathering what is queued into one (vectored) write,
//!   so the tunnel task keeps reading while the carrier is slow to take bytes (two tunnel
//!   ends writing bulk at each other would otherwise wait on each other forever);
//! - per stream, a pump from the application (reads its writes, sends them as
//!   commands, then FIN at its end of input) and a pump to the application.
//!
//! Backpressure: the tunnel task stops reading the carrier while the machine holds its
//! input ([`Tunnel::input_blocked`]: the streams hold [`TunnelConfig::max_buffered`]
//! received bytes or more that the applications have not taken).
//! The protocol has no per-stream flow control, so one slow reader slows the whole tunnel
//! (as in vproxy) rather than losing data. A reset stream (RST, or the tunnel failing)
//! makes reads and writes fail with `ConnectionReset`, never a silent end of file.
//! Time is `tokio::time`, virtual inside the simulator.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tunnelbed_netio::mux::{sleep_until, CarrierPump};
use tunnelbed_netio::Trace;

use crate::stream::ResetCause;
use crate::tunnel::{Event, Recv, Role, StreamError, Tunnel, TunnelConfig, TunnelState};
use crate::wire::MAX_PAYLOAD;

/// Driver settings on top of the machine's.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The machine's timers and caps.
    pub tunnel: TunnelConfig,
    /// Bytes buffered in each [`TunnelStream`] each way.
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

/// One stream of the tunnel, as the application uses it.
///
/// Dropping it (or shutting down its write half) closes gracefully: what was written is
/// sent, then FIN, as vproxy's `close()` without linger 0. [`TunnelStream::reset`] is
/// the abortive close (RST).
pub struct TunnelStream {
    sid: u32,
    io: DuplexStream,
    reset: watch::Receiver<Option<ResetCause>>,
    resets: mpsc::UnboundedSender<u32>,
}

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelStream")
            .field("sid", &self.sid)
            .finish()
    }
}

impl TunnelStream {
    /// The stream id on the wire.
    pub fn id(&self) -> u32 {
        self.sid
    }

    /// Aborts the stream: RST to the peer, unsent and unread bytes are discarded.
    pub fn reset(self) {
        let _ = self.resets.send(self.sid);
    }

    fn reset_error(&self) -> Option<io::Error> {
        self.reset.borrow().as_ref().map(|c| {
            io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("stream {}: {c}", self.sid),
            )
        })
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            // End of input after a reset is the reset, not a clean end.
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                match this.reset_error() {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Ready(Ok(())),
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.reset_error() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
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

enum Cmd {
    Data(u32, Bytes),
    /// The application finished writing (FIN).
    ReaderDone(u32),
    /// The application stopped reading (`gone`: it dropped the stream).
    WriterDone(u32, bool),
}

struct DrvStream {
    to_app: Option<mpsc::Sender<Bytes>>,
    reset: watch::Sender<Option<ResetCause>>,
    reader_done: bool,
    writer_done: bool,
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
    let done = tokio::spawn(run(carrier, machine, cfg, open_rx, acc_tx, state_tx));
    Running {
        opener: Opener { tx: open_tx },
        accepted,
        state,
        done,
    }
}

async fn run<C>(
    carrier: C,
    mut m: Tunnel,
    cfg: DriverConfig,
    mut open_rx: mpsc::Receiver<OpenReply>,
    acc_tx: mpsc::Sender<TunnelStream>,
    state_tx: watch::Sender<TunnelState>,
) -> TunnelEnd
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let origin = Instant::now();
    let now = || origin.elapsed();
    let wake = Arc::new(Notify::new());
    let mut pump = CarrierPump::start(carrier, wake.clone());
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Cmd>(64);
    // One message per stream at most, so unbounded is bounded by the stream limit.
    let (reset_tx, mut reset_rx) = mpsc::unbounded_channel::<u32>();
    let chans = Chans {
        cmd: cmd_tx,
        resets: reset_tx,
        wake: wake.clone(),
    };
    let mut streams: BTreeMap<u32, DrvStream> = BTreeMap::new();
    let mut waiting_opens: Vec<OpenReply> = Vec::new();
    let mut end: Option<TunnelEnd> = None;
    let mut carrier_eof = false;
    let mut openers_gone = false;
    m.start(now());
    loop {
        // Feed held input, emit, then route events, then feed streams.
        pump.feed_held(&mut m, now());
        if pump.emit(&mut m).is_err() {
            end.get_or_insert(TunnelEnd::CarrierLost("carrier write failed".into()));
        }
        while let Some(ev) = m.poll_event() {
            match ev {
                Event::Ready => {
                    for reply in waiting_opens.drain(..) {
                        let r = open_stream(&mut m, &mut streams, &cfg, &chans, now());
                        let _ = reply.send(r);
                    }
                }
                Event::Accepted(sid) => {
                    let s = attach(sid, &mut streams, &cfg, &chans);
                    if acc_tx.try_send(s).is_err() {
                        // Nobody accepts (or the backlog is full): refuse this stream.
                        let _ = m.reset(now(), sid);
                    }
                }
                Event::Reset(sid, cause) => {
                    if let Some(s) = streams.get_mut(&sid) {
                        let _ = s.reset.send(Some(cause));
                    }
                }
                Event::Failed(r) => {
                    end.get_or_insert(TunnelEnd::Failed(r));
                }
                Event::PeerShutdown(r) => {
                    end.get_or_insert(TunnelEnd::PeerShutdown(r));
                }
                Event::Established(_) | Event::Readable(_) | Event::Closed => {}
            }
        }
        feed_streams(&mut m, &mut streams, now());
        state_tx.send_if_modified(|s| {
            let changed = *s != m.state();
            *s = m.state();
            changed
        });
        if m.state() == TunnelState::Closed && !pump.has_unsent() {
            break;
        }
        if carrier_eof && m.state() != TunnelState::Failed {
            break;
        }
        if let Some(e) = &end {
            if matches!(e, TunnelEnd::CarrierLost(_)) {
                break;
            }
        }
        let can_read = !carrier_eof && pump.can_read(&m);
        let can_cmd = !pump.has_unsent() && m.pending_output() < cfg.tunnel.max_output / 2;
        let can_open = !openers_gone
            && (m.state() == TunnelState::Ready || m.state() == TunnelState::HandshakeSent);
        let timeout = m.poll_timeout().map(|t| origin + t);
        tokio::select! {
            biased;
            r = pump.read(), if can_read => match r {
                Ok(0) => {
                    carrier_eof = true;
                    end.get_or_insert(TunnelEnd::CarrierLost("carrier closed".into()));
                }
                // The machine copies what it keeps: the allocation comes back.
                Ok(n) => pump.take_read(&mut m, now(), n),
                Err(e) => {
                    carrier_eof = true;
                    end.get_or_insert(TunnelEnd::CarrierLost(e.to_string()));
                }
            },
            _ = wake.notified() => {}
            Some(sid) = reset_rx.recv() => {
                if streams.contains_key(&sid) {
                    let _ = m.reset(now(), sid);
                }
            }
            c = cmd_rx.recv(), if can_cmd => {
                if let Some(c) = c {
                    apply(&mut m, &mut streams, c, now());
                }
            }
            r = open_rx.recv(), if can_open => match r {
                None => openers_gone = true,
                Some(reply) if m.state() == TunnelState::Ready => {
                    let r = open_stream(&mut m, &mut streams, &cfg, &chans, now());
                    let _ = reply.send(r);
                }
                Some(reply) => waiting_opens.push(reply),
            },
            _ = sleep_until(timeout) => m.handle_timeout(now()),
        }
    }
    // Every stream still attached learns the tunnel is gone.
    let why = end
        .clone()
        .unwrap_or(TunnelEnd::CarrierLost("closed".into()));
    for s in streams.values_mut() {
        if s.reset.borrow().is_none() {
            let _ = s.reset.send(Some(ResetCause::TunnelEnded(why.to_string())));
        }
        s.to_app = None;
    }
    for reply in waiting_opens {
        let _ = reply.send(Err(StreamError::NotReady(m.state())));
    }
    // Unlike pong, nothing still queued is offered to the writer at the end (the tunnel
    // closes after its GOAWAY went out, or the carrier is gone).
    pump.close(&mut m, false, cfg.tunnel.close_delay).await;
    state_tx.send_replace(TunnelState::Closed);
    why
}

/// Resolves once the stream is reset (or its driver side is gone).
async fn reset_signalled(rx: &mut watch::Receiver<Option<ResetCause>>) {
    while rx.borrow_and_update().is_none() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// What each stream's pumps and handle talk to the tunnel task through.
struct Chans {
    cmd: mpsc::Sender<Cmd>,
    resets: mpsc::UnboundedSender<u32>,
    wake: Arc<Notify>,
}

fn open_stream(
    m: &mut Tunnel,
    streams: &mut BTreeMap<u32, DrvStream>,
    cfg: &DriverConfig,
    chans: &Chans,
    now: Duration,
) -> Result<TunnelStream, StreamError> {
    let sid = m.open(now)?;
    Ok(attach(sid, streams, cfg, chans))
}

/// Creates the application's end of stream `sid` and the two pumps behind it.
fn attach(
    sid: u32,
    streams: &mut BTreeMap<u32, DrvStream>,
    cfg: &DriverConfig,
    chans: &Chans,
) -> TunnelStream {
    let (app, mine) = tokio::io::duplex(cfg.stream_buffer);
    let (reset_tx, reset_rx) = watch::channel(None);
    let (to_app, from_tunnel) = mpsc::channel::<Bytes>(4);
    let (mut mine_rd, mut mine_wr) = tokio::io::split(mine);
    // Application -> tunnel.
    let tx = chans.cmd.clone();
    let mut reset = reset_rx.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_PAYLOAD];
        loop {
            tokio::select! {
                biased;
                _ = reset_signalled(&mut reset) => break,
                r = mine_rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Cmd::Data(sid, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
        let _ = tx.send(Cmd::ReaderDone(sid)).await;
    });
    // Tunnel -> application.
    let tx = chans.cmd.clone();
    let wake = chans.wake.clone();
    tokio::spawn(async move {
        let mut from_tunnel = from_tunnel;
        let mut gone = false;
        while let Some(b) = from_tunnel.recv().await {
            wake.notify_one();
            if mine_wr.write_all(&b).await.is_err() {
                gone = true;
                break;
            }
        }
        if !gone {
            let _ = mine_wr.shutdown().await;
        }
        let _ = tx.send(Cmd::WriterDone(sid, gone)).await;
    });
    streams.insert(
        sid,
        DrvStream {
            to_app: Some(to_app),
            reset: reset_tx,
            reader_done: false,
            writer_done: false,
        },
    );
    TunnelStream {
        sid,
        io: app,
        reset: reset_rx,
        resets: chans.resets.clone(),
    }
}

fn apply(m: &mut Tunnel, streams: &mut BTreeMap<u32, DrvStream>, c: Cmd, now: Duration) {
    match c {
        Cmd::Data(sid, mut b) => {
            // The tunnel task only takes commands while there is output room, so the
            // machine takes every byte; a dead stream's bytes have nowhere to go.
            while !b.is_empty() {
                match m.send_bytes(now, sid, &b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => b.advance(n),
                }
            }
        }
        Cmd::ReaderDone(sid) => {
            if let Some(s) = streams.get_mut(&sid) {
                s.reader_done = true;
                let _ = m.finish(now, sid);
            }
        }
        Cmd::WriterDone(sid, gone) => {
            if let Some(s) = streams.get_mut(&sid) {
                s.writer_done = true;
                if gone && !s.reader_done {
                    // The application dropped the stream with input unread: reset.
                    let _ = m.close(now, sid, true);
                    streams.remove(&sid);
                    return;
                }
            }
        }
    }
    let finished: Vec<u32> = streams
        .iter()
        .filter(|(_, s)| s.reader_done && s.writer_done)
        .map(|(sid, _)| *sid)
        .collect();
    for sid in finished {
        let _ = m.close(now, sid, false);
        streams.remove(&sid);
    }
}

/// Moves received bytes, ends of input and resets from the machine to the streams.
fn feed_streams(m: &mut Tunnel, streams: &mut BTreeMap<u32, DrvStream>, now: Duration) {
    for (sid, s) in streams.iter_mut() {
        let mut ended = false;
        if let Some(tx) = &s.to_app {
            while let Ok(permit) = tx.try_reserve() {
                match m.recv(now, *sid) {
                    Ok(Recv::Data(b)) => permit.send(b),
                    Ok(Recv::Pending) => break,
                    Ok(Recv::Eof) | Err(_) => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        if ended {
            s.to_app = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Dropping a stream is a graceful close: the peer reads everything, then the end.
    #[tokio::test]
    async fn drop_is_fin_after_the_data() {
        let (client, mut server) = pair(DriverConfig::default());
        let mut c = client.opener.open().await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut s = server.accepted.recv().await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
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
