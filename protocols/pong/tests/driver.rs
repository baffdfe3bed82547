//! The async driver over an in-memory carrier: bulk both ways on many streams, half
//! close, dial failures, relay datagrams, client-id rejection, slow readers.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_netio::Trace;
use tunnelbed_pong::driver::{
    spawn_local, spawn_remote, ConnEnd, DriverConfig, Incoming, Opened, PongConn,
};
use tunnelbed_pong::{Address, DialError};

const ID: [u8; 16] = *b"0123456789abcdef";

fn pattern(seed: u32, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed) as u8)
        .collect()
}

fn addr(port: u16) -> Address {
    Address::Ip(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A remote whose "dials" are handled in-process: port 1 refuses, port 2 echoes
/// datagrams, others echo bytes and, after the local's finish, send `pattern(port, 50k)`.
async fn pair(cfg: DriverConfig) -> (PongConn, tokio::task::JoinHandle<()>) {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let local = spawn_local(a, ID, cfg.clone(), Trace::disabled(), "l".into());
    let mut remote = spawn_remote(b, cfg, Trace::disabled(), "r".into());
    let hello = remote.hello.take().unwrap();
    let srv = tokio::spawn(async move {
        let id = hello.await.unwrap();
        remote.approve(id == ID);
        while let Some(inc) = remote.incoming.recv().await {
            tokio::spawn(serve(inc));
        }
    });
    (local, srv)
}

async fn serve(inc: Incoming) {
    let port = match inc.addr {
        Address::Ip(a) => a.port(),
        _ => 0,
    };
    if port == 1 {
        inc.dialed(Err(DialError::Refused));
        return;
    }
    inc.dialed(Ok(()));
    match inc.stream {
        Opened::Tcp(s) => {
            let (mut rd, mut wr) = tokio::io::split(s);
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            wr.write_all(&got).await.unwrap();
            wr.write_all(&pattern(port as u32, 50_000)).await.unwrap();
            wr.shutdown().await.unwrap();
        }
        Opened::Udp(mut d) => {
            while let Ok(Some(b)) = d.recv().await {
                d.send(b).await.unwrap();
            }
        }
    }
}

/// Many streams at once, each writing before reading the answer, then half-closing: the
/// remote reads to the end (our finish), answers after it: the half close works both
/// ways and every byte arrives.
#[tokio::test]
async fn many_streams_half_close_and_answer_intact() {
    let (local, _srv) = pair(DriverConfig::default()).await;
    let local = std::sync::Arc::new(local);
    let mut tasks = Vec::new();
    for i in 0..40u16 {
        let local = local.clone();
        tasks.push(tokio::spawn(async move {
            let port = 1000 + i;
            let s = local.open_connect(addr(port)).await.unwrap();
            let (mut rd, mut wr) = tokio::io::split(s);
            let data = pattern(i as u32, 100_000 + i as usize * 997);
            let send = async {
                wr.write_all(&data).await.unwrap();
                wr.shutdown().await.unwrap();
            };
            let recv = async {
                let mut got = Vec::new();
                rd.read_to_end(&mut got).await.unwrap();
                got
            };
            let ((), got) = tokio::join!(send, recv);
            let mut want = data.clone();
            want.extend(pattern(port as u32, 50_000));
            assert_eq!(got.len(), want.len());
            assert!(got == want, "stream {i} corrupted");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every stream is forgotten once both sides are done.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(local.stats.live_streams(), 0);
    assert_eq!(local.stats.opened_streams(), 40);
}

/// A refused dial comes back as a reset carrying the seed's code 5.
#[tokio::test]
async fn dial_failure_is_a_reset_with_the_code() {
    let (local, _srv) = pair(DriverConfig::default()).await;
    let mut s = local.open_connect(addr(1)).await.unwrap();
    // Written with no open wait: taken, or refused if the reset already arrived.
    if let Err(e) = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await {
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }
    let mut got = Vec::new();
    let e = s.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert!(e.to_string().contains("code 5"), "{e}");
}

/// Relay streams carry datagrams one per frame, including an empty one and a 65 500-byte
/// one, in order and intact.
#[tokio::test]
async fn relay_datagrams_round_trip() {
    let (local, _srv) = pair(DriverConfig::default()).await;
    let mut d = local.open_relay(addr(2)).await.unwrap();
    let sizes = [0usize, 1, 7, 1200, 65_500];
    for (i, n) in sizes.iter().enumerate() {
        d.send(Bytes::from(pattern(i as u32, *n))).await.unwrap();
    }
    for (i, n) in sizes.iter().enumerate() {
        let b = d.recv().await.unwrap().unwrap();
        assert_eq!(b.as_ref(), &pattern(i as u32, *n)[..]);
    }
    let e = d.send(Bytes::from(vec![0u8; 65_501])).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

/// A client id the remote does not allow: the connection closes and every stream fails.
#[tokio::test]
async fn rejected_client_id_closes_the_connection() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let cfg = DriverConfig::default();
    let local = spawn_local(
        a,
        *b"ffffffffffffffff",
        cfg.clone(),
        Trace::disabled(),
        "l".into(),
    );
    let mut remote = spawn_remote(b, cfg, Trace::disabled(), "r".into());
    let hello = remote.hello.take().unwrap();
    let id = hello.await.unwrap();
    remote.approve(id == ID);
    let mut s = local.open_connect(addr(3)).await.unwrap();
    let _ = s.write_all(b"x").await;
    let mut got = Vec::new();
    let e = s.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    let end = remote.done.await.unwrap();
    assert!(matches!(end, ConnEnd::Shutdown(_)), "{end}");
    let end = local.done.await.unwrap();
    assert!(matches!(end, ConnEnd::CarrierLost(_)), "{end}");
}

/// A reader that takes its time: the sender stalls (backpressure) and nothing is lost,
/// while a second stream on the same connection still completes once the reader reads.
#[tokio::test]
async fn slow_reader_stalls_without_loss() {
    let mut cfg = DriverConfig::default();
    cfg.session.stream_rx_cap = 8 * 1024;
    cfg.stream_buffer = 4 * 1024;
    let (local, _srv) = pair(cfg).await;
    let s = local.open_connect(addr(4000)).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(s);
    let data = pattern(9, 300_000);
    let w = tokio::spawn(async move {
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        tokio::time::sleep(Duration::from_micros(200)).await;
        let n = rd.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    w.await.unwrap();
    let mut want = pattern(9, 300_000);
    want.extend(pattern(4000, 50_000));
    assert!(got == want);
}

/// Dropping the remote's side of the carrier resets every live stream with an error.
#[tokio::test]
async fn carrier_loss_resets_streams() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let cfg = DriverConfig::default();
    let local = spawn_local(a, ID, cfg, Trace::disabled(), "l".into());
    let mut s = local.open_connect(addr(5)).await.unwrap();
    s.write_all(b"x").await.unwrap();
    drop(b);
    let mut got = Vec::new();
    let e = s.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    assert!(local.done.await.is_ok());
}

/// A stream that ended normally both ways keeps what it received when the carrier then
/// closes: the remote's application (writing to a slow target) still reads every byte
/// and a clean end. The local closes a carrier as soon as its own streams are done
/// (`Pool`'s idle close); before, the remote turned the unread rest into a reset
/// (`pong-streams --seed 10 --profile swarm --tcp real`: s056's target got 156 554 of
/// 157 136 request bytes, and the application had seen a clean end).
#[tokio::test]
async fn carrier_closed_after_both_finishes_keeps_unread_data() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let cfg = DriverConfig::default();
    let local = spawn_local(a, ID, cfg.clone(), Trace::disabled(), "l".into());
    let mut remote = spawn_remote(b, cfg, Trace::disabled(), "r".into());
    let hello = remote.hello.take().unwrap();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let srv = tokio::spawn(async move {
        let id = hello.await.unwrap();
        remote.approve(id == ID);
        let inc = remote.incoming.recv().await.unwrap();
        inc.dialed(Ok(()));
        let Opened::Tcp(s) = inc.stream else {
            panic!("a connect stream")
        };
        let (mut rd, mut wr) = tokio::io::split(s);
        wr.write_all(b"answer").await.unwrap();
        wr.shutdown().await.unwrap();
        // A slow target: nothing is read until the local has closed the carrier.
        go_rx.await.unwrap();
        let mut got = Vec::new();
        let r = rd.read_to_end(&mut got).await;
        (got, r.map(|_| ()))
    });
    let data = pattern(3, 200_000);
    let s = local.open_connect(addr(7000)).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(s);
    wr.write_all(&data).await.unwrap();
    wr.shutdown().await.unwrap();
    let mut answer = Vec::new();
    rd.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"answer");
    drop((rd, wr));
    // Let the finish cross, then close the carrier as an idle pool would.
    tokio::time::sleep(Duration::from_millis(50)).await;
    local.shutdown("idle");
    assert!(local.done.await.is_ok());
    tokio::time::sleep(Duration::from_millis(50)).await;
    go_tx.send(()).unwrap();
    let (got, r) = srv.await.unwrap();
    assert!(r.is_ok(), "a clean end, not {r:?}");
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}
