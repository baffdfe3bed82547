//! Every carrier kind moves bytes both ways on loopback, with half-close as end-of-file.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_carrier::tls::{ClientTls, ServerTls};
use tunnelbed_carrier::{accept, connect, CarrierUrl};
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
