//! The stream rules h2tunnel's driver took from the generic multiplexer driver
//! (`tunnelbed_netio::mux::ConnTask`, pong's rules), one test each: a reset fails reads
//! and writes with `ConnectionReset`; a drop is FIN after the data, and RST only when
//! input was still unread; at the tunnel's end, a stream that had ended cleanly both ways
//! keeps what it received.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_h2tunnel::driver::{spawn, DriverConfig, Running};
use tunnelbed_h2tunnel::Role;
use tunnelbed_netio::Trace;

fn pair() -> (Running, Running) {
    let (a, b) = tokio::io::duplex(8 * 1024);
    let c = spawn(
        a,
        Role::Client,
        DriverConfig::default(),
        Trace::disabled(),
        "c".into(),
    );
    let s = spawn(
        b,
        Role::Server,
        DriverConfig::default(),
        Trace::disabled(),
        "s".into(),
    );
    (c, s)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761) as u8)
        .collect()
}

/// A reset stream fails both reads and writes with `ConnectionReset` on the peer, and
/// the resetting side's error names the reset too.
#[tokio::test]
async fn reset_fails_reads_and_writes_with_connection_reset() {
    let (client, mut server) = pair();
    let mut c = client.opener.open().await.unwrap();
    c.write_all(b"hi").await.unwrap();
    let mut s = server.accepted.recv().await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    s.reset();
    let mut rest = Vec::new();
    let e = c.read_to_end(&mut rest).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    let e = c.write_all(b"x").await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

/// Dropped while the peer was still sending (input unread): RST, so the peer's reads fail
/// instead of ending cleanly. (The old driver's two copy tasks raced here: FIN when the
/// reader saw the drop first, RST when the writer did.)
#[tokio::test]
async fn drop_with_input_unread_is_a_reset() {
    let (client, mut server) = pair();
    let mut c = client.opener.open().await.unwrap();
    c.write_all(b"request").await.unwrap();
    let s = server.accepted.recv().await.unwrap();
    drop(s);
    let mut rest = Vec::new();
    let e = c.read_to_end(&mut rest).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

/// Dropped after reading its input to the end: FIN after everything written.
#[tokio::test]
async fn drop_after_the_input_ended_is_fin_after_the_data() {
    let (client, mut server) = pair();
    let mut c = client.opener.open().await.unwrap();
    c.write_all(b"ping").await.unwrap();
    c.shutdown().await.unwrap();
    let mut s = server.accepted.recv().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"ping");
    s.write_all(&pattern(100_000)).await.unwrap();
    drop(s);
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, pattern(100_000));
}

/// A stream finished both ways keeps what it received when the tunnel then dies: the
/// application still reads it all and a clean end. (The old driver dropped what the
/// machine still held and failed the read with the tunnel's end.)
#[tokio::test]
async fn a_cleanly_ended_stream_keeps_its_data_at_the_tunnels_end() {
    let (client, mut server) = pair();
    let mut c = client.opener.open().await.unwrap();
    c.write_all(b"ping").await.unwrap();
    c.shutdown().await.unwrap();
    let mut s = server.accepted.recv().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    // More than the client's per-stream queue holds, so part of it is still in the
    // machine when the tunnel ends.
    s.write_all(&pattern(200_000)).await.unwrap();
    s.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.done.abort();
    drop(server);
    let _ = client.done.await;
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), 200_000);
    assert_eq!(got, pattern(200_000));
}
