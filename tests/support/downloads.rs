//! The applications of the proxy tests (`pong_real`, `vless_real`): `curl
//! --socks5-hostname` downloads from `tunnelbed http-source`, checked by length and SHA-256
//! against its documented pattern, one at a time or 200 in parallel; and UDP datagrams sent
//! through SOCKS5 (`tests/pong_udp.py`, standard library only) to a UDP echo of the test's
//! own. A missing curl or python3 fails with how to install it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tunnelbed::cmd::http_source::{expected_sha256, fill_pattern};

/// curl, silent but for errors, with a bound on the whole transfer.
pub(crate) fn curl_command() -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "180"]);
    c
}

/// The failure for a curl that cannot run.
pub(crate) fn curl_missing(e: std::io::Error) -> ! {
    panic!(
        "curl not runnable ({e}); install it with `apt-get install -y curl` (or `bash .ci/setup`)"
    )
}

/// Runs curl with `args` and returns what it printed.
pub(crate) fn curl(args: &[&str]) -> Output {
    curl_command()
        .args(args)
        .output()
        .unwrap_or_else(|e| curl_missing(e))
}

/// One download: curl's exit status, the body's length and SHA-256, curl's stderr.
pub(crate) struct Fetch {
    pub(crate) status: ExitStatus,
    pub(crate) len: u64,
    pub(crate) sha: String,
    pub(crate) stderr: String,
}

impl Fetch {
    /// Download speed in bytes/s as curl reports it (`-w %{speed_download}`).
    pub(crate) fn speed(&self) -> f64 {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("speed="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Reads curl's body from `out` and hashes it as it arrives (100 MiB are never held in
/// memory); `on_progress` sees the byte count after every read.
fn hash_stream(mut out: impl Read, mut on_progress: impl FnMut(u64)) -> (u64, String) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                len += n as u64;
                on_progress(len);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading curl's output: {e}"),
        }
    }
    (len, hex::encode(h.finalize()))
}

/// `curl --socks5-hostname SOCKS http://HTTP/bytes/N` with `extra` arguments;
/// `on_progress` sees the body's byte count as it grows.
pub(crate) fn fetch_with(
    socks: &str,
    http: &str,
    n: u64,
    extra: &[&str],
    on_progress: impl FnMut(u64),
) -> Fetch {
    let mut child = curl_command()
        .args(["--socks5-hostname", socks])
        .args(["-w", "%{stderr}speed=%{speed_download}\n"])
        .args(extra)
        .arg(format!("http://{http}/bytes/{n}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| curl_missing(e));
    let mut err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let (len, sha) = hash_stream(child.stdout.take().unwrap(), on_progress);
    let status = child.wait().unwrap();
    Fetch {
        status,
        len,
        sha,
        stderr: err_reader.join().unwrap(),
    }
}

/// One download of `n` bytes from http-source at `http` through the SOCKS5 server `socks`.
pub(crate) fn fetch(socks: &str, http: &str, n: u64) -> Fetch {
    fetch_with(socks, http, n, &[], |_| {})
}

/// Fails unless `f` is a complete, intact `n`-byte body.
pub(crate) fn assert_intact(f: &Fetch, n: u64, what: &str, tails: impl Fn() -> String) {
    assert!(
        f.status.success(),
        "{what}: curl {} ({})\n{}",
        f.status,
        f.stderr.trim(),
        tails()
    );
    assert_eq!(
        f.len,
        n,
        "{what}: {} bytes, expected {n}\n{}",
        f.len,
        tails()
    );
    assert_eq!(
        f.sha,
        expected_sha(n),
        "{what}: SHA-256 of the body differs from http-source's pattern\n{}",
        tails()
    );
}

/// SHA-256 (hex) of http-source's first `n` bytes, computed once per size.
pub(crate) fn expected_sha(n: u64) -> String {
    static CACHE: OnceLock<Mutex<BTreeMap<u64, Arc<OnceLock<String>>>>> = OnceLock::new();
    let cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(n)
        .or_default()
        .clone();
    cell.get_or_init(|| expected_sha256(n)).clone()
}

/// SHA-256 (hex) of http-source's first `n` bytes for every `n` in `sizes`, in one pass
/// over the pattern (a hasher cloned at each size).
pub(crate) fn expected_shas(sizes: &[u64]) -> BTreeMap<u64, String> {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = BTreeMap::new();
    let mut h = Sha256::new();
    let mut off = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    for n in sorted {
        while off < n {
            let k = (n - off).min(buf.len() as u64) as usize;
            fill_pattern(off, &mut buf[..k]);
            h.update(&buf[..k]);
            off += k as u64;
        }
        out.insert(n, hex::encode(h.clone().finalize()));
    }
    out
}

/// What 200 parallel downloads gave: the bodies' sizes, how long curl took, and one line
/// per body that came back wrong (empty when all 200 are intact).
pub(crate) struct Parallel {
    pub(crate) sizes: Vec<u64>,
    pub(crate) took: Duration,
    pub(crate) bad: Vec<String>,
}

/// 200 parallel `curl --socks5-hostname` downloads of sizes `base + 997 i` (every size
/// differs, so a body that went to the wrong transfer shows in its length and hash, not
/// only a corrupted one), bodies written under `dir`. Fails if curl itself fails
/// (`tails` gives the logs for the message).
pub(crate) fn parallel_downloads(
    socks: &str,
    http: &str,
    dir: &Path,
    base: u64,
    tails: impl Fn() -> String,
) -> Parallel {
    let sizes: Vec<u64> = (0..200u64).map(|i| base + 997 * i).collect();
    let want = expected_shas(&sizes);
    let mut cmd = curl_command();
    cmd.args([
        "--parallel",
        "--parallel-max",
        "200",
        "--parallel-immediate",
    ])
    .args(["--socks5-hostname", socks]);
    for (i, n) in sizes.iter().enumerate() {
        cmd.arg("-o")
            .arg(dir.join(format!("body-{i}")))
            .arg(format!("http://{http}/bytes/{n}"));
    }
    let t = Instant::now();
    let o = cmd.output().unwrap_or_else(|e| curl_missing(e));
    let took = t.elapsed();
    assert!(
        o.status.success(),
        "curl --parallel: {} ({})\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr).trim(),
        tails()
    );
    let mut bad = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let body = std::fs::read(dir.join(format!("body-{i}"))).unwrap_or_default();
        let sha = hex::encode(Sha256::digest(&body));
        if body.len() as u64 != *n || sha != want[n] {
            bad.push(format!("#{i}: {} of {n} bytes, sha {sha}", body.len()));
        }
    }
    Parallel { sizes, took, bad }
}

/// Runs tests/pong_udp.py through the SOCKS5 server at `socks` to the echo at `target`.
pub(crate) fn pong_udp(socks: &str, target: &str, sizes: &[usize]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pong_udp.py");
    Command::new("python3")
        .arg(&script)
        .arg(socks)
        .arg(target)
        .args(sizes.iter().map(|s| s.to_string()))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 not runnable ({e}); install it with `apt-get install -y python3` \
                 (tests/pong_udp.py needs only the standard library)"
            )
        })
}

/// A UDP echo on `bind` (a thread); counts the datagrams it echoed. Stops when dropped.
pub(crate) struct UdpEcho {
    pub(crate) addr: SocketAddr,
    pub(crate) echoed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl UdpEcho {
    /// Binds `bind` (e.g. `127.0.0.1:0`) and starts echoing.
    pub(crate) fn start(bind: &str) -> UdpEcho {
        let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("binding {bind}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let echoed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (echoed.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_535];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    // Counted before the echo leaves, so a client that got its echo
                    // finds it counted.
                    e.fetch_add(1, Ordering::SeqCst);
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        UdpEcho { addr, echoed, stop }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
