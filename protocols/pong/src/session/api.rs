//! The application's calls: opening streams (local), approving clients and reporting dials
//! (remote), and sending, reading and ending streams (both).

use std::time::Duration;

use bytes::Bytes;

use super::{Blocked, ConnState, DialError, Session, Side, StreamError};
use crate::stream::{End, Recv, Stream, StreamKind, StreamState};
use crate::wire::{self, frame_type, Address, Body, Frame, RstInfo, MAX_PAYLOAD};

/// Smallest payload [`Session::send_bytes`] queues without copying it (below this, a
/// copy is cheaper than one more piece for the writer).
pub const ZERO_COPY_MIN: usize = 4096;

impl Session {
    fn require_open(&self) -> Result<(), StreamError> {
        if self.state == ConnState::Open {
            Ok(())
        } else {
            Err(StreamError::Connection(self.state))
        }
    }

    /// The error for an id that is not tracked.
    fn gone(&self, sid: u32) -> StreamError {
        match self.end_of(sid) {
            Some(End::Reset(cause)) => StreamError::Reset {
                stream_id: sid,
                cause,
            },
            Some(_) => StreamError::Ended(sid),
            None => StreamError::Unknown(sid),
        }
    }

    fn stream(&self, sid: u32) -> Result<&Stream, StreamError> {
        self.streams.get(&sid).ok_or_else(|| self.gone(sid))
    }

    /// Opens a TCP stream: queues connect with `addr`; data may be sent at once. Local only.
    pub fn open_connect(&mut self, now: Duration, addr: &Address) -> Result<u32, StreamError> {
        self.require_side(Side::Local, "open_connect")?;
        self.open(now, StreamKind::Tcp, addr)
    }

    /// Opens a UDP relay stream to `addr`; each `send_datagram` is one datagram. Local only.
    pub fn open_relay(&mut self, now: Duration, addr: &Address) -> Result<u32, StreamError> {
        self.require_side(Side::Local, "open_relay")?;
        self.open(now, StreamKind::Udp, addr)
    }

    fn require_side(&self, side: Side, call: &'static str) -> Result<(), StreamError> {
        if self.side == side {
            Ok(())
        } else {
            Err(StreamError::WrongSide {
                call,
                side: self.side,
            })
        }
    }
    fn open(
        &mut self,
        now: Duration,
        kind: StreamKind,
        addr: &Address,
    ) -> Result<u32, StreamError> {
        self.now = now;
        self.require_open()?;
        if self.streams.len() >= self.cfg.max_streams {
            return Err(StreamError::TooManyStreams);
        }
        if self.pending_output() >= self.cfg.max_output {
            return Err(StreamError::OutputFull);
        }
        let sid = self.next_id.ok_or(StreamError::IdsExhausted)?;
        let body = match kind {
            StreamKind::Tcp => Body::Connect(addr.clone()),
            StreamKind::Udp => Body::Relay(addr.clone()),
        };
        let f = Frame::new(sid, body);
        f.encode(&mut self.out).map_err(StreamError::BadAddress)?;
        self.next_id = sid.checked_add(2);
        self.streams.insert(sid, Stream::new(kind, false));
        self.st_trace(
            sid,
            "idle",
            "open",
            format!("sent {} {addr}", f.body.name()),
        );
        Ok(sid)
    }

    fn sendable(&self, sid: u32, kind: StreamKind) -> Result<(), StreamError> {
        self.require_open()?;
        let s = self.stream(sid)?;
        if s.kind != kind {
            return Err(StreamError::WrongKind {
                stream_id: sid,
                kind: s.kind,
            });
        }
        if s.dialing {
            return Err(StreamError::Dialing(sid));
        }
        if !s.state.may_send() {
            return Err(StreamError::State {
                stream_id: sid,
                state: s.state,
            });
        }
        if self.pending_output() >= self.cfg.max_output {
            return Err(StreamError::OutputFull);
        }
        Ok(())
    }

    /// Sends bytes on a connect stream; returns how many were queued (less than asked
    /// when the output queue is nearly full). Split into frames of at most 65500 bytes.
    pub fn send(&mut self, now: Duration, sid: u32, data: &[u8]) -> Result<usize, StreamError> {
        self.now = now;
        self.sendable(sid, StreamKind::Tcp)?;
        let room = self.cfg.max_output.saturating_sub(self.pending_output());
        let n = data.len().min(room);
        for chunk in data[..n].chunks(MAX_PAYLOAD) {
            // Chunks are at most MAX_PAYLOAD: encoding cannot fail.
            let _ = wire::encode_raw(&mut self.out, sid, frame_type::DATA, chunk);
        }
        Ok(n)
    }

    /// [`Session::send`] for data the caller already holds as [`Bytes`]: the same frames
    /// and the same answer, but payloads of at least [`ZERO_COPY_MIN`] bytes are queued
    /// as they are (only their 7-byte headers are written), so a bulk transfer is not
    /// copied into the output queue. Take the output with
    /// [`Session::poll_transmit_chunks`] to keep it uncopied.
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
        self.sendable(sid, StreamKind::Tcp)?;
        let room = self.cfg.max_output.saturating_sub(self.pending_output());
        let n = data.len().min(room);
        let mut at = 0;
        while at < n {
            let len = (n - at).min(MAX_PAYLOAD);
            let piece = data.slice(at..at + len);
            at += len;
            if len < ZERO_COPY_MIN {
                let _ = wire::encode_raw(&mut self.out, sid, frame_type::DATA, &piece);
                continue;
            }
            wire::encode_header(&mut self.out, sid, frame_type::DATA, len);
            let head = self.out.split().freeze();
            self.chunked += head.len() + piece.len();
            self.chunks.push_back(head);
            self.chunks.push_back(piece);
        }
        Ok(n)
    }

    /// Sends one datagram on a relay stream (one data frame), all or nothing: `OutputFull`
    /// unless it fits the output cap or the queue is empty.
    pub fn send_datagram(
        &mut self,
        now: Duration,
        sid: u32,
        data: &[u8],
    ) -> Result<(), StreamError> {
        self.now = now;
        if data.len() > MAX_PAYLOAD {
            return Err(StreamError::DatagramTooLarge(data.len()));
        }
        self.sendable(sid, StreamKind::Udp)?;
        // All or nothing: the whole datagram must fit, unless the queue is empty (so a
        // datagram larger than `max_output` can still go out alone).
        if self.pending_output() > 0
            && self.pending_output() + wire::FRAME_HEADER_LEN + data.len() > self.cfg.max_output
        {
            return Err(StreamError::OutputFull);
        }
        let _ = wire::encode_raw(&mut self.out, sid, frame_type::DATA, data);
        Ok(())
    }

    /// Reads the next chunk (connect) or datagram (relay), `Pending`, or `Eof`. Reading may
    /// resume held input (see the module doc).
    pub fn recv(&mut self, now: Duration, sid: u32) -> Result<Recv, StreamError> {
        self.now = now;
        let Some(s) = self.streams.get_mut(&sid) else {
            return match self.end_of(sid) {
                Some(End::Closed) => Ok(Recv::Eof),
                _ => Err(self.gone(sid)),
            };
        };
        if let Some(b) = s.rx.pop_front() {
            let cost = s.cost(b.len());
            s.rx_len -= cost;
            self.retire_if_drained(sid);
            if self.blocked == Some(Blocked::StreamFull(sid)) && self.state == ConnState::Open {
                // Retry the held frame now that there may be room.
                self.handle_input(now, &[]);
            }
            return Ok(Recv::Data(b));
        }
        if s.state.peer_may_send() {
            Ok(Recv::Pending)
        } else {
            Ok(Recv::Eof)
        }
    }

    /// Half-closes our direction (sends finish); the peer may go on sending.
    pub fn finish(&mut self, now: Duration, sid: u32) -> Result<(), StreamError> {
        self.now = now;
        self.require_open()?;
        let s = self.stream(sid)?;
        let to = match s.state {
            StreamState::Open => StreamState::HalfClosedLocal,
            StreamState::HalfClosedRemote => StreamState::Closed,
            state => {
                return Err(StreamError::State {
                    stream_id: sid,
                    state,
                })
            }
        };
        if s.dialing {
            return Err(StreamError::Dialing(sid));
        }
        self.emit(Frame::new(sid, Body::Finish(Bytes::new())));
        self.set_stream_state(sid, to, "sent finish");
        self.retire_if_drained(sid);
        Ok(())
    }

    /// Ends the stream normally (sends close unless the peer already ended it); unread data
    /// is dropped and the id is forgotten.
    pub fn close(&mut self, now: Duration, sid: u32) -> Result<(), StreamError> {
        self.now = now;
        let s = self.stream(sid)?;
        let from = s.state;
        if from.is_terminal() {
            // Ended by the peer; the application is done with it: forget unread data.
            self.retire(sid, End::Closed);
            return Ok(());
        }
        self.require_open()?;
        self.emit(Frame::new(sid, Body::Close(Bytes::new())));
        self.st_trace(sid, from.name(), "closed", "sent close");
        self.retire(sid, End::Closed);
        self.unblock_if(sid);
        Ok(())
    }

    /// Ends the stream abnormally: sends rst with `info`.
    pub fn reset(&mut self, now: Duration, sid: u32, info: RstInfo) -> Result<(), StreamError> {
        self.now = now;
        let s = self.stream(sid)?;
        if s.state.is_terminal() {
            return Err(StreamError::State {
                stream_id: sid,
                state: s.state,
            });
        }
        self.require_open()?;
        self.rst_stream(sid, info, "application reset".to_string(), false);
        self.unblock_if(sid);
        Ok(())
    }

    /// After the application ended a stream that held input, let input go on (the held
    /// frame will now be ignored as a late frame).
    fn unblock_if(&mut self, sid: u32) {
        if self.blocked == Some(Blocked::StreamFull(sid)) {
            self.handle_input(self.now, &[]);
        }
    }

    /// Remote: the client id is allowed; frames may flow (call `handle_input` again).
    pub fn accept_client(&mut self, now: Duration) -> Result<(), StreamError> {
        self.now = now;
        self.require_side(Side::Remote, "accept_client")?;
        if self.state != ConnState::AwaitApproval {
            return Err(StreamError::Connection(self.state));
        }
        self.blocked = None;
        self.set_state(ConnState::Open, "client accepted");
        Ok(())
    }

    /// Remote: the client id is not allowed; the connection closes without a word (seed).
    pub fn reject_client(&mut self, now: Duration) -> Result<(), StreamError> {
        self.now = now;
        self.require_side(Side::Remote, "reject_client")?;
        if self.state != ConnState::AwaitApproval {
            return Err(StreamError::Connection(self.state));
        }
        self.end_connection(None, "client rejected".to_string());
        Ok(())
    }

    fn dial_stream(&mut self, sid: u32, call: &'static str) -> Result<(), StreamError> {
        self.require_side(Side::Remote, call)?;
        self.require_open()?;
        let s = self.stream(sid)?;
        if !s.dialing {
            return Err(StreamError::NotDialing(sid));
        }
        Ok(())
    }

    /// Remote: the dial for `sid` succeeded. Nothing is sent (the seed's remote stays
    /// silent); the stream may now send.
    pub fn dial_succeeded(&mut self, now: Duration, sid: u32) -> Result<(), StreamError> {
        self.now = now;
        self.dial_stream(sid, "dial_succeeded")?;
        if let Some(s) = self.streams.get_mut(&sid) {
            s.dialing = false;
            let st = s.state.name();
            self.st_trace(sid, st, st, "dial ok");
        }
        Ok(())
    }

    /// Remote: the dial for `sid` failed; rst with the code mapped from `e`.
    pub fn dial_failed(
        &mut self,
        now: Duration,
        sid: u32,
        e: &DialError,
    ) -> Result<(), StreamError> {
        self.now = now;
        self.dial_stream(sid, "dial_failed")?;
        self.rst_stream(sid, e.rst(), format!("dial failed ({e:?})"), false);
        self.unblock_if(sid);
        Ok(())
    }

    /// Ends the connection on our own account (idle pool, process exit): live streams are
    /// reset locally, nothing is sent.
    pub fn shutdown(&mut self, now: Duration, reason: &str) {
        self.now = now;
        self.end_connection(None, reason.to_string());
    }
}
