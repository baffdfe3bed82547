//! [`Session`] as a [`MuxSession`], for the generic stream-multiplexer driver.

use std::time::Duration;

use bytes::Bytes;
use tunnelbed_netio::mux_session::{MuxEvent, MuxRecv, MuxSession};

use super::{ConnState, Event, Session, StreamError};
use crate::stream::{Recv, ResetCause};
use crate::wire::RstInfo;

impl MuxSession for Session {
    type ResetCause = ResetCause;
    type ResetInfo = RstInfo;
    type Error = StreamError;
    /// Client hello, dial requests and the end of the connection.
    type Ext = Event;

    fn handle_input_bytes(&mut self, now: Duration, data: &Bytes) -> usize {
        Session::handle_input_bytes(self, now, data)
    }
    fn handle_input(&mut self, now: Duration, data: &[u8]) -> usize {
        Session::handle_input(self, now, data)
    }
    fn input_blocked(&self) -> bool {
        Session::input_blocked(self).is_some()
    }
    /// pong has no timers.
    fn handle_timeout(&mut self, _now: Duration) {}
    fn poll_timeout(&self) -> Option<Duration> {
        None
    }
    fn poll_transmit_chunks(&mut self, into: &mut Vec<Bytes>) -> usize {
        Session::poll_transmit_chunks(self, into)
    }
    fn poll_event(&mut self) -> Option<MuxEvent<ResetCause, Event>> {
        Session::poll_event(self).map(|e| match e {
            Event::Readable(sid) => MuxEvent::Readable(sid),
            Event::Closed(sid) => MuxEvent::Closed(sid),
            Event::Reset { stream_id, cause } => MuxEvent::Reset(stream_id, cause),
            other => MuxEvent::Ext(other),
        })
    }
    fn pending_output(&self) -> usize {
        Session::pending_output(self)
    }
    fn max_output(&self) -> usize {
        self.config().max_output
    }
    fn is_closed(&self) -> bool {
        self.state() == ConnState::Closed
    }
    fn stream_live(&self, sid: u32) -> bool {
        self.stream_state(sid).is_some_and(|s| !s.is_terminal())
    }
    fn send_bytes(&mut self, now: Duration, sid: u32, data: &Bytes) -> Result<usize, StreamError> {
        Session::send_bytes(self, now, sid, data)
    }
    fn recv(&mut self, now: Duration, sid: u32) -> Result<MuxRecv, StreamError> {
        Session::recv(self, now, sid).map(|r| match r {
            Recv::Data(b) => MuxRecv::Data(b),
            Recv::Pending => MuxRecv::Pending,
            Recv::Eof => MuxRecv::Eof,
        })
    }
    fn finish(&mut self, now: Duration, sid: u32) -> Result<(), StreamError> {
        Session::finish(self, now, sid)
    }
    fn close(&mut self, now: Duration, sid: u32) -> Result<(), StreamError> {
        Session::close(self, now, sid)
    }
    fn reset(&mut self, now: Duration, sid: u32, info: RstInfo) -> Result<(), StreamError> {
        Session::reset(self, now, sid, info)
    }
    fn shutdown(&mut self, now: Duration, reason: &str) {
        Session::shutdown(self, now, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionConfig;
    use crate::stream::StreamKind;
    use crate::wire::{Address, RstCode};
    use tunnelbed_netio::Trace;

    const T0: Duration = Duration::ZERO;

    fn pump<S: MuxSession>(a: &mut S, b: &mut S) {
        tunnelbed_netio::mux_session::testing::exchange(T0, a, b)
    }

    fn events<S: MuxSession>(s: &mut S) -> Vec<MuxEvent<S::ResetCause, S::Ext>> {
        tunnelbed_netio::mux_session::testing::drain_events(s)
    }

    /// Approval, a dial, a stream carried and finished both ways, a reset, all through
    /// `MuxSession`: pong's own events come through as `Ext`, the stream ones mapped.
    #[test]
    fn a_session_runs_through_the_trait() {
        let cfg = SessionConfig::default();
        let mut l = Session::local(cfg.clone(), [7; 16], Trace::disabled(), "l");
        let mut r = Session::remote(cfg, Trace::disabled(), "r");
        assert_eq!(MuxSession::poll_timeout(&l), None, "pong has no timers");
        pump(&mut l, &mut r);
        assert_eq!(
            events(&mut r),
            [MuxEvent::Ext(Event::ClientHello { client_id: [7; 16] })]
        );
        assert!(MuxSession::input_blocked(&r), "awaiting approval");
        r.accept_client(T0).unwrap();
        let addr = Address::Domain("target".into(), 80);
        let sid = l.open_connect(T0, &addr).unwrap();
        let data = Bytes::from(vec![5u8; 70_000]);
        assert_eq!(
            MuxSession::send_bytes(&mut l, T0, sid, &data),
            Ok(data.len())
        );
        pump(&mut l, &mut r);
        let ev = events(&mut r);
        assert_eq!(
            ev.first(),
            Some(&MuxEvent::Ext(Event::Dial {
                stream_id: sid,
                kind: StreamKind::Tcp,
                addr
            }))
        );
        r.dial_succeeded(T0, sid).unwrap();
        let mut got = Vec::new();
        while let Ok(MuxRecv::Data(b)) = MuxSession::recv(&mut r, T0, sid) {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, data);
        MuxSession::finish(&mut r, T0, sid).unwrap();
        pump(&mut l, &mut r);
        assert!(events(&mut l).contains(&MuxEvent::Readable(sid)));
        assert_eq!(MuxSession::recv(&mut l, T0, sid), Ok(MuxRecv::Eof));
        assert!(MuxSession::stream_live(&l, sid));
        let info = RstInfo::with_description(RstCode::ConnTimeout, "test");
        MuxSession::reset(&mut l, T0, sid, info).unwrap();
        pump(&mut l, &mut r);
        let ev = events(&mut r);
        assert!(
            ev.iter()
                .any(|e| matches!(e, MuxEvent::Reset(s, ResetCause::Peer(Some(_))) if *s == sid)),
            "{ev:?}"
        );
        MuxSession::shutdown(&mut l, T0, "done");
        assert!(MuxSession::is_closed(&l));
    }
}
