//! Every carrier kind moves bytes both ways on loopback, with half-close as end-of-file;
//! the HTTP carriers' servers fail cleanly (never hang, never panic) on what is not
//! their handshake, and their clients name the status of a refusal.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_carrier::tls::{ClientTls, ServerTls};
use tunnelbed_carrier::{accept, connect, CarrierKind, CarrierUrl};
use tunnelbed_netio::{Net, TokioNet};

const LEN: usize = 300_000;

async fn round_trip(scheme: &str) {
    let net = TokioNet;
    let lsn = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = lsn.local_addr().unwrap().port();
    let url: CarrierUrl = format!("{scheme}://localhost:{port}/p").parse().unwrap();
    let server_tls = ServerTls::self_signed(&["localhost".into()]).unwrap();
    let client_tls = ClientTls::trusting_der(&server_tls.cert_der).unwrap();
    let kind = url.kind;
    let server = tokio::spawn(async move {
        let (tcp, _) = lsn.accept().await.unwrap();
        let mut s = accept(tcp, kind, Some(&server_tls)).await.unwrap();
        // WebSocket has no half-close (a close message ends both ways), so the echo
        // reads a known length rather than waiting for end-of-file.
        let mut got = vec![0u8; LEN];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.flush().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        got.len()
    });
    let mut c = connect(&net, &url, &client_tls).await.unwrap();
    let data: Vec<u8> = (0..LEN as u32).map(|i| (i * 7) as u8).collect();
    c.write_all(&data).await.unwrap();
    c.flush().await.unwrap();
    let mut back = vec![0u8; LEN];
    c.read_exact(&mut back).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(server.await.unwrap(), data.len());
    assert!(back == data, "{scheme}: echo differs");
}

#[tokio::test]
async fn tcp_carrier() {
    round_trip("tcp").await;
}

#[tokio::test]
async fn tls_carrier() {
    round_trip("tls").await;
}

#[tokio::test]
async fn ws_carrier() {
    round_trip("ws").await;
}

#[tokio::test]
async fn wss_carrier() {
    round_trip("wss").await;
}

#[tokio::test]
async fn h2c_carrier() {
    round_trip("h2c").await;
}

#[tokio::test]
async fn h2_carrier() {
    round_trip("h2").await;
}

#[tokio::test]
async fn http_carrier() {
    round_trip("http").await;
}

#[tokio::test]
async fn https_carrier() {
    round_trip("https").await;
}

#[tokio::test]
async fn tls_rejects_an_untrusted_certificate() {
    let net = TokioNet;
    let lsn = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = lsn.local_addr().unwrap().port();
    let server_tls = ServerTls::self_signed(&["localhost".into()]).unwrap();
    let other = ServerTls::self_signed(&["localhost".into()]).unwrap();
    tokio::spawn(async move {
        let (tcp, _) = lsn.accept().await.unwrap();
        let _ = accept(tcp, tunnelbed_carrier::CarrierKind::Tls, Some(&server_tls)).await;
    });
    let url: CarrierUrl = format!("tls://localhost:{port}").parse().unwrap();
    let r = connect(
        &net,
        &url,
        &ClientTls::trusting_der(&other.cert_der).unwrap(),
    )
    .await;
    assert!(r.is_err());
}

/// Runs the server side of `kind` on what `peer` writes (then closes); returns the
/// handshake's outcome and everything the server wrote back. Bounded: a handshake that
/// neither fails nor succeeds in 20 s fails the test.
async fn server_sees(kind: CarrierKind, peer: &[u8]) -> (Result<(), String>, Vec<u8>) {
    let net = TokioNet;
    let lsn = net
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = lsn.local_addr().unwrap();
    let server_tls = ServerTls::self_signed(&["localhost".into()]).unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = lsn.accept().await.unwrap();
        accept(tcp, kind, Some(&server_tls))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(peer).await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut back));
    let _ = read.await.expect("the server neither answered nor closed");
    let r = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the handshake is bounded")
        .expect("the server task does not panic");
    (r, back)
}

#[tokio::test]
async fn http_server_refuses_what_is_not_a_post() {
    let (r, back) = server_sees(CarrierKind::Http, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.unwrap_err().contains("GET request refused"));
    assert!(back.starts_with(b"HTTP/1.1 405 "), "{back:?}");
    let (r, back) = server_sees(CarrierKind::Http, b"\x00\x01garbage\r\n\r\n").await;
    assert!(r.unwrap_err().contains("malformed request"));
    assert!(back.starts_with(b"HTTP/1.1 400 "), "{back:?}");
    let long = [b"POST / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 20_000]].concat();
    let (r, back) = server_sees(CarrierKind::Http, &long).await;
    assert!(r.unwrap_err().contains("longer than"));
    assert!(back.starts_with(b"HTTP/1.1 431 "), "{back:?}");
    let (r, _) = server_sees(CarrierKind::Http, b"POST / HTTP/1.1\r\n").await;
    assert!(r.unwrap_err().contains("closed inside the request"));
}

#[tokio::test]
async fn servers_fail_cleanly_on_garbage_and_truncation() {
    let junk: Vec<u8> = (0..3000u32).map(|i| (i * 131 % 251) as u8).collect();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice();
    for kind in [
        CarrierKind::H2c,
        CarrierKind::H2,
        CarrierKind::Http,
        CarrierKind::Https,
    ] {
        for peer in [&b""[..], &junk, preface, &preface[..10]] {
            let (r, _) = server_sees(kind, peer).await;
            assert!(r.is_err(), "{kind:?} took {} bytes of junk", peer.len());
        }
    }
}

/// A client facing an HTTP server that answers with an error status fails with that
/// status in its message.
#[tokio::test]
async fn clients_report_the_status_of_a_refusal() {
    for scheme in ["http", "h2c"] {
        // Our own server refuses a GET; here a server that refuses everything: pong
        // remote's listener of the other kind would not do, so answer by hand.
        let lsn = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = lsn.local_addr().unwrap().port();
        let h2 = scheme == "h2c";
        tokio::spawn(async move {
            let (tcp, _) = lsn.accept().await.unwrap();
            if h2 {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                if let Some(Ok((_, mut respond))) = conn.accept().await {
                    let resp = http::Response::builder().status(404).body(()).unwrap();
                    let _ = respond.send_response(resp, true);
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.accept()).await;
            } else {
                let mut tcp = tcp;
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let url: CarrierUrl = format!("{scheme}://127.0.0.1:{port}/nope").parse().unwrap();
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            connect(&TokioNet, &url, &ClientTls::insecure()),
        )
        .await
        .expect("bounded");
        let e = r.err().expect("a refusal is an error").to_string();
        assert!(e.contains("404"), "{scheme}: {e}");
    }
}
