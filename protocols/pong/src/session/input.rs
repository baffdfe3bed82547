//! The carrier-input path: framing the byte stream, applying each frame to its stream,
//! refusing what the seed refuses, and ending the connection.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;

use super::{end_word, hex16, kind_label, Blocked, ConnState, Event, ProtocolError, Session, Side};
use crate::stream::{End, ResetCause, Stream, StreamKind, StreamState};
use crate::wire::{
    frame_type, peek_frame_len, Body, ConnHeader, Frame, PayloadError, RawFrame, RstCode, RstInfo,
    CONN_HEADER_LEN, FRAME_HEADER_LEN,
};

/// Smallest data payload [`Session::handle_input_bytes`] hands over as a slice of the
/// input instead of a copy. A slice keeps the driver's whole read buffer (64 KiB)
/// alive, so small payloads are copied: at this size a buffered stream pins at most
/// four times the bytes it is charged for.
pub const ZERO_COPY_RECV_MIN: usize = 16 * 1024;

/// What processing one complete frame did.
enum Step {
    Done,
    Blocked(Blocked),
}

impl Session {
    /// Feeds carrier bytes; returns how many were taken. Fewer than `data.len()` means
    /// input is held (see [`Session::input_blocked`]): keep the rest and feed it again once
    /// the reason is gone. After the connection ended, everything is taken and discarded.
    pub fn handle_input(&mut self, now: Duration, data: &[u8]) -> usize {
        self.input(now, data, None)
    }

    /// [`Session::handle_input`] for input the driver holds as [`Bytes`]: the same
    /// answer and effects, but data payloads of at least [`ZERO_COPY_RECV_MIN`] bytes
    /// that lie whole in `data` are handed to the stream as slices of it, not copied.
    pub fn handle_input_bytes(&mut self, now: Duration, data: &Bytes) -> usize {
        self.input(now, data, Some(data))
    }

    /// `data` is `src`'s bytes when `src` is given.
    fn input(&mut self, now: Duration, data: &[u8], src: Option<&Bytes>) -> usize {
        self.now = now;
        let mut used = 0;
        loop {
            match self.state {
                ConnState::Closed => return data.len(),
                ConnState::AwaitApproval => {
                    self.set_blocked(Some(Blocked::AwaitingApproval));
                    return used;
                }
                ConnState::AwaitHeader => {
                    let take = (CONN_HEADER_LEN - self.inbuf.len()).min(data.len() - used);
                    self.inbuf.extend_from_slice(&data[used..used + take]);
                    used += take;
                    match ConnHeader::decode(&self.inbuf) {
                        Ok(None) => return used,
                        Ok(Some((h, _))) => {
                            self.inbuf.clear();
                            self.set_state(
                                ConnState::AwaitApproval,
                                format!("header v0 client id {}", hex16(&h.client_id)),
                            );
                            self.events.push_back(Event::ClientHello {
                                client_id: h.client_id,
                            });
                        }
                        Err(e) => {
                            self.fail(ProtocolError::Frame(e));
                            return data.len();
                        }
                    }
                }
                ConnState::Open => {
                    if self.pending_output() >= self.cfg.max_output {
                        self.set_blocked(Some(Blocked::OutputFull));
                        return used;
                    }
                    if !self.inbuf.is_empty() {
                        // Complete the buffered frame, taking no byte beyond it.
                        let need = match peek_frame_len(&self.inbuf) {
                            Err(e) => {
                                self.fail(ProtocolError::Frame(e));
                                return data.len();
                            }
                            Ok(None) => 2 - self.inbuf.len(),
                            Ok(Some(len)) => len - self.inbuf.len(),
                        };
                        let take = need.min(data.len() - used);
                        self.inbuf.extend_from_slice(&data[used..used + take]);
                        used += take;
                        if take < need {
                            return used;
                        }
                        if self.inbuf.len() < 2
                            || peek_frame_len(&self.inbuf).ok().flatten() != Some(self.inbuf.len())
                        {
                            // Only the len field was completed: loop to read the rest.
                            continue;
                        }
                        let buf = std::mem::take(&mut self.inbuf);
                        match self.process(&buf, None) {
                            Step::Done => {
                                self.set_blocked(None);
                                // keep the allocation for the next partial frame
                                self.inbuf = buf;
                                self.inbuf.clear();
                            }
                            Step::Blocked(b) => {
                                self.inbuf = buf;
                                self.set_blocked(Some(b));
                                return used;
                            }
                        }
                    } else {
                        if used == data.len() {
                            return used;
                        }
                        let rest = &data[used..];
                        match peek_frame_len(rest) {
                            Err(e) => {
                                self.fail(ProtocolError::Frame(e));
                                return data.len();
                            }
                            Ok(Some(len)) if rest.len() >= len => {
                                match self.process(&rest[..len], src) {
                                    Step::Done => {
                                        self.set_blocked(None);
                                        used += len;
                                    }
                                    Step::Blocked(b) => {
                                        self.set_blocked(Some(b));
                                        return used;
                                    }
                                }
                            }
                            _ => {
                                self.inbuf.extend_from_slice(rest);
                                return data.len();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Processes one complete frame (`b` is exactly its bytes, lying in `src` if given).
    fn process(&mut self, b: &[u8], src: Option<&Bytes>) -> Step {
        let raw = match src {
            Some(src)
                if b.len() >= FRAME_HEADER_LEN + ZERO_COPY_RECV_MIN && b[6] == frame_type::DATA =>
            {
                RawFrame {
                    stream_id: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                    kind: frame_type::DATA,
                    payload: src.slice_ref(&b[FRAME_HEADER_LEN..]),
                }
            }
            _ => match RawFrame::decode(b) {
                Ok(Some((raw, _))) => raw,
                // Callers pass exactly one checked frame; anything else is a bug, not a
                // panic.
                _ => {
                    self.fail(ProtocolError::Truncated { have: b.len() });
                    return Step::Done;
                }
            },
        };
        let sid = raw.stream_id;
        if raw.kind == frame_type::DATA {
            if let Some(s) = self.streams.get(&sid) {
                if s.state.peer_may_send() {
                    let cost = s.cost(raw.payload.len());
                    if s.rx_len > 0 && s.rx_len + cost > self.cfg.stream_rx_cap {
                        return Step::Blocked(Blocked::StreamFull(sid));
                    }
                }
            }
        }
        match Frame::parse(&raw) {
            Ok(f) => self.on_frame(f),
            Err(e) => self.on_bad_payload(&raw, e),
        }
        Step::Done
    }

    fn on_bad_payload(&mut self, raw: &RawFrame, e: PayloadError) {
        let sid = raw.stream_id;
        let what = kind_label(raw.kind);
        if let PayloadError::RstNotUtf8 = e {
            // An rst ends the stream whatever its text says.
            let code = raw.payload.first().copied().unwrap_or(0);
            let desc = raw.payload.get(1..).unwrap_or_default();
            let info = Some(RstInfo::with_description(
                RstCode::from_u8(code),
                String::from_utf8_lossy(desc).into_owned(),
            ));
            return self.on_frame(Frame::new(sid, Body::Rst(info)));
        }
        if let Some(s) = self.streams.get(&sid) {
            if s.state.is_terminal() {
                return self.ignore(sid, &what, "stream ended");
            }
            let (info, cause) = match e {
                PayloadError::UnknownType(k) => (
                    RstInfo::new(RstCode::CommandNotSupported),
                    format!("recv unknown frame type {k:#04x}"),
                ),
                _ => (
                    RstInfo::new(RstCode::RepeatedStreamId),
                    format!("recv {what} ({e}) for a live stream"),
                ),
            };
            return self.rst_stream(sid, info, cause, true);
        }
        if let Some(end) = self.end_of(sid) {
            return self.ignore(sid, &what, &format!("stream {}", end_word(&end)));
        }
        // A new id.
        let info = match (&e, self.side) {
            (PayloadError::UnknownType(_), _) | (_, Side::Local) => {
                RstInfo::new(RstCode::CommandNotSupported)
            }
            (PayloadError::AddressType(t), Side::Remote) => RstInfo::with_description(
                RstCode::AddressTypeNotSupported,
                format!("address type {t} not supported"),
            ),
            (_, Side::Remote) => RstInfo::with_description(RstCode::General, format!("{e}")),
        };
        self.refuse_new(sid, info, format!("recv {what}: {e}"));
    }

    fn on_frame(&mut self, f: Frame) {
        let sid = f.stream_id;
        let name = f.body.name();
        let Some(state) = self.streams.get(&sid).map(|s| s.state) else {
            if let Some(end) = self.end_of(sid) {
                return self.ignore(sid, name, &format!("stream {}", end_word(&end)));
            }
            return self.on_new_id(f);
        };
        if state.is_terminal() {
            return self.ignore(sid, name, "stream ended");
        }
        match f.body {
            Body::Data(p) => self.on_data(sid, state, p),
            Body::Connect(_) | Body::Relay(_) | Body::Bind(_) | Body::Associate(_) => self
                .rst_stream(
                    sid,
                    RstInfo::new(RstCode::RepeatedStreamId),
                    format!("recv {name} for a live stream"),
                    true,
                ),
            Body::Set(_) => self.ignore(sid, "set", "reserved"),
            Body::Finish(_) => {
                let to = match state {
                    StreamState::Open => StreamState::HalfClosedRemote,
                    StreamState::HalfClosedLocal => StreamState::Closed,
                    _ => return self.ignore(sid, "finish", "peer already finished"),
                };
                self.set_stream_state(sid, to, "recv finish");
                self.events.push_back(Event::Readable(sid));
                self.retire_if_drained(sid);
            }
            Body::Close(_) => {
                self.set_stream_state(sid, StreamState::Closed, "recv close");
                self.events.push_back(Event::Closed(sid));
                self.retire_if_drained(sid);
            }
            Body::Rst(info) => {
                let cause = ResetCause::Peer(info);
                self.st_trace(sid, state.name(), "reset", format!("recv rst: {cause}"));
                self.events.push_back(Event::Reset {
                    stream_id: sid,
                    cause: cause.clone(),
                });
                self.retire(sid, End::Reset(cause));
            }
        }
    }

    pub(super) fn set_stream_state(
        &mut self,
        sid: u32,
        to: StreamState,
        cause: impl Into<Cow<'static, str>>,
    ) {
        if let Some(s) = self.streams.get_mut(&sid) {
            let from = s.state;
            s.state = to;
            self.st_trace(sid, from.name(), to.name(), cause);
        }
    }

    fn on_data(&mut self, sid: u32, state: StreamState, p: Bytes) {
        if !state.peer_may_send() {
            return self.rst_stream(
                sid,
                RstInfo::with_description(RstCode::General, "data after finish"),
                "recv data after the peer's finish".to_string(),
                true,
            );
        }
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        if s.kind == StreamKind::Tcp && p.is_empty() {
            return; // nothing to deliver on a byte stream
        }
        let was_empty = s.rx.is_empty();
        s.rx_len += s.cost(p.len());
        s.rx.push_back(p);
        if was_empty {
            self.events.push_back(Event::Readable(sid));
        }
    }

    fn on_new_id(&mut self, f: Frame) {
        let sid = f.stream_id;
        let name = f.body.name();
        let (kind, addr) = match f.body {
            Body::Connect(a) => (StreamKind::Tcp, a),
            Body::Relay(a) => (StreamKind::Udp, a),
            Body::Bind(_) | Body::Associate(_) => {
                return self.refuse_new(
                    sid,
                    RstInfo::new(RstCode::CommandNotSupported),
                    format!("recv {name} (not supported)"),
                )
            }
            Body::Rst(_) => return self.ignore(sid, name, "unknown stream (never answered)"),
            _ => return self.ignore(sid, name, "unknown stream"),
        };
        if self.side == Side::Local {
            return self.refuse_new(
                sid,
                RstInfo::with_description(RstCode::CommandNotSupported, "local accepts no streams"),
                format!("recv {name} {addr} on the local side"),
            );
        }
        if sid & 1 == 0 {
            return self.refuse_new(
                sid,
                RstInfo::with_description(RstCode::General, "stream id of local must be odd"),
                format!("recv {name} {addr} with an even id"),
            );
        }
        if self.streams.len() >= self.cfg.max_streams {
            return self.refuse_new(
                sid,
                RstInfo::with_description(RstCode::General, "too many streams"),
                format!(
                    "recv {name} {addr} over max_streams {}",
                    self.cfg.max_streams
                ),
            );
        }
        self.streams.insert(sid, Stream::new(kind, true));
        self.st_trace(sid, "idle", "open", format!("recv {name} {addr}, dialing"));
        self.events.push_back(Event::Dial {
            stream_id: sid,
            kind,
            addr,
        });
    }

    /// Ends the connection: live streams are reset, the machine stops taking input.
    pub(super) fn end_connection(&mut self, error: Option<ProtocolError>, reason: String) {
        if self.state == ConnState::Closed {
            return;
        }
        let live: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.state.is_terminal())
            .map(|(id, _)| *id)
            .collect();
        for sid in live {
            let cause = ResetCause::Connection(reason.clone());
            let from = self.streams[&sid].state.name();
            self.st_trace(sid, from, "reset", format!("connection ended: {reason}"));
            self.events.push_back(Event::Reset {
                stream_id: sid,
                cause: cause.clone(),
            });
            self.retire(sid, End::Reset(cause));
        }
        self.inbuf.clear();
        self.blocked = None;
        self.set_state(ConnState::Closed, reason);
        self.events.push_back(Event::ConnectionClosed { error });
    }

    fn fail(&mut self, e: ProtocolError) {
        let reason = format!("protocol error: {e}");
        self.end_connection(Some(e), reason);
    }

    /// The carrier reached its end (or failed): live streams are reset and the connection
    /// closes; a frame cut short is reported as a protocol error.
    pub fn handle_carrier_closed(&mut self, now: Duration) {
        self.now = now;
        if self.state == ConnState::Closed {
            return;
        }
        if !self.inbuf.is_empty() && self.blocked.is_none() {
            let have = self.inbuf.len();
            return self.fail(ProtocolError::Truncated { have });
        }
        self.end_connection(None, "carrier closed".to_string());
    }
}
