//! [`Tunnel`] as a [`MuxSession`], for the generic stream-multiplexer driver.

use std::time::Duration;

use bytes::Bytes;
use tunnelbed_netio::mux_session::{MuxEvent, MuxRecv, MuxSession};

use crate::stream::{ResetCause, StreamState};
use crate::tunnel::{Event, Recv, StreamError, Tunnel, TunnelState};

impl MuxSession for Tunnel {
    type ResetCause = ResetCause;
    /// An h2tunnel RST carries nothing.
    type ResetInfo = ();
    type Error = StreamError;
    /// Handshake done, SYN-ACK, failure, GOAWAY and the end of the tunnel.
    type Ext = Event;

    fn handle_input_bytes(&mut self, now: Duration, data: &Bytes) -> usize {
        Tunnel::handle_input_bytes(self, now, data)
    }
    fn handle_input(&mut self, now: Duration, data: &[u8]) -> usize {
        Tunnel::handle_input(self, now, data)
    }
    fn input_blocked(&self) -> bool {
        Tunnel::input_blocked(self).is_some()
    }
    fn handle_timeout(&mut self, now: Duration) {
        Tunnel::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Duration> {
        Tunnel::poll_timeout(self)
    }
    fn poll_transmit_chunks(&mut self, into: &mut Vec<Bytes>) -> usize {
        Tunnel::poll_transmit_chunks(self, into)
    }
    fn poll_event(&mut self) -> Option<MuxEvent<ResetCause, Event>> {
        Tunnel::poll_event(self).map(|e| match e {
            Event::Readable(sid) => MuxEvent::Readable(sid),
            Event::Accepted(sid) => MuxEvent::Accepted(sid),
            Event::Reset(sid, cause) => MuxEvent::Reset(sid, cause),
            other => MuxEvent::Ext(other),
        })
    }
    fn pending_output(&self) -> usize {
        Tunnel::pending_output(self)
    }
    fn max_output(&self) -> usize {
        self.config().max_output
    }
    fn is_closed(&self) -> bool {
        self.state() == TunnelState::Closed
    }
    fn stream_live(&self, sid: u32) -> bool {
        self.stream_state(sid)
            .is_some_and(|s| s != StreamState::Dead)
    }
    fn send_bytes(&mut self, now: Duration, sid: u32, data: &Bytes) -> Result<usize, StreamError> {
        Tunnel::send_bytes(self, now, sid, data)
    }
    fn recv(&mut self, now: Duration, sid: u32) -> Result<MuxRecv, StreamError> {
        Tunnel::recv(self, now, sid).map(|r| match r {
            Recv::Data(b) => MuxRecv::Data(b),
            Recv::Pending => MuxRecv::Pending,
            Recv::Eof => MuxRecv::Eof,
        })
    }
    fn finish(&mut self, now: Duration, sid: u32) -> Result<(), StreamError> {
        Tunnel::finish(self, now, sid)
    }
    /// FIN if our direction is still open, then forget the id (vproxy's `close()`
    /// without linger 0).
    fn close(&mut self, now: Duration, sid: u32) -> Result<(), StreamError> {
        Tunnel::close(self, now, sid, false)
    }
    fn reset(&mut self, now: Duration, sid: u32, _info: ()) -> Result<(), StreamError> {
        Tunnel::reset(self, now, sid)
    }
    /// Forgets a dead stream (no frame goes out).
    fn release(&mut self, now: Duration, sid: u32) {
        if self.stream_state(sid).is_some() {
            let _ = Tunnel::close(self, now, sid, false);
        }
    }
    fn shutdown(&mut self, now: Duration, reason: &str) {
        Tunnel::shutdown(self, now, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::{Role, TunnelConfig};
    use tunnelbed_netio::Trace;

    const T0: Duration = Duration::ZERO;

    fn pump<S: MuxSession>(a: &mut S, b: &mut S) {
        tunnelbed_netio::mux_session::testing::exchange(T0, a, b)
    }

    fn events<S: MuxSession>(s: &mut S) -> Vec<MuxEvent<S::ResetCause, S::Ext>> {
        tunnelbed_netio::mux_session::testing::drain_events(s)
    }

    /// A stream carried, finished, read to its end and reset, and the tunnel shut down,
    /// all through `MuxSession`: the events are mapped as the generic driver expects.
    #[test]
    fn a_tunnel_runs_through_the_trait() {
        let mut c = Tunnel::new(
            Role::Client,
            TunnelConfig::default(),
            Trace::disabled(),
            "c",
        );
        let mut s = Tunnel::new(
            Role::Server,
            TunnelConfig::default(),
            Trace::disabled(),
            "s",
        );
        c.start(T0);
        s.start(T0);
        pump(&mut c, &mut s);
        assert_eq!(events(&mut c), [MuxEvent::Ext(Event::Ready)]);
        assert_eq!(events(&mut s), [MuxEvent::Ext(Event::Ready)]);
        assert!(MuxSession::poll_timeout(&c).is_some(), "keepalive timer");
        let sid = c.open(T0).unwrap();
        let data = Bytes::from(
            (0..40_000u32)
                .map(|i| ((i * 7919) >> 3) as u8)
                .collect::<Vec<u8>>(),
        );
        assert_eq!(
            MuxSession::send_bytes(&mut c, T0, sid, &data),
            Ok(data.len())
        );
        MuxSession::finish(&mut c, T0, sid).unwrap();
        pump(&mut c, &mut s);
        let ev = events(&mut s);
        assert_eq!(ev.first(), Some(&MuxEvent::Accepted(sid)));
        assert!(ev.contains(&MuxEvent::Readable(sid)));
        let mut got = Vec::new();
        loop {
            match MuxSession::recv(&mut s, T0, sid).unwrap() {
                MuxRecv::Data(b) => got.extend_from_slice(&b),
                MuxRecv::Eof => break,
                MuxRecv::Pending => panic!("pending before the FIN"),
            }
        }
        assert_eq!(got, data);
        assert!(MuxSession::stream_live(&s, sid), "half-closed is live");
        MuxSession::reset(&mut s, T0, sid, ()).unwrap();
        assert!(!MuxSession::stream_live(&s, sid));
        pump(&mut c, &mut s);
        let ev = events(&mut c);
        assert!(
            ev.contains(&MuxEvent::Reset(sid, ResetCause::ByPeer)),
            "{ev:?}"
        );
        assert!(!MuxSession::stream_live(&c, sid));
        MuxSession::shutdown(&mut c, T0, "done");
        pump(&mut c, &mut s);
        assert!(MuxSession::is_closed(&s));
        assert!(events(&mut s).contains(&MuxEvent::Ext(Event::Closed)));
    }
}
