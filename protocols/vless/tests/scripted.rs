//! Scripted exchanges with the VLESS machines: each case feeds bytes (often split at
//! awkward places), snapshots the transition trace, the events and the bytes written
//! back (insta), and asserts the facts it claims, so a wrong snapshot accepted by
//! mistake still fails.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tunnelbed_netio::Trace;
use tunnelbed_vless::client::{ClientSession, Event as CEvent};
use tunnelbed_vless::server::{Decision, Event, Reject, ServerSession, ServerSessionConfig};
use tunnelbed_vless::wire::{
    encode_udp_frame, Address, Command, DecodeError, Request, Umfurs, Version,
};

const USER: [u8; 16] = [0x11; 16];
const STRANGER: [u8; 16] = [0x22; 16];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn req(version: Version, uuid: [u8; 16], command: Command, target: Option<&str>) -> Vec<u8> {
    Request {
        version,
        uuid,
        addons: vec![],
        command,
        target: target.map(|t| Address::Ip(t.parse().unwrap())),
    }
    .to_bytes()
    .unwrap()
    .to_vec()
}

/// Runs a server machine over `pieces` (then an EOF if `eof`), returning the log and
/// the events and bytes written back.
fn run_server(
    cfg: ServerSessionConfig,
    pieces: &[&[u8]],
    eof: bool,
    timeout_at: Option<Duration>,
) -> (String, Vec<Event>, Vec<u8>) {
    let trace = Trace::recording();
    let mut s = ServerSession::new(ms(0), cfg, trace.clone(), "c0".into());
    let mut events = Vec::new();
    let mut written = Vec::new();
    let mut log = String::new();
    let mut t = 0;
    let mut pump = |s: &mut ServerSession, log: &mut String| {
        while let Some(e) = s.poll_event() {
            writeln!(log, "event {e:?}").unwrap();
            events.push(e);
        }
        while let Some(b) = s.poll_transmit() {
            writeln!(log, "write {:02x?}", &b[..]).unwrap();
            written.extend_from_slice(&b);
        }
    };
    for p in pieces {
        t += 1;
        writeln!(log, "read {} bytes", p.len()).unwrap();
        s.handle_input(ms(t), p);
        pump(&mut s, &mut log);
    }
    if let Some(at) = timeout_at {
        s.handle_timeout(at);
        pump(&mut s, &mut log);
    }
    if eof {
        s.handle_eof(ms(t + 1));
        pump(&mut s, &mut log);
    }
    (format!("{}--\n{log}", trace.render()), events, written)
}

fn cfg() -> ServerSessionConfig {
    ServerSessionConfig {
        users: vec![USER],
        ..ServerSessionConfig::default()
    }
}

fn rejected(events: &[Event]) -> Option<&Reject> {
    events.iter().find_map(|e| match e {
        Event::Rejected { reason, .. } => Some(reason),
        _ => None,
    })
}

#[test]
fn tcp_request_split_byte_by_byte() {
    let mut b = req(Version::V0, USER, Command::Tcp, Some("127.0.0.1:80"));
    b.extend_from_slice(b"GET /");
    let pieces: Vec<&[u8]> = b.chunks(1).collect();
    let (log, ev, out) = run_server(cfg(), &pieces, true, None);
    insta::assert_snapshot!(log);
    // Accepted after the last header byte, with the payload passed on afterwards.
    assert!(matches!(
        &ev[0],
        Event::Accepted { decision: Decision::Relay(a), version: Version::V0, .. }
            if a.to_string() == "127.0.0.1:80"
    ));
    assert_eq!(out, vec![0, 0], "response header v0, no addons");
    let data: Vec<u8> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) => Some(d.to_vec()),
            Event::Accepted { early, .. } => Some(early.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(data, b"GET /");
    assert_eq!(ev.last(), Some(&Event::Closed));
}

#[test]
fn udp_request_with_frames_in_the_first_read() {
    let mut b = req(Version::V0, USER, Command::Udp, Some("10.0.0.1:53"));
    let mut f = BytesMut::new();
    encode_udp_frame(b"one", &mut f).unwrap();
    encode_udp_frame(b"", &mut f).unwrap();
    encode_udp_frame(b"three", &mut f).unwrap();
    b.extend_from_slice(&f[..f.len() - 2]);
    let tail = f[f.len() - 2..].to_vec();
    let (log, ev, out) = run_server(cfg(), &[&b, &tail], false, None);
    insta::assert_snapshot!(log);
    let dgrams: Vec<Bytes> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Datagram(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dgrams, vec!["one", "", "three"]);
    assert_eq!(out, vec![0, 0]);
}

#[test]
fn crumfurs_answers_0x14_and_carries_umfurs() {
    let b = req(Version::V1, USER, Command::Crumfurs, None);
    let trace = Trace::recording();
    let mut s = ServerSession::new(ms(0), cfg(), trace.clone(), "c1".into());
    s.handle_input(ms(1), &b);
    assert!(matches!(
        s.poll_event(),
        Some(Event::Accepted {
            decision: Decision::Crumfurs,
            version: Version::V1,
            ..
        })
    ));
    assert_eq!(s.poll_transmit().as_deref(), Some(&[0x14][..]));
    s.send_umfurs(&Umfurs {
        from: "10.0.0.3:4000".parse().unwrap(),
        payload: Bytes::from_static(b"hi"),
    })
    .unwrap();
    let m = s.poll_transmit().unwrap();
    assert_eq!(&m[..], &[1, 10, 0, 0, 3, 0x0f, 0xa0, 0, 2, b'h', b'i']);
    insta::assert_snapshot!(trace.render());
}

#[test]
fn bad_input_is_closed_silently() {
    let mut cases: Vec<(&str, ServerSessionConfig, Vec<u8>, bool)> = Vec::new();
    cases.push((
        "unknown user",
        cfg(),
        req(Version::V0, STRANGER, Command::Tcp, Some("127.0.0.1:80")),
        false,
    ));
    let mut v = req(Version::V0, USER, Command::Tcp, Some("127.0.0.1:80"));
    v[0] = 9;
    cases.push(("unknown version", cfg(), v, false));
    let v0_only = ServerSessionConfig {
        version: Version::V0,
        ..cfg()
    };
    cases.push((
        "v1 on a v0 server",
        v0_only,
        req(Version::V1, USER, Command::Tcp, Some("127.0.0.1:80")),
        false,
    ));
    let full = req(Version::V0, USER, Command::Tcp, Some("127.0.0.1:80"));
    cases.push(("truncated header", cfg(), full[..20].to_vec(), true));
    let mut c = req(Version::V0, USER, Command::Tcp, Some("127.0.0.1:80"));
    c[18] = 7;
    cases.push(("unknown command", cfg(), c, false));
    cases.push((
        "mux not served",
        cfg(),
        req(Version::V0, USER, Command::Mux, None),
        false,
    ));
    let mut c = req(Version::V0, USER, Command::Tcp, Some("127.0.0.1:80"));
    c[18] = 4;
    cases.push(("crumfurs in v0", cfg(), c, false));
    let mut flow = vec![0u8];
    flow.extend_from_slice(&USER);
    let addon = b"\x0a\x10xtls-rprx-direct";
    flow.push(addon.len() as u8);
    flow.extend_from_slice(addon);
    flow.extend_from_slice(&[1, 0, 80, 1, 127, 0, 0, 1]);
    cases.push(("unsupported flow", cfg(), flow, false));
    let mut bad_addon = vec![0u8];
    bad_addon.extend_from_slice(&USER);
    bad_addon.extend_from_slice(&[2, 0x0f, 0x00, 1, 0, 80, 1, 127, 0, 0, 1]);
    cases.push(("malformed addon", cfg(), bad_addon, false));

    let mut log = String::new();
    for (name, c, bytes, eof) in cases {
        let (l, ev, out) = run_server(c, &[&bytes], eof, None);
        writeln!(log, "== {name}\n{l}").unwrap();
        assert!(out.is_empty(), "{name}: wrote {out:?}");
        assert!(
            !ev.iter().any(|e| matches!(e, Event::Accepted { .. })),
            "{name}: accepted"
        );
        let r = rejected(&ev).unwrap_or_else(|| panic!("{name}: not rejected"));
        let want = match name {
            "unknown user" => matches!(r, Reject::UnknownUser),
            "unknown version" => matches!(r, Reject::Version(9)),
            "v1 on a v0 server" => matches!(r, Reject::Version(1)),
            "truncated header" => matches!(r, Reject::Truncated(20)),
            "unknown command" => matches!(r, Reject::Malformed(DecodeError::Command(7))),
            "mux not served" => matches!(r, Reject::Command(3)),
            "crumfurs in v0" => matches!(r, Reject::Malformed(DecodeError::CrumfursInV0)),
            "unsupported flow" => matches!(r, Reject::Flow(f) if f == "xtls-rprx-direct"),
            "malformed addon" => matches!(r, Reject::Malformed(DecodeError::Addons)),
            _ => false,
        };
        assert!(want, "{name}: wrong reason {r:?}");
        // Every byte read is handed back for a fallback.
        let unread = ev.iter().find_map(|e| match e {
            Event::Rejected { unread, .. } => Some(unread.clone()),
            _ => None,
        });
        assert_eq!(unread.as_deref(), Some(&bytes[..]), "{name}: unread bytes");
    }
    insta::assert_snapshot!(log);
}

#[test]
fn unknown_user_is_refused_before_the_header_ends() {
    let b = req(Version::V0, STRANGER, Command::Tcp, Some("127.0.0.1:80"));
    let (_, ev, out) = run_server(cfg(), &[&b[..17]], false, None);
    assert_eq!(rejected(&ev), Some(&Reject::UnknownUser));
    assert!(out.is_empty());
}

#[test]
fn header_timeout_and_oversize_frame() {
    let b = req(Version::V0, USER, Command::Tcp, Some("127.0.0.1:80"));
    let (log1, ev, out) = run_server(cfg(), &[&b[..10]], false, Some(ms(10_000)));
    assert_eq!(rejected(&ev), Some(&Reject::Timeout(ms(10_000))));
    assert!(out.is_empty());

    let small = ServerSessionConfig {
        max_udp_payload: 100,
        ..cfg()
    };
    let mut b = req(Version::V0, USER, Command::Udp, Some("10.0.0.1:53"));
    b.extend_from_slice(&[0, 101]);
    let (log2, ev, out) = run_server(small, &[&b], false, None);
    assert!(
        out.is_empty(),
        "an oversize frame closes with nothing written"
    );
    assert_eq!(ev.last(), Some(&Event::Closed));
    insta::assert_snapshot!(format!("{log1}==\n{log2}"));
}

#[test]
fn client_skips_the_response_and_splits_the_downlink() {
    let trace = Trace::recording();
    let r = Request {
        version: Version::V0,
        uuid: USER,
        addons: vec![],
        command: Command::Udp,
        target: Some(Address::Domain("dns.test".into(), 53)),
    };
    let mut c = ClientSession::new(ms(0), &r, trace.clone(), "u0".into()).unwrap();
    c.send_datagram(b"q").unwrap();
    let sent = c.poll_transmit().unwrap();
    assert_eq!(
        &sent[..],
        &[&r.to_bytes().unwrap()[..], &[0, 1, b'q']].concat()[..]
    );
    // Response header with 2 addon bytes, then two frames, fed in odd pieces.
    let down = [0u8, 2, 0xaa, 0xbb, 0, 1, b'a', 0, 2, b'b', b'c'];
    for p in [&down[..1], &down[1..3], &down[3..7], &down[7..]] {
        c.handle_input(ms(1), p);
    }
    c.handle_eof(ms(2));
    let mut ev = Vec::new();
    while let Some(e) = c.poll_event() {
        ev.push(e);
    }
    assert_eq!(
        ev,
        vec![
            CEvent::Established,
            CEvent::Datagram(Bytes::from_static(b"a")),
            CEvent::Datagram(Bytes::from_static(b"bc")),
            CEvent::Closed
        ]
    );

    let r = Request {
        version: Version::V1,
        uuid: USER,
        addons: vec![],
        command: Command::Crumfurs,
        target: None,
    };
    let mut c = ClientSession::new(ms(3), &r, trace.clone(), "u1".into()).unwrap();
    let _ = c.poll_transmit();
    c.handle_input(ms(4), &[0x14, 3]);
    let mut rest = vec![0u8; 16];
    rest[15] = 1;
    rest.extend_from_slice(&[0x1f, 0x90, 0, 1, b'z']);
    c.handle_input(ms(5), &rest);
    assert_eq!(c.poll_event(), Some(CEvent::Established));
    assert_eq!(
        c.poll_event(),
        Some(CEvent::Umfurs {
            from: "[::1]:8080".parse().unwrap(),
            payload: Bytes::from_static(b"z")
        })
    );
    let mut c = ClientSession::new(ms(6), &r, trace.clone(), "u2".into()).unwrap();
    c.handle_input(ms(7), &[0x15]);
    assert!(matches!(c.poll_event(), Some(CEvent::Failed(_))));
    insta::assert_snapshot!(trace.render());
}
