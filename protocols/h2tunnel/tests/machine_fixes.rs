//! Regression tests for the machine bugs the conformance cases and the fuzz harness
//! exposed (each fails on the machine as it was before the fix).

use std::time::Duration;

use tunnelbed_h2tunnel::wire::HANDSHAKE;
use tunnelbed_h2tunnel::{Message, Role, Tunnel, TunnelConfig, TunnelState};
use tunnelbed_netio::Trace;

fn ready_client(trace: Trace) -> Tunnel {
    let mut t = Tunnel::new(Role::Client, TunnelConfig::default(), trace, "c");
    t.start(Duration::ZERO);
    t.handle_input(Duration::ZERO, &HANDSHAKE);
    assert_eq!(t.state(), TunnelState::Ready);
    let _ = t.poll_transmit();
    t
}

/// A second `start` re-armed the handshake timer of a ready tunnel, which then failed
/// with "handshake timeout" 5 s later.
#[test]
fn a_second_start_does_not_rearm_the_handshake_timer() {
    let mut t = ready_client(Trace::disabled());
    t.start(Duration::from_secs(1));
    t.handle_timeout(Duration::from_secs(6));
    assert_eq!(t.state(), TunnelState::Ready);
    assert_eq!(t.poll_transmit(), None);
}

/// A received GOAWAY closes without answering; data queued before it was still handed
/// out by `poll_transmit` after the tunnel was closed.
#[test]
fn nothing_is_emitted_after_a_peer_goaway() {
    let mut t = ready_client(Trace::disabled());
    let sid = t.open(Duration::ZERO).unwrap();
    t.send(Duration::ZERO, sid, b"queued").unwrap();
    let bye = Message::Shutdown {
        reason: "bye".into(),
    }
    .to_bytes(false);
    t.handle_input(Duration::ZERO, &bye);
    assert_eq!(t.state(), TunnelState::Closed);
    assert_eq!(t.poll_transmit(), None);
}

/// `close(sid, true)` on a dead stream traced "RST sent" though nothing was sent.
#[test]
fn close_traces_only_what_it_sent() {
    let trace = Trace::recording();
    let mut t = ready_client(trace.clone());
    let sid = t.open(Duration::ZERO).unwrap();
    t.reset(Duration::ZERO, sid).unwrap();
    let _ = t.poll_transmit();
    t.close(Duration::ZERO, sid, true).unwrap();
    assert_eq!(t.poll_transmit(), None);
    let last = trace.snapshot().pop().unwrap();
    assert_eq!(&*last.cause, "close", "{last}");
}
