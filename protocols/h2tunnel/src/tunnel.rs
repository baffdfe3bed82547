//! The sans-IO tunnel machine: handshake, keepalive, shutdown, and the streams inside.
//!
//! The calls follow the convention of every stream multiplexer here (pong's session has
//! the same names where the meaning is the same). The driver feeds carrier bytes to
//! [`Tunnel::handle_input`] (or [`Tunnel::handle_input_bytes`]), which says how many it
//! took, runs [`Tunnel::handle_timeout`] at [`Tunnel::poll_timeout`], writes what
//! [`Tunnel::poll_transmit_chunks`] (or [`Tunnel::poll_transmit`]) returns to the
//! carrier, and reacts to [`Tunnel::poll_event`]. The application side is
//! [`Tunnel::open`], [`Tunnel::send`] / [`Tunnel::send_bytes`], [`Tunnel::recv`],
//! [`Tunnel::finish`], [`Tunnel::reset`], [`Tunnel::close`] and [`Tunnel::shutdown`], each
//! taking `now`, which stamps the trace. Every state change of the tunnel and of each
//! stream is reported to the trace.
//!
//! # Input backpressure
//!
//! The protocol has no flow control. While the streams hold
//! [`TunnelConfig::max_buffered`] received bytes or more that the application has not
//! taken, [`Tunnel::input_blocked`] says so and `handle_input` takes nothing (it returns
//! 0); the driver stops reading the carrier until `recv` makes room, so one slow reader
//! slows the whole tunnel (as in vproxy) rather than losing data. A call made below the
//! limit takes all it is given. A stream whose own buffer would pass
//! [`TunnelConfig::stream_rx_cap`] is still reset, as before: with the driver's limit
//! below that cap and its reads bounded, that happens only to a caller that ignores
//! `input_blocked`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tunnelbed_netio::Trace;

use crate::stream::{ResetCause, Stream, StreamState};
use crate::wire::{encode_data_piece, Message, RawFrame, MAX_PAYLOAD};

/// Which end of the tunnel this is: the client opens streams and sends keepalives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends the handshake first, opens streams (odd ids), checks liveness.
    Client,
    /// Answers the handshake, accepts streams, answers keepalives.
    Server,
}

/// The tunnel's state (seed 000), plus `closed` once the carrier should be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelState {
    /// Nothing sent yet (the server waits here for the client's handshake).
    Init,
    /// The client sent its handshake and waits for the server's.
    HandshakeSent,
    /// Streams may be opened.
    Ready,
    /// Failed: GOAWAY sent, every stream dead, the carrier closes after a short delay.
    Failed,
    /// Over: the driver drops the carrier.
    Closed,
}

impl TunnelState {
    /// The name used in traces.
    pub fn name(self) -> &'static str {
        match self {
            TunnelState::Init => "init",
            TunnelState::HandshakeSent => "handshake_sent",
            TunnelState::Ready => "ready",
            TunnelState::Failed => "failed",
            TunnelState::Closed => "closed",
        }
    }
}

impl fmt::Display for TunnelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Timers and limits. Defaults are vproxy's timings and our caps.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// The handshake must complete within this (vproxy: 5 s, client side; we apply it
    /// to the server too, so a silent client does not hold a tunnel forever).
    pub handshake_timeout: Duration,
    /// How often the client considers sending a keepalive (vproxy: 10 s).
    pub keepalive_interval: Duration,
    /// A keepalive is sent only after this long without reading anything (vproxy: 5 s).
    pub keepalive_idle: Duration,
    /// How long a keepalive waits for its ack (vproxy: 5 s).
    pub keepalive_timeout: Duration,
    /// After a failure, how long GOAWAY gets to go out before the carrier closes (~1 s).
    pub close_delay: Duration,
    /// Most live streams; a SYN beyond it is answered with RST.
    pub max_streams: usize,
    /// Most received bytes buffered per stream; beyond it the stream is reset (pong-style
    /// protocols have no flow control: the driver avoids this by pausing carrier reads).
    pub stream_rx_cap: usize,
    /// Most bytes queued towards the carrier; `send` accepts less when it is full.
    pub max_output: usize,
    /// Received bytes held for all streams at which input is held (see
    /// [`Tunnel::input_blocked`]): the bound on what one slow reader makes us buffer.
    pub max_buffered: usize,
    /// Gzip DATA payloads when that makes them smaller (vproxy's rule).
    pub gzip: bool,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
            close_delay: Duration::from_secs(1),
            max_streams: 4096,
            stream_rx_cap: 1 << 20,
            max_output: 1 << 20,
            max_buffered: 512 * 1024,
            gzip: true,
        }
    }
}

/// Something the driver or the application should act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed.
    Ready,
    /// Server: the client opened stream `sid`.
    Accepted(u32),
    /// Client: SYN-ACK arrived for `sid`.
    Established(u32),
    /// Stream `sid` has data or an end of input to read.
    Readable(u32),
    /// Stream `sid` was reset; reads and writes fail.
    Reset(u32, ResetCause),
    /// We failed the tunnel (GOAWAY with this reason was queued).
    Failed(String),
    /// The peer shut the tunnel down (GOAWAY with this reason).
    PeerShutdown(String),
    /// The carrier should be closed now.
    Closed,
}

/// Why an application call on a stream failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StreamError {
    /// The tunnel is not ready (handshake pending, failed or closed).
    #[error("tunnel is {0}, not ready")]
    NotReady(TunnelState),
    /// Only the client opens streams.
    #[error("only the client opens streams")]
    NotClient,
    /// The stream limit is reached, or the id space is used up.
    #[error("too many streams")]
    TooManyStreams,
    /// No such stream (never opened, or closed by the application).
    #[error("no stream {0}")]
    Unknown(u32),
    /// The stream was reset.
    #[error("stream {sid}: {cause}")]
    Reset {
        /// Stream id.
        sid: u32,
        /// Why.
        cause: ResetCause,
    },
    /// Our side of the stream is closed (FIN sent).
    #[error("stream {sid} is {state}: cannot send")]
    Closed {
        /// Stream id.
        sid: u32,
        /// Its state.
        state: StreamState,
    },
}

/// Why the machine holds its input (see [`Tunnel::input_blocked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// The streams hold [`TunnelConfig::max_buffered`] unread bytes or more.
    ReceiveBuffersFull,
}

/// Smallest DATA payload [`Tunnel::send_bytes`] queues as a slice of the caller's bytes
/// instead of copying it (only its 9-byte header is written), when it is not gzipped.
pub const ZERO_COPY_MIN: usize = 4096;

/// What a read gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recv {
    /// Bytes, in order.
    Data(Bytes),
    /// Nothing yet.
    Pending,
    /// The peer finished sending and everything was read.
    Eof,
}

#[derive(Debug, Default)]
struct Keepalive {
    next_check: Option<Duration>,
    pending: Option<(i64, Duration)>,
    next_id: i64,
    successes: u32,
    misses: u32,
}

/// The tunnel machine (one per carrier connection).
pub struct Tunnel {
    role: Role,
    cfg: TunnelConfig,
    trace: Trace,
    id: String,
    state: TunnelState,
    inbuf: BytesMut,
    /// Output not yet moved to `chunks` (everything in `chunks` goes before it).
    out: BytesMut,
    /// Finished pieces of output in order: payloads [`Tunnel::send_bytes`] queued
    /// without a copy, and what `out` held before each of them.
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    chunked: usize,
    streams: BTreeMap<u32, Stream>,
    next_sid: u32,
    events: VecDeque<Event>,
    handshake_deadline: Option<Duration>,
    close_at: Option<Duration>,
    last_read: Duration,
    ka: Keepalive,
    now: Duration,
    started: bool,
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("state", &self.state)
            .field("streams", &self.streams.len())
            .finish()
    }
}

impl Tunnel {
    /// A machine for one carrier connection; `id` names it in the trace.
    pub fn new(role: Role, cfg: TunnelConfig, trace: Trace, id: impl Into<String>) -> Self {
        Self {
            role,
            cfg,
            trace,
            id: id.into(),
            state: TunnelState::Init,
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            chunks: VecDeque::new(),
            chunked: 0,
            streams: BTreeMap::new(),
            next_sid: 1,
            events: VecDeque::new(),
            handshake_deadline: None,
            close_at: None,
            last_read: Duration::ZERO,
            ka: Keepalive {
                next_id: 1,
                ..Keepalive::default()
            },
            now: Duration::ZERO,
            started: false,
        }
    }

    /// Starts the machine at `now` (carrier connected): the client sends its handshake;
    /// both arm the handshake timer.
    ///
    /// Only the first call does anything: a second one must not re-arm the handshake
    /// timer of a tunnel that is already ready (it would fail it 5 s later).
    pub fn start(&mut self, now: Duration) {
        if self.started {
            return;
        }
        self.started = true;
        self.now = now;
        self.last_read = now;
        self.handshake_deadline = Some(now + self.cfg.handshake_timeout);
        if self.role == Role::Client && self.state == TunnelState::Init {
            Message::Handshake.encode(&mut self.out, false);
            self.set_state(TunnelState::HandshakeSent, "handshake sent");
        }
    }

    /// The tunnel's state.
    pub fn state(&self) -> TunnelState {
        self.state
    }

    /// A stream's state (`None` once the application closed it or it never existed).
    pub fn stream_state(&self, sid: u32) -> Option<StreamState> {
        self.streams.get(&sid).map(|s| s.state)
    }

    /// Ids of the streams the machine still tracks, in order.
    pub fn stream_ids(&self) -> Vec<u32> {
        self.streams.keys().copied().collect()
    }

    /// Bytes queued towards the carrier.
    pub fn pending_output(&self) -> usize {
        self.chunked + self.out.len()
    }

    /// Received bytes buffered for the application over all streams.
    pub fn buffered_input(&self) -> usize {
        self.streams.values().map(|s| s.rx_len).sum()
    }

    /// Why input is held, if it is: `handle_input` takes nothing until `recv` makes room
    /// (see the module doc).
    pub fn input_blocked(&self) -> Option<Blocked> {
        (self.buffered_input() >= self.cfg.max_buffered).then_some(Blocked::ReceiveBuffersFull)
    }

    /// The limits it runs with.
    pub fn config(&self) -> &TunnelConfig {
        &self.cfg
    }

    /// Takes everything queued for the carrier, in one piece.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.chunks.is_empty() {
            return (!self.out.is_empty()).then(|| self.out.split().freeze());
        }
        // Payloads queued by `send_bytes`: join them (a driver that writes vectored uses
        // `poll_transmit_chunks` instead and copies nothing).
        let mut all = BytesMut::with_capacity(self.pending_output());
        for c in self.chunks.drain(..) {
            all.extend_from_slice(&c);
        }
        self.chunked = 0;
        all.extend_from_slice(&self.out.split());
        Some(all.freeze())
    }

    /// Takes everything queued for the carrier as pieces in order (appended to `into`);
    /// payloads [`Tunnel::send_bytes`] queued uncopied come out as they went in. Returns
    /// the bytes taken.
    pub fn poll_transmit_chunks(&mut self, into: &mut Vec<Bytes>) -> usize {
        let n = self.pending_output();
        into.extend(self.chunks.drain(..));
        self.chunked = 0;
        if !self.out.is_empty() {
            into.push(self.out.split().freeze());
        }
        n
    }

    /// Drops everything queued for the carrier.
    fn clear_output(&mut self) {
        self.out.clear();
        self.chunks.clear();
        self.chunked = 0;
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Tunnel::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let ka = self
            .ka
            .pending
            .map(|(_, at)| at + self.cfg.keepalive_timeout)
            .or(self.ka.next_check);
        [self.handshake_deadline, self.close_at, ka]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now;
        if let Some(at) = self.close_at {
            if now >= at {
                self.close_at = None;
                self.end_tunnel("closed after failure");
            }
            return;
        }
        if let Some(at) = self.handshake_deadline {
            if now >= at {
                self.fail("handshake timeout");
                return;
            }
        }
        if self.state != TunnelState::Ready || self.role != Role::Client {
            return;
        }
        if let Some((id, sent)) = self.ka.pending {
            if now >= sent + self.cfg.keepalive_timeout {
                self.ka.pending = None;
                self.ka.misses += 1;
                // The first must succeed; after two successes two misses in a row pass.
                let allowed = if self.ka.successes >= 2 { 2 } else { 0 };
                self.trace(
                    "keepalive",
                    "waiting",
                    "missed",
                    format!(
                        "ping {id} unanswered ({} in a row, {allowed} tolerated)",
                        self.ka.misses
                    ),
                );
                if self.ka.misses > allowed {
                    self.fail("keepalive response timeout");
                    return;
                }
            }
        }
        if let Some(at) = self.ka.next_check {
            if now >= at {
                self.ka.next_check = Some(now + self.cfg.keepalive_interval);
                let idle = now.saturating_sub(self.last_read) >= self.cfg.keepalive_idle;
                if self.ka.pending.is_none() && self.pending_output() == 0 && idle {
                    let id = self.ka.next_id;
                    self.ka.next_id += 1;
                    Message::Keepalive { id }.encode(&mut self.out, false);
                    self.ka.pending = Some((id, now));
                    self.trace("keepalive", "idle", "waiting", format!("ping {id} sent"));
                }
            }
        }
    }

    /// Feeds bytes read from the carrier at `now`; returns how many were taken: all of
    /// them, or none while [`Tunnel::input_blocked`] (keep them and feed them again once
    /// `recv` made room). After a failure or the end, everything is taken and discarded.
    pub fn handle_input(&mut self, now: Duration, data: &[u8]) -> usize {
        self.now = now;
        if matches!(self.state, TunnelState::Failed | TunnelState::Closed) {
            return data.len(); // a failed tunnel reads nothing more
        }
        if self.input_blocked().is_some() {
            return 0;
        }
        if !data.is_empty() {
            self.last_read = now;
        }
        self.inbuf.extend_from_slice(data);
        let buf = std::mem::take(&mut self.inbuf);
        let mut off = 0;
        while matches!(
            self.state,
            TunnelState::Init | TunnelState::HandshakeSent | TunnelState::Ready
        ) {
            match RawFrame::parse(&buf[off..]) {
                Ok(None) => break,
                Ok(Some((f, n))) => {
                    off += n;
                    self.on_frame(&f);
                }
                Err(e) => {
                    self.fail(&e.reason());
                    break;
                }
            }
        }
        if matches!(
            self.state,
            TunnelState::Init | TunnelState::HandshakeSent | TunnelState::Ready
        ) {
            self.inbuf = BytesMut::from(&buf[off..]);
        }
        data.len()
    }

    /// [`Tunnel::handle_input`] for input the driver holds as [`Bytes`], the shape every
    /// multiplexer's driver feeds: the same answer and effects (payloads are copied).
    pub fn handle_input_bytes(&mut self, now: Duration, data: &Bytes) -> usize {
        self.handle_input(now, data)
    }

    fn on_frame(&mut self, f: &RawFrame<'_>) {
        if self.state != TunnelState::Ready {
            if f.typ == crate::wire::TYPE_GOAWAY {
                let reason = match Message::from_frame(f) {
                    Ok(Message::Shutdown { reason }) => reason,
                    _ => "GOAWAY".into(),
                };
                self.peer_shutdown(reason, "GOAWAY during the handshake");
                return;
            }
            if !f.is_handshake() {
                self.fail("handshake message is invalid");
                return;
            }
            self.handshake_deadline = None;
            if self.role == Role::Server {
                Message::Handshake.encode(&mut self.out, false);
            } else {
                self.ka.next_check = Some(self.now + self.cfg.keepalive_interval);
            }
            self.set_state(TunnelState::Ready, "handshake received");
            self.events.push_back(Event::Ready);
            return;
        }
        match Message::from_frame(f) {
            Err(e) => self.fail(&e.reason()),
            Ok(m) => self.on_message(m),
        }
    }

    fn on_message(&mut self, m: Message) {
        match m {
            Message::Handshake | Message::Ignored => {}
            Message::Keepalive { id } => Message::KeepaliveAck { id }.encode(&mut self.out, false),
            Message::KeepaliveAck { id } => {
                if self.ka.pending.map(|(p, _)| p) == Some(id) {
                    self.ka.pending = None;
                    self.ka.successes += 1;
                    self.ka.misses = 0;
                    self.trace(
                        "keepalive",
                        "waiting",
                        "idle",
                        format!("ping {id} answered"),
                    );
                }
            }
            Message::Shutdown { reason } => self.peer_shutdown(reason, "GOAWAY received"),
            Message::Syn { sid } => self.on_syn(sid),
            Message::Rst { sid } => {
                let live = self
                    .streams
                    .get(&sid)
                    .is_some_and(|s| s.state != StreamState::Dead);
                if live {
                    self.kill(sid, ResetCause::ByPeer, "RST received");
                }
            }
            Message::Data { sid, payload, fin } => self.on_data(sid, payload, fin),
        }
    }

    fn on_syn(&mut self, sid: u32) {
        match (self.role, self.streams.get(&sid).map(|s| s.state)) {
            (Role::Client, Some(StreamState::SynSent)) => {
                self.set_stream(sid, StreamState::Established, "SYN-ACK received");
                self.events.push_back(Event::Established(sid));
            }
            (Role::Client, _) => {} // SYN-ACK for another state or id: ignored
            (Role::Server, Some(_)) => {} // SYN for a live id: ignored
            (Role::Server, None) => {
                let live = self
                    .streams
                    .values()
                    .filter(|s| s.state != StreamState::Dead)
                    .count();
                if sid.is_multiple_of(2) || live >= self.cfg.max_streams {
                    // Refuse this stream alone (vproxy would fail the whole tunnel).
                    Message::Rst { sid }.encode(&mut self.out, false);
                    let why = if sid.is_multiple_of(2) {
                        "SYN with an even id (clients open odd ids): answered RST"
                    } else {
                        "SYN beyond the stream limit: answered RST"
                    };
                    self.trace_stream(sid, StreamState::None, StreamState::Dead, why);
                    return;
                }
                self.streams.insert(sid, Stream::new(StreamState::None));
                Message::Syn { sid }.encode(&mut self.out, false);
                self.set_stream(sid, StreamState::Established, "SYN received, SYN-ACK sent");
                self.events.push_back(Event::Accepted(sid));
            }
        }
    }

    fn on_data(&mut self, sid: u32, payload: Bytes, fin: bool) {
        let cap = self.cfg.stream_rx_cap;
        let Some(s) = self.streams.get_mut(&sid) else {
            return; // unknown id: ignored
        };
        if !s.state.peer_may_send() {
            return;
        }
        if !payload.is_empty() {
            if s.rx_len + payload.len() > cap {
                Message::Rst { sid }.encode(&mut self.out, false);
                self.kill(sid, ResetCause::Overflow, "receive buffer full: RST sent");
                return;
            }
            s.rx_len += payload.len();
            s.rx.push_back(payload);
        }
        if fin && !s.peer_fin {
            s.peer_fin = true;
            let next = match s.state {
                StreamState::FinSent => StreamState::Dead,
                StreamState::SynSent | StreamState::Established | StreamState::None => {
                    StreamState::FinRecv
                }
                other => other,
            };
            self.set_stream(sid, next, "FIN received");
        }
        self.events.push_back(Event::Readable(sid));
    }

    /// Client: opens a stream (SYN sent; data may follow at once).
    pub fn open(&mut self, now: Duration) -> Result<u32, StreamError> {
        self.now = now;
        if self.role != Role::Client {
            return Err(StreamError::NotClient);
        }
        if self.state != TunnelState::Ready {
            return Err(StreamError::NotReady(self.state));
        }
        if self.streams.len() >= self.cfg.max_streams || self.next_sid > 0x7fff_fffd {
            return Err(StreamError::TooManyStreams);
        }
        let sid = self.next_sid;
        self.next_sid += 2;
        self.streams.insert(sid, Stream::new(StreamState::None));
        Message::Syn { sid }.encode(&mut self.out, false);
        self.set_stream(sid, StreamState::SynSent, "open: SYN sent");
        Ok(sid)
    }

    /// Queues as much of `data` as the output cap allows on stream `sid`; returns how
    /// many bytes were taken (0 when the carrier is backed up).
    pub fn send(&mut self, now: Duration, sid: u32, data: &[u8]) -> Result<usize, StreamError> {
        self.now = now;
        self.writable(sid)?;
        let room = self.cfg.max_output.saturating_sub(self.pending_output());
        let n = data.len().min(room);
        if n > 0 {
            Message::Data {
                sid,
                payload: Bytes::copy_from_slice(&data[..n]),
                fin: false,
            }
            .encode(&mut self.out, self.cfg.gzip);
        }
        Ok(n)
    }

    /// [`Tunnel::send`] for data the caller already holds as [`Bytes`]: the same frames
    /// and the same answer, but payloads of at least [`ZERO_COPY_MIN`] bytes that are not
    /// gzipped are queued as they are (only their headers are written). Take the output
    /// with [`Tunnel::poll_transmit_chunks`] to keep them uncopied.
    pub fn send_bytes(
        &mut self,
        now: Duration,
        sid: u32,
        data: &Bytes,
    ) -> Result<usize, StreamError> {
        if data.len() < ZERO_COPY_MIN {
            return self.send(now, sid, data);
        }
        self.now = now;
        self.writable(sid)?;
        let room = self.cfg.max_output.saturating_sub(self.pending_output());
        let n = data.len().min(room);
        let mut at = 0;
        while at < n {
            let len = (n - at).min(MAX_PAYLOAD);
            let piece = data.slice(at..at + len);
            at += len;
            let gzip = self.cfg.gzip;
            if let Some(p) = encode_data_piece(&mut self.out, sid, &piece, gzip, ZERO_COPY_MIN) {
                let head = self.out.split().freeze();
                self.chunked += head.len() + p.len();
                self.chunks.push_back(head);
                self.chunks.push_back(p);
            }
        }
        Ok(n)
    }

    fn writable(&self, sid: u32) -> Result<&Stream, StreamError> {
        if self.state != TunnelState::Ready {
            return Err(StreamError::NotReady(self.state));
        }
        let s = self.streams.get(&sid).ok_or(StreamError::Unknown(sid))?;
        if let Some(cause) = &s.reset {
            return Err(StreamError::Reset {
                sid,
                cause: cause.clone(),
            });
        }
        if !s.state.may_send() {
            return Err(StreamError::Closed {
                sid,
                state: s.state,
            });
        }
        Ok(s)
    }

    /// Takes received bytes from stream `sid` (which may end [`Tunnel::input_blocked`]).
    pub fn recv(&mut self, now: Duration, sid: u32) -> Result<Recv, StreamError> {
        self.now = now;
        let s = self
            .streams
            .get_mut(&sid)
            .ok_or(StreamError::Unknown(sid))?;
        if let Some(b) = s.rx.pop_front() {
            s.rx_len -= b.len();
            return Ok(Recv::Data(b));
        }
        if let Some(cause) = &s.reset {
            return Err(StreamError::Reset {
                sid,
                cause: cause.clone(),
            });
        }
        Ok(if s.peer_fin { Recv::Eof } else { Recv::Pending })
    }

    /// Half-closes our direction of `sid` (FIN). A second call sends nothing (vproxy's
    /// second FIN after shutdown+close is a slip we do not copy). Named `finish` as in
    /// every protocol here (vproxy's name is shutdown).
    pub fn finish(&mut self, now: Duration, sid: u32) -> Result<(), StreamError> {
        self.now = now;
        let state = self.writable(sid)?.state;
        Message::Data {
            sid,
            payload: Bytes::new(),
            fin: true,
        }
        .encode(&mut self.out, false);
        let next = if state == StreamState::FinRecv {
            StreamState::Dead
        } else {
            StreamState::FinSent
        };
        self.set_stream(sid, next, "shutdown: FIN sent");
        Ok(())
    }

    /// Resets `sid` (RST sent unless it is already dead).
    pub fn reset(&mut self, now: Duration, sid: u32) -> Result<(), StreamError> {
        self.now = now;
        let s = self.streams.get(&sid).ok_or(StreamError::Unknown(sid))?;
        if s.state != StreamState::Dead {
            if self.state == TunnelState::Ready {
                Message::Rst { sid }.encode(&mut self.out, false);
            }
            self.kill(
                sid,
                ResetCause::Local("application reset".into()),
                "reset: RST sent",
            );
        }
        Ok(())
    }

    /// The application closes `sid`: with `linger0` a live stream is reset (RST), else
    /// our direction is finished (FIN) if it is still open; then the id is forgotten.
    pub fn close(&mut self, now: Duration, sid: u32, linger0: bool) -> Result<(), StreamError> {
        self.now = now;
        let state = self
            .streams
            .get(&sid)
            .ok_or(StreamError::Unknown(sid))?
            .state;
        if state != StreamState::Dead && self.state == TunnelState::Ready {
            if linger0 {
                Message::Rst { sid }.encode(&mut self.out, false);
            } else if state.may_send() {
                Message::Data {
                    sid,
                    payload: Bytes::new(),
                    fin: true,
                }
                .encode(&mut self.out, false);
            }
        }
        let sent = state != StreamState::Dead && self.state == TunnelState::Ready;
        let cause = if sent && linger0 {
            "close with linger 0: RST sent"
        } else if sent && state.may_send() {
            "close: FIN sent"
        } else {
            "close"
        };
        self.trace_stream(sid, state, StreamState::RealClosed, cause);
        self.streams.remove(&sid);
        Ok(())
    }

    /// Shuts the tunnel down with `reason` (GOAWAY), as a failure does.
    pub fn shutdown(&mut self, now: Duration, reason: &str) {
        self.now = now;
        self.fail(reason);
    }

    fn fail(&mut self, reason: &str) {
        if matches!(self.state, TunnelState::Failed | TunnelState::Closed) {
            return;
        }
        // GOAWAY goes out first; data queued for the now-dead streams is dropped, and
        // every stream reports the failure to its reader and writer.
        self.clear_output();
        Message::Shutdown {
            reason: reason.to_string(),
        }
        .encode(&mut self.out, false);
        self.set_state(TunnelState::Failed, reason.to_string());
        self.kill_all(ResetCause::TunnelEnded(reason.to_string()));
        self.handshake_deadline = None;
        self.ka = Keepalive::default();
        self.close_at = Some(self.now + self.cfg.close_delay);
        self.events.push_back(Event::Failed(reason.to_string()));
    }

    fn peer_shutdown(&mut self, reason: String, how: &str) {
        // Closed without answering: what was queued (data for streams that are now dead,
        // a handshake reply) is dropped, so a closed tunnel emits nothing at all.
        self.clear_output();
        self.set_state(TunnelState::Closed, format!("{how}: {reason}"));
        self.kill_all(ResetCause::TunnelEnded(format!("peer shut down: {reason}")));
        self.handshake_deadline = None;
        self.ka = Keepalive::default();
        self.events.push_back(Event::PeerShutdown(reason));
        self.events.push_back(Event::Closed);
    }

    fn end_tunnel(&mut self, cause: &str) {
        self.set_state(TunnelState::Closed, cause);
        self.events.push_back(Event::Closed);
    }

    fn kill_all(&mut self, cause: ResetCause) {
        let live: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.state != StreamState::Dead)
            .map(|(sid, _)| *sid)
            .collect();
        for sid in live {
            self.kill(sid, cause.clone(), "tunnel ended");
        }
    }

    fn kill(&mut self, sid: u32, cause: ResetCause, why: &str) {
        if let Some(s) = self.streams.get_mut(&sid) {
            s.reset = Some(cause.clone());
            self.set_stream(sid, StreamState::Dead, why);
            self.events.push_back(Event::Reset(sid, cause));
        }
    }

    fn set_state(&mut self, to: TunnelState, cause: impl Into<String>) {
        let from = self.state;
        self.state = to;
        if self.trace.is_enabled() {
            self.trace.transition(
                self.now,
                self.id.clone(),
                from.name(),
                to.name(),
                cause.into(),
            );
        }
    }

    fn set_stream(&mut self, sid: u32, to: StreamState, cause: &str) {
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        let from = s.state;
        s.state = to;
        self.trace_stream(sid, from, to, cause);
    }

    fn trace_stream(&self, sid: u32, from: StreamState, to: StreamState, cause: &str) {
        if self.trace.is_enabled() {
            self.trace.transition(
                self.now,
                format!("{}/s{sid}", self.id),
                from.name(),
                to.name(),
                cause.to_string(),
            );
        }
    }

    fn trace(&self, what: &str, from: &'static str, to: &'static str, cause: String) {
        if self.trace.is_enabled() {
            self.trace
                .transition(self.now, format!("{}/{what}", self.id), from, to, cause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HANDSHAKE;

    const T0: Duration = Duration::ZERO;

    fn ready(role: Role, cfg: TunnelConfig) -> Tunnel {
        let mut t = Tunnel::new(role, cfg, Trace::disabled(), "t");
        t.start(T0);
        assert_eq!(t.handle_input(T0, &HANDSHAKE), HANDSHAKE.len());
        assert_eq!(t.state(), TunnelState::Ready);
        let _ = t.poll_transmit();
        t
    }

    fn payload(n: usize, compressible: bool) -> Bytes {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|i| {
                if compressible {
                    (i / 100) as u8
                } else {
                    // xorshift64*: gzip cannot shrink it.
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
                }
            })
            .collect::<Vec<u8>>()
            .into()
    }

    /// `send_bytes` puts the same bytes on the wire as `send`, gzip or not, whatever the
    /// size; the pieces of `poll_transmit_chunks` are those bytes in order, and the
    /// uncopied payloads are slices of the caller's buffer.
    #[test]
    fn send_bytes_emits_what_send_emits() {
        for gzip in [false, true] {
            for compressible in [false, true] {
                for n in [1, 1500, ZERO_COPY_MIN, 16 * 1024, 40_000, 100_000] {
                    let cfg = TunnelConfig {
                        gzip,
                        ..TunnelConfig::default()
                    };
                    let data = payload(n, compressible);
                    let mut a = ready(Role::Client, cfg.clone());
                    let mut b = ready(Role::Client, cfg);
                    let sa = a.open(T0).unwrap();
                    let sb = b.open(T0).unwrap();
                    assert_eq!(a.send(T0, sa, &data), Ok(n));
                    assert_eq!(b.send_bytes(T0, sb, &data), Ok(n));
                    assert_eq!(a.pending_output(), b.pending_output());
                    let want = a.poll_transmit().unwrap();
                    let mut pieces = Vec::new();
                    assert_eq!(b.poll_transmit_chunks(&mut pieces), want.len());
                    assert_eq!(b.pending_output(), 0);
                    let got: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
                    assert_eq!(got, want, "gzip {gzip} compressible {compressible} n {n}");
                    let uncopied = pieces
                        .iter()
                        .filter(|p| {
                            p.len() >= ZERO_COPY_MIN && data.as_ptr_range().contains(&p.as_ptr())
                        })
                        .count();
                    if (!gzip || !compressible) && n >= ZERO_COPY_MIN {
                        assert!(uncopied > 0, "nothing uncopied (gzip {gzip} n {n})");
                    }
                }
            }
        }
    }

    /// Input is held while the streams hold `max_buffered` unread bytes: nothing is taken
    /// (and nothing lost) until a read makes room; below the limit a call takes all.
    #[test]
    fn input_is_held_while_receive_buffers_are_full() {
        let cfg = TunnelConfig {
            max_buffered: 3000,
            ..TunnelConfig::default()
        };
        let mut t = ready(Role::Server, cfg);
        let mut input = Vec::new();
        input.extend(Message::Syn { sid: 1 }.to_bytes(false));
        for i in 0..4u8 {
            input.extend(
                Message::Data {
                    sid: 1,
                    payload: Bytes::from(vec![i; 1000]),
                    fin: false,
                }
                .to_bytes(false),
            );
        }
        // Below the limit: everything is taken, even past it.
        assert_eq!(t.input_blocked(), None);
        assert_eq!(t.handle_input(T0, &input), input.len());
        assert_eq!(t.buffered_input(), 4000);
        assert_eq!(t.input_blocked(), Some(Blocked::ReceiveBuffersFull));
        let more = Message::Data {
            sid: 1,
            payload: Bytes::from_static(b"late"),
            fin: true,
        }
        .to_bytes(false);
        assert_eq!(t.handle_input(T0, &more), 0);
        assert_eq!(t.buffered_input(), 4000);
        // Reading makes room: the held bytes go in now.
        assert!(matches!(t.recv(T0, 1), Ok(Recv::Data(b)) if b.len() == 1000));
        assert!(matches!(t.recv(T0, 1), Ok(Recv::Data(b)) if b.len() == 1000));
        assert_eq!(t.input_blocked(), None);
        assert_eq!(t.handle_input(T0, &more), more.len());
        let mut rest = Vec::new();
        while let Ok(Recv::Data(b)) = t.recv(T0, 1) {
            rest.extend_from_slice(&b);
        }
        assert_eq!(rest.len(), 2004);
        assert_eq!(t.recv(T0, 1), Ok(Recv::Eof));
        assert_eq!(t.stream_state(1), Some(StreamState::FinRecv));
    }
}
