//! The session's uncopied paths give exactly what the copying ones give: `send_bytes`
//! against `send` (the bytes on the wire, the count taken under the output cap), and
//! `handle_input_bytes` against `handle_input` (the bytes each stream reads); and the
//! large payloads really are slices, not copies (a test that could not tell would pass
//! on the old code too).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tunnelbed_netio::Trace;
use tunnelbed_pong::session::{ZERO_COPY_MIN, ZERO_COPY_RECV_MIN};
use tunnelbed_pong::wire::{encode_raw, frame_type, ConnHeader, MAX_PAYLOAD};
use tunnelbed_pong::{Address, Frame, Recv, Session, SessionConfig};

const ID: [u8; 16] = *b"zero-copy-test!!";
const T: Duration = Duration::ZERO;

fn payload(n: usize) -> Bytes {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn local_with_stream(cfg: SessionConfig) -> (Session, u32) {
    let mut s = Session::local(cfg, ID, Trace::disabled(), "l");
    let sid = s
        .open_connect(T, &Address::Domain("example.org".into(), 80))
        .unwrap();
    (s, sid)
}

fn all_output(s: &mut Session, chunked: bool) -> Vec<u8> {
    if chunked {
        let mut v = Vec::new();
        let n = s.poll_transmit_chunks(&mut v);
        let joined: Vec<u8> = v.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(n, joined.len(), "poll_transmit_chunks counts what it gave");
        joined
    } else {
        s.poll_transmit().map(|b| b.to_vec()).unwrap_or_default()
    }
}

#[test]
fn send_bytes_writes_the_same_frames_as_send() {
    let sizes = [
        1,
        ZERO_COPY_MIN - 1,
        ZERO_COPY_MIN,
        32 * 1024,
        MAX_PAYLOAD,
        MAX_PAYLOAD + 1,
        MAX_PAYLOAD + ZERO_COPY_MIN - 1,
        3 * MAX_PAYLOAD + 17,
    ];
    for &n in &sizes {
        for chunked in [false, true] {
            let data = payload(n);
            let (mut a, sa) = local_with_stream(SessionConfig::default());
            let (mut b, sb) = local_with_stream(SessionConfig::default());
            assert_eq!(a.send(T, sa, &data).unwrap(), n);
            assert_eq!(b.send_bytes(T, sb, &data).unwrap(), n);
            // A small frame after the uncopied one keeps its place.
            a.finish(T, sa).unwrap();
            b.finish(T, sb).unwrap();
            assert_eq!(a.pending_output(), b.pending_output(), "size {n}");
            let wa = all_output(&mut a, false);
            let wb = all_output(&mut b, chunked);
            assert_eq!(wa, wb, "size {n}, chunked {chunked}");
            assert_eq!(b.pending_output(), 0);
            assert!(b.poll_transmit().is_none());
        }
    }
}

#[test]
fn send_bytes_takes_what_send_takes_under_the_output_cap() {
    let cfg = SessionConfig {
        max_output: 100_000,
        ..SessionConfig::default()
    };
    let data = payload(250_000);
    let (mut a, sa) = local_with_stream(cfg.clone());
    let (mut b, sb) = local_with_stream(cfg);
    let mut wa = Vec::new();
    let mut wb = Vec::new();
    let (mut ta, mut tb) = (0, 0);
    while ta < data.len() || tb < data.len() {
        let na = a.send(T, sa, &data[ta..]).unwrap_or(0);
        let nb = b.send_bytes(T, sb, &data.slice(tb..)).unwrap_or(0);
        assert_eq!(na, nb, "at {ta}");
        ta += na;
        tb += nb;
        wa.extend(all_output(&mut a, false));
        wb.extend(all_output(&mut b, true));
    }
    assert_eq!(wa, wb);
}

#[test]
fn send_bytes_queues_large_payloads_uncopied() {
    let data = payload(32 * 1024);
    let (mut s, sid) = local_with_stream(SessionConfig::default());
    s.send_bytes(T, sid, &data).unwrap();
    let mut v = Vec::new();
    s.poll_transmit_chunks(&mut v);
    assert!(
        v.iter()
            .any(|c| c.as_ptr() == data.as_ptr() && c.len() == data.len()),
        "the payload went out as the caller's own bytes"
    );
}

/// What a remote session gets before data: the header and a connect for stream 1.
fn prefix() -> Vec<u8> {
    let mut b = BytesMut::new();
    ConnHeader { client_id: ID }.encode(&mut b);
    Frame::new(
        1,
        tunnelbed_pong::Body::Connect(Address::Domain("example.org".into(), 80)),
    )
    .encode(&mut b)
    .unwrap();
    b.to_vec()
}

/// Data frames on stream 1 carrying `frames`.
fn data_frames(frames: &[Bytes]) -> Bytes {
    let mut b = BytesMut::new();
    for f in frames {
        encode_raw(&mut b, 1, frame_type::DATA, f).unwrap();
    }
    b.freeze()
}

fn answer_events(s: &mut Session) {
    while let Some(ev) = s.poll_event() {
        match ev {
            tunnelbed_pong::Event::ClientHello { .. } => s.accept_client(T).unwrap(),
            tunnelbed_pong::Event::Dial { stream_id, .. } => {
                s.dial_succeeded(T, stream_id).unwrap()
            }
            _ => {}
        }
    }
}

/// Feeds the prefix, then `data` in `step`-byte reads (each read stream 1 drains);
/// returns what stream 1 read and how many of its chunks lay inside `data`.
fn run_remote(data: &Bytes, step: usize, by_bytes: bool) -> (Vec<u8>, usize) {
    let mut s = Session::remote(SessionConfig::default(), Trace::disabled(), "r");
    let pre = prefix();
    let mut used = 0;
    while used < pre.len() {
        let n = s.handle_input(T, &pre[used..]);
        answer_events(&mut s);
        assert!(n > 0 || used == 0, "prefix stuck at {used}");
        used += n;
    }
    answer_events(&mut s);
    let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    let (mut got, mut inside) = (Vec::new(), 0);
    let mut at = 0;
    while at < data.len() {
        let chunk = data.slice(at..(at + step).min(data.len()));
        at += chunk.len();
        let n = if by_bytes {
            s.handle_input_bytes(T, &chunk)
        } else {
            s.handle_input(T, &chunk)
        };
        assert_eq!(n, chunk.len(), "nothing is held: every read is drained");
        while let Ok(Recv::Data(b)) = s.recv(T, 1) {
            inside += usize::from(range.contains(&(b.as_ptr() as usize)));
            got.extend_from_slice(&b);
        }
    }
    (got, inside)
}

#[test]
fn handle_input_bytes_delivers_what_handle_input_delivers() {
    let frames: Vec<Bytes> = [
        10,
        ZERO_COPY_RECV_MIN - 1,
        ZERO_COPY_RECV_MIN,
        32 * 1024,
        MAX_PAYLOAD,
        5,
    ]
    .iter()
    .map(|&n| payload(n))
    .collect();
    let want: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    let input = data_frames(&frames);
    for step in [1, 1000, 64 * 1024, input.len()] {
        let (copied, _) = run_remote(&input, step, false);
        let (sliced, _) = run_remote(&input, step, true);
        assert_eq!(copied, want, "handle_input, reads of {step}");
        assert_eq!(sliced, want, "handle_input_bytes, reads of {step}");
    }
}

#[test]
fn handle_input_bytes_hands_large_payloads_over_as_slices() {
    let frames = vec![
        payload(100),
        payload(32 * 1024),
        payload(ZERO_COPY_RECV_MIN),
    ];
    let input = data_frames(&frames);
    let (_, copied_inside) = run_remote(&input, input.len(), false);
    let (_, sliced_inside) = run_remote(&input, input.len(), true);
    assert_eq!(copied_inside, 0, "handle_input copies every payload");
    assert_eq!(
        sliced_inside, 2,
        "the two large payloads are slices of the input"
    );
}
