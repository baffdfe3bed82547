//! `tunnelbed tcpstack serve` against the Linux kernel's TCP, in network namespaces the
//! tests make for themselves (each test body runs on a thread that called
//! `unshare(CLONE_NEWNET)`; the processes it starts inherit that namespace).
//!
//! - curl downloads from `--http-source` (SHA-256 checked), one big and many parallel,
//!   clean and with 10% random loss on the kernel's input (an nftables `numgen random`
//!   drop rule on the TUN device);
//! - a kernel socket streams through `--echo` (upload and download at once);
//! - curl downloads through `--forward` from `tunnelbed http-source` on the kernel side.
//!
//! Sizes: the defaults keep `cargo test` short; the must-show sizes are
//! `TUNNELBED_TCPSTACK_MB=100 TUNNELBED_TCPSTACK_PARALLEL=100 TUNNELBED_TCPSTACK_PARALLEL_KB=1024`
//! (see the README's tcpstack section for the measured runs).
//!
//! Needs root, /dev/net/tun, iproute2's `ip`, nftables' `nft` and curl; a missing one
//! fails the test with what to install.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tunnelbed::cmd::http_source::{expected_sha256, fill_pattern};

/// Bound on any one wait for a process to say it is ready.
const READY: Duration = Duration::from_secs(60);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Size of the single big download (and of the echo stream), MB.
fn big_mb(default: usize) -> usize {
    env_usize("TUNNELBED_TCPSTACK_MB", default)
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

/// Runs `f` on a fresh thread inside a new network namespace with `lo` up.
fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert!(
            r == 0,
            "unshare(CLONE_NEWNET): {} (needs root: CAP_SYS_ADMIN)",
            std::io::Error::last_os_error()
        );
        sh(&["ip", "link", "set", "lo", "up"]);
        f();
    })
    .join()
    .expect("the namespaced test thread panicked (see above)");
}

/// Drops one packet in ten at random on the kernel's input from `tun`.
fn drop_tenth_on_input(tun: &str) {
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
        "nft", "add", "rule", "inet", "tbloss", "in", "iifname", tun, "numgen", "random", "mod",
        "10", "0", "counter", "drop",
    ]);
}

/// Packets the loss rule dropped so far.
fn dropped_by_rule() -> u64 {
    let out = Command::new("nft")
        .args(["list", "chain", "inet", "tbloss", "in"])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A child process whose stderr is collected (for failure messages) and watched for a
/// line containing a marker. Killed when dropped.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(args: &[&str], ready: &str) -> (Proc, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tunnelbed");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let watch = |r: Box<dyn Read + Send>, tx: mpsc::Sender<String>, keep: bool| {
            let lines = lines.clone();
            let ready = ready.to_string();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    if l.contains(&ready) {
                        let _ = tx.send(l.clone());
                    }
                    if keep {
                        lines.lock().unwrap().push(l);
                    }
                }
            });
        };
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        watch(Box::new(out), tx.clone(), true);
        watch(Box::new(err), tx, true);
        let mut p = Proc { child, lines };
        match rx.recv_timeout(READY) {
            Ok(l) => (p, l),
            Err(_) => {
                let _ = p.child.kill();
                panic!(
                    "{args:?} did not print {ready:?} within {READY:?}; output: {:?}",
                    p.lines.lock().unwrap()
                );
            }
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(tun: &str, service: &[&str]) -> Proc {
    let mut args = vec![
        "tcpstack",
        "serve",
        "--tun",
        tun,
        "--addr",
        "10.9.3.2",
        "--port",
        "8080",
        "--host-addr",
        "10.9.3.1/24",
    ];
    args.extend_from_slice(service);
    Proc::spawn(&args, "tcpstack serve listening on 10.9.3.2:8080").0
}

fn tmpdir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tcpstack-serve-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn file_sha(p: &Path) -> (u64, String) {
    let mut f = std::fs::File::open(p).expect("downloaded file");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).expect("read download");
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    (n, hex::encode(h.finalize()))
}

fn curl(url: &str, out: &Path) -> Child {
    Command::new("curl")
        .args(["-sS", "--max-time", "1800", "-o"])
        .arg(out)
        .arg(url)
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl (apt-get install curl)")
}

fn check_curl(c: Child, out: &Path, n: u64, srv: &Proc) {
    let o = c.wait_with_output().expect("curl");
    assert!(
        o.status.success(),
        "curl {}: {:?} {}\nserver output: {}",
        out.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr),
        srv.output()
    );
    let (len, sha) = file_sha(out);
    assert_eq!(len, n, "length of {}", out.display());
    assert_eq!(sha, expected_sha256(n), "SHA-256 of {}", out.display());
}

/// One big download, then `parallel` downloads at once; returns the big one's seconds.
fn downloads(name: &str, srv: &Proc, big: u64, parallel: usize, each: u64) -> f64 {
    let dir = tmpdir(name);
    let t = Instant::now();
    let out = dir.join("big");
    let c = curl(&format!("http://10.9.3.2:8080/bytes/{big}"), &out);
    check_curl(c, &out, big, srv);
    let secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let kids: Vec<_> = (0..parallel)
        .map(|i| {
            let out = dir.join(format!("p{i}"));
            let c = curl(&format!("http://10.9.3.2:8080/bytes/{each}"), &out);
            (c, out)
        })
        .collect();
    for (c, out) in kids {
        check_curl(c, &out, each, srv);
    }
    eprintln!(
        "{name}: {big} B in {secs:.2} s ({:.1} MB/s); {parallel} x {each} B in {:.2} s",
        big as f64 / secs / 1e6,
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    secs
}

#[test]
fn the_pattern_is_http_source_s() {
    for off in [0u64, 1, 4095, 1 << 32, u64::MAX - 100] {
        let mut a = vec![0u8; 97];
        let mut b = vec![0u8; 97];
        fill_pattern(off, &mut a);
        tunnelbed_tcpstack::serve::fill_pattern(off, &mut b);
        assert_eq!(a, b, "offset {off}");
    }
}

#[test]
fn curl_downloads_from_http_source_through_our_stack() {
    in_netns(|| {
        let mut srv = serve("tbsv0", &["--http-source"]);
        let big = big_mb(20) as u64 * 1_000_000;
        let parallel = env_usize("TUNNELBED_TCPSTACK_PARALLEL", 100);
        let each = env_usize("TUNNELBED_TCPSTACK_PARALLEL_KB", 256) as u64 * 1024;
        downloads("clean", &srv, big, parallel, each);
        assert!(srv.still_running(), "server died: {}", srv.output());
    });
}

#[test]
fn curl_downloads_through_our_stack_with_10_percent_loss() {
    in_netns(|| {
        let mut srv = serve("tbsl0", &["--http-source"]);
        drop_tenth_on_input("tbsl0");
        let big = big_mb(4) as u64 * 1_000_000;
        let parallel = env_usize("TUNNELBED_TCPSTACK_PARALLEL", 20);
        let each = env_usize("TUNNELBED_TCPSTACK_PARALLEL_KB", 256) as u64 * 1024;
        downloads("loss10", &srv, big, parallel, each);
        let dropped = dropped_by_rule();
        eprintln!("loss10: the nftables rule dropped {dropped} packets");
        assert!(
            dropped > 100,
            "the loss rule dropped only {dropped} packets"
        );
        assert!(srv.still_running(), "server died: {}", srv.output());
    });
}

/// A kernel socket writes N bytes to `--echo` while reading them back.
#[test]
fn a_kernel_socket_streams_through_echo() {
    in_netns(|| {
        let mut srv = serve("tbse0", &["--echo"]);
        let n = big_mb(8) * 1_000_000;
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 9, 3, 2), 8080);
        let s = TcpStream::connect_timeout(&addr.into(), READY).expect("connect to --echo");
        s.set_read_timeout(Some(READY)).unwrap();
        s.set_write_timeout(Some(READY)).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0usize;
            while off < n {
                let k = (n - off).min(buf.len());
                fill_pattern(off as u64, &mut buf[..k]);
                w.write_all(&buf[..k]).expect("write to echo");
                off += k;
            }
            w.shutdown(std::net::Shutdown::Write).expect("shutdown");
        });
        let mut r = s;
        let mut h = Sha256::new();
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let k = r.read(&mut buf).expect("read from echo");
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            got += k;
        }
        writer.join().expect("writer");
        assert_eq!(got, n, "echoed bytes");
        assert_eq!(hex::encode(h.finalize()), expected_sha256(n as u64));
        assert!(srv.still_running(), "server died: {}", srv.output());
    });
}

/// curl -> our stack -> kernel TCP -> `tunnelbed http-source` on the namespace's
/// loopback.
#[test]
fn curl_downloads_through_forward() {
    in_netns(|| {
        let (_origin, line) = Proc::spawn(&["http-source", "--listen", "127.0.0.1:0"], "listening");
        let target = line.split_whitespace().last().unwrap_or("").to_string();
        let mut srv = serve("tbsf0", &["--forward", &target]);
        let big = big_mb(8) as u64 * 1_000_000;
        let parallel = env_usize("TUNNELBED_TCPSTACK_PARALLEL", 20);
        let each = env_usize("TUNNELBED_TCPSTACK_PARALLEL_KB", 256) as u64 * 1024;
        downloads("forward", &srv, big, parallel, each);
        assert!(srv.still_running(), "server died: {}", srv.output());
    });
}
