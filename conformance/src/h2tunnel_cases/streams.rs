//! Cases on streams inside a tunnel (open, SYN/SYN-ACK, PSH, FIN, RST, close, caps) and
//! seed 000's whole flow between our client and our server.

use std::fmt::Write as _;
use std::time::Duration;

use tunnelbed_h2tunnel::stream::{ResetCause, StreamState};
use tunnelbed_h2tunnel::tunnel::{
    Event, Recv, Role, StreamError, Tunnel, TunnelConfig, TunnelState,
};
use tunnelbed_netio::Trace;

use super::harness::*;

pub(super) fn stream_open() -> CaseResult {
    client(|s| {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(s.t.open(s.now()).map_err(|e| e.to_string())?);
        }
        check(ids == [1, 3, 5], format!("ids {ids:?}"))?;
        s.tx(&cat(&[&syn(1), &syn(3), &syn(5)]))?;
        s.stream(1, Some(StreamState::SynSent))?;
        s.stream(5, Some(StreamState::SynSent))
    })
}

pub(super) fn stream_open_before_ready() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        let r = s.t.open(s.now());
        check(
            r == Err(StreamError::NotReady(TunnelState::HandshakeSent)),
            format!("open during the handshake: {r:?}"),
        )?;
        s.silent()
    })
}

pub(super) fn stream_syn_ack() -> CaseResult {
    client(|s| {
        s.t.open(s.now()).map_err(|e| e.to_string())?;
        s.tx(&syn(1))?;
        s.note("a SYN-ACK for an id we did not open is ignored");
        s.rx(&syn(7));
        s.stream(7, None)?;
        s.rx(&syn(1));
        s.stream(1, Some(StreamState::Established))?;
        s.events(&[Event::Established(1)])?;
        s.note("a second SYN-ACK is ignored");
        s.rx(&syn(1));
        s.silent()?;
        s.events(&[])
    })
}

pub(super) fn stream_syn_data_before_ack() -> CaseResult {
    client(|s| {
        let sid = s.t.open(s.now()).map_err(|e| e.to_string())?;
        s.t.send(s.now(), sid, b"early")
            .map_err(|e| e.to_string())?;
        s.tx(&cat(&[&syn(1), &data(1, b"early")]))?;
        s.stream(1, Some(StreamState::SynSent))
    })
}

pub(super) fn stream_server_accept() -> CaseResult {
    server(|s| {
        s.note("the SYN and data that follow it in the same read");
        s.rx(&cat(&[&syn(1), &data(1, b"early")]));
        s.tx(&syn(1))?;
        s.stream(1, Some(StreamState::Established))?;
        s.events(&[Event::Accepted(1), Event::Readable(1)])?;
        let (got, _) = s.read_all(1);
        check(got == b"early", "data after SYN lost")
    })
}

pub(super) fn stream_syn_live_ignored() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&data(1, b"kept"));
        s.rx(&syn(1));
        s.silent()?;
        s.stream(1, Some(StreamState::Established))?;
        s.events(&[Event::Readable(1)])?;
        let (got, _) = s.read_all(1);
        check(got == b"kept", "a repeated SYN disturbed the stream")
    })
}

pub(super) fn stream_server_never_opens() -> CaseResult {
    server(|s| {
        let r = s.t.open(s.now());
        check(
            r == Err(StreamError::NotClient),
            format!("server open: {r:?}"),
        )?;
        s.silent()
    })
}

pub(super) fn stream_psh() -> CaseResult {
    client_with_stream(|s| {
        s.t.send(s.now(), 1, b"ping?").map_err(|e| e.to_string())?;
        s.tx(&data(1, b"ping?"))?;
        s.rx(&cat(&[&data(1, b"po"), &data(1, b"ng!")]));
        s.events(&[Event::Readable(1), Event::Readable(1)])?;
        let (got, end) = s.read_all(1);
        check(got == b"pong!", "data out of order")?;
        check(end == Ok(Recv::Pending), "not pending")
    })
}

pub(super) fn stream_data_unknown() -> CaseResult {
    server(|s| {
        s.rx(&data(5, b"who?"));
        s.rx(&fin(5));
        s.silent()?;
        s.state(TunnelState::Ready)?;
        s.stream(5, None)?;
        s.events(&[])
    })
}

pub(super) fn stream_data_dead_ignored() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&rst(1));
        s.events(&[Event::Reset(1, ResetCause::ByPeer)])?;
        s.rx(&data(1, b"after rst"));
        s.silent()?;
        s.events(&[])?;
        s.stream(1, Some(StreamState::Dead))
    })
}

pub(super) fn stream_data_after_fin() -> CaseResult {
    server_with_stream(|s| {
        s.note("vproxy delivers DATA unless the stream is dead, even after the peer's FIN");
        s.rx(&fin(1));
        s.rx(&data(1, b"late"));
        s.stream(1, Some(StreamState::FinRecv))?;
        let (got, end) = s.read_all(1);
        check(got == b"late", "late data dropped")?;
        check(end == Ok(Recv::Eof), format!("{end:?}"))
    })
}

pub(super) fn stream_fin_half_close() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&cat(&[&data(1, b"req"), &fin(1)]));
        s.silent()?;
        s.stream(1, Some(StreamState::FinRecv))?;
        let (got, end) = s.read_all(1);
        check(got == b"req" && end == Ok(Recv::Eof), "no data then EOF")?;
        s.note("we may still send after the peer's FIN");
        s.t.send(s.now(), 1, b"resp").map_err(|e| e.to_string())?;
        s.tx(&data(1, b"resp"))
    })
}

pub(super) fn stream_psh_fin() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&frame(0, 1, 1, b"last"));
        s.stream(1, Some(StreamState::FinRecv))?;
        let (got, end) = s.read_all(1);
        check(
            got == b"last" && end == Ok(Recv::Eof),
            "PSH-FIN: data then EOF",
        )
    })
}

pub(super) fn stream_fin_after_own_fin() -> CaseResult {
    client_with_stream(|s| {
        s.t.finish(s.now(), 1).map_err(|e| e.to_string())?;
        s.tx(&fin(1))?;
        s.stream(1, Some(StreamState::FinSent))?;
        let w = s.t.send(s.now(), 1, b"x");
        check(
            matches!(w, Err(StreamError::Closed { .. })),
            format!("{w:?}"),
        )?;
        s.rx(&data(1, b"still"));
        s.rx(&fin(1));
        s.stream(1, Some(StreamState::Dead))?;
        let (got, end) = s.read_all(1);
        check(got == b"still" && end == Ok(Recv::Eof), "data then EOF")
    })
}

pub(super) fn stream_shutdown_after_fin_recv() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&fin(1));
        s.stream(1, Some(StreamState::FinRecv))?;
        s.t.finish(s.now(), 1).map_err(|e| e.to_string())?;
        s.tx(&fin(1))?;
        s.stream(1, Some(StreamState::Dead))
    })
}

pub(super) fn stream_rst_no_echo() -> CaseResult {
    client_with_stream(|s| {
        s.rx(&data(1, b"partial"));
        s.rx(&rst(1));
        s.note("no RST goes back");
        s.silent()?;
        s.stream(1, Some(StreamState::Dead))?;
        s.events(&[Event::Readable(1), Event::Reset(1, ResetCause::ByPeer)])?;
        let w = s.t.send(s.now(), 1, b"x");
        check(
            w == Err(StreamError::Reset {
                sid: 1,
                cause: ResetCause::ByPeer,
            }),
            format!("{w:?}"),
        )?;
        let (got, end) = s.read_all(1);
        check(got == b"partial", "buffered data lost")?;
        check(
            matches!(&end, Err(e) if e.to_string() == "stream 1: reset by peer"),
            format!("{end:?}"),
        )
    })
}

pub(super) fn stream_rst_unknown_ignored() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&rst(9));
        s.rx(&rst(1));
        s.events(&[Event::Reset(1, ResetCause::ByPeer)])?;
        s.note("RST to a dead stream");
        s.rx(&rst(1));
        s.silent()?;
        s.events(&[])?;
        s.state(TunnelState::Ready)
    })
}

pub(super) fn stream_reset_send() -> CaseResult {
    client_with_stream(|s| {
        s.t.reset(s.now(), 1).map_err(|e| e.to_string())?;
        s.tx(&rst(1))?;
        s.stream(1, Some(StreamState::Dead))?;
        s.note("a second reset sends nothing");
        s.t.reset(s.now(), 1).map_err(|e| e.to_string())?;
        s.silent()
    })
}

pub(super) fn stream_close_linger() -> CaseResult {
    client(|s| {
        s.t.open(s.now()).map_err(|e| e.to_string())?;
        s.t.open(s.now()).map_err(|e| e.to_string())?;
        s.tx(&cat(&[&syn(1), &syn(3)]))?;
        s.t.close(s.now(), 1, true).map_err(|e| e.to_string())?;
        s.tx(&rst(1))?;
        s.t.close(s.now(), 3, false).map_err(|e| e.to_string())?;
        s.tx(&fin(3))?;
        s.stream(1, None)?;
        s.stream(3, None)?;
        s.note("late frames for closed ids are ignored");
        s.rx(&cat(&[&syn(1), &data(3, b"late")]));
        s.silent()?;
        s.events(&[])
    })
}

pub(super) fn stream_no_second_fin() -> CaseResult {
    client_with_stream(|s| {
        s.t.finish(s.now(), 1).map_err(|e| e.to_string())?;
        s.tx(&fin(1))?;
        let again = s.t.finish(s.now(), 1);
        check(again.is_err(), "second shutdown accepted")?;
        s.t.close(s.now(), 1, false).map_err(|e| e.to_string())?;
        s.note("shutdown then close: one FIN in all");
        s.silent()?;
        s.stream(1, None)
    })
}

pub(super) fn stream_refuse_not_fail() -> CaseResult {
    let cfg = TunnelConfig {
        max_streams: 1,
        ..TunnelConfig::default()
    };
    run_ready(Role::Server, cfg, |s| {
        s.rx(&syn(1));
        s.tx(&syn(1))?;
        s.note("a second stream beyond the limit is refused alone");
        s.rx(&cat(&[&syn(3), &data(3, b"dropped")]));
        s.tx(&rst(3))?;
        s.state(TunnelState::Ready)?;
        s.stream(3, None)?;
        s.events(&[Event::Accepted(1)])?;
        s.rx(&data(1, b"fine"));
        let (got, _) = s.read_all(1);
        check(got == b"fine", "stream 1 disturbed")
    })
}

pub(super) fn stream_even_id_refused() -> CaseResult {
    server(|s| {
        s.rx(&syn(2));
        s.tx(&rst(2))?;
        s.state(TunnelState::Ready)?;
        s.stream(2, None)
    })
}

pub(super) fn stream_rx_cap() -> CaseResult {
    let cfg = TunnelConfig {
        stream_rx_cap: 8,
        ..TunnelConfig::default()
    };
    run_ready(Role::Server, cfg, |s| {
        s.rx(&syn(1));
        s.tx(&syn(1))?;
        s.rx(&data(1, b"12345678"));
        s.silent()?;
        s.note("one byte more than the application has room for");
        s.rx(&data(1, b"9"));
        s.tx(&rst(1))?;
        s.stream(1, Some(StreamState::Dead))?;
        s.state(TunnelState::Ready)
    })
}

/// Seed 000's flow, steps 1-9, between our client and our server.
pub(super) fn flow_end_to_end() -> CaseResult {
    let trace = Trace::recording();
    let mut c = Tunnel::new(
        Role::Client,
        TunnelConfig::default(),
        trace.clone(),
        "client",
    );
    let mut sv = Tunnel::new(
        Role::Server,
        TunnelConfig::default(),
        trace.clone(),
        "server",
    );
    let mut log = String::new();
    let r = (|| -> R {
        c.start(Duration::ZERO);
        sv.start(Duration::ZERO);
        let now = Duration::from_millis(1);
        let pump = |c: &mut Tunnel, sv: &mut Tunnel, log: &mut String| {
            for _ in 0..4 {
                if let Some(b) = c.poll_transmit() {
                    for l in describe_frames(&b) {
                        let _ = writeln!(log, "client -> server: {l}");
                    }
                    sv.handle_input(now, &b);
                }
                if let Some(b) = sv.poll_transmit() {
                    for l in describe_frames(&b) {
                        let _ = writeln!(log, "server -> client: {l}");
                    }
                    c.handle_input(now, &b);
                }
            }
        };
        pump(&mut c, &mut sv, &mut log);
        check(
            c.state() == TunnelState::Ready && sv.state() == TunnelState::Ready,
            "not ready",
        )?;
        let sid = c.open(now).map_err(|e| e.to_string())?;
        c.send(now, sid, b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        c.finish(now, sid).map_err(|e| e.to_string())?;
        pump(&mut c, &mut sv, &mut log);
        let mut req = Vec::new();
        while let Ok(Recv::Data(b)) = sv.recv(now, sid) {
            req.extend_from_slice(&b);
        }
        check(req == b"GET / HTTP/1.0\r\n\r\n", "request")?;
        check(sv.recv(now, sid) == Ok(Recv::Eof), "no EOF at the server")?;
        sv.send(now, sid, &b"hello ".repeat(300))
            .map_err(|e| e.to_string())?;
        sv.finish(now, sid).map_err(|e| e.to_string())?;
        pump(&mut c, &mut sv, &mut log);
        let mut resp = Vec::new();
        while let Ok(Recv::Data(b)) = c.recv(now, sid) {
            resp.extend_from_slice(&b);
        }
        check(resp == b"hello ".repeat(300), "response")?;
        check(
            c.stream_state(sid) == Some(StreamState::Dead),
            "client stream",
        )?;
        check(
            sv.stream_state(sid) == Some(StreamState::Dead),
            "server stream",
        )?;
        c.close(now, sid, false).map_err(|e| e.to_string())?;
        sv.close(now, sid, false).map_err(|e| e.to_string())?;
        let s2 = c.open(now).map_err(|e| e.to_string())?;
        pump(&mut c, &mut sv, &mut log);
        c.reset(now, s2).map_err(|e| e.to_string())?;
        pump(&mut c, &mut sv, &mut log);
        check(
            sv.stream_state(s2) == Some(StreamState::Dead),
            "RST not applied",
        )?;
        c.shutdown(now, "done");
        pump(&mut c, &mut sv, &mut log);
        check(
            sv.state() == TunnelState::Closed,
            "server not closed by GOAWAY",
        )?;
        check(c.state() == TunnelState::Failed, "client not failed")?;
        Ok(())
    })();
    log.push_str("--- transitions ---\n");
    log.push_str(&trace.render());
    if let Err(e) = &r {
        let _ = writeln!(log, "--- FAILED ---\n{e}");
    }
    CaseResult { outcome: r, log }
}
