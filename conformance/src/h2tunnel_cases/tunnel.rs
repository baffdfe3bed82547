//! Cases on the tunnel as a whole: handshake, carrier framing, PING and GOAWAY,
//! failures, frame-type rules, gzip, the frame cap and keepalive.

use tunnelbed_h2tunnel::stream::StreamState;
use tunnelbed_h2tunnel::tunnel::{Event, Role, StreamError, TunnelConfig, TunnelState};
use tunnelbed_h2tunnel::wire::{decode_all, RawFrame};

use super::harness::*;

pub(super) fn handshake_exact() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.note("the client sends the handshake on connect");
        s.tx(&HS)?;
        s.state(TunnelState::HandshakeSent)?;
        s.rx(&HS);
        s.state(TunnelState::Ready)?;
        s.events(&[Event::Ready])?;
        s.silent()
    })
}

pub(super) fn handshake_server() -> CaseResult {
    run(Role::Server, TunnelConfig::default(), |s| {
        s.note("the server sends nothing until the client's SETTINGS");
        s.silent()?;
        s.state(TunnelState::Init)?;
        s.rx(&HS);
        s.tx(&HS)?;
        s.state(TunnelState::Ready)?;
        s.events(&[Event::Ready])
    })
}

pub(super) fn handshake_invalid() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        s.note("a SETTINGS with the ACK flag is not the handshake byte for byte");
        s.rx(&frame(4, 1, 0, &[]));
        s.tx(&goaway("handshake message is invalid"))?;
        s.state(TunnelState::Failed)?;
        s.events(&[Event::Failed("handshake message is invalid".into())])?;
        s.at_ms(1000);
        s.state(TunnelState::Closed)?;
        s.events(&[Event::Closed])
    })
}

pub(super) fn handshake_invalid_server() -> CaseResult {
    run(Role::Server, TunnelConfig::default(), |s| {
        s.note("a SYN before the handshake");
        s.rx(&syn(1));
        s.tx(&goaway("handshake message is invalid"))?;
        s.state(TunnelState::Failed)?;
        s.events(&[Event::Failed("handshake message is invalid".into())])
    })
}

pub(super) fn handshake_settings_payload() -> CaseResult {
    run(Role::Server, TunnelConfig::default(), |s| {
        s.note("a standard HTTP/2 SETTINGS with one setting is not the empty handshake");
        s.rx(&frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        s.tx(&goaway("handshake message is invalid"))?;
        s.state(TunnelState::Failed)
    })
}

pub(super) fn handshake_timeout() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        s.at_ms(4999);
        s.silent()?;
        s.state(TunnelState::HandshakeSent)?;
        s.at_ms(5000);
        s.tx(&goaway("handshake timeout"))?;
        s.state(TunnelState::Failed)?;
        s.events(&[Event::Failed("handshake timeout".into())])?;
        s.at_ms(5999);
        s.state(TunnelState::Failed)?;
        s.at_ms(6000);
        s.state(TunnelState::Closed)?;
        s.events(&[Event::Closed])?;
        check(s.t.poll_timeout().is_none(), "timers left after close")
    })
}

pub(super) fn goaway_during_handshake() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        s.rx(&goaway("go away"));
        s.note("closed at once, without answering");
        s.silent()?;
        s.state(TunnelState::Closed)?;
        s.events(&[Event::PeerShutdown("go away".into()), Event::Closed])?;
        s.at_ms(10_000);
        s.silent()
    })
}

pub(super) fn carrier_split() -> CaseResult {
    run(Role::Server, TunnelConfig::default(), |s| {
        let all = cat(&[&HS, &syn(1), &data(1, b"hello"), &ping(5)]);
        s.rx_split(&all, 1);
        s.tx(&cat(&[&HS, &syn(1), &pong(5)]))?;
        s.events(&[Event::Ready, Event::Accepted(1), Event::Readable(1)])?;
        let (got, _) = s.read_all(1);
        check(got == b"hello", "data split across reads not reassembled")
    })
}

pub(super) fn carrier_coalesced() -> CaseResult {
    run(Role::Client, TunnelConfig::default(), |s| {
        s.tx(&HS)?;
        s.note("handshake and a PING in one read");
        s.rx(&cat(&[&HS, &ping(77)]));
        s.tx(&pong(77))?;
        s.events(&[Event::Ready])
    })
}

pub(super) fn ping_echo() -> CaseResult {
    server(|s| {
        s.rx(&ping(0x0102_0304_0506_0708));
        s.tx(&pong(0x0102_0304_0506_0708))?;
        s.rx(&ping(-1));
        s.tx(&pong(-1))?;
        s.events(&[])
    })
}

pub(super) fn ping_echo_client() -> CaseResult {
    client(|s| {
        s.rx(&ping(3));
        s.tx(&pong(3))
    })
}

pub(super) fn ping_extra_ignored() -> CaseResult {
    server(|s| {
        s.rx(&frame(6, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 9, 0xaa, 0xbb]));
        s.note("answered with the first 8 bytes as the id, extra bytes dropped");
        s.tx(&pong(9))
    })
}

pub(super) fn ping_short_ignored() -> CaseResult {
    server(|s| {
        s.rx(&frame(6, 0, 0, &[1, 2, 3, 4]));
        s.rx(&frame(6, 0, 0, &[]));
        s.silent()?;
        s.state(TunnelState::Ready)?;
        s.events(&[])
    })
}

pub(super) fn goaway_short_reason() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&frame(7, 0, 0, &[0, 0, 0]));
        s.silent()?;
        s.state(TunnelState::Closed)?;
        s.events(&[
            Event::Reset(1, ended("peer shut down: GOAWAY")),
            Event::PeerShutdown("GOAWAY".into()),
            Event::Closed,
        ])
    })
}

pub(super) fn goaway_received() -> CaseResult {
    client_with_stream(|s| {
        s.t.open(s.now()).map_err(|e| e.to_string())?;
        s.tx(&syn(3))?;
        s.note("data queued for stream 1, not yet written, when the GOAWAY arrives");
        let n = s.t.send(s.now(), 1, b"late").map_err(|e| e.to_string())?;
        check(n == 4, "send refused")?;
        s.rx(&goaway("server restarting"));
        s.note("closed without answering; queued data dropped");
        s.silent()?;
        s.state(TunnelState::Closed)?;
        s.stream(1, Some(StreamState::Dead))?;
        s.stream(3, Some(StreamState::Dead))?;
        let cause = ended("peer shut down: server restarting");
        s.events(&[
            Event::Reset(1, cause.clone()),
            Event::Reset(3, cause.clone()),
            Event::PeerShutdown("server restarting".into()),
            Event::Closed,
        ])?;
        let w = s.t.send(s.now(), 1, b"x");
        check(
            w == Err(StreamError::NotReady(TunnelState::Closed)),
            format!("send after close: {w:?}"),
        )?;
        let (_, end) = s.read_all(1);
        check(
            end == Err(StreamError::Reset { sid: 1, cause }),
            format!("read after close: {end:?}"),
        )
    })
}

pub(super) fn shutdown_send() -> CaseResult {
    client_with_stream(|s| {
        s.t.shutdown(s.now(), "bye");
        s.tx(&goaway("bye"))?;
        s.state(TunnelState::Failed)?;
        s.stream(1, Some(StreamState::Dead))?;
        s.events(&[Event::Reset(1, ended("bye")), Event::Failed("bye".into())])?;
        s.at_ms(1000);
        s.state(TunnelState::Closed)?;
        s.events(&[Event::Closed])
    })
}

pub(super) fn fail_goaway_first() -> CaseResult {
    server_with_stream(|s| {
        s.note("the server queued data, then the peer breaks a rule before it is written");
        s.t.send(s.now(), 1, b"queued").map_err(|e| e.to_string())?;
        s.rx(&frame(8, 0, 0, &[0, 0, 0, 1]));
        let reason = "unexpected frame type 8 after the handshake";
        s.tx(&goaway(reason))?;
        s.stream(1, Some(StreamState::Dead))?;
        s.events(&[Event::Reset(1, ended(reason)), Event::Failed(reason.into())])?;
        s.note("nothing is read or sent after the failure");
        s.rx(&ping(1));
        s.silent()?;
        check(s.t.open(s.now()).is_err(), "open after failure")?;
        s.at_ms(1000);
        s.state(TunnelState::Closed)?;
        s.events(&[Event::Closed])?;
        s.silent()
    })
}

pub(super) fn settings_after_handshake() -> CaseResult {
    client(|s| fails_with(s, &HS, "unexpected frame type 4 after the handshake"))
}

pub(super) fn unknown_type_fails() -> CaseResult {
    server(|s| {
        fails_with(
            s,
            &frame(3, 0, 1, &[0, 0, 0, 8]),
            "unexpected frame type 3 after the handshake",
        )
    })
}

pub(super) fn headers_nonempty() -> CaseResult {
    server(|s| {
        fails_with(
            s,
            &frame(1, 4, 1, &[0x82]),
            "HEADERS frame on stream 1 has non-empty payload (1 bytes)",
        )
    })
}

pub(super) fn unknown_flags_ignored() -> CaseResult {
    server(|s| {
        s.note("HEADERS with END_HEADERS|PADDED flags and the reserved sid bit set: a SYN");
        s.rx(&frame(1, 0x0c, 0x8000_0001, &[]));
        s.tx(&syn(1))?;
        s.note("DATA with PADDED (0x08) and 0x20 set: payload taken as is");
        s.rx(&frame(0, 0x28, 1, b"\x02ab"));
        s.note("PING with the 0x80 flag: still a keepalive");
        s.rx(&frame(6, 0x80, 0, &7i64.to_be_bytes()));
        s.tx(&pong(7))?;
        s.events(&[Event::Accepted(1), Event::Readable(1)])?;
        let (got, _) = s.read_all(1);
        check(got == b"\x02ab", format!("read {got:?}"))
    })
}

pub(super) fn gzip_receive() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&frame(0, 0x04, 1, &unhex(GZ_TUNNELBED)));
        s.silent()?;
        let (got, _) = s.read_all(1);
        check(
            got == b"tunnelbed ".repeat(200),
            format!("gunzipped {} bytes", got.len()),
        )
    })
}

pub(super) fn gzip_send() -> CaseResult {
    client_with_stream(|s| {
        s.note("1024 compressible bytes: sent plain (gzip only above 1024)");
        s.t.send(s.now(), 1, &[b'a'; 1024])
            .map_err(|e| e.to_string())?;
        s.tx(&data(1, &[b'a'; 1024]))?;
        s.note("1025 compressible bytes: gzipped, flag 0x04");
        s.t.send(s.now(), 1, &[b'a'; 1025])
            .map_err(|e| e.to_string())?;
        let out = s.take_tx();
        let (f, n) = RawFrame::parse(&out)
            .map_err(|e| e.to_string())?
            .ok_or("no frame")?;
        check(n == out.len(), "more than one frame")?;
        check(
            f.typ == 0 && f.flags == 0x04 && f.sid == 1,
            "not a gzip DATA",
        )?;
        check(f.payload.len() < 1025, "gzip not smaller")?;
        check(f.payload.starts_with(&[0x1f, 0x8b]), "not gzip magic")?;
        s.note("2000 incompressible bytes: sent plain (gzip would be larger)");
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        s.t.send(s.now(), 1, &noise).map_err(|e| e.to_string())?;
        s.tx(&data(1, &noise))
    })
}

pub(super) fn gzip_invalid() -> CaseResult {
    server_with_stream(|s| {
        s.rx(&frame(0, 0x04, 1, b"not gzip"));
        let out = s.take_tx();
        let (m, _) = decode_all(&out);
        let ok = matches!(&m[..], [Ok(tunnelbed_h2tunnel::Message::Shutdown { reason })]
            if reason.starts_with("gzip DATA on stream 1 is invalid"));
        check(
            ok,
            format!("expected one GOAWAY for the bad gzip, got {m:?}"),
        )?;
        s.state(TunnelState::Failed)
    })
}

pub(super) fn frame_cap() -> CaseResult {
    server_with_stream(|s| {
        s.note("a DATA header announcing 16385 bytes fails the tunnel as soon as it arrives");
        s.rx(&[0x00, 0x40, 0x01, 0, 0, 0, 0, 0, 1]);
        s.tx(&goaway(
            "frame of type 0 has payload length 16385, over the 16384-byte limit",
        ))?;
        s.state(TunnelState::Failed)
    })
}

pub(super) fn frame_cap_exact() -> CaseResult {
    server_with_stream(|s| {
        s.note("exactly 16384 bytes is accepted");
        let p = vec![7u8; 16384];
        s.rx(&data(1, &p));
        s.silent()?;
        let (got, _) = s.read_all(1);
        check(got == p, "16384-byte DATA not delivered")
    })
}

pub(super) fn frame_cap_send() -> CaseResult {
    let cfg = TunnelConfig {
        gzip: false,
        ..TunnelConfig::default()
    };
    run_ready(Role::Client, cfg, |s| {
        s.t.open(s.now()).map_err(|e| e.to_string())?;
        s.tx(&syn(1))?;
        let p: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let n = s.t.send(s.now(), 1, &p).map_err(|e| e.to_string())?;
        check(n == p.len(), "send took less")?;
        s.tx(&cat(&[
            &data(1, &p[..16384]),
            &data(1, &p[16384..32768]),
            &data(1, &p[32768..]),
        ]))
    })
}

pub(super) fn keepalive_send() -> CaseResult {
    client(|s| {
        s.at_ms(9_999);
        s.silent()?;
        s.note("first check at 10 s, idle for 10 s: PING id 1");
        s.at_ms(10_000);
        s.tx(&ping(1))?;
        s.at_ms(10_050);
        s.rx(&pong(1));
        s.silent()?;
        s.at_ms(20_000);
        s.tx(&ping(2))?;
        s.at_ms(20_010);
        s.rx(&pong(2));
        s.at_ms(30_000);
        s.tx(&ping(3))?;
        s.state(TunnelState::Ready)
    })
}

pub(super) fn keepalive_busy() -> CaseResult {
    client_with_stream(|s| {
        s.note("something read at 6 s: the 10 s check finds the tunnel busy");
        s.at_ms(6_000);
        s.rx(&data(1, b"x"));
        s.at_ms(10_000);
        s.silent()?;
        s.note("output still queued at the 20 s check: no PING either");
        s.at_ms(19_000);
        s.t.send(s.now(), 1, b"pending")
            .map_err(|e| e.to_string())?;
        s.at_ms(20_000);
        s.tx(&data(1, b"pending"))?;
        s.note("idle at the 30 s check: PING id 1");
        s.at_ms(30_000);
        s.tx(&ping(1))
    })
}

pub(super) fn keepalive_first_must_succeed() -> CaseResult {
    client(|s| {
        s.at_ms(10_000);
        s.tx(&ping(1))?;
        s.at_ms(14_999);
        s.state(TunnelState::Ready)?;
        s.at_ms(15_000);
        s.tx(&goaway("keepalive response timeout"))?;
        s.state(TunnelState::Failed)?;
        s.events(&[Event::Failed("keepalive response timeout".into())])
    })
}

pub(super) fn keepalive_wrong_ack() -> CaseResult {
    client(|s| {
        s.at_ms(10_000);
        s.tx(&ping(1))?;
        s.note("an ACK with another id, and a PING (not ACK) with id 1, do not answer it");
        s.rx(&pong(2));
        s.rx(&ping(1));
        s.tx(&pong(1))?;
        s.at_ms(15_000);
        s.tx(&goaway("keepalive response timeout"))
    })
}

pub(super) fn keepalive_tolerance() -> CaseResult {
    client(|s| {
        for (i, t) in [(1i64, 10_000u64), (2, 20_000)] {
            s.at_ms(t);
            s.tx(&ping(i))?;
            s.rx(&pong(i));
        }
        s.note("two successes; now two misses in a row are tolerated");
        s.at_ms(30_000);
        s.tx(&ping(3))?;
        s.at_ms(35_000);
        s.state(TunnelState::Ready)?;
        s.at_ms(40_000);
        s.tx(&ping(4))?;
        s.at_ms(45_000);
        s.state(TunnelState::Ready)?;
        s.at_ms(50_000);
        s.tx(&ping(5))?;
        s.note("the third miss in a row fails the tunnel");
        s.at_ms(55_000);
        s.tx(&goaway("keepalive response timeout"))?;
        s.state(TunnelState::Failed)
    })
}

pub(super) fn keepalive_tolerance_resets() -> CaseResult {
    client(|s| {
        for (i, t) in [(1i64, 10_000u64), (2, 20_000)] {
            s.at_ms(t);
            s.tx(&ping(i))?;
            s.rx(&pong(i));
        }
        s.note("miss, miss, success: the count of misses starts again");
        for (i, t) in [(3i64, 30_000u64), (4, 40_000)] {
            s.at_ms(t);
            s.tx(&ping(i))?;
        }
        s.at_ms(50_000);
        s.tx(&ping(5))?;
        s.rx(&pong(5));
        for (i, t) in [(6i64, 60_000u64), (7, 70_000)] {
            s.at_ms(t);
            s.tx(&ping(i))?;
        }
        s.at_ms(79_000);
        s.state(TunnelState::Ready)?;
        s.at_ms(80_000);
        s.tx(&ping(8))?;
        s.at_ms(85_000);
        s.tx(&goaway("keepalive response timeout"))
    })
}

pub(super) fn keepalive_client_only() -> CaseResult {
    server(|s| {
        for t in [10_000, 20_000, 60_000, 600_000] {
            s.at_ms(t);
            s.silent()?;
        }
        s.state(TunnelState::Ready)?;
        check(s.t.poll_timeout().is_none(), "a ready server has a timer")
    })
}
