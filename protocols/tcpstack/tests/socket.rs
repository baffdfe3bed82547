//! The async socket API over two stacks joined by an in-memory packet link (tokio
//! channels, seeded loss), in tokio's paused virtual time: an echo server from an accept
//! loop, clients that write, half-close and read back, integrity by SHA-256.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;

use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tunnelbed_netio::Trace;
use tunnelbed_tcpstack::socket::{PacketIo, TcpStack};
use tunnelbed_tcpstack::StackConfig;

/// One end of an in-memory link that drops a seeded share of what it sends.
struct ChanIo {
    tx: mpsc::UnboundedSender<Bytes>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Bytes>>,
    loss: f64,
    rng: Mutex<ChaCha8Rng>,
}

impl PacketIo for ChanIo {
    async fn send(&self, packet: Bytes) -> io::Result<()> {
        let drop = {
            let mut r = self.rng.lock().unwrap();
            r.gen_bool(self.loss)
        };
        if !drop {
            let _ = self.tx.send(packet);
        }
        Ok(())
    }

    async fn recv(&self) -> io::Result<Bytes> {
        // Cancel-safe: mpsc recv is.
        self.rx
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

fn pair(loss: f64, seed: u64) -> (ChanIo, ChanIo) {
    let (atx, arx) = mpsc::unbounded_channel();
    let (btx, brx) = mpsc::unbounded_channel();
    let mk = |tx, rx, s| ChanIo {
        tx,
        rx: tokio::sync::Mutex::new(rx),
        loss,
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(s)),
    };
    (mk(atx, brx, seed), mk(btx, arx, seed + 1))
}

async fn echo_round_trips(loss: f64, clients: u16, len: usize) {
    let (a, b) = pair(loss, 9);
    let (server, _t1) = TcpStack::spawn(
        a,
        StackConfig {
            isn_seed: 1,
            ..StackConfig::default()
        },
        Trace::disabled(),
    );
    let (client, _t2) = TcpStack::spawn(
        b,
        StackConfig {
            isn_seed: 2,
            ..StackConfig::default()
        },
        Trace::disabled(),
    );
    let srv = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7);
    let listener = server.listen(srv, 16).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok(s) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
                // Wait for the peer's close before dropping (drop = close()).
                let mut rest = [0u8; 1];
                let _ = r.read(&mut rest).await;
            });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let local = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000 + i);
            let s = client.connect(local, srv).await.expect("connect");
            let mut data = vec![0u8; len];
            ChaCha8Rng::seed_from_u64(u64::from(i)).fill_bytes(&mut data);
            let want = Sha256::digest(&data);
            let (mut r, mut w) = tokio::io::split(s);
            let writer = tokio::spawn(async move {
                w.write_all(&data).await.expect("write");
                w.shutdown().await.expect("shutdown");
                w
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.expect("read");
            let w = writer.await.unwrap();
            assert_eq!(got.len(), len, "client {i}");
            assert_eq!(Sha256::digest(&got), want, "client {i}");
            drop(r.unsplit(w));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every connection ends: closes are RSTs or drained closes; bounded by virtual time.
    for _ in 0..600 {
        if server.connection_count() == 0 && client.connection_count() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(client.connection_count(), 0, "client table empty");
    assert_eq!(server.connection_count(), 0, "server table empty");
}

#[tokio::test(start_paused = true)]
async fn echo_over_a_clean_link() {
    echo_round_trips(0.0, 4, 300_000).await;
}

#[tokio::test(start_paused = true)]
async fn echo_over_a_lossy_link() {
    echo_round_trips(0.02, 3, 200_000).await;
}
