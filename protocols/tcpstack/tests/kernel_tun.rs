//! The Linux kernel's TCP (a Python socket client) against our stack through a TUN
//! device, inside a network namespace this test makes for itself (the test thread
//! unshares its network namespace; the TUN device, its address and the client live
//! only there). The client uploads 1 MiB and half-closes; our server reads it to the
//! end, answers with 2 MiB and shuts down; both sides compare SHA-256.
//!
//! The lossy case drops 10% of what our stack sends, at random, on the kernel's input
//! (an nftables `numgen random` rule inside the namespace).
//!
//! Needs root (CAP_NET_ADMIN), /dev/net/tun, iproute2's `ip`, nftables' `nft` and
//! python3; a missing one fails the test with what to install.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tunnelbed_netio::Trace;
use tunnelbed_tcpstack::{Stack, StackConfig, StackError};

const TUN: &str = "tbtcp0";
const UP: usize = 1 << 20;
const DOWN: usize = 2 << 20;

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[1] ^ salt)
        .collect()
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (apt-get install iproute2 nftables)"));
    assert!(st.success(), "{args:?} failed");
}

/// Opens a TUN device (no packet info header), non-blocking.
fn open_tun(name: &str) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("/dev/net/tun (needs root and the tun module)");
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    let flags: i16 = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // TUNSETIFF
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x400454ca, req.as_mut_ptr()) };
    assert!(r == 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) };
    f
}

fn wait_readable(f: &std::fs::File, ms: i32) {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, ms) };
}

const CLIENT: &str = r#"
import hashlib, socket, sys
up = bytes((((i * 2654435761) & 0xffffffff) >> 16 & 0xff) ^ 0x11 for i in range(int(sys.argv[1])))
s = socket.create_connection(("10.9.0.2", 8080), timeout=60)
s.sendall(up)
s.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
print(hashlib.sha256(up).hexdigest(), hashlib.sha256(got).hexdigest(), len(got))
"#;

fn serve_in_namespace(drop_tenth: bool) -> (String, String, usize, String, String, u64) {
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert!(
        r == 0,
        "unshare(CLONE_NEWNET): {} (run as root)",
        std::io::Error::last_os_error()
    );
    let mut tun = open_tun(TUN);
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "addr", "add", "10.9.0.1/24", "dev", TUN]);
    sh(&["ip", "link", "set", TUN, "up"]);
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

    let mut stack = Stack::new(StackConfig::default(), Trace::disabled());
    let lid = stack
        .listen(
            Duration::ZERO,
            SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), 8080),
            4,
        )
        .unwrap();
    let client = Command::new("python3")
        .arg("-c")
        .arg(CLIENT)
        .arg(UP.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install python3)");

    let start = Instant::now();
    let down = pattern(DOWN, 0x22);
    let mut conn = None;
    let mut got = Sha256::new();
    let (mut got_len, mut sent, mut eof, mut shut, mut closed) =
        (0usize, 0usize, false, false, false);
    let mut buf = vec![0u8; 65536];
    while !closed || stack.connection_count() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no end after 120 s"
        );
        let now = start.elapsed();
        loop {
            match tun.read(&mut buf) {
                Ok(n) => {
                    let _ = stack.handle_input(now, &buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("tun read: {e}"),
            }
        }
        stack.handle_timeout(now);
        if conn.is_none() {
            conn = stack.accept(lid);
        }
        if let (Some(c), false) = (conn, closed) {
            loop {
                match stack.read(now, c, &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        got.update(&buf[..n]);
                        got_len += n;
                    }
                    Err(StackError::WouldBlock) => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            if eof {
                while sent < DOWN {
                    match stack.write(now, c, &down[sent..]) {
                        Ok(n) => sent += n,
                        Err(StackError::WouldBlock) => break,
                        Err(e) => panic!("write: {e}"),
                    }
                }
                if sent == DOWN && !shut {
                    stack.shutdown(now, c).unwrap();
                    shut = true;
                }
            }
            if shut
                && stack.unacked(c) == 0
                && stack.state(c) != Some(tunnelbed_tcpstack::State::FinWait1)
            {
                stack.close(now, c).unwrap();
                closed = true;
            }
        }
        while let Some(p) = stack.poll_transmit() {
            tun.write_all(&p).expect("tun write");
        }
        while stack.poll_event().is_some() {}
        let wait = stack
            .poll_timeout()
            .map(|t| t.saturating_sub(start.elapsed()).as_millis().min(50) as i32)
            .unwrap_or(50);
        wait_readable(&tun, wait.max(1));
    }
    let out = client.wait_with_output().expect("client output");
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = line.split_whitespace().map(str::to_string);
    let (up_sha, down_sha, down_len) = (
        it.next().expect("client printed its hashes"),
        it.next().expect("two hashes"),
        it.next()
            .and_then(|n| n.parse().ok())
            .expect("and a length"),
    );
    assert_eq!(got_len, UP, "server got the upload");
    (
        up_sha,
        down_sha,
        down_len,
        hex::encode(got.finalize()),
        hex::encode(Sha256::digest(&down)),
        stack.stats().retransmits + stack.stats().fast_retransmits,
    )
}

fn check(drop_tenth: bool) {
    // A thread of its own: only it enters the new network namespace.
    let (up_sha, down_sha, down_len, our_up, our_down, resent) =
        std::thread::spawn(move || serve_in_namespace(drop_tenth))
            .join()
            .expect("namespace thread");
    assert_eq!(up_sha, our_up, "the upload arrived intact");
    assert_eq!(down_len, DOWN, "the client got the whole download");
    assert_eq!(down_sha, our_down, "the download arrived intact");
    if drop_tenth {
        assert!(
            resent > 0,
            "10% loss and nothing resent: the drop rule did not apply"
        );
    }
    eprintln!("drop_tenth={drop_tenth}: {resent} go-backs (rto or duplicate ACKs)");
}

#[test]
fn linux_client_through_tun_in_a_namespace() {
    check(false);
}

#[test]
fn linux_client_through_tun_with_10_percent_loss() {
    check(true);
}
