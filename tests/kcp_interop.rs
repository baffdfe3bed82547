//! `tunnelbed kcp` against the reference ikcp on real loopback UDP: the reference peer is
//! `conformance/peers/kcp_peer.py` on PyPI `kcp` 0.1.6 (the reference C code), installed
//! into `.venv` by `bash .ci/setup`. Both directions, and through `tunnelbed netem` at 10%
//! loss. Every check compares the SHA-256 of what came back with the documented payload.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use tunnelbed::cmd::kcp::expected_sha256;

/// Kills a child process on every path out of a test.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> PathBuf {
    let py = std::env::var_os("TUNNELBED_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        py.exists(),
        "reference KCP peer missing: {} not found. Install it with `bash .ci/setup` \
         (python3 -m venv .venv && .venv/bin/pip install kcp==0.1.6), or set TUNNELBED_PYTHON",
        py.display()
    );
    py
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/peers/kcp_peer.py")
}

/// Starts `cmd`, reads the first line of `stdout` (or `stderr`) and returns the second
/// word of it: the address a `listening ADDR` / `netem: ADDR -> ...` banner names.
fn start(mut cmd: Command, banner_on_stderr: bool) -> (Guard, String) {
    if banner_on_stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    }
    let mut child = cmd.spawn().expect("starting a peer");
    let mut line = String::new();
    if banner_on_stderr {
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
    } else {
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
    }
    let addr = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no address in banner {line:?}"))
        .to_string();
    (Guard(child), addr)
}

fn reference_echo() -> (Guard, String) {
    let mut c = Command::new(python());
    c.arg(peer_script()).args([
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--conv",
        "1",
        "--lifetime",
        "120",
    ]);
    start(c, false)
}

fn our_echo() -> (Guard, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tunnelbed"));
    c.args(["kcp", "echo", "--listen", "127.0.0.1:0", "--conv", "1"]);
    start(c, false)
}

fn netem(forward: &str, loss: &str) -> (Guard, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tunnelbed"));
    c.args([
        "netem",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        forward,
        "--loss",
        loss,
        "--seed",
        "7",
        "--duration",
        "120",
    ]);
    start(c, true)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `sha256=` and `bytes=` a sender printed.
fn report(o: &Output) -> (u64, String) {
    let t = text(o);
    let field = |k: &str| {
        t.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {t}"))
            .to_string()
    };
    (field("bytes=").parse().unwrap(), field("sha256="))
}

fn our_send(to: &str, bytes: u64) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(["kcp", "send", "--to", to, "--conv", "1", "--timeout", "60"])
        .args(["--bytes", &bytes.to_string()])
        .output()
        .unwrap()
}

fn reference_send(to: &str, bytes: u64) -> Output {
    Command::new(python())
        .arg(peer_script())
        .args(["send", "--to", to, "--conv", "1", "--timeout", "60"])
        .args(["--bytes", &bytes.to_string()])
        .output()
        .unwrap()
}

#[test]
fn ours_sends_to_the_reference_echo() {
    let (_echo, addr) = reference_echo();
    let n = 4_000_000;
    let o = our_send(&addr, n);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report(&o), (n, expected_sha256(n)), "{}", text(&o));
}

#[test]
fn the_reference_sends_to_our_echo() {
    let (_echo, addr) = our_echo();
    let n = 4_000_000;
    let o = reference_send(&addr, n);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report(&o), (n, expected_sha256(n)), "{}", text(&o));
}

#[test]
fn both_directions_through_netem_at_ten_percent_loss() {
    let n = 2_000_000;
    let (_echo, echo_addr) = reference_echo();
    let (_relay, relay) = netem(&echo_addr, "10");
    let o = our_send(&relay, n);
    assert!(
        o.status.success(),
        "ours -> netem 10% -> reference: {}",
        text(&o)
    );
    assert_eq!(report(&o), (n, expected_sha256(n)), "{}", text(&o));

    let (_echo2, echo2) = our_echo();
    let (_relay2, relay2) = netem(&echo2, "10");
    let o = reference_send(&relay2, n);
    assert!(
        o.status.success(),
        "reference -> netem 10% -> ours: {}",
        text(&o)
    );
    assert_eq!(report(&o), (n, expected_sha256(n)), "{}", text(&o));
}

#[test]
fn a_wrong_echo_is_reported_as_a_failure() {
    // A peer with another conversation id drops our segments: the send must fail
    // (timeout, exit 1), not report success.
    let (_echo, addr) = reference_echo();
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args([
            "kcp",
            "send",
            "--to",
            &addr,
            "--conv",
            "2",
            "--timeout",
            "3",
        ])
        .args(["--bytes", "10000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn bad_arguments_are_usage_errors() {
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(["kcp", "send", "--to", "127.0.0.1:9", "--bytes", "1"])
        .args(["--profile", "warp-speed"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown KCP profile"), "{}", text(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(["kcp", "send", "--to", "not-an-address", "--bytes", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
