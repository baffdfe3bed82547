//! The client's sans-IO machine for one carrier connection: it sends the request header
//! at once (never waiting for the response, as VLESS requires), skips the response
//! header (`ver | M | addons`) or checks the CRUMFURS answer byte, and then turns the
//! downlink into stream bytes, UDP datagrams or UMFURS messages.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tunnelbed_netio::Trace;

use crate::wire::{
    decode_udp_frame, encode_udp_frame, Command, DecodeError, EncodeError, Request, Response,
    Umfurs, Version, CRUMFURS_ESTABLISHED, MAX_UDP_PAYLOAD,
};

/// Why the downlink was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The response header, a frame or a UMFURS message did not parse.
    #[error("bad downlink: {0}")]
    Decode(#[from] DecodeError),
    /// The server ended the connection before its response header.
    #[error("server closed before its response")]
    NoResponse,
}

/// What the machine tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The response header was read (CRUMFURS: the 0x14 answer).
    Established,
    /// Stream bytes from the target (command 1).
    Data(Bytes),
    /// A datagram from the target (command 2).
    Datagram(Bytes),
    /// A datagram from a source the client never contacted (CRUMFURS channel).
    Umfurs {
        /// Its true source.
        from: SocketAddr,
        /// The datagram.
        payload: Bytes,
    },
    /// The downlink is bad: close the connection.
    Failed(ClientError),
    /// The server ended the connection.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    New,
    AwaitResponse,
    AwaitCrumfurs,
    Open,
    Failed,
    Closed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::New => "new",
            State::AwaitResponse => "await-response",
            State::AwaitCrumfurs => "await-crumfurs",
            State::Open => "open",
            State::Failed => "failed",
            State::Closed => "closed",
        }
    }
}

/// The client side of one carrier connection.
#[derive(Debug)]
pub struct ClientSession {
    id: String,
    trace: Trace,
    version: Version,
    command: Command,
    state: State,
    buf: BytesMut,
    out: BytesMut,
    events: VecDeque<Event>,
}

impl ClientSession {
    /// A machine that starts by sending `req` (queued for [`ClientSession::poll_transmit`]).
    pub fn new(
        now: Duration,
        req: &Request,
        trace: Trace,
        id: String,
    ) -> Result<Self, EncodeError> {
        let mut out = BytesMut::new();
        req.encode(&mut out)?;
        let state = if req.command == Command::Crumfurs {
            State::AwaitCrumfurs
        } else {
            State::AwaitResponse
        };
        let mut s = Self {
            id,
            trace,
            version: req.version,
            command: req.command,
            state: State::New,
            buf: BytesMut::new(),
            out,
            events: VecDeque::new(),
        };
        let cause = format!("sent {} cmd {}", req.version, req.command.byte());
        s.go(now, state, cause);
        Ok(s)
    }

    fn go(&mut self, now: Duration, to: State, cause: impl Into<String>) {
        if self.trace.is_enabled() {
            self.trace.transition(
                now,
                format!("vless-client[{}]", self.id),
                self.state.name(),
                to.name(),
                cause.into(),
            );
        }
        self.state = to;
    }

    fn fail(&mut self, now: Duration, e: ClientError) {
        self.buf.clear();
        self.go(now, State::Failed, e.to_string());
        self.events.push_back(Event::Failed(e));
    }

    /// Stream bytes for the target (command 1), sent after the header.
    pub fn send(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }

    /// One datagram for the target (command 2).
    pub fn send_datagram(&mut self, payload: &[u8]) -> Result<(), EncodeError> {
        if payload.len() > MAX_UDP_PAYLOAD {
            return Err(EncodeError::Oversize(payload.len()));
        }
        encode_udp_frame(payload, &mut self.out)
    }

    /// Bytes to write to the server.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// This machine keeps no timer (the driver bounds its waits).
    pub fn poll_timeout(&self) -> Option<Duration> {
        None
    }

    /// Nothing is timed inside the machine.
    pub fn handle_timeout(&mut self, _now: Duration) {}

    /// Whether the response header has been read.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the machine is done.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Failed | State::Closed)
    }

    /// The server closed its side.
    pub fn handle_eof(&mut self, now: Duration) {
        match self.state {
            State::AwaitResponse | State::AwaitCrumfurs => self.fail(now, ClientError::NoResponse),
            State::Open => {
                self.go(now, State::Closed, "eof");
                self.events.push_back(Event::Closed);
            }
            State::New | State::Failed | State::Closed => {}
        }
    }

    /// Bytes from the server.
    pub fn handle_input(&mut self, now: Duration, data: &[u8]) {
        match self.state {
            State::AwaitResponse => {
                self.buf.extend_from_slice(data);
                match Response::decode(&self.buf, self.version) {
                    Ok(Some((r, n))) => {
                        let _ = self.buf.split_to(n);
                        self.go(
                            now,
                            State::Open,
                            format!("response {} ({} addon bytes)", r.version, r.addons.len()),
                        );
                        self.events.push_back(Event::Established);
                        self.drain(now);
                    }
                    Ok(None) => {}
                    Err(e) => self.fail(now, e.into()),
                }
            }
            State::AwaitCrumfurs => {
                self.buf.extend_from_slice(data);
                let Some(&b) = self.buf.first() else { return };
                if b != CRUMFURS_ESTABLISHED {
                    return self.fail(now, DecodeError::CrumfursAnswer(b).into());
                }
                let _ = self.buf.split_to(1);
                self.go(now, State::Open, "crumfurs established");
                self.events.push_back(Event::Established);
                self.drain(now);
            }
            State::Open => {
                self.buf.extend_from_slice(data);
                self.drain(now);
            }
            State::New | State::Failed | State::Closed => {}
        }
    }

    fn drain(&mut self, now: Duration) {
        match self.command {
            Command::Tcp | Command::Mux => {
                if !self.buf.is_empty() {
                    let d = self.buf.split().freeze();
                    self.events.push_back(Event::Data(d));
                }
            }
            Command::Udp => loop {
                match decode_udp_frame(&self.buf, MAX_UDP_PAYLOAD) {
                    Ok(Some((p, n))) => {
                        let d = Bytes::copy_from_slice(p);
                        let _ = self.buf.split_to(n);
                        self.events.push_back(Event::Datagram(d));
                    }
                    Ok(None) => return,
                    Err(e) => return self.fail(now, e.into()),
                }
            },
            Command::Crumfurs => loop {
                match Umfurs::decode(&self.buf, MAX_UDP_PAYLOAD) {
                    Ok(Some((m, n))) => {
                        let _ = self.buf.split_to(n);
                        self.events.push_back(Event::Umfurs {
                            from: m.from,
                            payload: m.payload,
                        });
                    }
                    Ok(None) => return,
                    Err(e) => return self.fail(now, e.into()),
                }
            },
        }
    }
}
