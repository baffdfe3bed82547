//! Scripted pong exchanges with the transition trace, the frames on the wire and the
//! events snapshotted (insta). Each case also asserts the facts it claims, so a wrong
//! snapshot accepted by mistake still fails.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tunnelbed_netio::Trace;
use tunnelbed_pong::wire::{encode_raw, frame_type, CONN_HEADER_LEN};
use tunnelbed_pong::{
    Address, Blocked, Body, ConnHeader, ConnState, DecodeError, DialError, End, Event, Frame,
    FrameError, ProtocolError, Recv, ResetCause, RstCode, RstInfo, Session, SessionConfig, Side,
    StreamError, StreamKind, StreamState,
};

const CLIENT: [u8; 16] = [0x11; 16];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn addr() -> Address {
    Address::Domain("example.test".into(), 80)
}

fn frame(sid: u32, body: Body) -> Vec<u8> {
    Frame::new(sid, body).to_bytes().unwrap().to_vec()
}

fn data(sid: u32, d: &'static [u8]) -> Vec<u8> {
    frame(sid, Body::Data(Bytes::from_static(d)))
}

/// Frames in a byte string, as text, for the log.
fn describe(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        match Frame::decode(b) {
            Ok(Some((f, n))) => {
                out.push(f.to_string());
                b = &b[n..];
            }
            Ok(None) => {
                out.push(format!("partial {:02x?}", b));
                break;
            }
            Err(DecodeError::Payload {
                stream_id,
                kind,
                len,
                error,
            }) => {
                out.push(format!("s{stream_id} type {kind:#04x} ({error})"));
                b = &b[len..];
            }
            Err(e) => {
                out.push(format!("bad framing ({e}) {:02x?}", &b[..b.len().min(16)]));
                break;
            }
        }
    }
    out
}

fn decode_all(mut b: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some((f, n)) = Frame::decode(b).expect("own output decodes") {
        out.push(f);
        b = &b[n..];
    }
    assert!(b.is_empty(), "partial frame in output");
    out
}

/// A remote session driven by a script that plays the local side byte by byte.
struct Script {
    r: Session,
    trace: Trace,
    now: Duration,
    log: Vec<String>,
    sent: Vec<Frame>,
}

impl Script {
    fn new(cfg: SessionConfig) -> Self {
        let trace = Trace::recording();
        let mut s = Script {
            r: Session::remote(cfg, trace.clone(), "pong[remote]"),
            trace,
            now: Duration::ZERO,
            log: Vec::new(),
            sent: Vec::new(),
        };
        let mut h = BytesMut::new();
        ConnHeader { client_id: CLIENT }.encode(&mut h);
        assert_eq!(s.r.handle_input(s.now, &h), CONN_HEADER_LEN);
        s.log.push("  local -> remote: header".into());
        assert_eq!(
            s.r.poll_event(),
            Some(Event::ClientHello { client_id: CLIENT })
        );
        s.r.accept_client(s.now).unwrap();
        s
    }

    fn at(&mut self, t: u64) -> &mut Self {
        self.now = ms(t);
        self
    }

    /// Feeds bytes; returns how many the machine took. Logs frames and events.
    fn feed(&mut self, b: &[u8]) -> usize {
        for d in describe(b) {
            self.log.push(format!("  local -> remote: {d}"));
        }
        let n = self.r.handle_input(self.now, b);
        if n != b.len() {
            self.log
                .push(format!("  (remote took {n} of {} bytes)", b.len()));
        }
        self.collect();
        n
    }

    /// Feeds a piece of a frame (logged as raw bytes, not decoded).
    fn feed_piece(&mut self, b: &[u8]) -> usize {
        self.log.push(format!(
            "  local -> remote: {} bytes of a frame {:02x?}",
            b.len(),
            b
        ));
        let n = self.r.handle_input(self.now, b);
        self.log
            .push(format!("  (remote took {n} of {} bytes)", b.len()));
        self.collect();
        n
    }

    /// Logs and returns what the remote sent and which events it raised.
    fn collect(&mut self) -> Vec<Event> {
        while let Some(b) = self.r.poll_transmit() {
            for d in describe(&b) {
                self.log.push(format!("  remote -> local: {d}"));
            }
            self.sent.extend(decode_all(&b));
        }
        let mut ev = Vec::new();
        while let Some(e) = self.r.poll_event() {
            self.log.push(format!("  event: {e:?}"));
            ev.push(e);
        }
        ev
    }

    fn note(&mut self, s: &str) {
        self.log.push(format!("{s}:"));
    }

    fn report(&self) -> String {
        format!(
            "== transitions ==\n{}\n== wire and events ==\n{}\n",
            self.trace.render(),
            self.log.join("\n")
        )
    }
}

/// Everything the remote raised, since the script keeps them in its log; re-derive the
/// events from the log lines for assertions.
fn logged_events(s: &Script) -> Vec<String> {
    s.log
        .iter()
        .filter(|l| l.starts_with("  event: "))
        .cloned()
        .collect()
}

#[test]
fn connect_then_data_without_waiting() {
    // Local and remote back to back; the local side sends connect and data before it has
    // read a single byte from the remote.
    let trace = Trace::recording();
    let mut l = Session::local(
        SessionConfig::default(),
        CLIENT,
        trace.clone(),
        "pong[local]",
    );
    let mut r = Session::remote(SessionConfig::default(), trace.clone(), "pong[remote]");
    let mut log = Vec::new();
    let s1 = l.open_connect(ms(1), &addr()).unwrap();
    let s3 = l
        .open_relay(ms(1), &Address::Ip("10.0.0.1:53".parse().unwrap()))
        .unwrap();
    assert_eq!((s1, s3), (1, 3), "local ids are odd from 1");
    assert_eq!(l.send(ms(1), s1, b"GET / HTTP/1.0\r\n\r\n").unwrap(), 18);
    l.send_datagram(ms(1), s3, b"dns-query").unwrap();
    l.finish(ms(1), s1).unwrap();
    let wire = l.poll_transmit().unwrap();
    // header, then connect, relay, data, datagram, finish: all before any reply.
    assert_eq!(wire[0], 0, "header version");
    assert_eq!(&wire[1..17], &CLIENT);
    let frames = decode_all(&wire[17..]);
    let kinds: Vec<&str> = frames.iter().map(|f| f.body.name()).collect();
    assert_eq!(kinds, ["connect", "relay", "data", "data", "finish"]);
    log.push("local -> remote: header".to_string());
    for f in &frames {
        log.push(format!("local -> remote: {f}"));
    }

    // The remote takes it all, asks to dial both streams, and buffers the data meanwhile.
    assert_eq!(
        r.handle_input(ms(2), &wire),
        CONN_HEADER_LEN,
        "frames wait for approval"
    );
    let mut ev = Vec::new();
    while let Some(e) = r.poll_event() {
        ev.push(e);
    }
    assert!(matches!(ev[0], Event::ClientHello { client_id } if client_id == CLIENT));
    assert_eq!(r.state(), ConnState::AwaitApproval);
    r.accept_client(ms(2)).unwrap();
    // the frames were held while awaiting approval; feed them again
    assert_eq!(r.handle_input(ms(2), &wire[17..]), wire.len() - 17);
    while let Some(e) = r.poll_event() {
        ev.push(e);
    }
    for e in &ev {
        log.push(format!("remote event: {e:?}"));
    }
    assert_eq!(
        ev[1],
        Event::Dial {
            stream_id: 1,
            kind: StreamKind::Tcp,
            addr: addr()
        }
    );
    assert!(matches!(
        ev[2],
        Event::Dial {
            stream_id: 3,
            kind: StreamKind::Udp,
            ..
        }
    ));
    assert!(r.is_dialing(1));
    assert_eq!(
        r.send(ms(2), 1, b"x"),
        Err(StreamError::Dialing(1)),
        "no reply before the dial is reported"
    );
    r.dial_succeeded(ms(3), 1).unwrap();
    r.dial_succeeded(ms(3), 3).unwrap();
    assert!(
        r.poll_transmit().is_none(),
        "a successful dial sends nothing"
    );
    assert_eq!(
        r.recv(ms(3), 1).unwrap(),
        Recv::Data(Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"))
    );
    assert_eq!(r.recv(ms(3), 1).unwrap(), Recv::Eof, "local finished");
    assert_eq!(
        r.recv(ms(3), 3).unwrap(),
        Recv::Data(Bytes::from_static(b"dns-query"))
    );
    assert_eq!(r.recv(ms(3), 3).unwrap(), Recv::Pending);
    assert_eq!(r.stream_state(1), Some(StreamState::HalfClosedRemote));

    // The answer goes back; the remote finishes; the stream is closed on both sides.
    r.send(ms(4), 1, b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
    r.finish(ms(4), 1).unwrap();
    r.send_datagram(ms(4), 3, b"dns-answer").unwrap();
    let back = r.poll_transmit().unwrap();
    for f in decode_all(&back) {
        log.push(format!("remote -> local: {f}"));
    }
    assert_eq!(l.handle_input(ms(5), &back), back.len());
    while let Some(e) = l.poll_event() {
        log.push(format!("local event: {e:?}"));
    }
    assert_eq!(
        l.recv(ms(5), 1).unwrap(),
        Recv::Data(Bytes::from_static(b"HTTP/1.0 200 OK\r\n\r\n"))
    );
    assert_eq!(l.recv(ms(5), 1).unwrap(), Recv::Eof);
    assert_eq!(
        l.stream_end(1),
        Some(End::Closed),
        "finish both ways closes"
    );
    assert_eq!(r.stream_end(1), Some(End::Closed));
    assert_eq!(
        l.recv(ms(5), 3).unwrap(),
        Recv::Data(Bytes::from_static(b"dns-answer"))
    );

    insta::assert_snapshot!(format!(
        "== transitions ==\n{}\n== wire and events ==\n{}\n",
        trace.render(),
        log.join("\n")
    ));
}

#[test]
fn dial_failure_answers_rst_with_code() {
    let mut s = Script::new(SessionConfig::default());
    s.note("connect then data, dial refused");
    s.at(1).feed(&frame(1, Body::Connect(addr())));
    s.feed(&data(1, b"early"));
    s.at(2);
    let now = s.now;
    s.r.dial_failed(now, 1, &DialError::Refused).unwrap();
    s.collect();
    assert_eq!(
        s.sent.last().unwrap().body,
        Body::Rst(Some(RstInfo::with_description(
            RstCode::DstRefused,
            "refused by dst"
        )))
    );
    s.note("dial timeout on s3, other error on s5");
    s.feed(&frame(
        3,
        Body::Connect(Address::Ip("192.0.2.1:443".parse().unwrap())),
    ));
    s.feed(&frame(5, Body::Connect(addr())));
    let now = s.now;
    s.r.dial_failed(now, 3, &DialError::Timeout).unwrap();
    s.r.dial_failed(now, 5, &DialError::Other("no route to example".into()))
        .unwrap();
    s.collect();
    let codes: Vec<u8> = s
        .sent
        .iter()
        .filter_map(|f| match &f.body {
            Body::Rst(Some(i)) => Some(i.code.to_u8()),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [5, 10, 1]);
    s.note("late data for the failed stream is ignored");
    let before = s.sent.len();
    s.at(3).feed(&data(1, b"late"));
    assert_eq!(s.sent.len(), before, "nothing answers a late frame");
    assert!(matches!(
        s.r.stream_end(1),
        Some(End::Reset(ResetCause::Sent(_)))
    ));
    assert_eq!(
        s.r.dial_succeeded(s.now, 1),
        Err(StreamError::Reset {
            stream_id: 1,
            cause: ResetCause::Sent(RstInfo::new(RstCode::DstRefused))
        })
    );
    insta::assert_snapshot!(s.report());
}

#[test]
fn repeated_live_id_gets_rst_9() {
    let mut s = Script::new(SessionConfig::default());
    s.at(1).feed(&frame(1, Body::Connect(addr())));
    let now = s.now;
    s.r.dial_succeeded(now, 1).unwrap();
    s.collect();
    s.note("a second connect for live stream 1");
    s.at(2).feed(&frame(1, Body::Connect(addr())));
    assert_eq!(
        s.sent,
        [Frame::new(
            1,
            Body::Rst(Some(RstInfo::new(RstCode::RepeatedStreamId)))
        )]
    );
    assert!(logged_events(&s)
        .iter()
        .any(|l| l.contains("Reset { stream_id: 1") && l.contains("RepeatedStreamId")));
    assert_eq!(s.r.stream_state(1), None);
    s.note("a relay for live stream 3 (also repeated)");
    s.feed(&frame(3, Body::Connect(addr())));
    s.feed(&frame(3, Body::Relay(addr())));
    assert_eq!(s.sent.len(), 2);
    assert_eq!(
        s.sent[1],
        Frame::new(3, Body::Rst(Some(RstInfo::new(RstCode::RepeatedStreamId))))
    );
    s.note("connect again for the reset id 1: ignored (ended ids stay ended)");
    s.feed(&frame(1, Body::Connect(addr())));
    assert_eq!(s.sent.len(), 2);
    insta::assert_snapshot!(s.report());
}

#[test]
fn unknown_type_gets_rst_7() {
    let mut s = Script::new(SessionConfig::default());
    s.at(1).feed(&frame(1, Body::Connect(addr())));
    s.note("type 0x04 on live stream 1");
    let mut b = BytesMut::new();
    encode_raw(&mut b, 1, 0x04, b"??").unwrap();
    assert_eq!(s.feed(&b), b.len());
    assert_eq!(
        s.sent,
        [Frame::new(
            1,
            Body::Rst(Some(RstInfo::new(RstCode::CommandNotSupported)))
        )]
    );
    s.note("type 0x42 opening stream 3, and bind on stream 5 (undefined by the seed)");
    let mut b = BytesMut::new();
    encode_raw(&mut b, 3, 0x42, b"").unwrap();
    s.feed(&b);
    s.feed(&frame(5, Body::Bind(Bytes::new())));
    assert_eq!(s.sent.len(), 3);
    assert!(s.sent[1..]
        .iter()
        .all(|f| f.body == Body::Rst(Some(RstInfo::new(RstCode::CommandNotSupported)))));
    s.note("set (reserved) on live stream 7 is ignored, the stream lives on");
    s.feed(&frame(7, Body::Connect(addr())));
    s.feed(&frame(7, Body::Set(Bytes::from_static(b"k=v"))));
    assert_eq!(s.sent.len(), 3);
    assert_eq!(s.r.stream_state(7), Some(StreamState::Open));
    s.note("address type 2 in a connect: rst 8");
    let mut b = BytesMut::new();
    encode_raw(&mut b, 9, frame_type::CONNECT, &[2, 0, 0]).unwrap();
    s.feed(&b);
    assert!(
        matches!(&s.sent[3].body, Body::Rst(Some(i)) if i.code == RstCode::AddressTypeNotSupported)
    );
    insta::assert_snapshot!(s.report());
}

#[test]
fn finish_is_a_half_close_both_ways() {
    let mut s = Script::new(SessionConfig::default());
    s.note("s1: local finishes first, remote keeps sending, then finishes");
    s.at(1).feed(&frame(1, Body::Connect(addr())));
    let now = s.now;
    s.r.dial_succeeded(now, 1).unwrap();
    s.feed(&data(1, b"request"));
    s.feed(&frame(1, Body::Finish(Bytes::new())));
    assert_eq!(s.r.stream_state(1), Some(StreamState::HalfClosedRemote));
    let now = s.now;
    assert_eq!(
        s.r.recv(now, 1).unwrap(),
        Recv::Data(Bytes::from_static(b"request"))
    );
    assert_eq!(s.r.recv(now, 1).unwrap(), Recv::Eof);
    s.r.send(now, 1, b"part1").unwrap();
    s.r.send(now, 1, b"part2").unwrap();
    s.r.finish(now, 1).unwrap();
    s.collect();
    assert_eq!(s.r.stream_end(1), Some(End::Closed));
    s.note("s3: remote finishes first, local keeps sending, then finishes");
    s.at(2).feed(&frame(3, Body::Connect(addr())));
    let now = s.now;
    s.r.dial_succeeded(now, 3).unwrap();
    s.r.finish(now, 3).unwrap();
    assert_eq!(s.r.stream_state(3), Some(StreamState::HalfClosedLocal));
    assert!(matches!(
        s.r.send(now, 3, b"no"),
        Err(StreamError::State {
            state: StreamState::HalfClosedLocal,
            ..
        })
    ));
    s.collect();
    s.feed(&data(3, b"more from local"));
    s.feed(&frame(3, Body::Finish(Bytes::new())));
    assert_eq!(
        s.r.stream_state(3),
        Some(StreamState::Closed),
        "unread data keeps it"
    );
    let now = s.now;
    assert_eq!(
        s.r.recv(now, 3).unwrap(),
        Recv::Data(Bytes::from_static(b"more from local"))
    );
    assert_eq!(s.r.recv(now, 3).unwrap(), Recv::Eof);
    assert_eq!(s.r.stream_end(3), Some(End::Closed));
    s.note("s5: data after the peer's finish breaks the stream (rst 1)");
    s.at(3).feed(&frame(5, Body::Connect(addr())));
    s.feed(&frame(5, Body::Finish(Bytes::new())));
    s.feed(&data(5, b"oops"));
    let bodies: Vec<Body> = s.sent.iter().map(|f| f.body.clone()).collect();
    assert_eq!(
        bodies,
        [
            Body::Data(Bytes::from_static(b"part1")),
            Body::Data(Bytes::from_static(b"part2")),
            Body::Finish(Bytes::new()),
            Body::Finish(Bytes::new()),
            Body::Rst(Some(RstInfo::with_description(
                RstCode::General,
                "data after finish"
            ))),
        ]
    );
    insta::assert_snapshot!(s.report());
}

#[test]
fn close_then_late_frames_are_ignored() {
    let mut s = Script::new(SessionConfig::default());
    s.at(1).feed(&frame(1, Body::Connect(addr())));
    let now = s.now;
    s.r.dial_succeeded(now, 1).unwrap();
    s.feed(&data(1, b"last words"));
    s.note("peer closes s1 with unread data");
    s.feed(&frame(1, Body::Close(Bytes::new())));
    assert_eq!(s.r.stream_state(1), Some(StreamState::Closed));
    s.note("late frames for s1");
    s.at(2);
    s.feed(&data(1, b"late"));
    s.feed(&frame(1, Body::Finish(Bytes::new())));
    s.feed(&frame(1, Body::Connect(addr())));
    s.feed(&frame(1, Body::Rst(None)));
    assert!(s.sent.is_empty(), "nothing answers frames after close");
    let now = s.now;
    assert_eq!(
        s.r.recv(now, 1).unwrap(),
        Recv::Data(Bytes::from_static(b"last words")),
        "data before the close is still delivered, late data is not"
    );
    assert_eq!(s.r.recv(now, 1).unwrap(), Recv::Eof);
    assert_eq!(s.r.send(now, 1, b"x"), Err(StreamError::Ended(1)));
    s.note("we close s3; then rst and data for s3 arrive");
    s.feed(&frame(3, Body::Connect(addr())));
    let now = s.now;
    s.r.dial_succeeded(now, 3).unwrap();
    s.r.close(now, 3).unwrap();
    s.collect();
    s.feed(&frame(3, Body::Rst(Some(RstInfo::new(RstCode::DstReset)))));
    s.feed(&data(3, b"late"));
    assert_eq!(s.sent, [Frame::new(3, Body::Close(Bytes::new()))]);
    assert_eq!(s.r.stream_end(3), Some(End::Closed));
    s.note("peer resets s5; later frames ignored");
    s.feed(&frame(5, Body::Connect(addr())));
    s.feed(&frame(
        5,
        Body::Rst(Some(RstInfo::with_description(
            RstCode::Other(42),
            "custom",
        ))),
    ));
    s.feed(&data(5, b"late"));
    assert!(matches!(
        s.r.stream_end(5),
        Some(End::Reset(ResetCause::Peer(Some(RstInfo {
            code: RstCode::Other(42),
            ..
        }))))
    ));
    assert_eq!(s.sent.len(), 1);
    let ignored = s.trace.render().matches("ignored").count();
    assert_eq!(
        ignored, 7,
        "seven late frames (4 on s1, 2 on s3, 1 on s5) recorded as ignored"
    );
    insta::assert_snapshot!(s.report());
}

#[test]
fn bad_len_is_a_protocol_error() {
    for (name, bad) in [("short", [0u8, 3]), ("long", 65508u16.to_be_bytes())] {
        let mut s = Script::new(SessionConfig::default());
        s.at(1).feed(&frame(1, Body::Connect(addr())));
        s.note(&format!("frame with len {}", u16::from_be_bytes(bad)));
        let mut b = bad.to_vec();
        b.extend_from_slice(&[0, 0, 0, 1, 0, 1, 2, 3]);
        let n = s.feed(&b);
        assert_eq!(n, b.len(), "input after the failure is discarded");
        assert_eq!(s.r.state(), ConnState::Closed);
        let want = if name == "short" {
            FrameError::LenTooShort(3)
        } else {
            FrameError::LenTooLong(65508)
        };
        let ev = logged_events(&s);
        assert!(
            ev.iter().any(|l| l.contains("Reset { stream_id: 1")),
            "{ev:?}"
        );
        assert_eq!(
            ev.last().unwrap(),
            &format!(
                "  event: {:?}",
                Event::ConnectionClosed {
                    error: Some(ProtocolError::Frame(want))
                }
            )
        );
        assert!(s.sent.is_empty(), "pong sends nothing on a protocol error");
        assert_eq!(
            s.r.send(s.now, 1, b"x"),
            Err(StreamError::Connection(ConnState::Closed))
        );
        assert!(matches!(
            s.r.stream_end(1),
            Some(End::Reset(ResetCause::Connection(r))) if r.starts_with("protocol error: frame len")
        ));
        insta::assert_snapshot!(format!("bad_len_{name}"), s.report());
    }
}

#[test]
fn full_buffer_holds_input_until_read() {
    let cfg = SessionConfig {
        stream_rx_cap: 10,
        ..SessionConfig::default()
    };
    let mut s = Script::new(cfg);
    s.at(1).feed(&frame(1, Body::Connect(addr())));
    s.feed(&frame(3, Body::Connect(addr())));
    s.note("s1 gets 8 bytes, then 8 more (over the cap of 10), then s3 data");
    let mut b = data(1, b"aaaaaaaa");
    let second = data(1, b"bbbbbbbb");
    b.extend_from_slice(&second);
    let third = data(3, b"c");
    b.extend_from_slice(&third);
    let n = s.feed(&b);
    assert_eq!(n, 15, "only the first frame is taken");
    assert_eq!(s.r.input_blocked(), Some(Blocked::StreamFull(1)));
    assert_eq!(s.r.buffered(1), Some(8));
    assert_eq!(
        s.r.recv(s.now, 3).unwrap(),
        Recv::Pending,
        "s3's frame waits behind"
    );
    s.note("the application reads s1; the rest is fed again");
    let now = s.now;
    assert_eq!(
        s.r.recv(now, 1).unwrap(),
        Recv::Data(Bytes::from_static(b"aaaaaaaa"))
    );
    let rest = b[n..].to_vec();
    assert_eq!(s.feed(&rest), rest.len());
    assert_eq!(s.r.input_blocked(), None);
    let now = s.now;
    assert_eq!(
        s.r.recv(now, 1).unwrap(),
        Recv::Data(Bytes::from_static(b"bbbbbbbb"))
    );
    assert_eq!(
        s.r.recv(now, 3).unwrap(),
        Recv::Data(Bytes::from_static(b"c"))
    );
    s.note("held frame inside the machine (fed in pieces) is retried by recv");
    s.feed(&data(1, b"dddddddd"));
    let e = data(1, b"eeeeeeee");
    assert_eq!(s.feed_piece(&e[..3]), 3);
    assert_eq!(
        s.feed_piece(&e[3..]),
        12,
        "completed frame taken, then held inside"
    );
    assert_eq!(s.r.input_blocked(), Some(Blocked::StreamFull(1)));
    let now = s.now;
    assert_eq!(
        s.r.recv(now, 1).unwrap(),
        Recv::Data(Bytes::from_static(b"dddddddd"))
    );
    assert_eq!(s.r.input_blocked(), None);
    s.collect();
    assert_eq!(
        s.r.recv(now, 1).unwrap(),
        Recv::Data(Bytes::from_static(b"eeeeeeee"))
    );
    assert!(s.sent.is_empty(), "no data lost, nothing reset");
    insta::assert_snapshot!(s.report());
}

#[test]
fn header_rejected_and_bad_version() {
    let trace = Trace::recording();
    let mut r = Session::remote(SessionConfig::default(), trace.clone(), "pong[remote]");
    let mut h = BytesMut::new();
    ConnHeader { client_id: [9; 16] }.encode(&mut h);
    h.extend_from_slice(&frame(1, Body::Connect(addr())));
    assert_eq!(
        r.handle_input(ms(1), &h),
        CONN_HEADER_LEN,
        "frames wait for approval"
    );
    assert_eq!(r.input_blocked(), Some(Blocked::AwaitingApproval));
    assert_eq!(
        r.poll_event(),
        Some(Event::ClientHello { client_id: [9; 16] })
    );
    r.reject_client(ms(1)).unwrap();
    assert_eq!(r.state(), ConnState::Closed);
    assert_eq!(
        r.poll_event(),
        Some(Event::ConnectionClosed { error: None })
    );
    assert!(
        r.poll_transmit().is_none(),
        "a rejected client gets no answer"
    );

    let mut r2 = Session::remote(SessionConfig::default(), trace.clone(), "pong[remote2]");
    assert_eq!(r2.handle_input(ms(2), &[1, 2, 3]), 3);
    assert_eq!(
        r2.poll_event(),
        Some(Event::ConnectionClosed {
            error: Some(ProtocolError::Frame(FrameError::BadVersion(1)))
        })
    );
    insta::assert_snapshot!(trace.render());
}

#[test]
fn local_refuses_streams_and_sees_peer_rst() {
    let trace = Trace::recording();
    let mut l = Session::local(
        SessionConfig::default(),
        CLIENT,
        trace.clone(),
        "pong[local]",
    );
    let _ = l.poll_transmit();
    let s1 = l.open_connect(ms(1), &addr()).unwrap();
    l.send(ms(1), s1, b"hello").unwrap();
    let _ = l.poll_transmit();
    // The remote opens an even stream: local accepts none.
    let b = frame(2, Body::Connect(addr()));
    assert_eq!(l.handle_input(ms(2), &b), b.len());
    let out = decode_all(&l.poll_transmit().unwrap());
    assert_eq!(
        out,
        [Frame::new(
            2,
            Body::Rst(Some(RstInfo::with_description(
                RstCode::CommandNotSupported,
                "local accepts no streams"
            )))
        )]
    );
    // The remote resets s1 with a host-unreachable code.
    let b = frame(1, Body::Rst(Some(RstInfo::new(RstCode::HostUnreachable))));
    l.handle_input(ms(3), &b);
    assert_eq!(
        l.poll_event(),
        Some(Event::Reset {
            stream_id: 1,
            cause: ResetCause::Peer(Some(RstInfo::new(RstCode::HostUnreachable)))
        })
    );
    assert!(matches!(
        l.send(ms(3), 1, b"x"),
        Err(StreamError::Reset { .. })
    ));
    // Carrier closes mid-frame: a truncation error.
    let s3 = l.open_connect(ms(4), &addr()).unwrap();
    l.handle_input(ms(4), &[0, 20, 0]);
    l.handle_carrier_closed(ms(5));
    let ev: Vec<Event> = std::iter::from_fn(|| l.poll_event()).collect();
    assert_eq!(
        ev,
        [
            Event::Reset {
                stream_id: s3,
                cause: ResetCause::Connection(
                    "protocol error: carrier closed inside a frame (3 bytes of it received)".into()
                )
            },
            Event::ConnectionClosed {
                error: Some(ProtocolError::Truncated { have: 3 })
            }
        ]
    );
    insta::assert_snapshot!(trace.render());
}

#[test]
fn calls_of_the_other_side_fail_with_wrong_side_and_change_nothing() {
    let trace = Trace::recording();
    let mut l = Session::local(
        SessionConfig::default(),
        CLIENT,
        trace.clone(),
        "pong[local]",
    );
    let mut r = Session::remote(SessionConfig::default(), trace.clone(), "pong[remote]");
    assert_eq!((l.side(), r.side()), (Side::Local, Side::Remote));
    let wrong = |call, side| StreamError::WrongSide { call, side };
    assert_eq!(
        r.open_connect(ms(1), &addr()),
        Err(wrong("open_connect", Side::Remote))
    );
    assert_eq!(
        r.open_relay(ms(1), &addr()),
        Err(wrong("open_relay", Side::Remote))
    );
    assert_eq!(
        l.accept_client(ms(1)),
        Err(wrong("accept_client", Side::Local))
    );
    assert_eq!(
        l.reject_client(ms(1)),
        Err(wrong("reject_client", Side::Local))
    );
    let s1 = l.open_connect(ms(1), &addr()).unwrap();
    assert_eq!(
        l.dial_succeeded(ms(1), s1),
        Err(wrong("dial_succeeded", Side::Local))
    );
    assert_eq!(
        l.dial_failed(ms(1), s1, &DialError::Refused),
        Err(wrong("dial_failed", Side::Local))
    );
    assert_eq!(
        wrong("open_connect", Side::Remote).to_string(),
        "open_connect is not a remote-side call"
    );
    // Nothing moved: the local's stream is open, the remote still waits for a header.
    assert_eq!(l.stream_state(s1), Some(StreamState::Open));
    assert_eq!(l.state(), ConnState::Open);
    assert_eq!(r.state(), ConnState::AwaitHeader);
    assert!(r.poll_transmit().is_none() && r.poll_event().is_none());
}
