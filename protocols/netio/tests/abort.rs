//! `TcpConn::abort` on real loopback sockets: the peer reads a reset, not an end of
//! stream, and a capturing stream records exactly one RST (and no FIN) for it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_netio::pcap_read::{decode_transport, read_capture, Transport};
use tunnelbed_netio::{Capture, CaptureNet, Net, TcpConn, TcpListen, TokioNet};

/// Connects a client of `net` to a plain tokio listener; returns both ends.
async fn pair<N: Net>(net: &N) -> (N::Stream, tokio::net::TcpStream) {
    let l = TokioNet
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = TcpListen::local_addr(&l).unwrap();
    let (c, s) = tokio::join!(net.connect_tcp(addr), l.accept());
    (c.unwrap(), s.unwrap().0)
}

async fn read_end(s: &mut tokio::net::TcpStream) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the peer learns of the close")
        .map(|_| got)
}

#[tokio::test]
async fn abort_is_a_reset_and_drop_a_clean_end() {
    let (mut c, mut s) = pair(&TokioNet).await;
    c.write_all(b"hello").await.unwrap();
    let mut five = [0u8; 5];
    s.read_exact(&mut five).await.unwrap();
    c.abort();
    let e = read_end(&mut s)
        .await
        .expect_err("an abort reads as a reset");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");

    let (c, mut s) = pair(&TokioNet).await;
    drop(c);
    assert_eq!(read_end(&mut s).await.unwrap(), b"");
}

#[tokio::test]
async fn captured_abort_records_one_rst_and_no_fin() {
    let cap = Capture::new(Arc::new(|| Duration::ZERO));
    let net = CaptureNet::new(TokioNet, cap.interface("client"));
    let (c, mut s) = pair(&net).await;
    let (local, peer) = (c.local_addr().unwrap(), c.peer_addr().unwrap());
    c.abort();
    let e = read_end(&mut s)
        .await
        .expect_err("an abort reads as a reset");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);

    let mut rst = 0;
    for p in read_capture(&cap.to_bytes()).unwrap() {
        if let Transport::Tcp {
            src,
            dst,
            fin,
            rst: r,
            ..
        } = decode_transport(&p).unwrap()
        {
            assert!(!fin, "an aborted stream sends no FIN");
            if r {
                assert_eq!((src, dst), (local, peer), "the RST is ours");
                rst += 1;
            }
        }
    }
    assert_eq!(rst, 1, "exactly one RST recorded");
}
