//! curl (the kernel's TCP) downloads from a small HTTP responder running on our async
//! socket API, over netio's TUN link (`TunLink`, as the socket API's `PacketIo` through
//! `serve::IpLinkIo`) inside a network namespace the test thread makes for
//! itself. One 20 MB download (4 MB under loss) and 10 parallel 1 MB downloads, each checked
//! by SHA-256.
//! The tokio runtime is single-threaded and lives on the namespaced thread, so curl
//! (spawned from it) sees the TUN device.
//!
//! Needs root, /dev/net/tun, iproute2's `ip`, nftables' `nft` and curl; a missing one fails the test with
//! what to install.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_netio::{IpLinkConfig, Ipv4Cidr, Trace, TunLink};
use tunnelbed_tcpstack::serve::IpLinkIo;
use tunnelbed_tcpstack::socket::{TcpStack, TcpStackStream};
use tunnelbed_tcpstack::StackConfig;

const TUN: &str = "tbcurl0";

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (apt-get install iproute2 nftables)"));
    assert!(st.success(), "{args:?} failed");
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Answers `GET /bytes/N` with N bytes, then half-closes and waits for the client.
async fn http(mut s: TcpStackStream) -> io::Result<()> {
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await?;
        if n == 0 || req.len() > 8192 {
            return Ok(());
        }
        req.extend_from_slice(&b[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let n: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix("/bytes/"))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
        .min(100 << 20);
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(&body(n)).await?;
    s.shutdown().await?;
    // Until the client closes (bounded): dropping now would reset it.
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read(&mut b)).await;
    Ok(())
}

async fn curl(n: usize) -> (usize, String) {
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "600",
            &format!("http://10.9.1.2:8080/bytes/{n}"),
        ])
        .output()
        .await
        .expect("curl (apt-get install curl)");
    assert!(out.status.success(), "curl failed: {:?}", out.status);
    (out.stdout.len(), hex::encode(Sha256::digest(&out.stdout)))
}

fn run_in_namespace(drop_tenth: bool) {
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert!(
        r == 0,
        "unshare(CLONE_NEWNET): {} (run as root)",
        io::Error::last_os_error()
    );
    sh(&["ip", "link", "set", "lo", "up"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // netio's TUN link: creates the device, gives the kernel's side 10.9.1.1/24 and
    // brings it up (it needs the runtime for its AsyncFd).
    let cfg = IpLinkConfig::new(TUN, Ipv4Cidr::new(Ipv4Addr::new(10, 9, 1, 1), 24));
    let link = rt
        .block_on(async { TunLink::open(&cfg) })
        .unwrap_or_else(|e| panic!("TUN {TUN}: {e} (needs root and /dev/net/tun)"));
    if drop_tenth {
        sh(&["nft", "add", "table", "inet", "tbloss"]);
        sh(&[
            "nft",
            "add",
            "chain",
            "inet",
            "tbloss",
            "in",
            "{ type filter hook input priority 0 ; }",
        ]);
        sh(&[
            "nft", "add", "rule", "inet", "tbloss", "in", "iifname", TUN, "numgen", "random",
            "mod", "10", "0", "drop",
        ]);
    }
    rt.block_on(async move {
        let io = IpLinkIo::new(link);
        let (stack, driver) = TcpStack::spawn(io, StackConfig::default(), Trace::disabled());
        let l = stack
            .listen(SocketAddrV4::new(Ipv4Addr::new(10, 9, 1, 2), 8080), 128)
            .unwrap();
        tokio::spawn(async move {
            loop {
                let Ok(s) = l.accept().await else { return };
                tokio::spawn(http(s));
            }
        });
        // Smaller under loss: every loss costs a 200 ms timeout or more (vproxy's rto).
        let big = if drop_tenth { 4 << 20 } else { 20 << 20 };
        let (len, sha) = curl(big).await;
        assert_eq!(len, big);
        assert_eq!(sha, hex::encode(Sha256::digest(body(big))));
        let many: Vec<_> = (0..10).map(|_| tokio::spawn(curl(1 << 20))).collect();
        let want = hex::encode(Sha256::digest(body(1 << 20)));
        for t in many {
            let (len, sha) = t.await.unwrap();
            assert_eq!((len, &sha), (1 << 20, &want));
        }
        assert!(!driver.is_finished(), "the driver ended early");
        if drop_tenth {
            let st = stack.stats();
            assert!(
                st.retransmits + st.fast_retransmits > 0,
                "loss and no go-back: {st:?}"
            );
        }
    });
}

#[test]
fn curl_downloads_from_the_socket_api_through_tun() {
    std::thread::spawn(|| run_in_namespace(false))
        .join()
        .expect("namespace thread");
}

/// The same with 10% of what our stack sends dropped at random on the kernel's input
/// (an nftables `numgen random` rule inside the namespace).
#[test]
fn curl_downloads_through_tun_with_10_percent_loss() {
    std::thread::spawn(|| run_in_namespace(true))
        .join()
        .expect("namespace thread");
}
