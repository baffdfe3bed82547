//! The whole local path on real loopback sockets: SOCKS5 client -> local front -> pool
//! -> tcp carrier -> remote -> target, for CONNECT and UDP ASSOCIATE, and the remote's
//! silence towards an unknown client id.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, TokioNet, Trace};
use tunnelbed_pong::local::serve_socks;
use tunnelbed_pong::pool::{Pool, PoolConfig};
use tunnelbed_pong::remote::{serve, RemoteConfig};
use tunnelbed_socks5::handshake;
use tunnelbed_socks5::{Addr, UdpHeader};

const ID: [u8; 16] = *b"pong-test-client";

async fn start_remote() -> std::net::SocketAddr {
    let net = TokioNet;
    let l = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = tunnelbed_netio::TcpListen::local_addr(&l).unwrap();
    let cfg = RemoteConfig {
        allowed: vec![ID],
        ..RemoteConfig::default()
    };
    tokio::spawn(serve(
        net,
        l,
        CarrierKind::Tcp,
        None,
        Arc::new(cfg),
        Trace::disabled(),
        "remote".into(),
    ));
    addr
}

async fn start_local(remote: std::net::SocketAddr) -> std::net::SocketAddr {
    let url: CarrierUrl = format!("tcp://{remote}").parse().unwrap();
    start_local_with(PoolConfig::new(url, ID)).await
}

async fn start_local_with(cfg: PoolConfig) -> std::net::SocketAddr {
    let net = TokioNet;
    let pool = Arc::new(Pool::new(
        net,
        cfg,
        Arc::new(ClientTls::insecure()),
        Trace::disabled(),
        "local".into(),
    ));
    let l = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = tunnelbed_netio::TcpListen::local_addr(&l).unwrap();
    tokio::spawn(serve_socks(net, l, pool));
    addr
}

#[tokio::test]
async fn socks_connect_and_udp_associate_through_local_and_remote() {
    // Targets: a TCP server that answers after the client's FIN, a UDP echo.
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taddr = tl.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tl.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                s.write_all(&got).await.unwrap();
                s.write_all(b"--after-finish").await.unwrap();
            });
        }
    });
    let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let uaddr = u.local_addr().unwrap();
    tokio::spawn(async move {
        let mut b = vec![0u8; 65_535];
        while let Ok((n, from)) = u.recv_from(&mut b).await {
            let _ = u.send_to(&b[..n], from).await;
        }
    });
    let remote = start_remote().await;
    let socks = start_local(remote).await;

    // CONNECT, 50 parallel, each half-closing and reading the answer.
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(socks).await.unwrap();
            let (code, _) = handshake::connect(&mut c, &Addr::Ip(taddr)).await.unwrap();
            assert_eq!(code, 0);
            let data: Vec<u8> = (0..100_000u32).map(|x| (x ^ i) as u8).collect();
            c.write_all(&data).await.unwrap();
            c.shutdown().await.unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            let mut want = data;
            want.extend_from_slice(b"--after-finish");
            assert!(got == want, "stream {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // UDP ASSOCIATE: datagrams to the echo come back intact with its address.
    let mut ctl = TcpStream::connect(socks).await.unwrap();
    let (code, bound) = handshake::udp_associate(&mut ctl, &handshake::unspecified())
        .await
        .unwrap();
    assert_eq!(code, 0);
    let Addr::Ip(bound) = bound else {
        panic!("bound {bound:?}")
    };
    let cu = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for size in [1usize, 100, 1400, 8000] {
        let payload: Vec<u8> = (0..size).map(|x| x as u8).collect();
        let mut out = BytesMut::new();
        UdpHeader {
            addr: Addr::Ip(uaddr),
        }
        .encode(&payload, &mut out)
        .unwrap();
        cu.send_to(&out, bound).await.unwrap();
        let mut b = vec![0u8; 65_535];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), cu.recv_from(&mut b))
            .await
            .expect("udp answer")
            .unwrap();
        let (h, got) = UdpHeader::decode(&b[..n]).unwrap().unwrap();
        assert_eq!(h.addr, Addr::Ip(uaddr));
        assert_eq!(got, &payload[..]);
    }
}

#[tokio::test]
async fn unknown_client_id_is_closed_with_nothing_written() {
    let remote = start_remote().await;
    let mut c = TcpStream::connect(remote).await.unwrap();
    let mut hello = vec![0u8];
    hello.extend_from_slice(b"not-the-right-id");
    // A connect frame too: it must not be answered either.
    hello.extend_from_slice(&[0, 14, 0, 0, 0, 1, 1, 1, 127, 0, 0, 1, 0, 9]);
    c.write_all(&hello).await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("remote must close");
    assert!(r.is_ok() || got.is_empty());
    assert!(got.is_empty(), "remote wrote {got:?}");
}

/// A remote that went silent (its host crashed: no byte, not even a reset) leaves a
/// download that only reads hanging unless the local bounds it: after `idle_timeout`
/// with no byte either way the application gets a TCP reset, never a clean end, and the
/// remote is sent rst 6 for the stream. The "remote" is a kernel TCP listener that
/// accepts the carrier and reads it but never writes.
#[tokio::test]
async fn a_silent_remote_fails_a_reading_application_after_the_idle_timeout() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut s, _) = dead.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Reads until the rst shows up (or 10 s), answering nothing.
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() > 17 && frames(&got[17..]).iter().any(|f| f.kind == 0x09) {
                break;
            }
        }
        let _ = seen_tx.send(got);
        // Hold the carrier open: a crashed host does not close it either.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let url: CarrierUrl = format!("tcp://{dead_addr}").parse().unwrap();
    let mut cfg = PoolConfig::new(url, ID);
    cfg.idle_timeout = Duration::from_secs(1);
    let socks = start_local_with(cfg).await;

    let mut c = TcpStream::connect(socks).await.unwrap();
    let target: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (code, _) = handshake::connect(&mut c, &Addr::Ip(target)).await.unwrap();
    assert_eq!(code, 0, "pong answers success before the remote dials");
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let t0 = tokio::time::Instant::now();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
        .await
        .expect("the local's idle timeout must end the read, not the test's 10 s");
    let took = t0.elapsed();
    let e = r.expect_err("a silent remote must not look like a clean end");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert!(got.is_empty(), "read {got:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "ended after {took:?}, the bound is 1 s"
    );
    let carrier = seen_rx.await.unwrap();
    let fs = frames(&carrier[17..]);
    let rst = fs
        .iter()
        .find(|f| f.kind == 0x09)
        .expect("an rst for the stream");
    assert_eq!(rst.stream_id, fs[0].stream_id, "the connect's stream");
    let info = tunnelbed_pong::wire::decode_rst(&rst.payload)
        .unwrap()
        .unwrap();
    assert_eq!(info.code.to_u8(), 6, "rst 6 (TTL expired): {info}");
}

/// The frames in `b` (a carrier's bytes after its header), up to the first incomplete one.
fn frames(mut b: &[u8]) -> Vec<tunnelbed_pong::wire::RawFrame> {
    let mut out = Vec::new();
    while let Ok(Some((f, n))) = tunnelbed_pong::wire::RawFrame::decode(b) {
        out.push(f);
        b = &b[n..];
    }
    out
}

/// The pool spreads streams over carriers by the per-connection limit and closes idle
/// carriers.
#[tokio::test]
async fn pool_respects_stream_limit_and_idle_close() {
    let remote = start_remote().await;
    let url: CarrierUrl = format!("tcp://{remote}").parse().unwrap();
    let mut cfg = PoolConfig::new(url, ID);
    cfg.max_streams_per_conn = 3;
    cfg.idle_close = Duration::from_millis(100);
    let pool = Pool::new(
        TokioNet,
        cfg,
        Arc::new(ClientTls::insecure()),
        Trace::disabled(),
        "local".into(),
    );
    // A target that holds connections open.
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taddr = tl.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = tl.accept().await {
            held.push(s);
        }
    });
    let mut streams = Vec::new();
    for _ in 0..7 {
        let a = tunnelbed_pong::Address::Ip(taddr);
        streams.push(pool.open_connect(a).await.unwrap());
    }
    let st = pool.stats().await;
    assert_eq!(
        (st.carriers_opened, st.connections, st.live_streams),
        (3, 3, 7)
    );
    drop(streams);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.stats().await.live_streams, 0);
    pool.maintain().await; // marks idle
    tokio::time::sleep(Duration::from_millis(150)).await;
    pool.maintain().await; // closes
    assert_eq!(pool.stats().await.connections, 0);
    // A new stream dials a new carrier.
    let _s = pool
        .open_connect(tunnelbed_pong::Address::Ip(taddr))
        .await
        .unwrap();
    assert_eq!(pool.stats().await.carriers_opened, 4);
}
