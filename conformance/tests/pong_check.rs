//! `tunnelbed check pong` against three remotes:
//!
//! 1. a mock written here with the raw codec that has pong-go's known faults
//!    (`shared/protocols/pong.md`): the checker must FAIL exactly the cases for those
//!    faults and pass the rest, which shows it can fail and says why;
//! 2. remotes that never answer or cannot be reached: every case ends within its limit;
//! 3. our own remote (`tunnelbed_pong::remote::serve`) over tcp, tls, ws and wss: every
//!    case passes, SHOULD cases included (`strict`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tunnelbed_carrier::tls::{ClientTls, ServerTls};
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_conformance::pong_check::{self, junit, CheckConfig, Report, Status};
use tunnelbed_netio::{Net, TokioNet, Trace};
use tunnelbed_pong::remote::RemoteConfig;
use tunnelbed_pong::wire::{encode_raw, frame_type as ft, Address, MAX_FRAME_LEN};

const CLIENT_ID: [u8; 16] = [
    0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00,
];

fn config(url: &str, tls: ClientTls, wait: Duration) -> CheckConfig {
    let mut c = CheckConfig::new(url.parse().unwrap(), tls, CLIENT_ID);
    c.wait = wait;
    c
}

fn show(r: &Report) -> String {
    r.table(60)
}

// ---------------------------------------------------------------------------------------
// The faulty mock (pong-go's faults)

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

/// A pong remote with pong-go's known faults, otherwise correct:
/// - data frames of 1..=30 bytes from local are dropped, and so are reads of 1..=30
///   bytes from a destination (TCP or UDP);
/// - a finish from local ends the whole stream (close sent, destination dropped);
/// - len < 7 is not rejected (read as a frame without payload);
/// - connect/relay payloads over 128 bytes are dropped silently;
/// - an rst with a description over 7 bytes kills the connection.
///
/// rst payloads carry a code and no description, as pong-go's do.
async fn mock_remote(lsn: TcpListener, allowed: [u8; 16]) {
    loop {
        let Ok((s, _)) = lsn.accept().await else {
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

async fn start_mock() -> String {
    let lsn = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("tcp://{}", lsn.local_addr().unwrap());
    tokio::spawn(mock_remote(lsn, CLIENT_ID));
    url
}

/// The faults of pong-go that the checker must find, and nothing else.
const MOCK_FAILS: [&str; 7] = [
    "PONG-DATA-SMALL-UP",
    "PONG-DATA-SMALL-DOWN",
    "PONG-FINISH-HALF-CLOSE",
    "PONG-RST-LONG-DESC",
    "PONG-CONNECT-LONG-DOMAIN",
    "PONG-FRAME-LEN-SHORT",
    "PONG-RELAY-DATAGRAMS",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_mock_fails_exactly_the_pong_go_faults() {
    let url = start_mock().await;
    let cfg = config(&url, ClientTls::insecure(), Duration::from_secs(2));
    let r = pong_check::run(cfg).await;
    let table = show(&r);
    println!("{table}");
    assert_eq!(r.ids(Status::Fail), MOCK_FAILS, "\n{table}");
    // pong-go's rst has a code but no description: a SHOULD case, so WARN.
    assert_eq!(r.ids(Status::Warn), ["PONG-RST-DESC"], "\n{table}");
    assert_eq!(r.count(Status::NotApplicable), 0, "\n{table}");
    assert_eq!(
        r.count(Status::Pass),
        r.cases.len() - MOCK_FAILS.len() - 1,
        "\n{table}"
    );
    assert!(!r.passed());
    // The details say what went wrong.
    let detail = |id: &str| {
        r.cases
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.detail.clone())
            .unwrap_or_default()
    };
    assert!(
        detail("PONG-DATA-SMALL-UP").contains("were lost"),
        "\n{table}"
    );
    assert!(
        detail("PONG-FRAME-LEN-SHORT").contains("not rejected"),
        "\n{table}"
    );
    assert!(
        detail("PONG-CONNECT-LONG-DOMAIN").contains("no answer within 2s"),
        "\n{table}"
    );
    assert!(
        detail("PONG-FINISH-HALF-CLOSE").contains("without the destination's reply"),
        "\n{table}"
    );
    assert!(
        detail("PONG-RST-LONG-DESC").contains("connection closed by the remote"),
        "\n{table}"
    );

    // Under --strict the missing description counts too; JUnit lists every case.
    let mut cfg = config(&url, ClientTls::insecure(), Duration::from_secs(2));
    cfg.strict = true;
    cfg.cases = pong_check::select(&["PONG-RST".into(), "PONG-DIAL".into()]).unwrap();
    let r = pong_check::run(cfg).await;
    let table = show(&r);
    println!("{table}");
    assert_eq!(
        r.ids(Status::Fail),
        ["PONG-RST-LONG-DESC", "PONG-RST-DESC"],
        "\n{table}"
    );
    let x = junit::to_junit(&r);
    assert_eq!(x.matches("<testcase ").count(), r.cases.len());
    assert_eq!(x.matches("<failure ").count(), 2);
}

// ---------------------------------------------------------------------------------------
// Remotes that never answer, or are not there

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_remote_fails_in_bounded_time() {
    // Accepts, reads everything, never writes, never closes.
    let lsn = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("tcp://{}", lsn.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = lsn.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut b = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 {
                        // Keep the socket until the checker is gone.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        break;
                    }
                }
            });
        }
    });
    let wait = Duration::from_millis(500);
    let cfg = config(&url, ClientTls::insecure(), wait);
    let n = pong_check::select(&[]).unwrap().len() as u32;
    let t0 = Instant::now();
    let r = pong_check::run(cfg).await;
    let table = show(&r);
    println!("{table}");
    // Each case waits at most a few times `wait`.
    assert!(t0.elapsed() < wait * 4 * n, "{:?}\n{table}", t0.elapsed());
    assert!(!r.passed());
    let c = &r.cases[0];
    assert_eq!(
        (c.id, c.status),
        ("PONG-HDR-ACCEPT", Status::Fail),
        "{table}"
    );
    assert!(c.detail.contains("no answer within 500ms"), "{table}");
    // A SHOULD case never FAILs without --strict.
    assert!(r
        .cases
        .iter()
        .filter(|c| c.level == pong_check::Level::Should)
        .all(|c| c.status != Status::Fail));
}

#[tokio::test]
async fn an_unreachable_remote_fails_every_case_at_once() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config(
        &format!("tcp://127.0.0.1:{port}"),
        ClientTls::insecure(),
        Duration::from_secs(5),
    );
    let t0 = Instant::now();
    let r = pong_check::run(cfg).await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    // Every MUST case fails; a SHOULD case is a WARN without --strict.
    let should = r
        .cases
        .iter()
        .filter(|c| c.level == pong_check::Level::Should)
        .count();
    assert!(should > 0);
    assert_eq!(r.count(Status::Fail), r.cases.len() - should);
    assert_eq!(r.count(Status::Warn), should);
    assert!(r.cases[0].detail.contains("carrier to tcp://127.0.0.1"));
}

// ---------------------------------------------------------------------------------------
// Our remote

async fn start_ours(kind: CarrierKind) -> (String, ClientTls) {
    let lsn = TokioNet
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = tunnelbed_netio::TcpListen::local_addr(&lsn).unwrap();
    let (tls, client_tls) = match kind {
        CarrierKind::Tls | CarrierKind::Wss => {
            let s = ServerTls::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
            let c = ClientTls::trusting_der(&s.cert_der).unwrap();
            (Some(Arc::new(s)), c)
        }
        _ => (None, ClientTls::insecure()),
    };
    let cfg = RemoteConfig {
        allowed: vec![CLIENT_ID],
        ..RemoteConfig::default()
    };
    tokio::spawn(tunnelbed_pong::remote::serve(
        TokioNet,
        lsn,
        kind,
        tls,
        Arc::new(cfg),
        Trace::disabled(),
        "remote".into(),
    ));
    let scheme = match kind {
        CarrierKind::Tcp => "tcp",
        CarrierKind::Tls => "tls",
        CarrierKind::Ws => "ws",
        CarrierKind::Wss => "wss",
    };
    let host = if kind == CarrierKind::Tcp || kind == CarrierKind::Ws {
        addr.ip().to_string()
    } else {
        "localhost".into()
    };
    let url: CarrierUrl = format!("{scheme}://{host}:{}/pong", addr.port())
        .parse()
        .unwrap();
    (url.to_string(), client_tls)
}

async fn check_ours(kind: CarrierKind, cases: &[&str]) {
    let (url, tls) = start_ours(kind).await;
    let mut cfg = config(&url, tls, Duration::from_secs(5));
    cfg.strict = true;
    cfg.cases =
        pong_check::select(&cases.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let r = pong_check::run(cfg).await;
    let table = show(&r);
    println!("{table}");
    assert!(r.passed(), "\n{table}");
    assert_eq!(r.count(Status::Pass), r.cases.len(), "\n{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_remote_passes_every_case_over_tcp() {
    check_ours(CarrierKind::Tcp, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_remote_passes_over_tls_ws_and_wss() {
    let some = [
        "PONG-HDR",
        "PONG-FINISH",
        "PONG-DATA-SMALL-UP",
        "PONG-DATA-MAX",
        "PONG-FRAME",
        "PONG-RST-LONG-DESC",
        "PONG-STREAMS",
    ];
    check_ours(CarrierKind::Tls, &some).await;
    check_ours(CarrierKind::Ws, &some).await;
    check_ours(CarrierKind::Wss, &some).await;
}
