//! Regression tests for bugs the `pong-streams` simulation found (seeds in each test's
//! comment; replay with `tunnelbed sim run pong-streams --seed N --profile swarm`).
//! They run on real loopback sockets and the in-memory driver pair.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, TcpListen, TokioNet, Trace};
use tunnelbed_pong::driver::{spawn_local, spawn_remote, DriverConfig, Opened};
use tunnelbed_pong::local::serve_socks;
use tunnelbed_pong::pool::{Pool, PoolConfig};
use tunnelbed_pong::remote::{serve, RemoteConfig};
use tunnelbed_pong::{Address, RstCode, RstInfo};
use tunnelbed_socks5::{handshake, Addr};

const ID: [u8; 16] = *b"pong-regressions";
/// Long enough for loopback, far shorter than any timeout that could hide a hang.
const PROMPT: Duration = Duration::from_secs(5);

async fn start_remote() -> SocketAddr {
    let net = TokioNet;
    let l = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = TcpListen::local_addr(&l).unwrap();
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

/// The local's SOCKS5 front (and its pool) in front of a fresh remote.
async fn start_front() -> (SocketAddr, Arc<Pool<TokioNet>>) {
    let remote = start_remote().await;
    let net = TokioNet;
    let url: CarrierUrl = format!("tcp://{remote}").parse().unwrap();
    let pool = Arc::new(Pool::new(
        net,
        PoolConfig::new(url, ID),
        Arc::new(ClientTls::insecure()),
        Trace::disabled(),
        "local".into(),
    ));
    let l = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = TcpListen::local_addr(&l).unwrap();
    tokio::spawn(serve_socks(net, l, pool.clone()));
    (addr, pool)
}

/// A target that reads `first` bytes of each connection and then resets it (RST).
async fn resetting_target(first: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = vec![0u8; first];
                let _ = s.read_exact(&mut b).await;
                s.set_zero_linger().unwrap();
                drop(s);
            });
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

async fn socks_connect(front: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(front).await.unwrap();
    let (code, _) = handshake::connect(&mut c, &Addr::Ip(target)).await.unwrap();
    assert_eq!(code, 0, "the front answers success before the remote dials");
    c
}

/// Reads to the end; the error if reading failed.
async fn read_end(c: &mut TcpStream) -> Result<Vec<u8>, io::Error> {
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.map(|_| got)
}

/// pong-streams, every seed: the remote's rst after a failed dial reached the SOCKS5
/// application as a clean end of stream (the front dropped the socket, a FIN). It must
/// be a reset.
#[tokio::test]
async fn dial_failure_resets_the_socks_application() {
    let (front, _pool) = start_front().await;
    let mut c = socks_connect(front, closed_port().await).await;
    c.write_all(b"request").await.unwrap();
    let r = tokio::time::timeout(PROMPT, read_end(&mut c))
        .await
        .expect("the application hears of the failed dial");
    let e = r.expect_err("a failed dial must not look like a clean end");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

/// pong-streams, every seed ("target-reset (app waiting) -> app hung"): a target that
/// resets while the application has not half-closed. The remote waited for the local's
/// finish before reporting the reset, so the application hung; it must get a reset
/// promptly.
#[tokio::test]
async fn target_reset_reaches_a_waiting_application_promptly() {
    let (front, _pool) = start_front().await;
    let target = resetting_target(4).await;
    let mut c = socks_connect(front, target).await;
    c.write_all(b"headand more request bytes").await.unwrap();
    // No shutdown: the application waits for the answer.
    let r = tokio::time::timeout(PROMPT, read_end(&mut c))
        .await
        .expect("the application hears of the target's reset while it waits");
    let e = r.expect_err("a target reset must not look like a clean end");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

/// Same with the application half-closed first: it got a clean (empty) end before.
#[tokio::test]
async fn target_reset_after_the_application_finished_is_a_reset() {
    let (front, _pool) = start_front().await;
    let target = resetting_target(4).await;
    let mut c = socks_connect(front, target).await;
    c.write_all(b"headand more request bytes").await.unwrap();
    c.shutdown().await.unwrap();
    let r = tokio::time::timeout(PROMPT, read_end(&mut c))
        .await
        .expect("the application hears of the target's reset");
    let e = r.expect_err("a target reset must not look like a clean end");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

/// An application that resets its SOCKS5 connection: the target's connection is reset
/// too (rst through pong, then RST from the remote), not closed cleanly.
#[tokio::test]
async fn application_reset_reaches_the_target_as_a_reset() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (saw_tx, saw_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        // Answer without end, so the application has unread input when it resets.
        let _ = s.write_all(&[7u8; 64 * 1024]).await;
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got).await;
        let _ = saw_tx.send(r.map(|_| got.len()));
    });
    let (front, _pool) = start_front().await;
    let mut c = socks_connect(front, target).await;
    c.write_all(b"part of a request").await.unwrap();
    let mut one = [0u8; 1];
    c.read_exact(&mut one).await.unwrap();
    c.set_zero_linger().unwrap();
    drop(c);
    let r = tokio::time::timeout(PROMPT, saw_rx)
        .await
        .expect("the target hears of the application's reset")
        .unwrap();
    let e = r.expect_err("an application reset must not look like a clean end");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

/// pong-streams swarm seeds 154 and 165: a stream the peer reset, whose handle was then
/// shut down (the application's finish raced the rst) and dropped, stayed in the
/// driver's table forever: counted live, so its carrier never went idle and leaked.
#[tokio::test]
async fn shutdown_after_reset_then_drop_retires_the_stream() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let cfg = DriverConfig::default();
    let local = spawn_local(a, ID, cfg.clone(), Trace::disabled(), "l".into());
    let mut remote = spawn_remote(b, cfg, Trace::disabled(), "r".into());
    let hello = remote.hello.take().unwrap();
    tokio::spawn(async move {
        let id = hello.await.unwrap();
        remote.approve(id == ID);
        while let Some(inc) = remote.incoming.recv().await {
            inc.dialed(Ok(()));
            if let Opened::Tcp(s) = inc.stream {
                s.reset(RstInfo::new(RstCode::DstReset));
            }
        }
    });
    let dest = Address::Ip("127.0.0.1:9".parse().unwrap());
    let mut s = local.open_connect(dest).await.unwrap();
    let mut b = [0u8; 16];
    let e = tokio::time::timeout(PROMPT, s.read(&mut b))
        .await
        .expect("the rst arrives")
        .expect_err("a reset stream fails reads");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    s.shutdown().await.unwrap();
    drop(s);
    tokio::time::timeout(PROMPT, async {
        while local.stats.live_streams() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the driver forgets the stream once its handle is gone");
}
