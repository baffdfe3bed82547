//! SimNet specifics: how an abort is modelled (the peer reads a reset where it would have
//! read the end of stream; the RST shows once in the capture, on the aborting host), and
//! binding a host's own address.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_netio::pcap_read::{decode_transport, read_capture, Transport};
use tunnelbed_netio::{Net, TcpConn, TcpListen, UdpSock};
use tunnelbed_sim::link::LinkModel;
use tunnelbed_sim::profile;
use tunnelbed_sim::scenario::sim_epoch;
use tunnelbed_sim::simnet::{any, SimWorld};

/// How the client ends each connection.
#[derive(Clone, Copy, Debug)]
enum End {
    Abort,
    Drop,
    /// Shut down writing first (the server reads the end), then abort.
    ShutdownThenAbort,
}

/// What the server read on each connection: bytes, then `Ok` (end) or the error kind.
type Seen = Vec<(Vec<u8>, Result<(), io::ErrorKind>)>;

fn world(capture: bool) -> SimWorld {
    let params = profile::params("clean", 1).unwrap();
    SimWorld::new(LinkModel::new(1, params), capture)
}

fn sim(limit: Duration) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(1)
        .epoch(sim_epoch())
        .simulation_duration(limit)
        .tick_duration(Duration::from_millis(1))
        .build()
}

/// One server, one client making a connection per entry of `ends`, each writing
/// `hello` and ending it as told. Returns what the server saw, and the capture.
fn run(ends: &[End]) -> (Seen, Vec<u8>) {
    let w = world(true);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut sim = sim(Duration::from_secs(60));
    let (sw, s_seen) = (w.clone(), seen.clone());
    sim.host("server", move || {
        let (w, seen) = (sw.clone(), s_seen.clone());
        async move {
            let net = w.net("server");
            let l = net.listen_tcp(any(9000)).await?;
            loop {
                let (mut s, _) = l.accept().await?;
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let r = s
                        .read_to_end(&mut got)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.kind());
                    seen.lock().unwrap().push((got, r));
                });
            }
        }
    });
    let ends = ends.to_vec();
    let n = ends.len();
    let (cw, c_seen) = (w.clone(), seen.clone());
    sim.client("client", async move {
        let net = cw.net("client");
        let addr = net.resolve("server", 9000).await?[0];
        for end in ends {
            let mut c = net.connect_tcp(addr).await?;
            c.write_all(b"hello").await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            match end {
                End::Abort => c.abort(),
                End::Drop => drop(c),
                End::ShutdownThenAbort => {
                    c.shutdown().await?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    c.abort();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while c_seen.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    });
    sim.run().unwrap();
    let seen = seen.lock().unwrap().clone();
    (seen, w.capture.unwrap().to_bytes())
}

/// (src, dst, on which interface) of every RST and FIN in a capture.
fn flags(pcap: &[u8]) -> (Vec<(SocketAddr, SocketAddr, String)>, usize) {
    let mut rst = Vec::new();
    let mut fin = 0;
    for p in read_capture(pcap).unwrap() {
        if let Transport::Tcp {
            src,
            dst,
            rst: r,
            fin: f,
            ..
        } = decode_transport(&p).unwrap()
        {
            if r {
                rst.push((src, dst, p.iface_name.clone().unwrap_or_default()));
            }
            fin += usize::from(f);
        }
    }
    (rst, fin)
}

#[test]
fn abort_reads_as_a_reset_and_drop_as_an_end() {
    let (seen, pcap) = run(&[End::Abort, End::Drop, End::ShutdownThenAbort]);
    assert_eq!(seen.len(), 3);
    // The bytes sent before the abort arrive, then the reset instead of the end.
    assert_eq!(
        seen[0],
        (b"hello".to_vec(), Err(io::ErrorKind::ConnectionReset))
    );
    assert_eq!(seen[1], (b"hello".to_vec(), Ok(())));
    // The server had read the end before the abort: nothing more to read.
    assert_eq!(seen[2], (b"hello".to_vec(), Ok(())));

    let (rst, fin) = flags(&pcap);
    // One RST per abort, each on the aborting host's interface only.
    assert_eq!(rst.len(), 2, "{rst:?}");
    for (src, dst, iface) in &rst {
        assert_eq!(iface, "client", "{src} -> {dst}");
        assert_eq!(dst.port(), 9000);
    }
    // FINs: the dropped connection's both ways; the shut-down one's from the client,
    // and the server's when its reader ended.
    assert_eq!(fin, 4);
}

#[test]
fn abort_replays_byte_for_byte() {
    let ends = [End::Abort, End::Drop, End::Abort];
    let (a, pa) = run(&ends);
    let (b, pb) = run(&ends);
    assert_eq!(a, b);
    assert!(pa == pb, "same capture bytes");
}

/// turmoil binds only the unspecified and the loopback address; SimNet binds the host's
/// own address as the unspecified one and reports the host's address, and refuses an
/// address that is not the host's.
#[test]
fn bind_own_address() {
    let w = world(false);
    let out: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut sim = sim(Duration::from_secs(10));
    let o = out.clone();
    sim.client("h", async move {
        let net = w.net("h");
        let me = net.resolve("h", 0).await?[0].ip();
        let u = net.bind_udp(SocketAddr::new(me, 0)).await?;
        let a = u.local_addr()?;
        o.lock()
            .unwrap()
            .push(format!("udp {}", a.ip() == me && a.port() != 0));
        let l = net.listen_tcp(SocketAddr::new(me, 7777)).await?;
        o.lock().unwrap().push(format!(
            "tcp {}",
            TcpListen::local_addr(&l)? == SocketAddr::new(me, 7777)
        ));
        let other = net.bind_udp("10.9.9.9:0".parse()?).await;
        o.lock()
            .unwrap()
            .push(format!("other {:?}", other.err().map(|e| e.kind())));
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(
        *out.lock().unwrap(),
        ["udp true", "tcp true", "other Some(AddrNotAvailable)"]
    );
}

/// A crash drops the crashed host's tasks in an order that follows tokio's process-wide
/// task ids; other simulations (parallel tests, sweeps) spawning tasks at the same time
/// change it. The run must not depend on it: here another thread spawns tasks all along
/// while pong-remote-crash runs twice, and both runs must match byte for byte.
#[test]
fn crash_replays_while_other_tasks_are_spawned() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tunnelbed_sim::scenario::{check_determinism, RunConfig};

    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tokio::spawn(async {}).await.unwrap();
                    n += 1;
                    if n.is_multiple_of(64) {
                        // Let the simulations run; vary the spacing of task ids.
                        std::thread::sleep(Duration::from_micros(50 + n % 7));
                    }
                }
            })
        })
    };
    let s = tunnelbed_sim::scenarios::find("pong-remote-crash").unwrap();
    let cfg = RunConfig {
        seed: 7,
        profile: "lossy".into(),
        capture: true,
        sabotage: None,
        tcp: Default::default(),
    };
    let mut results = Vec::new();
    for _ in 0..2 {
        results.push(check_determinism(&s, &cfg).unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    for (report, d) in results {
        assert!(report.ok(), "{}", report.failure_summary());
        assert!(d.ok(), "not deterministic: {d:?}");
    }
}
