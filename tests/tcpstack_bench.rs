//! Benchmark: curl downloads from `tunnelbed tcpstack serve --http-source` (our TCP
//! stack behind a TUN device) against curl downloads from `tunnelbed http-source` over
//! a veth pair (the kernel's TCP at both ends), in namespaces the test makes, the two
//! alternating in one run; then the same through random loss (nftables `numgen random`
//! drop rules on the kernel's input from either device). Every download is SHA-256
//! checked.
//!
//! `cargo test` runs it small (20 MB, 1 repetition) so it stays working. The committed
//! table (reports/tcpstack-bench.md) comes from
//! `TUNNELBED_BENCH_MB=200 TUNNELBED_BENCH_REPS=5 TUNNELBED_BENCH_OUT=reports/tcpstack-bench.md
//!  cargo test --release --test tcpstack_bench -- --nocapture`.
//!
//! Needs root, /dev/net/tun, iproute2, nftables and curl.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tunnelbed::cmd::http_source::expected_sha256;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (apt-get install iproute2 nftables curl)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child killed (and reaped) when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits (at most 60 s) for a line containing `ready` on stdout or
/// stderr; returns the child and the line.
fn start(cmd: &mut Command, ready: &str) -> (Kid, String) {
    let mut c = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    for r in [
        Box::new(c.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(c.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        let ready = ready.to_string();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                if l.contains(&ready) {
                    let _ = tx.send(l);
                }
            }
        });
    }
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{cmd:?} never printed {ready:?}"));
    (Kid(c), line)
}

/// One download through curl, hashed as it streams; MB/s (10^6 bytes).
fn download(url: &str, n: u64) -> f64 {
    let t = Instant::now();
    let mut c = Command::new("curl")
        .args(["-sS", "--max-time", "1800", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl (apt-get install curl)");
    let mut out = c.stdout.take().expect("stdout");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let k = out.read(&mut buf).expect("read curl");
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        got += k as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    let o = c.wait_with_output().expect("curl");
    assert!(
        o.status.success(),
        "curl {url}: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(got, n, "{url}: length");
    assert_eq!(
        hex::encode(h.finalize()),
        expected_sha256(n),
        "{url}: SHA-256"
    );
    n as f64 / secs / 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Drops `pct` percent of packets at random on the input from `dev`.
fn loss_rule(dev: &str, pct: u32) {
    sh(&[
        "nft",
        "add",
        "rule",
        "inet",
        "tbbench",
        "in",
        "iifname",
        dev,
        "numgen",
        "random",
        "mod",
        "100",
        "<",
        &pct.to_string(),
        "drop",
    ]);
}

#[test]
fn bench_tcpstack_against_kernel_tcp() {
    let mb = env_usize("TUNNELBED_BENCH_MB", 20) as u64;
    let reps = env_usize("TUNNELBED_BENCH_REPS", 1).max(1);
    let out = std::env::var("TUNNELBED_BENCH_OUT").ok();
    let table = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert!(
            r == 0,
            "unshare(CLONE_NEWNET): {} (needs root)",
            std::io::Error::last_os_error()
        );
        sh(&["ip", "link", "set", "lo", "up"]);
        let ns = format!("tbbench{}", std::process::id());
        sh(&["ip", "netns", "add", &ns]);
        struct DelNs(String);
        impl Drop for DelNs {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let _del = DelNs(ns.clone());
        // The kernel-to-kernel path: a veth pair, its far end in the named namespace.
        sh(&[
            "ip", "link", "add", "tbva", "type", "veth", "peer", "name", "tbvb", "netns", &ns,
        ]);
        sh(&["ip", "addr", "add", "10.9.8.1/24", "dev", "tbva"]);
        sh(&["ip", "link", "set", "tbva", "up"]);
        for a in [
            vec!["ip", "addr", "add", "10.9.8.2/24", "dev", "tbvb"],
            vec!["ip", "link", "set", "tbvb", "up"],
            vec!["ip", "link", "set", "lo", "up"],
        ] {
            let mut v = vec!["ip", "netns", "exec", &ns];
            v.extend(a);
            sh(&v);
        }
        let bin = env!("CARGO_BIN_EXE_tunnelbed");
        let (_origin, _) = start(
            Command::new("ip").args([
                "netns",
                "exec",
                &ns,
                bin,
                "http-source",
                "--listen",
                "10.9.8.2:8080",
            ]),
            "listening",
        );
        let (_ours, _) = start(
            Command::new(bin).args([
                "tcpstack",
                "serve",
                "--tun",
                "tbb0",
                "--addr",
                "10.9.7.2",
                "--port",
                "8080",
                "--http-source",
                "--host-addr",
                "10.9.7.1/24",
            ]),
            "tcpstack serve listening",
        );
        sh(&["nft", "add", "table", "inet", "tbbench"]);
        sh(&[
            "nft",
            "add",
            "chain",
            "inet",
            "tbbench",
            "in",
            "{ type filter hook input priority 0 ; }",
        ]);
        let n = mb * 1_000_000;
        let mut rows = Vec::new();
        for (label, loss) in [("clean", 0u32), ("1% loss", 1), ("10% loss", 10)] {
            sh(&["nft", "flush", "chain", "inet", "tbbench", "in"]);
            if loss > 0 {
                loss_rule("tbb0", loss);
                loss_rule("tbva", loss);
            }
            // Lossy runs move less: each loss costs our stack a 200 ms timeout or more.
            let n = if loss >= 10 { n / 10 } else { n };
            let (mut ours, mut kern) = (Vec::new(), Vec::new());
            for i in 0..reps {
                let mut pair = [
                    ("ours", "http://10.9.7.2:8080"),
                    ("kernel", "http://10.9.8.2:8080"),
                ];
                if i % 2 == 1 {
                    pair.reverse();
                }
                for (who, base) in pair {
                    let r = download(&format!("{base}/bytes/{n}"), n);
                    if who == "ours" {
                        ours.push(r);
                    } else {
                        kern.push(r);
                    }
                }
            }
            let (o, k) = (median(&mut ours), median(&mut kern));
            eprintln!(
                "{label}: ours {o:.1} MB/s, kernel {k:.1} MB/s, ratio {:.3}",
                o / k
            );
            rows.push(format!(
                "| {label} | {} | {o:.1} | {k:.1} | {:.3} | {} | {} |",
                n / 1_000_000,
                o / k,
                ours.iter()
                    .map(|x| format!("{x:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                kern.iter()
                    .map(|x| format!("{x:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rows
    })
    .join()
    .expect("the bench thread failed (see above)");
    if let Some(path) = out {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let md = format!(
            "# tcpstack benchmark: our stack over TUN vs the kernel's TCP over veth\n\n\
             - command: `TUNNELBED_BENCH_MB={mb} TUNNELBED_BENCH_REPS={reps} TUNNELBED_BENCH_OUT={path} cargo test {profile}--test tcpstack_bench -- --nocapture` ({build} build of both servers: the ratio compares two {build} binaries)\n\
             - ours: curl (kernel TCP) downloads `GET /bytes/N` from `tunnelbed tcpstack serve --http-source` (our stack, vproxy's constants: MSS 1360, 45-segment cap, RTO 200 ms, ACK 20 ms after read) through a TUN device\n\
             - kernel: curl downloads the same bytes from `tunnelbed http-source` (kernel TCP) across a veth pair into a second namespace\n\
             - both in namespaces the test made, alternating order each repetition; every download SHA-256 checked; MB = 10^6 bytes; medians of {reps}\n\
             - loss: nftables `numgen random mod 100 < P drop` on the input from the TUN device and from the veth, so P% of what each server sends is lost (10% runs move a tenth of the bytes)\n\
             - load average at the end: {}\n\n\
             | link | MB per download | ours MB/s | kernel MB/s | ratio | ours, every rep | kernel, every rep |\n|---|---:|---:|---:|---:|---|---|\n{}\n",
            load.trim(),
            table.join("\n"),
            profile = if cfg!(debug_assertions) { "" } else { "--release " },
            build = if cfg!(debug_assertions) { "debug" } else { "release" },
        );
        std::fs::write(&path, md).expect("writing the table");
    }
}
