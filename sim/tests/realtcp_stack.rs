//! The real-TCP stack's socket semantics where smoltcp differs from a kernel:
//! `set_unacked_timeout` is Linux's `TCP_USER_TIMEOUT` (it bounds unacknowledged bytes,
//! never a quiet connection), and a connection reset while it waited in the accept
//! queue is still accepted and reads as a reset. The last two tests run the same
//! behaviours on the Linux kernel's TCP over loopback (through `TokioNet`, the binary's
//! `Net`), the reference the simulator's stack is held to.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_netio::{Net, TcpConn, TcpListen};
use tunnelbed_sim::link::LinkModel;
use tunnelbed_sim::profile;
use tunnelbed_sim::realtcp::TcpMode;
use tunnelbed_sim::scenario::sim_epoch;
use tunnelbed_sim::simnet::{any, SimWorld};

fn world() -> SimWorld {
    let params = profile::params("clean", 1).unwrap();
    let mut w = SimWorld::new(LinkModel::new(1, params), false);
    w.set_tcp_mode(TcpMode::Real, 1);
    w
}

fn sim() -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(1)
        .epoch(sim_epoch())
        .simulation_duration(Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .build()
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// What the client's read ended with, and when (simulated time).
type Outcome = Arc<Mutex<Option<(Result<Vec<u8>, io::ErrorKind>, Duration)>>>;

#[test]
fn an_unacked_timeout_spares_a_connection_with_nothing_outstanding() {
    // The server says nothing for 10 s, then answers; the client, with a 2 s bound on
    // unacknowledged bytes, has written nothing and must still get the answer (smoltcp's
    // own timeout would have reset it 2 s after the handshake).
    let w = world();
    let out: Outcome = Arc::default();
    let mut sim = sim();
    let sw = w.clone();
    sim.host("server", move || {
        let w = sw.clone();
        async move {
            let net = w.net("server");
            let l = net.listen_tcp(any(9000)).await?;
            let (mut s, _) = l.accept().await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            s.write_all(b"late").await?;
            s.shutdown().await?;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let (cw, got) = (w.clone(), out.clone());
    sim.client("client", async move {
        let net = cw.net("client");
        let addr = net.resolve("server", 9000).await?[0];
        let mut c = net.connect_tcp(addr).await?;
        c.set_unacked_timeout(Duration::from_secs(2))?;
        let mut buf = Vec::new();
        let r = c.read_to_end(&mut buf).await.map(|_| buf);
        *got.lock().unwrap() = Some((r.map_err(|e| e.kind()), now()));
        Ok(())
    });
    sim.run().unwrap();
    let (r, at) = out.lock().unwrap().clone().expect("the client finished");
    assert_eq!(r, Ok(b"late".to_vec()), "at {at:?}");
    assert!(at >= Duration::from_secs(10), "{at:?}");
}

#[test]
fn an_unacked_timeout_ends_a_connection_whose_peer_stopped_acknowledging() {
    // The client writes after the link to the server is cut: its bytes stay
    // unacknowledged, and the 2 s bound ends the connection with an error, not after
    // smoltcp's retransmissions run out.
    let w = world();
    let out: Outcome = Arc::default();
    let mut sim = sim();
    let sw = w.clone();
    sim.host("server", move || {
        let w = sw.clone();
        async move {
            let net = w.net("server");
            let l = net.listen_tcp(any(9000)).await?;
            let (mut s, _) = l.accept().await?;
            let mut buf = [0u8; 64];
            while s.read(&mut buf).await? > 0 {}
            Ok(())
        }
    });
    let (cw, got) = (w.clone(), out.clone());
    sim.client("client", async move {
        let net = cw.net("client");
        let addr = net.resolve("server", 9000).await?[0];
        let mut c = net.connect_tcp(addr).await?;
        c.set_unacked_timeout(Duration::from_secs(2))?;
        // Cut at 1 s (below); write at 2 s.
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.write_all(b"unacknowledged").await?;
        let mut buf = Vec::new();
        let r = c.read_to_end(&mut buf).await.map(|_| buf);
        *got.lock().unwrap() = Some((r.map_err(|e| e.kind()), now()));
        Ok(())
    });
    let mut cut = false;
    while out.lock().unwrap().is_none() {
        if !cut && sim.elapsed() >= Duration::from_secs(1) {
            sim.partition("client", "server");
            cut = true;
        }
        sim.step().unwrap();
    }
    let (r, at) = out.lock().unwrap().clone().expect("the client finished");
    assert!(r.is_err(), "{r:?} at {at:?}");
    // Written at 2 s; the bound is 2 s from the first transmission, and the abort comes
    // at the next retransmission timer after it.
    assert!(
        at >= Duration::from_secs(4) && at <= Duration::from_secs(8),
        "{r:?} at {at:?}"
    );
}

/// Reads `s` to its end or first error: the bytes, then how it ended.
async fn read_all<S: TcpConn>(s: &mut S) -> (Vec<u8>, Result<(), io::ErrorKind>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e.kind())),
        }
    }
}

#[test]
fn a_connection_reset_in_the_accept_queue_is_accepted_and_reads_as_a_reset() {
    // The server accepts only at 2 s; the client wrote and reset at 0.5 s. As with
    // Linux's accept(2), the connection is handed out and reads its bytes, then the reset.
    let w = world();
    type Seen = Arc<Mutex<Option<(Vec<u8>, Result<(), io::ErrorKind>)>>>;
    let out: Seen = Arc::default();
    let mut sim = sim();
    let (sw, got) = (w.clone(), out.clone());
    sim.host("server", move || {
        let (w, got) = (sw.clone(), got.clone());
        async move {
            let net = w.net("server");
            let l = net.listen_tcp(any(9000)).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (mut s, _) = l.accept().await?;
            *got.lock().unwrap() = Some(read_all(&mut s).await);
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let cw = w.clone();
    let done = out.clone();
    sim.client("client", async move {
        let net = cw.net("client");
        let addr = net.resolve("server", 9000).await?[0];
        let mut c = net.connect_tcp(addr).await?;
        c.write_all(b"hi").await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.abort();
        while done.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    });
    sim.run().unwrap();
    let seen = out.lock().unwrap().clone().expect("the server accepted");
    assert_eq!(seen, (b"hi".to_vec(), Err(io::ErrorKind::ConnectionReset)));
}

// ---- the same two behaviours on the Linux kernel's TCP (loopback), the reference ----

fn kernel_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn the_kernel_also_spares_a_quiet_connection_under_tcp_user_timeout() {
    // What the simulator's stack now matches: with TCP_USER_TIMEOUT at 1 s and nothing
    // written, a peer quiet for 3 s does not end the connection.
    kernel_runtime().block_on(async {
        let net = tunnelbed_netio::TokioNet;
        let l = net
            .listen_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            s.write_all(b"late").await.unwrap();
            s.shutdown().await.unwrap();
        });
        let mut c = net.connect_tcp(addr).await.unwrap();
        c.set_unacked_timeout(Duration::from_secs(1)).unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf))
            .await
            .expect("the answer within 10 s");
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(buf, b"late");
        server.await.unwrap();
    });
}

#[test]
fn the_kernel_also_accepts_a_connection_reset_in_its_queue() {
    // accept(2) hands out a connection the peer reset while it waited; its reads give
    // the bytes that came first, then ECONNRESET.
    kernel_runtime().block_on(async {
        let net = tunnelbed_netio::TokioNet;
        let l = net
            .listen_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        let mut c = net.connect_tcp(addr).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("accept within 5 s")
            .unwrap();
        assert_eq!(
            read_all(&mut s).await,
            (b"hi".to_vec(), Err(io::ErrorKind::ConnectionReset))
        );
    });
}
