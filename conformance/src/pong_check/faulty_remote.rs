//! A pong remote with pong-go's known faults (`shared/protocols/pong.md`), otherwise
//! correct. It exists to show that the checker finds those faults: run it with
//! `tunnelbed check pong-go-mock`, point `tunnelbed check pong` at it, and the cases for
//! the faults FAIL with what was seen. It is a test fixture for loopback use, not a
//! proxy: its queues are unbounded and it trusts the peer to be the checker.
//!
//! The faults:
//! - data frames of 1..=30 bytes from local are dropped, and so are reads of 1..=30
//!   bytes from a destination (TCP or UDP);
//! - a finish from local ends the whole stream (close sent, destination dropped);
//! - len < 7 is not rejected (read as a frame without payload);
//! - connect/relay payloads over 128 bytes are dropped silently;
//! - an rst with a description over 7 bytes kills the connection;
//! - rst payloads carry a code and no description.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tunnelbed_pong::wire::{encode_raw, frame_type as ft, Address, MAX_FRAME_LEN};

/// The cases the checker must FAIL against this remote (and only these; `PONG-RST-DESC`,
/// a SHOULD, is a WARN, or a FAIL under `--strict`).
pub const EXPECTED_FAILS: [&str; 7] = [
    "PONG-DATA-SMALL-UP",
    "PONG-DATA-SMALL-DOWN",
    "PONG-FINISH-HALF-CLOSE",
    "PONG-RST-LONG-DESC",
    "PONG-CONNECT-LONG-DOMAIN",
    "PONG-FRAME-LEN-SHORT",
    "PONG-RELAY-DATAGRAMS",
];

/// What a stream task of the mock gets from the connection.
enum Up {
    Data(Vec<u8>),
    /// pong-go's fault: a finish from local ends the whole stream.
    FinishEndsAll,
}

fn frame_bytes(sid: u32, kind: u8, p: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    encode_raw(&mut b, sid, kind, p).expect("mock frames fit");
    b.freeze()
}

/// Accepts carriers (plain TCP) on `lsn` forever; `allowed` is the one client id taken.
pub async fn serve(lsn: TcpListener, allowed: [u8; 16]) {
    loop {
        let Ok((s, _)) = lsn.accept().await else {
            // Out of descriptors or the like: try again soon, without spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(mock_conn(s, allowed));
    }
}

async fn mock_conn(s: TcpStream, allowed: [u8; 16]) {
    let (mut rd, mut wr) = s.into_split();
    let mut hdr = [0u8; 17];
    match tokio::time::timeout(Duration::from_secs(10), rd.read_exact(&mut hdr)).await {
        Ok(Ok(_)) if hdr[0] == 0 && hdr[1..] == allowed => {}
        _ => return, // closed without a byte
    }
    let (out, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut streams: HashMap<u32, mpsc::UnboundedSender<Up>> = HashMap::new();
    loop {
        let mut h = [0u8; 7];
        if rd.read_exact(&mut h).await.is_err() {
            break;
        }
        let len = u16::from_be_bytes([h[0], h[1]]) as usize;
        let sid = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
        let kind = h[6];
        if len > MAX_FRAME_LEN {
            break;
        }
        // Fault: len < 7 is taken as a frame without payload.
        let mut p = vec![0u8; len.saturating_sub(7)];
        if rd.read_exact(&mut p).await.is_err() {
            break;
        }
        let live = streams.get(&sid).is_some_and(|t| !t.is_closed());
        match kind {
            ft::CONNECT | ft::RELAY => {
                if live {
                    streams.remove(&sid);
                    let _ = out.send(frame_bytes(sid, ft::RST, &[9]));
                    continue;
                }
                if p.len() > 128 {
                    continue; // fault: dropped silently
                }
                let Ok(addr) = Address::decode_exact(&p) else {
                    let _ = out.send(frame_bytes(sid, ft::RST, &[8]));
                    continue;
                };
                let (tx, rx) = mpsc::unbounded_channel();
                streams.insert(sid, tx);
                tokio::spawn(mock_stream(sid, kind, addr, rx, out.clone()));
            }
            ft::DATA => {
                if (1..=30).contains(&p.len()) {
                    continue; // fault: small frames dropped
                }
                if let Some(t) = streams.get(&sid) {
                    let _ = t.send(Up::Data(p));
                }
            }
            ft::FINISH => {
                if let Some(t) = streams.get(&sid) {
                    let _ = t.send(Up::FinishEndsAll);
                }
            }
            ft::CLOSE => {
                streams.remove(&sid);
            }
            ft::RST => {
                if p.len() > 8 {
                    break; // fault: a description over 7 bytes kills the connection
                }
                streams.remove(&sid);
            }
            _ => {
                if live {
                    streams.remove(&sid);
                    let _ = out.send(frame_bytes(sid, ft::RST, &[7]));
                }
            }
        }
    }
    writer.abort();
}

async fn mock_stream(
    sid: u32,
    kind: u8,
    addr: Address,
    mut rx: mpsc::UnboundedReceiver<Up>,
    out: mpsc::UnboundedSender<Bytes>,
) {
    let send = |k: u8, p: &[u8]| {
        let _ = out.send(frame_bytes(sid, k, p));
    };
    let target: SocketAddr = match &addr {
        Address::Ip(a) => *a,
        Address::Domain(h, port) => match tokio::net::lookup_host((h.as_str(), *port)).await {
            Ok(mut it) => match it.next() {
                Some(a) => a,
                None => return send(ft::RST, &[4]),
            },
            Err(_) => return send(ft::RST, &[4]),
        },
    };
    if kind == ft::RELAY {
        let Ok(sock) = UdpSocket::bind(("127.0.0.1", 0)).await else {
            return send(ft::RST, &[1]);
        };
        let mut buf = vec![0u8; 65_535];
        loop {
            tokio::select! {
                u = rx.recv() => match u {
                    Some(Up::Data(p)) => {
                        let _ = sock.send_to(&p, target).await;
                    }
                    _ => return,
                },
                r = sock.recv_from(&mut buf) => {
                    if let Ok((n, _)) = r {
                        if !(1..=30).contains(&n) {
                            send(ft::DATA, &buf[..n]);
                        }
                    }
                }
            }
        }
    }
    let dst = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return send(ft::RST, &[5]),
        Err(_) => return send(ft::RST, &[1]),
    };
    let _ = dst.set_nodelay(true);
    let (mut drd, mut dwr) = dst.into_split();
    let down = async {
        let mut buf = vec![0u8; 8192];
        loop {
            match drd.read(&mut buf).await {
                Ok(0) => break send(ft::FINISH, &[]),
                Ok(n) if n <= 30 => {} // fault: small reads dropped
                Ok(n) => send(ft::DATA, &buf[..n]),
                Err(_) => break send(ft::RST, &[11]),
            }
        }
    };
    tokio::pin!(down);
    let mut down_done = false;
    loop {
        tokio::select! {
            _ = &mut down, if !down_done => down_done = true,
            u = rx.recv() => match u {
                Some(Up::Data(p)) => {
                    if dwr.write_all(&p).await.is_err() {
                        return send(ft::RST, &[11]);
                    }
                }
                Some(Up::FinishEndsAll) => return send(ft::CLOSE, &[]),
                None => return,
            },
        }
    }
}
