//! Fuzz bodies. They live here, not in `fuzz/`, so that a stable `cargo test` replays
//! the committed corpora (`corpora/vless_*`) without nightly or libFuzzer; the cargo-fuzz
//! targets are one-line wrappers around them. Every run is bounded.

use std::time::Duration;

use bytes::BytesMut;
use tunnelbed_netio::Trace;

use crate::server::{Decision, Event, ServerSession, ServerSessionConfig};
use crate::wire::{
    decode_udp_frame, encode_udp_frame, Addons, Request, Response, Umfurs, Version,
    MAX_REQUEST_LEN, MAX_UDP_PAYLOAD,
};

/// The user id the session body accepts (inputs that start `00 11*16` or `01 11*16` get
/// past authentication).
pub const FUZZ_USER: [u8; 16] = [0x11; 16];

/// Decodes `data` as a request (and a response and addons): never panics, and what
/// decodes re-encodes to the very bytes it came from, and decodes from any longer input
/// the same way; every prefix shorter than the header asks for more bytes.
pub fn fuzz_request_decode(data: &[u8]) {
    let _ = Response::decode(data, Version::V0);
    let _ = Addons::parse(data);
    if let Ok(Some((r, n))) = Request::decode(data) {
        assert!(n <= MAX_REQUEST_LEN && n <= data.len());
        let b = r.to_bytes().expect("a decoded request re-encodes");
        assert_eq!(&b[..], &data[..n], "request does not round-trip");
        for cut in 0..n {
            assert!(
                matches!(Request::decode(&data[..cut]), Ok(None)),
                "prefix of {cut} bytes is not incomplete"
            );
        }
        if let Ok(a) = Addons::parse(&r.addons) {
            assert_eq!(Addons::parse(&a.to_bytes()), Ok(a));
        }
    }
}

/// Decodes `data` as UMFURS messages and as command-2 frames, one after another: never
/// panics, and every message re-encodes to its bytes.
pub fn fuzz_umfurs_decode(data: &[u8]) {
    let max = data
        .first()
        .map_or(MAX_UDP_PAYLOAD, |&b| 1 + b as usize * 16);
    let mut rest = data;
    while let Ok(Some((m, n))) = Umfurs::decode(rest, max) {
        let mut b = BytesMut::new();
        m.encode(&mut b).expect("a decoded message re-encodes");
        assert_eq!(&b[..], &rest[..n]);
        rest = &rest[n..];
    }
    let mut rest = data;
    while let Ok(Some((p, n))) = decode_udp_frame(rest, max) {
        let mut b = BytesMut::new();
        encode_udp_frame(p, &mut b).expect("a decoded frame re-encodes");
        assert_eq!(&b[..], &rest[..n]);
        rest = &rest[n..];
    }
}

/// What a server-session run did, for corpus coverage checks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// A header was accepted.
    pub accepted: Option<String>,
    /// A header was rejected (reason).
    pub rejected: Option<String>,
    /// Datagrams split from the uplink.
    pub datagrams: usize,
    /// Bytes written back to the client.
    pub written: usize,
}

/// Feeds `data` to a v1 server machine in pieces whose sizes come from the input, then
/// an end of stream: never panics; a rejected connection writes nothing; at most one
/// decision; the machine is done after the end.
pub fn fuzz_server_session(data: &[u8]) {
    let _ = run_server_session(data);
}

/// [`fuzz_server_session`], returning what happened.
pub fn run_server_session(data: &[u8]) -> SessionSummary {
    let cfg = ServerSessionConfig {
        users: vec![FUZZ_USER],
        version: Version::V1,
        max_udp_payload: 2048,
        header_timeout: Duration::from_secs(10),
    };
    let mut s = ServerSession::new(Duration::ZERO, cfg, Trace::disabled(), "fuzz".into());
    let mut out = SessionSummary::default();
    let mut at = 0;
    let mut cut = 0usize;
    let mut t = 0u64;
    let mut decisions = 0;
    let mut step = |s: &mut ServerSession, out: &mut SessionSummary| {
        while let Some(e) = s.poll_event() {
            match e {
                Event::Accepted { decision, .. } => {
                    decisions += 1;
                    out.accepted = Some(match decision {
                        Decision::Relay(_) => "relay".into(),
                        Decision::Udp(_) => "udp".into(),
                        Decision::Crumfurs => "crumfurs".into(),
                    });
                }
                Event::Rejected { reason, .. } => {
                    decisions += 1;
                    out.rejected = Some(reason.to_string());
                }
                Event::Datagram(d) => {
                    assert!(d.len() <= 2048);
                    out.datagrams += 1;
                }
                Event::Data(_) | Event::Closed => {}
            }
        }
        while let Some(b) = s.poll_transmit() {
            out.written += b.len();
        }
        assert!(decisions <= 1, "more than one decision");
        if out.rejected.is_some() {
            assert_eq!(out.written, 0, "a rejected connection got bytes");
        }
    };
    while at < data.len() && t < 10_000 {
        cut = cut.wrapping_mul(31).wrapping_add(data[at] as usize);
        let end = (at + 1 + cut % 61).min(data.len());
        t += 1;
        s.handle_input(Duration::from_millis(t), &data[at..end]);
        at = end;
        step(&mut s, &mut out);
    }
    s.handle_eof(Duration::from_millis(t + 1));
    step(&mut s, &mut out);
    assert!(s.is_done(), "not done after the end of input");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Address, Command};

    #[test]
    fn bodies_run_on_simple_inputs() {
        let r = Request {
            version: Version::V1,
            uuid: FUZZ_USER,
            addons: vec![],
            command: Command::Udp,
            target: Some(Address::Domain("a.test".into(), 53)),
        };
        let mut b = r.to_bytes().unwrap().to_vec();
        b.extend_from_slice(&[0, 1, b'x', 0, 0]);
        fuzz_request_decode(&b);
        let s = run_server_session(&b);
        assert_eq!(s.accepted.as_deref(), Some("udp"));
        assert_eq!(s.datagrams, 2);
        fuzz_umfurs_decode(&[1, 1, 2, 3, 4, 0, 5, 0, 1, b'x']);
        let s = run_server_session(&[0; 40]);
        assert_eq!(s.rejected.as_deref(), Some("unknown user id"));
    }
}
