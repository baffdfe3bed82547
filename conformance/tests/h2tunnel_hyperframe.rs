//! Independent check of the h2tunnel frames with a third-party HTTP/2 frame parser:
//! Python's `hyperframe` (the frame layer of `h2`), driven by `conformance/peers/h2_frames.py`.
//!
//! Every message kind we emit, and the whole output of a realistic session both ways, is
//! parsed by hyperframe and compared frame by frame with our own reading (type, raw flags,
//! the flag names hyperframe knows, stream id, length, payload). Then the non-standard
//! frames vproxy's rules make us accept are fed to it too, and what hyperframe accepts or
//! rejects is asserted exactly: see `vproxy_quirks`.
//!
//! Needs `.venv/bin/python` with hyperframe (`bash .ci/setup`); the test fails, never
//! skips, when it is missing.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tunnelbed_h2tunnel::wire::{RawFrame, FLAG_GZIP, MAX_PAYLOAD};
use tunnelbed_h2tunnel::{Message, Recv, Role, Tunnel, TunnelConfig};
use tunnelbed_netio::Trace;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TUNNELBED_PYTHON") {
        return p.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

/// Runs the hyperframe script over `bytes`; one output line per frame.
fn hyperframe(bytes: &[u8]) -> Vec<String> {
    let py = python();
    assert!(
        py.exists(),
        "{} not found: run `bash .ci/setup` (creates .venv with hyperframe), or set TUNNELBED_PYTHON",
        py.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/h2_frames.py");
    let mut child = Command::new(&py)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run `bash .ci/setup`", py.display()));
    let mut stdin = child.stdin.take().expect("stdin");
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&data).expect("write frames to the script");
    });
    let out = child.wait_with_output().expect("script output");
    writer.join().expect("writer");
    assert!(
        out.status.success(),
        "h2_frames.py failed ({}): {}\nIs hyperframe installed? Run `bash .ci/setup`.",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The line hyperframe must print for a frame we consider valid, built from our view.
fn our_view(f: &RawFrame<'_>) -> String {
    let (class, names) = match f.typ {
        0 => (
            "DataFrame",
            flag_names(f.flags, &[(0x01, "END_STREAM"), (0x08, "PADDED")]),
        ),
        1 => (
            "HeadersFrame",
            flag_names(
                f.flags,
                &[
                    (0x01, "END_STREAM"),
                    (0x04, "END_HEADERS"),
                    (0x08, "PADDED"),
                    (0x20, "PRIORITY"),
                ],
            ),
        ),
        4 => ("SettingsFrame", flag_names(f.flags, &[(0x01, "ACK")])),
        6 => ("PingFrame", flag_names(f.flags, &[(0x01, "ACK")])),
        7 => ("GoAwayFrame", "-".to_string()),
        t => panic!("we never emit type {t}"),
    };
    let detail = match f.typ {
        0 => format!("data={}", hex::encode(f.payload)),
        1 => "-".to_string(),
        4 => "settings=0".to_string(),
        6 => format!("opaque={}", hex::encode(f.payload)),
        7 => {
            let last = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
            let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
            format!(
                "last_sid={last} code={code} extra={}",
                hex::encode(&f.payload[8..])
            )
        }
        _ => unreachable!(),
    };
    format!(
        "frame type={} class={class} flags=0x{:02x} names={names} sid={} len={} {detail}",
        f.typ,
        f.flags,
        f.sid,
        f.payload.len()
    )
}

fn flag_names(flags: u8, known: &[(u8, &str)]) -> String {
    let mut n: Vec<&str> = known
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, s)| *s)
        .collect();
    n.sort_unstable();
    if n.is_empty() {
        "-".into()
    } else {
        n.join(",")
    }
}

/// Our frames in `bytes`, each with the line hyperframe must print.
fn split(bytes: &[u8]) -> Vec<String> {
    let mut off = 0;
    let mut lines = Vec::new();
    while off < bytes.len() {
        let (f, n) = RawFrame::parse(&bytes[off..])
            .expect("our output parses")
            .expect("our output is whole frames");
        assert!(f.payload.len() <= MAX_PAYLOAD);
        lines.push(our_view(&f));
        off += n;
    }
    lines
}

fn compare(label: &str, bytes: &[u8]) -> usize {
    let want = split(bytes);
    let got = hyperframe(bytes);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(g, w, "{label}: frame {i} differs");
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{label}: frame count differs: {got:?}"
    );
    want.len()
}

fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn every_message_kind_parses_as_standard_http2_frames() {
    let data = |payload: Vec<u8>, fin: bool| Message::Data {
        sid: 5,
        payload: Bytes::from(payload),
        fin,
    };
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("handshake", Message::Handshake.to_bytes(false)),
        ("keepalive", Message::Keepalive { id: 1 }.to_bytes(false)),
        (
            "keepalive -2",
            Message::Keepalive { id: -2 }.to_bytes(false),
        ),
        (
            "keepalive ack",
            Message::KeepaliveAck { id: 1 }.to_bytes(false),
        ),
        ("SYN", Message::Syn { sid: 1 }.to_bytes(false)),
        (
            "SYN top id",
            Message::Syn { sid: 0x7fff_ffff }.to_bytes(false),
        ),
        ("RST", Message::Rst { sid: 3 }.to_bytes(false)),
        ("DATA plain", data(b"hello".to_vec(), false).to_bytes(true)),
        ("DATA gzip", data(vec![b'a'; 3000], false).to_bytes(true)),
        ("FIN", data(Vec::new(), true).to_bytes(true)),
        ("PSH-FIN", data(b"last".to_vec(), true).to_bytes(true)),
        ("DATA split", data(noise(40_000), true).to_bytes(true)),
        (
            "GOAWAY",
            Message::Shutdown {
                reason: "keepalive response timeout".into(),
            }
            .to_bytes(false),
        ),
        (
            "GOAWAY utf-8",
            Message::Shutdown {
                reason: "arr\u{ea}t \u{2603}".into(),
            }
            .to_bytes(false),
        ),
    ];
    for (label, bytes) in &kinds {
        compare(label, bytes);
    }
    // The facts the comparison relies on, spelled out.
    let gz = &kinds[8].1;
    assert_eq!(gz[4], FLAG_GZIP, "the gzip DATA really is gzipped");
    let lines = hyperframe(gz);
    assert!(
        lines[0].contains("flags=0x04 names=-"),
        "hyperframe ignores flag 0x04 on DATA: {lines:?}"
    );
    let split_lines = hyperframe(&kinds[11].1);
    assert_eq!(split_lines.len(), 3, "40000 bytes: three frames");
    let goaway = hyperframe(&kinds[12].1);
    assert!(
        goaway[0].contains("last_sid=4294967295 code=4294967295"),
        "hyperframe keeps the reserved bit of GOAWAY's last stream id: {goaway:?}"
    );
    // All in one stream too (the parser is fed back to back).
    let all: Vec<u8> = kinds.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(compare("all kinds", &all), kinds.len() + 2);
}

/// A client and a server talk: handshake, three streams, data both ways (some gzipped,
/// one split), keepalives, FIN both ways, RST, and a GOAWAY. Each direction's bytes are
/// checked whole.
#[test]
fn a_realistic_session_parses_frame_by_frame() {
    let trace = Trace::disabled();
    let mut c = Tunnel::new(Role::Client, TunnelConfig::default(), trace.clone(), "c");
    let mut s = Tunnel::new(Role::Server, TunnelConfig::default(), trace, "s");
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    let mut now = Duration::ZERO;
    c.start(now);
    s.start(now);
    let mut pump = |c: &mut Tunnel, s: &mut Tunnel, now: Duration| {
        for _ in 0..4 {
            if let Some(b) = c.poll_transmit() {
                c2s.extend_from_slice(&b);
                s.handle_input(now, &b);
            }
            if let Some(b) = s.poll_transmit() {
                s2c.extend_from_slice(&b);
                c.handle_input(now, &b);
            }
        }
    };
    pump(&mut c, &mut s, now);
    let ids: Vec<u32> = (0..3).map(|_| c.open(now).unwrap()).collect();
    assert_eq!(ids, [1, 3, 5]);
    c.send(now, 1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.send(now, 3, &[b'z'; 5000]).unwrap();
    c.send(now, 5, &noise(20_000)).unwrap();
    pump(&mut c, &mut s, now);
    s.send(now, 1, &b"<html>".repeat(1000)).unwrap();
    s.finish(now, 1).unwrap();
    c.finish(now, 1).unwrap();
    c.reset(now, 3).unwrap();
    pump(&mut c, &mut s, now);
    for _ in 0..3 {
        now += Duration::from_secs(10);
        c.handle_timeout(now);
        s.handle_timeout(now);
        pump(&mut c, &mut s, now);
    }
    let mut got = Vec::new();
    while let Ok(Recv::Data(b)) = c.recv(now, 1) {
        got.extend_from_slice(&b);
    }
    assert_eq!(got, b"<html>".repeat(1000));
    c.shutdown(now, "client done");
    pump(&mut c, &mut s, now);

    let n1 = compare("client -> server", &c2s);
    let n2 = compare("server -> client", &s2c);
    // Handshake, 3 SYN, 1+1+2 DATA, FIN, RST, 3 PINGs, GOAWAY.
    assert_eq!(n1, 1 + 3 + 4 + 1 + 1 + 3 + 1, "client frames");
    // Handshake, 3 SYN-ACK, DATA (gzip), FIN, 3 PING ACKs.
    assert_eq!(n2, 1 + 3 + 1 + 1 + 3, "server frames");
    assert!(hyperframe(&c2s).iter().any(|l| l.contains("flags=0x04")));
}

/// Frames vproxy's rules make us accept although they are not standard HTTP/2, and what
/// hyperframe says about each, asserted exactly. Our own reading is checked alongside.
#[test]
fn vproxy_quirks() {
    fn frame(typ: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        b.extend_from_slice(&[typ, flags]);
        b.extend_from_slice(&sid.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }
    let ours = |b: &[u8]| {
        let (f, _) = RawFrame::parse(b).unwrap().unwrap();
        format!("{:?}", Message::from_frame(&f))
    };
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "empty HEADERS (SYN): not valid HPACK, but the frame layer accepts it",
            frame(1, 0, 1, &[]),
            "frame type=1 class=HeadersFrame flags=0x00 names=- sid=1 len=0 -",
            "Ok(Syn { sid: 1 })",
        ),
        (
            "PING shorter than 8: we ignore it",
            frame(6, 0, 0, b"1234"),
            "reject type=6 sid=0 len=4 error=InvalidFrameError: PING frame must have 8 byte length: got 4",
            "Ok(Ignored)",
        ),
        (
            "PING longer than 8: we read the first 8",
            frame(6, 0, 0, b"\0\0\0\0\0\0\0\x091"),
            "reject type=6 sid=0 len=9 error=InvalidFrameError: PING frame must have 8 byte length: got 9",
            "Ok(Keepalive { id: 9 })",
        ),
        (
            "PING on a stream: we ignore the id",
            frame(6, 0, 5, &[0; 8]),
            "reject type=6 sid=5 len=8 error=InvalidDataError: Stream ID must be zero for PingFrame with stream_id=5",
            "Ok(Keepalive { id: 0 })",
        ),
        (
            "GOAWAY shorter than 8: reason \"GOAWAY\"",
            frame(7, 0, 0, b"abc"),
            "reject type=7 sid=0 len=3 error=InvalidFrameError: Invalid GOAWAY body.",
            "Ok(Shutdown { reason: \"GOAWAY\" })",
        ),
        (
            "HEADERS with PADDED|END_HEADERS and no body: unknown flags ignored",
            frame(1, 0x0c, 1, &[]),
            "reject type=1 sid=1 len=0 error=InvalidFrameError: Invalid Padding data",
            "Ok(Syn { sid: 1 })",
        ),
        (
            "HEADERS with PRIORITY and no body",
            frame(1, 0x20, 1, &[]),
            "reject type=1 sid=1 len=0 error=InvalidFrameError: Invalid Priority data",
            "Ok(Syn { sid: 1 })",
        ),
        (
            "HEADERS on stream 0",
            frame(1, 0, 0, &[]),
            "reject type=1 sid=0 len=0 error=InvalidDataError: Stream ID must be non-zero for HeadersFrame",
            "Ok(Syn { sid: 0 })",
        ),
        (
            "DATA with PADDED: hyperframe strips padding, we take the payload as is",
            frame(0, 0x28, 1, b"\x02ab"),
            "frame type=0 class=DataFrame flags=0x28 names=PADDED sid=1 len=3 data=",
            "Ok(Data { sid: 1, payload: b\"\\x02ab\", fin: false })",
        ),
        (
            "SETTINGS ACK: standard, but not our handshake (and invalid after it)",
            frame(4, 1, 0, &[]),
            "frame type=4 class=SettingsFrame flags=0x01 names=ACK sid=0 len=0 settings=0",
            "Err(UnexpectedType(4))",
        ),
    ];
    let all: Vec<u8> = cases.iter().flat_map(|c| c.1.clone()).collect();
    let got = hyperframe(&all);
    assert_eq!(got.len(), cases.len(), "{got:?}");
    for ((label, bytes, want_hf, want_ours), g) in cases.iter().zip(&got) {
        assert_eq!(g, want_hf, "hyperframe on: {label}");
        assert_eq!(ours(bytes), *want_ours, "our reading of: {label}");
    }
}
