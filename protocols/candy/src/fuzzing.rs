//! Fuzz bodies. They live here, not in `fuzz/`, so that a stable `cargo test` replays
//! the committed corpora (`corpora/candy_*`) without nightly or libFuzzer; the cargo-fuzz
//! targets are one-line wrappers around them. Every run is bounded.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::BytesMut;
use tunnelbed_netio::iplink::echo::build_udp;
use tunnelbed_netio::Trace;

use crate::server::{Server, ServerConfig, ServerEvent};
use crate::wire::{Auth, Dhcp, Message, Vmac};

/// The password the server body uses (ops 5-7 make messages that pass its checks).
pub const FUZZ_PASSWORD: &[u8] = b"fuzz";

/// Decodes `data` as one message: never panics; what decodes re-encodes to bytes that
/// decode to the same message (and to the very same bytes, except DHCP, whose CIDR field
/// may carry anything after its NUL).
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        let mut b = BytesMut::new();
        m.encode(&mut b).expect("a decoded message re-encodes");
        assert_eq!(Message::decode(&b).as_ref(), Ok(&m));
        if !matches!(m, Message::Dhcp(_)) {
            assert_eq!(&b[..], data, "message does not round-trip");
        }
    }
}

const T0: u64 = 1_700_000_000;
const CONNS: u8 = 6;
const MAX_OPS: usize = 512;

fn ip(o: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, o)
}

/// Drives a server (pool 10.0.0.0/28, 4 clients, 2 KiB queues) with operations read from
/// `data` for up to six connections: connect, disconnect, raw message, time passing,
/// bytes written, and well-formed VMAC / AUTH / DHCP / FORWARD built from a few bytes
/// (so the fuzzer gets past the hashes). After every operation: the server never holds
/// more than its clients, every transmit goes to a connection it knows, no connection
/// has more queued than its bound, and every address maps to one open connection.
pub fn fuzz_server(data: &[u8]) {
    let cfg = ServerConfig {
        password: FUZZ_PASSWORD.to_vec(),
        pool: Some("10.0.0.0/28".parse().expect("a valid pool")),
        max_clients: 4,
        max_queued: 2048,
        max_message: 1600,
        ..ServerConfig::default()
    };
    let max_queued = cfg.max_queued;
    let Ok(mut s) = Server::new(cfg, Trace::disabled()) else {
        return;
    };
    let mut now = Duration::from_secs(T0);
    let mut open = [false; CONNS as usize];
    let mut it = data.iter().copied();
    let mut byte = move || it.next();
    for _ in 0..MAX_OPS {
        let Some(op) = byte() else { break };
        let c = byte().unwrap_or(0) % CONNS;
        let conn = u64::from(c);
        let ts = now.as_secs() as i64;
        match op % 9 {
            0 => {
                if !open[c as usize] {
                    open[c as usize] = true;
                    s.handle_connect(now, conn);
                }
            }
            1 => {
                open[c as usize] = false;
                s.handle_disconnect(now, conn);
            }
            2 => {
                let n = usize::from(byte().unwrap_or(0));
                let msg: Vec<u8> = (0..n).filter_map(|_| byte()).collect();
                s.handle_input(now, conn, &msg);
            }
            3 => {
                now += Duration::from_secs(u64::from(byte().unwrap_or(1)));
                s.handle_timeout(now);
            }
            4 => s.handle_written(conn, usize::from(byte().unwrap_or(0)) * 16),
            5 => {
                let m = Message::Auth(Auth::new(
                    FUZZ_PASSWORD,
                    ip(byte().unwrap_or(1)),
                    ts,
                    vec![],
                ));
                send(&mut s, now, conn, &m);
            }
            6 => {
                let v = [byte().unwrap_or(0); 16];
                send(
                    &mut s,
                    now,
                    conn,
                    &Message::Vmac(Vmac::new(FUZZ_PASSWORD, v, ts, vec![])),
                );
            }
            7 => {
                let want = format!("10.0.0.{}/28", byte().unwrap_or(0));
                send(
                    &mut s,
                    now,
                    conn,
                    &Message::Dhcp(Dhcp::new(FUZZ_PASSWORD, &want, ts, vec![])),
                );
            }
            _ => {
                let (src, dst) = (byte().unwrap_or(1), byte().unwrap_or(2));
                let len = usize::from(byte().unwrap_or(0)) * 4;
                if let Some(p) = build_udp(ip(src), 1, ip(dst), 2, 0, &vec![0x5a; len]) {
                    send(&mut s, now, conn, &Message::Forward(p));
                }
            }
        }
        while let Some(ServerEvent::Close(id, _)) = s.poll_event() {
            if let Some(o) = open.get_mut(id as usize) {
                *o = false;
            }
        }
        assert!(s.connections() <= 4, "more connections than allowed");
        while let Some(t) = s.poll_transmit() {
            assert!(
                (t.conn as usize) < open.len(),
                "transmit to unknown {}",
                t.conn
            );
        }
        for id in 0..u64::from(CONNS) {
            assert!(s.queued(id) <= max_queued, "queue bound broken");
        }
        for o in 0..=255u8 {
            if let Some(owner) = s.owner(ip(o)) {
                assert!(open[owner as usize], "{} mapped to closed {owner}", ip(o));
            }
        }
    }
}

fn send(s: &mut Server, now: Duration, conn: u64, m: &Message) {
    if let Ok(b) = m.to_bytes() {
        s.handle_input(now, conn, &b);
    }
}
