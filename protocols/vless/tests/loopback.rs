//! Our client and server over loopback (kernel TCP and UDP): a TCP relay, the full-cone
//! UDP path of v1 (a peer the application never contacted sends first, the application
//! answers it, the answer leaves from the same server port), v0 UDP, and an unknown user
//! closed with nothing written and nothing dialed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, TokioNet, Trace};
use tunnelbed_socks5::handshake;
use tunnelbed_socks5::{Addr, UdpHeader};
use tunnelbed_vless::cone::ConeConfig;
use tunnelbed_vless::serve::{serve, ServerConfig};
use tunnelbed_vless::server::ServerSessionConfig;
use tunnelbed_vless::socks::{serve_socks, ClientConfig};
use tunnelbed_vless::wire::{Address, Command, Request, Version};

const USER: [u8; 16] = [0x42; 16];
const WAIT: Duration = Duration::from_secs(10);

async fn start(version: Version) -> (SocketAddr, SocketAddr) {
    let net = TokioNet;
    let lsn = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let server = lsn.local_addr().unwrap();
    let cfg = ServerConfig {
        session: ServerSessionConfig {
            users: vec![USER],
            version: Version::V1,
            ..ServerSessionConfig::default()
        },
        cone: ConeConfig::default(),
        ..ServerConfig::default()
    };
    tokio::spawn(serve(
        net,
        lsn,
        CarrierKind::Tcp,
        None,
        cfg,
        Trace::disabled(),
        "s".into(),
    ));
    let socks_lsn = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let socks = socks_lsn.local_addr().unwrap();
    let url: CarrierUrl = format!("tcp://{server}").parse().unwrap();
    tokio::spawn(serve_socks(
        net,
        socks_lsn,
        ClientConfig::new(url, USER, version),
        Trace::disabled(),
    ));
    (server, socks)
}

async fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut b = vec![0u8; 65_535];
    let (n, from) = tokio::time::timeout(WAIT, sock.recv_from(&mut b))
        .await
        .expect("a datagram in time")
        .unwrap();
    (b[..n].to_vec(), from)
}

async fn app_send(app: &UdpSocket, relay: SocketAddr, to: SocketAddr, payload: &[u8]) {
    let mut out = BytesMut::new();
    UdpHeader { addr: Addr::Ip(to) }
        .encode(payload, &mut out)
        .unwrap();
    app.send_to(&out, relay).await.unwrap();
}

async fn app_recv(app: &UdpSocket) -> (SocketAddr, Vec<u8>) {
    let (d, _) = recv(app).await;
    let (h, p) = UdpHeader::decode(&d).unwrap().unwrap();
    let Addr::Ip(a) = h.addr else {
        panic!("domain source")
    };
    (a, p.to_vec())
}

async fn associate(socks: SocketAddr) -> (TcpStream, UdpSocket, SocketAddr) {
    let mut ctl = TcpStream::connect(socks).await.unwrap();
    let app = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (code, relay) = handshake::udp_associate(&mut ctl, &Addr::Ip(app.local_addr().unwrap()))
        .await
        .unwrap();
    assert_eq!(code, 0);
    let Addr::Ip(relay) = relay else {
        panic!("relay address")
    };
    (ctl, app, relay)
}

#[tokio::test]
async fn tcp_relay_both_ways() {
    let (_, socks) = start(Version::V0).await;
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taddr = target.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let (mut s, _) = target.accept().await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        s.write_all(&all).await.unwrap();
    });
    let mut c = TcpStream::connect(socks).await.unwrap();
    let (code, _) = handshake::connect(&mut c, &Addr::Ip(taddr)).await.unwrap();
    assert_eq!(code, 0);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    c.write_all(&data).await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, data);
    echo.await.unwrap();
}

#[tokio::test]
async fn v1_udp_is_full_cone() {
    let (_, socks) = start(Version::V1).await;
    let (_ctl, app, relay) = associate(socks).await;
    let p1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p2 = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let p3 = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let (a1, a2, a3) = (
        p1.local_addr().unwrap(),
        p2.local_addr().unwrap(),
        p3.local_addr().unwrap(),
    );
    // The application contacts p1 only.
    app_send(&app, relay, a1, b"hello p1").await;
    let (d, mapped) = recv(&p1).await;
    assert_eq!(d, b"hello p1");
    p1.send_to(b"reply p1", mapped).await.unwrap();
    assert_eq!(app_recv(&app).await, (a1, b"reply p1".to_vec()));
    // p2 and p3, told the mapping, send first: each reaches the application with its
    // own address (endpoint-independent filtering, true source).
    p2.send_to(b"from p2", mapped).await.unwrap();
    assert_eq!(app_recv(&app).await, (a2, b"from p2".to_vec()));
    p3.send_to(b"from p3", mapped).await.unwrap();
    assert_eq!(app_recv(&app).await, (a3, b"from p3".to_vec()));
    // The application answers them: the answers leave from the same mapped port.
    app_send(&app, relay, a2, b"answer p2").await;
    let (d, from) = recv(&p2).await;
    assert_eq!((d.as_slice(), from), (&b"answer p2"[..], mapped));
    app_send(&app, relay, a3, b"answer p3").await;
    let (d, from) = recv(&p3).await;
    assert_eq!((d.as_slice(), from), (&b"answer p3"[..], mapped));
    // p2 now answers on the connection the application opened to it.
    p2.send_to(b"again p2", mapped).await.unwrap();
    assert_eq!(app_recv(&app).await, (a2, b"again p2".to_vec()));
}

#[tokio::test]
async fn v0_udp_echo_and_no_foreign_sources() {
    let (_, socks) = start(Version::V0).await;
    let (_ctl, app, relay) = associate(socks).await;
    let p1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a1 = p1.local_addr().unwrap();
    for i in 0..20u8 {
        let payload = vec![i; 1 + i as usize * 100];
        app_send(&app, relay, a1, &payload).await;
        let (d, mapped) = recv(&p1).await;
        assert_eq!(d, payload);
        p1.send_to(&d, mapped).await.unwrap();
        assert_eq!(app_recv(&app).await, (a1, payload));
    }
}

#[tokio::test]
async fn unknown_user_gets_nothing_and_nothing_is_dialed() {
    let (server, _) = start(Version::V0).await;
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let req = Request {
        version: Version::V0,
        uuid: [0x99; 16],
        addons: vec![],
        command: Command::Tcp,
        target: Some(Address::Ip(target.local_addr().unwrap())),
    };
    let mut c = TcpStream::connect(server).await.unwrap();
    c.write_all(&req.to_bytes().unwrap()).await.unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(WAIT, c.read_to_end(&mut got))
        .await
        .expect("the server closes in time");
    assert!(r.is_ok() || got.is_empty(), "{r:?}");
    assert!(got.is_empty(), "server wrote {got:?}");
    // The decision came before the close; a dial would have been made by then.
    let dialed = tokio::time::timeout(Duration::from_millis(300), target.accept()).await;
    assert!(dialed.is_err(), "the target was dialed");
}

/// A rejected connection goes to the fallback with every byte it sent, and the
/// fallback's answer reaches the client (as v2ray's fallbacks do); the target named in
/// the refused header is never dialed.
#[tokio::test]
async fn rejected_bytes_go_to_the_fallback() {
    let net = TokioNet;
    let fallback = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lsn = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let server = lsn.local_addr().unwrap();
    let cfg = ServerConfig {
        session: ServerSessionConfig {
            users: vec![USER],
            ..ServerSessionConfig::default()
        },
        fallback: Some(fallback.local_addr().unwrap()),
        ..ServerConfig::default()
    };
    tokio::spawn(serve(
        net,
        lsn,
        CarrierKind::Tcp,
        None,
        cfg,
        Trace::disabled(),
        "s".into(),
    ));
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut sent = Request {
        version: Version::V0,
        uuid: [0x99; 16],
        addons: vec![],
        command: Command::Tcp,
        target: Some(Address::Ip(target.local_addr().unwrap())),
    }
    .to_bytes()
    .unwrap()
    .to_vec();
    sent.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    let mut c = TcpStream::connect(server).await.unwrap();
    c.write_all(&sent).await.unwrap();
    let (mut f, _) = tokio::time::timeout(WAIT, fallback.accept())
        .await
        .expect("the fallback is dialed")
        .unwrap();
    let mut got = vec![0u8; sent.len()];
    tokio::time::timeout(WAIT, f.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, sent, "the fallback gets every byte, header included");
    f.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n")
        .await
        .unwrap();
    drop(f);
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"HTTP/1.0 404 Not Found\r\n\r\n");
    let dialed = tokio::time::timeout(Duration::from_millis(300), target.accept()).await;
    assert!(dialed.is_err(), "the refused target was dialed");
}
