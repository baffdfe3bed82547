//! `tunnelbed netem` on real loopback sockets: datagrams are relayed both ways, and the
//! configured loss shows up in what comes back.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Datagrams sent before waiting for their echoes: few enough that the relay's and the
/// echo's socket buffers (about 200 KiB each) cannot overflow even if a process is
/// descheduled for a while, so a datagram is missing only because netem dropped it.
const BATCH: u32 = 100;

/// Sends `n` numbered datagrams through the relay in batches and returns how many distinct
/// ones came back. After each batch it waits for that batch's echoes: until all are back,
/// or (some were dropped) until nothing has arrived for `quiet`. Every wait is bounded.
fn round_trip(relay: &str, n: u32, quiet: Duration) -> u32 {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut buf = [0u8; 64];
    let mut next = 0u32;
    while next < n {
        let end = (next + BATCH).min(n);
        for i in next..end {
            c.send_to(&i.to_be_bytes(), relay).unwrap();
        }
        let batch_start = Instant::now();
        let mut last_arrival = Instant::now();
        loop {
            let back = seen.range(next..end).count() as u32;
            if back == end - next || last_arrival.elapsed() >= quiet {
                break;
            }
            assert!(
                batch_start.elapsed() < Duration::from_secs(60),
                "a batch of echoes is still trickling in after 60 s"
            );
            if let Ok((len, _)) = c.recv_from(&mut buf) {
                if len == 4 {
                    seen.insert(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                    last_arrival = Instant::now();
                }
            }
        }
        next = end;
    }
    seen.len() as u32
}

#[test]
fn clean_relay_passes_everything() {
    let (mut child, relay) =
        start_netem(&echo_server(), &["--profile", "clean", "--latency-ms", "1"]);
    // Nothing is dropped on a clean link: every batch must come back in full (the quiet
    // period only ends a batch whose echoes stopped for 30 s, which fails below).
    let got = round_trip(&relay, 500, Duration::from_secs(30));
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
    // A batch whose echoes have stopped for 500 ms is complete (the relay's latency is
    // 1 ms); a later straggler is still counted while the next batches are read.
    let got = round_trip(&relay, n, Duration::from_millis(500));
    child.kill().ok();
    // Two independent 10% losses: 81% survive the round trip.
    let rate = got as f64 / n as f64;
    assert!((0.77..=0.85).contains(&rate), "round-trip delivery {rate}");
}
