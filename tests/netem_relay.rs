//! `tunnelbed netem` on real loopback sockets: datagrams are relayed both ways, and the
//! configured loss shows up in what comes back.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `tunnelbed netem` in front of `forward` and returns it with its listen address.
fn start_netem(forward: &str, extra: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args([
            "netem",
            "--listen",
            "127.0.0.1:0",
            "--forward",
            forward,
            "--duration",
            "60",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tunnelbed netem");
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "netem: 127.0.0.1:PORT -> ..."
    let addr = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected netem banner {line:?}"))
        .to_string();
    (child, addr)
}

fn echo_server() -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Sends `n` numbered datagrams through the relay and counts the distinct ones echoed.
fn round_trip(relay: &str, n: u32) -> u32 {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Read on another thread while sending, so the socket buffer never overflows.
    let reader = c.try_clone().unwrap();
    let counter = std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = [0u8; 64];
        while let Ok((len, _)) = reader.recv_from(&mut buf) {
            if len == 4 {
                seen.insert(u32::from_be_bytes(buf[..4].try_into().unwrap()));
            }
        }
        seen.len() as u32
    });
    for i in 0..n {
        c.send_to(&i.to_be_bytes(), relay).unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    counter.join().unwrap()
}

#[test]
fn clean_relay_passes_everything() {
    let (mut child, relay) =
        start_netem(&echo_server(), &["--profile", "clean", "--latency-ms", "1"]);
    let got = round_trip(&relay, 500);
    child.kill().ok();
    assert_eq!(got, 500);
}

#[test]
fn ten_percent_loss_each_way_loses_about_nineteen_percent() {
    let (mut child, relay) = start_netem(
        &echo_server(),
        &["--loss", "10", "--seed", "3", "--latency-ms", "1"],
    );
    let n = 2000;
    let got = round_trip(&relay, n);
    child.kill().ok();
    // Two independent 10% losses: 81% survive the round trip.
    let rate = got as f64 / n as f64;
    assert!((0.77..=0.85).contains(&rate), "round-trip delivery {rate}");
}
