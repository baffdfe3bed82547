//! `tunnelbed kcp echo` / `kcp send` against the reference ikcp on real loopback UDP.
//!
//! The reference peer is `conformance/peers/kcp_peer.py` on PyPI `kcp` 0.1.6 (it compiles
//! the reference ikcp C code), run with `.venv/bin/python` (made by `bash .ci/setup`; if it
//! is missing these tests fail and say so, they never skip). Covered: ours -> reference
//! echo and reference -> our echo, each in message mode and in stream mode (the reference
//! is message-only: a stream sender's frg=0 segments are single-segment messages to it),
//! and both directions through `tunnelbed netem` at 10% loss. Every transfer's printed
//! SHA-256 is compared with a digest this file computes itself from the documented bulk
//! pattern; a corrupting echo and a silent peer show the sender's checks can fail.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::arq::{ArqOptions, ArqServer};
use tunnelbed_netio::{TokioNet, Trace};

/// Longest any one child may run before the test kills it and fails.
const CHILD_DEADLINE: Duration = Duration::from_secs(45);

/// A child process that is killed on every path out of a test, with its stderr collected
/// so failures can show it.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Signalled by the stderr reader when it has read to the end of the pipe.
    stderr_done: mpsc::Receiver<()>,
    name: String,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &str) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let (done_tx, stderr_done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            let _ = done_tx.send(());
        });
        Proc {
            child,
            stderr,
            stderr_done,
            name: name.to_string(),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Reads stdout to the end and waits for exit, killing the child after
    /// [`CHILD_DEADLINE`] (then the test fails: nothing may hang).
    fn finish(mut self) -> (ExitStatus, String, String) {
        let mut out = self.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                start.elapsed() < CHILD_DEADLINE,
                "{} did not finish within {CHILD_DEADLINE:?} (killed); stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The child has exited: both pipes reach their end. The readers' results are
        // awaited (bounded: a grandchild holding a pipe open must not hang the test).
        let stdout = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("stdout of an exited child never ended");
        self.stderr_done
            .recv_timeout(Duration::from_secs(30))
            .expect("stderr of an exited child never ended");
        (status, stdout, self.stderr())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference peer's interpreter; a missing one fails the test with the fix.
fn python() -> PathBuf {
    let py = root().join(".venv/bin/python");
    assert!(
        py.exists(),
        "the reference KCP peer needs {}: run `bash .ci/setup` (creates .venv with PyPI kcp 0.1.6)",
        py.display()
    );
    py
}

fn tunnelbed() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
}

/// Starts a server that announces its address as the second word of its first line
/// (`listening ADDR` on stdout); returns it with that address.
fn start_listening(cmd: Command, name: &str) -> (Proc, String) {
    let mut p = Proc::spawn(cmd, name);
    let out = p.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
    let addr = match line.strip_prefix("listening ") {
        Some(a) => a.trim().to_string(),
        None => {
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "{name} printed {line:?} instead of `listening ADDR`; stderr:\n{}\n\
                 (if the Python package `kcp` is missing, run `bash .ci/setup`)",
                p.stderr()
            );
        }
    };
    (p, addr)
}

fn reference_echo() -> (Proc, String) {
    let mut c = Command::new(python());
    c.arg(root().join("conformance/peers/kcp_peer.py")).args([
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--lifetime",
        "90",
    ]);
    start_listening(c, "kcp_peer.py echo")
}

fn our_echo(profile: &str) -> (Proc, String) {
    let mut c = tunnelbed();
    c.args([
        "kcp",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--profile",
        profile,
    ])
    .args(["--duration", "90"]);
    start_listening(c, "tunnelbed kcp echo")
}

/// `tunnelbed netem` with `loss` percent each way in front of `forward`; its banner is
/// `netem: ADDR -> ...` on stderr.
fn netem(forward: &str, loss: &str) -> (Proc, String) {
    // No --duration: the guard kills it, and SIGINT makes it print its counters.
    let mut c = tunnelbed();
    c.args(["netem", "--listen", "127.0.0.1:0", "--forward", forward])
        .args(["--profile", "clean", "--loss", loss, "--seed", "7"]);
    let p = Proc::spawn(c, "tunnelbed netem");
    let start = Instant::now();
    loop {
        let err = p.stderr();
        if let Some(line) = err.lines().next().filter(|_| err.contains('\n')) {
            let addr = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_else(|| panic!("unexpected netem banner {line:?}"))
                .to_string();
            return (p, addr);
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "netem printed no banner; stderr: {err}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SHA-256 of the first `n` bytes of the documented bulk pattern: SHA-256 of each
/// counter k = 0, 1, ... as 8 little-endian bytes, concatenated. Computed here, not taken
/// from the binary, so a wrong pattern on both sides cannot agree by construction.
fn expected_sha256(n: u64) -> String {
    let mut h = Sha256::new();
    let mut left = n;
    let mut k = 0u64;
    while left > 0 {
        let block = Sha256::digest(k.to_le_bytes());
        let take = left.min(32) as usize;
        h.update(&block[..take]);
        left -= take as u64;
        k += 1;
    }
    hex::encode(h.finalize())
}

/// The value of `key=` in a sender's result line.
fn field(stdout: &str, key: &str) -> String {
    let k = format!("{key}=");
    stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&k))
        .unwrap_or_else(|| panic!("no {key}= in {stdout:?}"))
        .to_string()
}

/// Runs a sender to completion and checks it succeeded and echoed exactly the pattern.
fn check_transfer(cmd: Command, name: &str, n: u64) {
    let (st, out, err) = Proc::spawn(cmd, name).finish();
    assert!(st.success(), "{name} failed ({st}):\n{out}\n{err}");
    assert_eq!(field(&out, "bytes"), n.to_string(), "{name}: {out}");
    assert_eq!(
        field(&out, "sha256"),
        expected_sha256(n),
        "{name}: the echo's digest is not the pattern's: {out}"
    );
}

fn our_send(to: &str, profile: &str, n: u64) -> Command {
    our_send_within(to, profile, n, "40")
}

fn our_send_within(to: &str, profile: &str, n: u64, timeout: &str) -> Command {
    let mut c = tunnelbed();
    c.args(["kcp", "send", "--to", to, "--profile", profile])
        .args(["--bytes", &n.to_string(), "--timeout", timeout]);
    c
}

fn reference_send(to: &str, n: u64) -> Command {
    let mut c = Command::new(python());
    c.arg(root().join("conformance/peers/kcp_peer.py")).args([
        "send",
        "--to",
        to,
        "--bytes",
        &n.to_string(),
        "--timeout",
        "40",
    ]);
    c
}

#[test]
fn ours_to_reference_echo_message_and_stream_mode() {
    let (_echo, addr) = reference_echo();
    // reference-peer: message mode, the peer's own knobs.
    check_transfer(
        our_send(&addr, "reference-peer", 4_000_000),
        "send reference-peer",
        4_000_000,
    );
    // fast3: stream mode; every segment reaches the peer as a one-segment message.
    check_transfer(our_send(&addr, "fast3", 3_000_000), "send fast3", 3_000_000);
}

#[test]
fn reference_to_our_echo_message_and_stream_mode() {
    let (_m, addr) = our_echo("reference-peer");
    check_transfer(
        reference_send(&addr, 3_000_000),
        "kcp_peer.py send -> reference-peer echo",
        3_000_000,
    );
    // fast4: stream mode; it reassembles the peer's 4096-byte messages and answers with
    // frg=0 segments.
    let (_s, addr) = our_echo("fast4");
    check_transfer(
        reference_send(&addr, 3_000_000),
        "kcp_peer.py send -> fast4 echo",
        3_000_000,
    );
}

#[test]
fn both_directions_through_netem_at_ten_percent_loss() {
    let n = 2_000_000;
    let (_echo, echo_addr) = reference_echo();
    let (relay_proc, relay) = netem(&echo_addr, "10");
    check_transfer(
        our_send(&relay, "reference-peer", n),
        "send -> netem 10% -> reference",
        n,
    );
    check_transfer(
        our_send(&relay, "clientFast4", n),
        "send clientFast4 -> netem 10% -> reference",
        n,
    );
    // The relay really dropped datagrams: stop it with SIGINT, it prints its counters.
    let stats = interrupt(relay_proc);
    let dropped: u64 = stats
        .split("dropped ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no netem counters in {stats:?}"));
    assert!(dropped > 100, "netem dropped only {dropped}: {stats}");

    let (_ours, ours) = our_echo("fast4");
    let (_relay2, relay2) = netem(&ours, "10");
    check_transfer(
        reference_send(&relay2, n),
        "kcp_peer.py send -> netem 10% -> fast4 echo",
        n,
    );
}

/// Stops a child with SIGINT (a clean exit for `netem`) and returns its stderr.
fn interrupt(p: Proc) -> String {
    // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
    unsafe {
        libc::kill(p.child.id() as libc::pid_t, libc::SIGINT);
    }
    p.finish().2
}

/// Starts an in-process KCP echo (reference-peer knobs) that flips one bit of the byte at
/// stream offset `at`.
fn corrupting_echo(at: u64) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cfg = KcpConfig {
                mtu: 1400,
                snd_wnd: 256,
                rcv_wnd: 256,
                nodelay: 1,
                interval: 10,
                resend: 2,
                nc: true,
                ..KcpConfig::default()
            };
            let mut srv = ArqServer::bind(
                &TokioNet,
                "127.0.0.1:0".parse().unwrap(),
                move |_, _| Some(Kcp::new(1, &cfg, Trace::disabled(), "bad-echo")),
                ArqOptions::default(),
            )
            .await
            .unwrap();
            tx.send(srv.local_addr()).unwrap();
            let Ok(Some((mut s, _))) =
                tokio::time::timeout(Duration::from_secs(30), srv.accept()).await
            else {
                return;
            };
            let mut buf = vec![0u8; 16 * 1024];
            let mut off = 0u64;
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if (off..off + n as u64).contains(&at) {
                        buf[(at - off) as usize] ^= 0x10;
                    }
                    off += n as u64;
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            })
            .await;
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("corrupting echo did not start");
    (addr, h)
}

#[test]
fn a_corrupted_echo_fails_the_send() {
    let (addr, _h) = corrupting_echo(123_457);
    let (st, out, err) = Proc::spawn(
        our_send(&addr.to_string(), "reference-peer", 500_000),
        "send -> corrupting echo",
    )
    .finish();
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("differs from what was sent, first at byte offset 123457"),
        "{err}"
    );
    // The digest line is still printed, and it is not the pattern's.
    assert_ne!(field(&out, "sha256"), expected_sha256(500_000));
}

#[test]
fn a_silent_peer_fails_quickly_instead_of_hanging() {
    // A bound UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = silent.local_addr().unwrap().to_string();
    let mut c = our_send(&to, "reference-peer", 100_000);
    c.args(["--idle-timeout", "1.5"]);
    // `finish` fails the test if the child runs past CHILD_DEADLINE: no hang. That the
    // idle timeout (not some other limit) ended it shows in the message.
    let (st, out, err) = Proc::spawn(c, "send -> silent").finish();
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("no datagram from"), "{err}");

    // The overall timeout also ends a transfer that is making progress too slowly:
    // the reference ikcp default profile (window 32, 100 ms interval) cannot echo 20 MB
    // in 1 s.
    let (_echo, addr) = reference_echo();
    let c = our_send_within(&addr, "default", 20_000_000, "1");
    let (st, out, err) = Proc::spawn(c, "send -> timeout").finish();
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("timed out after 1.0 s"), "{err}");
}

#[test]
fn bad_input_is_a_usage_error() {
    for (args, says) in [
        (
            vec![
                "kcp",
                "send",
                "--to",
                "127.0.0.1:9",
                "--bytes",
                "1",
                "--profile",
                "warp",
            ],
            "unknown profile",
        ),
        (
            vec!["kcp", "send", "--to", "not-an-address", "--bytes", "1"],
            "expected HOST:PORT",
        ),
        (
            vec!["kcp", "send", "--to", "127.0.0.1:9", "--bytes", "0"],
            "at least 1 byte",
        ),
        (
            vec!["kcp", "echo", "--listen", "127.0.0.1:70000"],
            "expected HOST:PORT",
        ),
    ] {
        let mut c = tunnelbed();
        c.args(&args);
        let (st, out, err) = Proc::spawn(c, "tunnelbed").finish();
        assert_eq!(st.code(), Some(2), "{args:?}: {out}\n{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
