//! The server's sans-IO machine for one carrier connection: it reads the request header
//! (in whatever pieces it arrives), decides what the connection is (a TCP relay, a UDP
//! flow, the user's CRUMFURS channel, or a rejection with a reason), and for UDP flows
//! splits the uplink into datagrams.
//!
//! A rejected connection gets nothing written back: [`ServerSession::poll_transmit`]
//! stays empty, and the driver closes the connection (or hands the unread bytes to a
//! fallback) without dialing anything.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tunnelbed_netio::Trace;

use crate::wire::{
    decode_udp_frame, encode_udp_frame, Addons, Address, Command, DecodeError, Request, Response,
    Umfurs, Version, CRUMFURS_ESTABLISHED, MAX_REQUEST_LEN,
};

/// What a server machine is configured with.
#[derive(Clone, Debug)]
pub struct ServerSessionConfig {
    /// User ids allowed in.
    pub users: Vec<[u8; 16]>,
    /// Highest version served: a v0 server rejects v1 requests; a v1 server takes both.
    pub version: Version,
    /// Largest UDP payload accepted in an uplink frame (a longer frame closes).
    pub max_udp_payload: usize,
    /// How long the request header may take to arrive.
    pub header_timeout: Duration,
}

impl Default for ServerSessionConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            version: Version::V1,
            max_udp_payload: crate::wire::MAX_UDP_PAYLOAD,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection was refused (the log line names it).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Reject {
    /// A version byte this server does not serve.
    #[error("version {0} not served")]
    Version(u8),
    /// The user id is not on the list.
    #[error("unknown user id")]
    UnknownUser,
    /// The header does not parse.
    #[error("malformed header: {0}")]
    Malformed(DecodeError),
    /// A command this server does not serve (mux).
    #[error("command {0} not served")]
    Command(u8),
    /// A flow (XTLS) we do not implement.
    #[error("flow {0:?} not implemented")]
    Flow(String),
    /// The connection ended before a whole header.
    #[error("truncated header ({0} bytes)")]
    Truncated(usize),
    /// No whole header within the header timeout.
    #[error("no header within {0:?}")]
    Timeout(Duration),
}

/// What an accepted connection is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Command 1: relay a TCP stream to the target.
    Relay(Address),
    /// Command 2: datagrams to and from the target.
    Udp(Address),
    /// Command 4 (v1): the user's channel for datagrams from unknown sources.
    Crumfurs,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Relay(a) => write!(f, "relay {a}"),
            Decision::Udp(a) => write!(f, "udp {a}"),
            Decision::Crumfurs => write!(f, "crumfurs"),
        }
    }
}

/// What the machine tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The header is good: serve it. `early` holds the payload bytes that came with it
    /// (for UDP they are also parsed into [`Event::Datagram`]s that follow).
    Accepted {
        /// Request version.
        version: Version,
        /// Which user.
        user: [u8; 16],
        /// What to do.
        decision: Decision,
        /// Bytes after the header (TCP: to write to the target).
        early: Bytes,
    },
    /// Refused: close with nothing written (or hand `unread` to a fallback).
    Rejected {
        /// Why.
        reason: Reject,
        /// Every byte read so far.
        unread: Bytes,
    },
    /// A UDP uplink datagram (command 2) for the target.
    Datagram(Bytes),
    /// TCP payload (command 1) for the target, when the driver feeds it through.
    Data(Bytes),
    /// The client ended the connection (after a header).
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    Relay,
    Udp,
    Crumfurs,
    Rejected,
    Closed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Header => "header",
            State::Relay => "relay",
            State::Udp => "udp",
            State::Crumfurs => "crumfurs",
            State::Rejected => "rejected",
            State::Closed => "closed",
        }
    }
}

/// The server side of one carrier connection.
#[derive(Debug)]
pub struct ServerSession {
    cfg: ServerSessionConfig,
    id: String,
    trace: Trace,
    state: State,
    buf: BytesMut,
    version: Version,
    deadline: Duration,
    out: BytesMut,
    events: VecDeque<Event>,
}

impl ServerSession {
    /// A machine for a connection accepted at `now`; `id` names it in the trace.
    pub fn new(now: Duration, cfg: ServerSessionConfig, trace: Trace, id: String) -> Self {
        let deadline = now.saturating_add(cfg.header_timeout);
        Self {
            cfg,
            id,
            trace,
            state: State::Header,
            buf: BytesMut::new(),
            version: Version::V0,
            deadline,
            out: BytesMut::new(),
            events: VecDeque::new(),
        }
    }

    fn go(&mut self, now: Duration, to: State, cause: impl Into<String>) {
        if self.trace.is_enabled() {
            self.trace.transition(
                now,
                format!("vless-server[{}]", self.id),
                self.state.name(),
                to.name(),
                cause.into(),
            );
        }
        self.state = to;
    }

    fn reject(&mut self, now: Duration, reason: Reject) {
        self.go(now, State::Rejected, reason.to_string());
        let unread = std::mem::take(&mut self.buf).freeze();
        self.events.push_back(Event::Rejected { reason, unread });
    }

    /// Bytes from the client.
    pub fn handle_input(&mut self, now: Duration, data: &[u8]) {
        match self.state {
            State::Header => {
                self.buf.extend_from_slice(data);
                self.try_header(now);
            }
            State::Udp => {
                self.buf.extend_from_slice(data);
                self.split_frames(now);
            }
            // TCP payload goes to the target untouched; a CRUMFURS channel carries
            // nothing uplink (bytes there are ignored).
            State::Relay => {
                if !data.is_empty() {
                    self.events
                        .push_back(Event::Data(Bytes::copy_from_slice(data)));
                }
            }
            State::Crumfurs | State::Rejected | State::Closed => {}
        }
    }

    /// The client closed its side.
    pub fn handle_eof(&mut self, now: Duration) {
        match self.state {
            State::Header => {
                let n = self.buf.len();
                self.reject(now, Reject::Truncated(n));
            }
            State::Relay | State::Udp | State::Crumfurs => {
                let cause = if self.state == State::Udp && !self.buf.is_empty() {
                    format!("eof inside a UDP frame ({} bytes dropped)", self.buf.len())
                } else {
                    "eof".to_string()
                };
                self.go(now, State::Closed, cause);
                self.events.push_back(Event::Closed);
            }
            State::Rejected | State::Closed => {}
        }
    }

    /// Time passed: a header not complete by its deadline is rejected.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.state == State::Header && now >= self.deadline {
            let t = self.cfg.header_timeout;
            self.reject(now, Reject::Timeout(t));
        }
    }

    /// When [`ServerSession::handle_timeout`] wants to be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        (self.state == State::Header).then_some(self.deadline)
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the client (response header, CRUMFURS answer, frames).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// Frames one downlink datagram from the target (command 2 only).
    pub fn send_datagram(&mut self, payload: &[u8]) -> Result<(), crate::wire::EncodeError> {
        if self.state == State::Udp {
            encode_udp_frame(payload, &mut self.out)?;
        }
        Ok(())
    }

    /// Queues one UMFURS message (CRUMFURS channel only).
    pub fn send_umfurs(&mut self, m: &Umfurs) -> Result<(), crate::wire::EncodeError> {
        if self.state == State::Crumfurs {
            m.encode(&mut self.out)?;
        }
        Ok(())
    }

    /// Whether the machine is done (rejected or closed).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Rejected | State::Closed)
    }

    /// The request's version (v0 until a header is read).
    pub fn version(&self) -> Version {
        self.version
    }

    fn try_header(&mut self, now: Duration) {
        // Version and user first: an unknown id is refused as soon as its 17 bytes are
        // in, whatever follows.
        if let Some(&v) = self.buf.first() {
            match Version::from_byte(v) {
                Some(ver) if ver <= self.cfg.version => {}
                _ => return self.reject(now, Reject::Version(v)),
            }
        }
        if let Some(id) = self.buf.get(1..17) {
            if !self.cfg.users.iter().any(|u| u[..] == *id) {
                return self.reject(now, Reject::UnknownUser);
            }
        }
        let (req, n) = match Request::decode(&self.buf) {
            Ok(Some(x)) => x,
            Ok(None) => {
                // Cannot happen past MAX_REQUEST_LEN (every length is a u8), but the
                // buffer is bounded whatever the decoder does.
                if self.buf.len() > MAX_REQUEST_LEN {
                    let n = self.buf.len();
                    self.reject(now, Reject::Truncated(n));
                }
                return;
            }
            Err(e) => return self.reject(now, Reject::Malformed(e)),
        };
        let flow = match Addons::parse(&req.addons) {
            Ok(a) => a.flow,
            Err(e) => return self.reject(now, Reject::Malformed(e)),
        };
        if !flow.is_empty() {
            return self.reject(now, Reject::Flow(flow));
        }
        let decision = match (req.command, req.target) {
            (Command::Tcp, Some(a)) => Decision::Relay(a),
            (Command::Udp, Some(a)) => Decision::Udp(a),
            (Command::Crumfurs, None) => Decision::Crumfurs,
            (c, _) => return self.reject(now, Reject::Command(c.byte())),
        };
        self.version = req.version;
        let _ = self.buf.split_to(n);
        let to = match decision {
            Decision::Relay(_) => State::Relay,
            Decision::Udp(_) => State::Udp,
            Decision::Crumfurs => State::Crumfurs,
        };
        match to {
            State::Crumfurs => self.out.extend_from_slice(&[CRUMFURS_ESTABLISHED]),
            _ => {
                let r = Response {
                    version: req.version,
                    addons: Vec::new(),
                };
                // No addons: encoding cannot fail.
                let _ = r.encode(&mut self.out);
            }
        }
        self.go(
            now,
            to,
            format!("{} {} ({n} header bytes)", req.version, decision),
        );
        let early = if to == State::Relay {
            std::mem::take(&mut self.buf).freeze()
        } else {
            Bytes::new()
        };
        self.events.push_back(Event::Accepted {
            version: req.version,
            user: req.uuid,
            decision,
            early,
        });
        if to == State::Udp {
            self.split_frames(now);
        }
    }

    fn split_frames(&mut self, now: Duration) {
        loop {
            match decode_udp_frame(&self.buf, self.cfg.max_udp_payload) {
                Ok(Some((p, n))) => {
                    let d = Bytes::copy_from_slice(p);
                    let _ = self.buf.split_to(n);
                    self.events.push_back(Event::Datagram(d));
                }
                Ok(None) => return,
                Err(e) => {
                    // Bad input: nothing more is written back, not even a queued answer.
                    self.buf.clear();
                    self.out.clear();
                    self.go(now, State::Closed, e.to_string());
                    self.events.push_back(Event::Closed);
                    return;
                }
            }
        }
    }
}
