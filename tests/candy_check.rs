//! `tunnelbed check candy` against our server (every case passes) and against Candy's
//! own server v6.1.8 (exactly its three known deviations fail: no replay check, no
//! source check, DHCP grants the network and broadcast addresses). Our server runs on
//! loopback; Candy's in a network namespace this test creates (so its fixed port is
//! free). Writes both Markdown tables under the target dir (`reports/candy-conformance.md`
//! is made from them). Our server over `wss://` (a certificate made by openssl) passes
//! every case too, checked with that certificate as the only trust. A missing Candy
//! build fails with how to get it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn tunnelbed() -> &'static str {
    env!("CARGO_BIN_EXE_tunnelbed")
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn candy_peer_dir() -> PathBuf {
    if let Ok(d) = std::env::var("TUNNELBED_CANDY_PEER_DIR") {
        return PathBuf::from(d);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/peers/candy"))
        .find(|d| d.join("build.sh").is_file())
        .unwrap_or_else(|| {
            panic!(
                "Candy's peer files (shared/peers/candy/build.sh) not found above {}: set \
                 TUNNELBED_CANDY_PEER_DIR",
                here.display()
            )
        })
}

fn candy_bin() -> PathBuf {
    let dir = candy_peer_dir();
    let out = Command::new("bash")
        .arg(dir.join("build.sh"))
        .output()
        .expect("running build.sh");
    assert!(
        out.status.success(),
        "building Candy failed (run `bash {}/build.sh`, or `bash .ci/setup`):\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs the checker (optionally inside `ns`); returns (exit code, stdout, JUnit XML).
fn check(ns: Option<&str>, url: &str, tag: &str) -> (i32, String, String) {
    check_with(ns, url, tag, &[])
}

/// [`check`] with `extra` arguments.
fn check_with(ns: Option<&str>, url: &str, tag: &str, extra: &[&str]) -> (i32, String, String) {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let junit = tmp.join(format!("candy-{tag}.xml"));
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, tunnelbed()]);
            c
        }
        None => Command::new(tunnelbed()),
    };
    c.args([
        "check",
        "candy",
        "--server",
        url,
        "--password",
        "pw",
        "--junit",
    ])
    .arg(&junit)
    .arg("--markdown")
    .arg(tmp.join(format!("candy-{tag}.md")))
    .args(extra);
    let out = c.output().expect("running check candy");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    std::fs::write(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("candy-{tag}.txt")),
        &stdout,
    )
    .unwrap();
    (out.status.code().unwrap_or(-1), stdout, xml)
}

fn failed_ids(table: &str) -> Vec<String> {
    table
        .lines()
        .filter(|l| l.starts_with("CANDY-") && l.split_whitespace().nth(2) == Some("FAIL"))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Starts our server listening on `listen` with `extra` arguments; returns it and the
/// URL its banner names.
fn our_server(listen: &str, extra: &[&str]) -> (Kill, String) {
    let mut child = Command::new(tunnelbed())
        .args(["candy", "server", "--listen", listen, "--password", "pw"])
        .args(["--dhcp", "10.77.0.0/24"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting our server");
    let err = child.stderr.take().unwrap();
    let _k = Kill(child);
    let mut line = String::new();
    BufReader::new(err).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("candy server listening on ")
        .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
        .to_string();
    (_k, url)
}

#[test]
fn every_case_passes_against_our_server() {
    let (_server, url) = our_server("ws://127.0.0.1:0", &[]);
    let (code, out, xml) = check(None, &url, "ours");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("18 PASS, 0 FAIL, 0 WARN, 0 N/A"), "{out}");
    assert!(xml.contains("CANDY-AUTH-REPLAY"), "JUnit written: {xml}");
}

#[test]
fn candy_server_fails_exactly_its_known_deviations() {
    let bin = candy_bin();
    let ns = format!("tbcchk{}", std::process::id() % 100_000);
    let ok = |c: &mut Command| assert!(c.status().expect("ip").success(), "{c:?}");
    ok(Command::new("ip").args(["netns", "add", &ns]));
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _ns = Ns(ns.clone());
    ok(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
    // Candy's server straight (no run-pair.sh), so this test owns the process.
    let child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&bin)
        .args(["--mode", "server", "--websocket", "ws://127.0.0.1:18080"])
        .args(["--password", "pw", "--dhcp", "10.77.0.0/24"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting Candy's server");
    let mut child = Kill(child);
    let out = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if l.contains("listen on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("Candy's server did not say `listen on` within 30 s");
    let (code, out, _) = check(Some(&ns), "ws://127.0.0.1:18080", "candy");
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        failed_ids(&out),
        [
            "CANDY-AUTH-REPLAY",
            "CANDY-FWD-SPOOFED-SOURCE",
            "CANDY-DHCP-NOT-NET-BCAST"
        ],
        "{out}"
    );
}

#[path = "support/cert.rs"]
mod cert;
use cert::make_cert;

#[test]
fn every_case_passes_against_our_server_over_wss() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("candy-check-wss");
    let (cert, key) = make_cert(&dir, "wss", &["127.0.0.1"]);
    let (_server, url) = our_server(
        "wss://127.0.0.1:0",
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    assert!(url.starts_with("wss://127.0.0.1:"), "banner {url}");
    let (code, out, xml) = check_with(None, &url, "ours-wss", &["--tls-ca", &cert]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("18 PASS, 0 FAIL, 0 WARN, 0 N/A"), "{out}");
    assert!(xml.contains("CANDY-AUTH-REPLAY"), "JUnit written: {xml}");
    // The same port spoken to without TLS gets nowhere: the checker fails (it cannot
    // even open a WebSocket), so the run above really went through TLS.
    let plain = url.replacen("wss://", "ws://", 1);
    let (code, out, _) = check(None, &plain, "ours-wss-plain");
    assert_ne!(
        code, 0,
        "a plain ws:// checker passed against a wss:// server: {out}"
    );
    // wss:// without a trust setting is refused up front.
    let (code, out, _) = check(None, &url, "ours-wss-no-trust");
    assert_eq!(code, 2, "wss:// without --tls-ca/--insecure: {out}");
}
