//! The `h3://` carrier on loopback UDP: bytes both ways with half-close as end-of-file;
//! a second request on one QUIC connection is refused (`H3_REQUEST_REJECTED`) while the
//! first goes on; anything but `POST` is answered `405`; a client facing no server
//! fails within its bound instead of hanging.

use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_carrier::http3::{H3Listener, QuicSeed};
use tunnelbed_carrier::tls::{ClientTls, ServerTls};
use tunnelbed_carrier::{connect, CarrierUrl};
use tunnelbed_netio::TokioNet;

const LEN: usize = 300_000;
const BOUND: Duration = Duration::from_secs(30);

async fn listener() -> (H3Listener, ServerTls, u16) {
    let tls = ServerTls::self_signed(&["localhost".into()]).unwrap();
    let lsn = H3Listener::bind(
        &TokioNet,
        "127.0.0.1:0".parse().unwrap(),
        &tls,
        &QuicSeed::default(),
    )
    .await
    .unwrap();
    let port = lsn.local_addr().unwrap().port();
    (lsn, tls, port)
}

#[tokio::test]
async fn h3_carrier_echoes_with_half_close() {
    let (lsn, tls, port) = listener().await;
    let client_tls = ClientTls::trusting_der(&tls.cert_der).unwrap();
    let server = tokio::spawn(async move {
        let inc = lsn.accept().await.unwrap();
        let mut s = inc.finish().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
        got.len()
    });
    let url: CarrierUrl = format!("h3://localhost:{port}/p").parse().unwrap();
    let work = async {
        let mut c = connect(&TokioNet, &url, &client_tls).await.unwrap();
        let data: Vec<u8> = (0..LEN as u32).map(|i| (i * 7) as u8).collect();
        c.write_all(&data).await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(server.await.unwrap(), LEN);
        assert!(back == data, "echo differs");
    };
    tokio::time::timeout(BOUND, work).await.expect("bounded");
}

/// A raw HTTP/3 client (quinn + h3, not our carrier) on one QUIC connection.
async fn raw_client(
    port: u16,
    cert: &[u8],
) -> (
    h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tls = ClientTls::trusting_der(cert).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.h3_config()).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let conn = ep
        .connect(([127, 0, 0, 1], port).into(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        let _ep = ep;
        let _ = driver.wait_idle().await;
    });
    (send, drive)
}

#[tokio::test]
async fn a_second_request_on_one_connection_is_refused() {
    let (lsn, tls, port) = listener().await;
    let cert = tls.cert_der.clone();
    let server = tokio::spawn(async move {
        let mut s = lsn.accept().await.unwrap().finish().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(b"first").await.unwrap();
        s.flush().await.unwrap();
        // Keep the carrier until the client is done.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        buf
    });
    let work = async {
        let (mut send, _drive) = raw_client(port, &cert).await;
        let post = || {
            http::Request::post(format!("https://localhost:{port}/"))
                .body(())
                .unwrap()
        };
        let mut first = send.send_request(post()).await.unwrap();
        let resp = first.recv_response().await.unwrap();
        assert_eq!(resp.status(), 200);
        first.send_data(Bytes::from_static(b"hello")).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            let mut chunk = first.recv_data().await.unwrap().expect("more data");
            got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        assert_eq!(&got, b"first");
        // The second request on the same connection is refused.
        let mut second = send.send_request(post()).await.unwrap();
        let r = second.recv_response().await;
        let e = r.expect_err("a second request must be refused");
        assert!(
            e.to_string().contains("REQUEST_REJECTED") || e.to_string().contains("0x10b"),
            "{e}"
        );
        // The first goes on.
        first.finish().await.unwrap();
        assert_eq!(&server.await.unwrap(), b"hello");
    };
    tokio::time::timeout(BOUND, work).await.expect("bounded");
}

#[tokio::test]
async fn a_get_is_answered_405() {
    let (lsn, tls, port) = listener().await;
    let cert = tls.cert_der.clone();
    let server = tokio::spawn(async move { lsn.accept().await.unwrap().finish().await.err() });
    let work = async {
        let (mut send, _drive) = raw_client(port, &cert).await;
        let get = http::Request::get(format!("https://localhost:{port}/"))
            .body(())
            .unwrap();
        let mut s = send.send_request(get).await.unwrap();
        s.finish().await.unwrap();
        let resp = s.recv_response().await.unwrap();
        assert_eq!(resp.status(), 405);
        let e = server.await.unwrap().expect("the server refuses a GET");
        assert!(e.to_string().contains("GET request refused"), "{e}");
    };
    tokio::time::timeout(BOUND, work).await.expect("bounded");
}

#[tokio::test]
async fn a_client_with_no_server_fails_in_bounded_time() {
    // A UDP socket we hold, which never answers: the handshake times out (QUIC idle
    // timeout), it does not hang.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url: CarrierUrl = format!("h3://127.0.0.1:{port}/").parse().unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(90),
        connect(&TokioNet, &url, &ClientTls::insecure()),
    )
    .await
    .expect("the handshake is bounded by QUIC's idle timeout");
    assert!(r.is_err());
}
