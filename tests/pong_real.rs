//! `tunnelbed pong` on real loopback sockets (127.0.0.1 and ::1 only), with `curl` and
//! `tests/pong_udp.py` as the applications: `curl --socks5-hostname` -> `pong local` ->
//! (tcp://, tls://, ws://, wss://, h2c://, h2://, h3://, http:// or https:// carrier) ->
//! `pong remote` -> `tunnelbed http-source`.
//! Every body is checked by length and SHA-256 against http-source's documented pattern
//! ([`tunnelbed::cmd::http_source::pattern_byte`]); the UDP client checks every echoed
//! datagram byte for byte. Each test starts its own processes and kills them on every
//! path out; a failure prints the tail of every child's log. A missing `curl` or
//! `python3` fails the test with an install hint (it never skips).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tunnelbed::cmd::http_source::fill_pattern;

/// The client id every remote allows.
const ID: &str = "6f1c2a4e-93b7-4d21-8e5a-0c7d9f3b1a52";
/// A well-formed id that no remote allows.
const WRONG_ID: &str = "6f1c2a4e-93b7-4d21-8e5a-0c7d9f3b1a53";

/// 100 MiB (100 * 2^20 bytes), the size of the bulk downloads.
const BULK: u64 = 100 << 20;

/// MiB of the bulk download over each HTTP carrier (h2c, h2, h3, http, https): 8 by
/// default to keep the suite quick; `TUNNELBED_PONG_BULK_MIB=100` gives the 100 MiB
/// must-show run.
fn http_bulk() -> u64 {
    env_u64("TUNNELBED_PONG_BULK_MIB", 8) << 20
}

/// KiB of the smallest of the 200 parallel downloads over each HTTP carrier (the i-th
/// is that plus 997 i bytes): 64 by default; `TUNNELBED_PONG_PARALLEL_KIB=1024` gives
/// the same sizes as the tcp case.
fn http_parallel_base() -> u64 {
    env_u64("TUNNELBED_PONG_PARALLEL_KIB", 64) << 10
}

/// A size knob from the environment (whole number, at least 1), or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => n,
            _ => panic!("{name}={v:?}: expected a whole number of at least 1"),
        },
        Err(_) => default,
    }
}

/// Whether a carrier URL runs over TLS (the remote needs a certificate, the local
/// trusts it).
fn tls_url(url: &str) -> bool {
    ["tls://", "wss://", "h2://", "h3://", "https://"]
        .iter()
        .any(|p| url.starts_with(p))
}

// ---------------------------------------------------------------------------------------
// Child processes (tests/support/child.rs)

#[path = "support/child.rs"]
mod child;
use child::Proc;

/// A scratch directory for this test process and `name`.
fn scratch(name: &str) -> PathBuf {
    child::scratch("pong_real", name)
}

/// The origin, a remote on `scheme` and a local talking to it.
struct Chain {
    origin: Proc,
    remote: Proc,
    local: Proc,
    /// http-source's `IP:PORT`.
    http: String,
    /// The local's SOCKS5 `IP:PORT`.
    socks: String,
    /// The remote's URL with its real port.
    remote_url: String,
    dir: PathBuf,
}

impl Chain {
    /// Every child's log tail.
    fn tails(&self) -> String {
        format!(
            "{}{}{}",
            self.local.tail(),
            self.remote.tail(),
            self.origin.tail()
        )
    }
}

/// Starts `pong remote --listen LISTEN` allowing [`ID`] (with a self-signed
/// certificate written into `dir` for TLS carriers); returns it and its URL.
fn start_remote(listen: &str, dir: &Path) -> (Proc, String) {
    start_remote_with(listen, dir, &[])
}

/// [`start_remote`] with `extra` arguments.
fn start_remote_with(listen: &str, dir: &Path, extra: &[&str]) -> (Proc, String) {
    let cert = dir.join("remote-cert.pem");
    let cert = cert.to_str().unwrap();
    let mut args = vec!["pong", "remote", "--listen", listen, "--client-id", ID];
    args.extend_from_slice(extra);
    if tls_url(listen) {
        args.extend(["--self-signed-cert-out", cert]);
    }
    Proc::start("pong remote", &args, "pong remote listening on ")
}

/// Starts `pong local` on `socks` for the remote at `url` (trusting the remote's
/// certificate in `dir` for TLS carriers) with client id `id`.
fn start_local(socks: &str, url: &str, id: &str, dir: &Path) -> (Proc, String) {
    let cert = dir.join("remote-cert.pem");
    let cert = cert.to_str().unwrap();
    let mut args = vec![
        "pong",
        "local",
        "--socks",
        socks,
        "--remote",
        url,
        "--client-id",
        id,
    ];
    if tls_url(url) {
        args.extend(["--ca", cert]);
    }
    Proc::start("pong local", &args, "pong local: SOCKS5 on ")
}

fn chain(scheme: &str, name: &str) -> Chain {
    let dir = scratch(name);
    let (origin, http) = Proc::start(
        "http-source",
        &["http-source", "--listen", "127.0.0.1:0"],
        "listening ",
    );
    let (remote, remote_url) = start_remote(&format!("{scheme}://127.0.0.1:0"), &dir);
    let (local, socks) = start_local("127.0.0.1:0", &remote_url, ID, &dir);
    Chain {
        origin,
        remote,
        local,
        http,
        socks,
        remote_url,
        dir,
    }
}

// ---------------------------------------------------------------------------------------
// Applications (tests/support/downloads.rs)

#[path = "support/downloads.rs"]
mod downloads;
use downloads::{
    assert_intact, curl, curl_command, curl_missing, fetch, fetch_with, parallel_downloads,
    pong_udp, UdpEcho,
};

// ---------------------------------------------------------------------------------------
// 1. 100 MiB over every carrier

fn bulk_over(scheme: &str) {
    bulk_sized(scheme, BULK);
}

fn bulk_sized(scheme: &str, n: u64) {
    let c = chain(scheme, &format!("bulk-{scheme}"));
    let t = Instant::now();
    let f = fetch(&c.socks, &c.http, n);
    let took = t.elapsed();
    let mib = n as f64 / (1u64 << 20) as f64;
    assert_intact(&f, n, &format!("{mib} MiB over {scheme}://"), || c.tails());
    eprintln!(
        "pong over {scheme}://: {mib} MiB in {:.2} s, curl speed {:.1} MB/s, sha256 {}",
        took.as_secs_f64(),
        f.speed() / 1e6,
        f.sha
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn hundred_mib_over_tcp() {
    bulk_over("tcp");
}

#[test]
fn hundred_mib_over_tls() {
    bulk_over("tls");
}

#[test]
fn hundred_mib_over_ws() {
    bulk_over("ws");
}

#[test]
fn hundred_mib_over_wss() {
    bulk_over("wss");
}

#[test]
fn bulk_over_h2c() {
    bulk_sized("h2c", http_bulk());
}

#[test]
fn bulk_over_h2() {
    bulk_sized("h2", http_bulk());
}

#[test]
fn bulk_over_h3() {
    bulk_sized("h3", http_bulk());
}

#[test]
fn bulk_over_http() {
    bulk_sized("http", http_bulk());
}

#[test]
fn bulk_over_https() {
    bulk_sized("https", http_bulk());
}

// ---------------------------------------------------------------------------------------
// 2. 200 parallel downloads

#[test]
fn two_hundred_parallel_downloads() {
    parallel_over("tcp", 1 << 20);
}

#[test]
fn two_hundred_parallel_downloads_over_h2c() {
    parallel_over("h2c", http_parallel_base());
}

#[test]
fn two_hundred_parallel_downloads_over_h2() {
    parallel_over("h2", http_parallel_base());
}

#[test]
fn two_hundred_parallel_downloads_over_h3() {
    parallel_over("h3", http_parallel_base());
}

#[test]
fn two_hundred_parallel_downloads_over_http() {
    parallel_over("http", http_parallel_base());
}

#[test]
fn two_hundred_parallel_downloads_over_https() {
    parallel_over("https", http_parallel_base());
}

/// 200 parallel downloads through a chain over `scheme`, the smallest `base` bytes.
fn parallel_over(scheme: &str, base: u64) {
    let c = chain(scheme, &format!("parallel-{scheme}"));
    let p = parallel_downloads(&c.socks, &c.http, &c.dir, base, || c.tails());
    let (sizes, took, bad) = (p.sizes, p.took, p.bad);
    assert!(
        bad.is_empty(),
        "{} of 200 parallel downloads differ: {bad:?}\n{}",
        bad.len(),
        c.tails()
    );
    // How many carriers the pool opened depends on how many streams happened to be live
    // at once (a loaded machine may finish some before others start); the 30-stream
    // limit itself is checked without timing luck by
    // `thirty_one_streams_held_open_need_a_second_carrier`.
    let carriers = c.local.count(": carrier to ");
    eprintln!(
        "200 parallel downloads over {scheme}:// ({:.1} MB) in {:.2} s over {carriers} carriers",
        sizes.iter().sum::<u64>() as f64 / 1e6,
        took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// The pool's limit of 30 live streams per carrier: 31 streams to a target of ours that
/// accepts every connection and holds it open are all live at once (each is answered
/// only after the 31st arrived), so the pool must have opened a second carrier.
#[test]
fn thirty_one_streams_held_open_need_a_second_carrier() {
    let c = chain("tcp", "carrier-limit");
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let taddr = target.local_addr().unwrap();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..31 {
            match target.accept() {
                Ok((s, _)) => held.push(s),
                Err(e) => panic!("accept on the target: {e}"),
            }
        }
        // All 31 are open now; answer each so its application sees it through.
        for s in &mut held {
            let _ = s.write_all(b"held");
        }
        held
    });
    let apps: Vec<TcpStream> = (0..31).map(|_| socks_connect(&c.socks, taddr)).collect();
    let mut apps = apps;
    for (i, s) in apps.iter_mut().enumerate() {
        let mut got = [0u8; 4];
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("stream {i} of 31 held open: {e}\n{}", c.tails()));
        assert_eq!(&got, b"held", "stream {i}");
    }
    let held = holder.join().unwrap();
    let carriers = c.local.count(": carrier to ");
    assert!(
        carriers >= 2,
        "31 streams live at once went over {carriers} carrier(s) (30 per carrier allowed)\n{}",
        c.tails()
    );
    drop((apps, held));
}

// ---------------------------------------------------------------------------------------
// 3. UDP ASSOCIATE

/// Datagram sizes sent through the association: 1 byte up to ~60 000 bytes (the largest
/// is 65 000, which still fits a SOCKS5 UDP header in one IPv4 datagram).
const UDP_SIZES: &[usize] = &[1, 2, 31, 100, 1400, 1473, 8192, 30_000, 60_000, 65_000];

fn udp_through(scheme: &str, socks_bind: &str, echo_bind: &str) {
    let dir = scratch(&format!("udp-{scheme}"));
    let echo = UdpEcho::start(echo_bind);
    let (remote, url) = start_remote(&format!("{scheme}://127.0.0.1:0"), &dir);
    let (local, socks) = start_local(socks_bind, &url, ID, &dir);
    let target = echo.addr.to_string();
    let o = pong_udp(&socks, &target, UDP_SIZES);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "pong_udp.py via {socks} to {target} over {scheme}://: {}\n{stdout}{}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        local.tail(),
        remote.tail()
    );
    for s in UDP_SIZES {
        assert!(
            stdout.lines().any(|l| l == format!("ok {s}")),
            "no `ok {s}` in {stdout}"
        );
    }
    // The datagrams really reached the echo (the tunnel did not answer by itself).
    assert_eq!(
        echo.echoed.load(Ordering::SeqCst),
        UDP_SIZES.len() as u64,
        "datagrams received (and echoed) by the target"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn udp_associate_echoes_datagrams_intact() {
    udp_through("tcp", "127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn udp_associate_over_ipv6_loopback_and_ws() {
    udp_through("ws", "[::1]:0", "[::1]:0");
}

// ---------------------------------------------------------------------------------------
// 4. A wrong client id

/// A pong connection header (`ver 0 | client id`) for `uuid`, then a connect frame for
/// stream 1 to `target` and a data frame with `data` (protocols/pong/src/wire.rs).
fn hello_and_connect(uuid: &str, target: SocketAddr, data: &[u8]) -> Vec<u8> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    let mut b = vec![0u8];
    b.extend((0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()));
    let SocketAddr::V4(v4) = target else {
        panic!("an IPv4 target")
    };
    let mut addr = vec![1u8];
    addr.extend(v4.ip().octets());
    addr.extend(v4.port().to_be_bytes());
    for (ty, payload) in [(0x01u8, &addr[..]), (0x00, data)] {
        b.extend(((7 + payload.len()) as u16).to_be_bytes());
        b.extend(1u32.to_be_bytes());
        b.push(ty);
        b.extend_from_slice(payload);
    }
    b
}

/// Sends `hello` on a fresh TCP connection to `remote`, then reads until EOF (or reset,
/// or `wait`): returns what came back and how the read ended.
fn send_and_read(remote: &str, hello: &[u8], wait: Duration) -> (Vec<u8>, String) {
    let mut s = TcpStream::connect(remote).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(hello).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, "eof".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, "reset".into()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let _ = s.shutdown(Shutdown::Both);
                return (got, "timeout".into());
            }
            Err(e) => return (got, format!("error {e}")),
        }
    }
}

/// Whether `lsn` (non-blocking) has a connection waiting, polled for `wait`.
fn was_dialed(lsn: &TcpListener, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        match lsn.accept() {
            Ok(_) => return true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept on the target: {e}"),
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_wrong_client_id_is_closed_without_a_byte_and_never_dialed() {
    let dir = scratch("wrong-id-raw");
    let (remote, url) = start_remote("tcp://127.0.0.1:0", &dir);
    let addr = url.strip_prefix("tcp://").unwrap().to_string();
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    let taddr = target.local_addr().unwrap();

    // The wrong id: the connection ends with nothing written back, and nothing dials.
    let (got, end) = send_and_read(
        &addr,
        &hello_and_connect(WRONG_ID, taddr, b"hello"),
        Duration::from_secs(15),
    );
    assert!(
        got.is_empty() && (end == "eof" || end == "reset"),
        "wrong id: {} bytes back, then {end} (expected 0 bytes, then EOF or reset)\n{}",
        got.len(),
        remote.tail()
    );
    assert!(
        !was_dialed(&target, Duration::from_millis(500)),
        "the remote dialed the target for a client id it does not allow\n{}",
        remote.tail()
    );
    let remote = remote;
    remote.wait_for("not allowed", Duration::from_secs(5));

    // Control: the same bytes with the allowed id do dial the target (so the frames above
    // were well formed and the check above could fail).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&hello_and_connect(ID, taddr, b"hello"))
        .unwrap();
    assert!(
        was_dialed(&target, Duration::from_secs(10)),
        "the allowed id did not dial the target\n{}",
        remote.tail()
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_local_with_a_wrong_client_id_fails_and_the_remote_logs_it() {
    let c = chain("tcp", "wrong-id-local");
    let (bad_local, bad_socks) = start_local("127.0.0.1:0", &c.remote_url, WRONG_ID, &c.dir);
    let o = curl(&[
        "--socks5-hostname",
        &bad_socks,
        &format!("http://{}/bytes/1000", c.http),
    ]);
    assert!(
        !o.status.success() && o.stdout.is_empty(),
        "curl through a local with a wrong id: {} with {} bytes\n{}{}",
        o.status,
        o.stdout.len(),
        bad_local.tail(),
        c.tails()
    );
    let remote = c.remote;
    remote.wait_for("not allowed", Duration::from_secs(5));
    bad_local.kill();
    // The right local, same remote, still works.
    let f = fetch(&c.socks, &c.http, 1 << 20);
    assert_intact(&f, 1 << 20, "through the allowed local", || {
        c.local.tail() + &remote.tail()
    });
    eprintln!(
        "wrong id: curl exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

// ---------------------------------------------------------------------------------------
// 5. The remote restarts

#[test]
fn a_remote_killed_mid_download_fails_it_and_a_restarted_remote_serves_again() {
    let mut c = chain("tcp", "restart");
    // A rate-limited download, so the remote dies in the middle of it.
    let killed_at = AtomicU64::new(0);
    let remote = &mut c.remote;
    let f = fetch_with(&c.socks, &c.http, BULK, &["--limit-rate", "20M"], |n| {
        if n >= 4 << 20 && killed_at.load(Ordering::Relaxed) == 0 {
            killed_at.store(n, Ordering::Relaxed);
            remote.kill();
        }
    });
    let killed_at = killed_at.load(Ordering::Relaxed);
    assert!(killed_at > 0, "the download ended before 4 MiB");
    assert!(
        !f.status.success() && f.len < BULK,
        "remote killed after {killed_at} bytes, yet curl reported {} with {} bytes ({})\n{}",
        f.status,
        f.len,
        f.stderr.trim(),
        c.tails()
    );
    // The carrier died, so the local resets the application's connection: curl sees a
    // reset (exit 56, "Recv failure: Connection reset by peer"), not a short clean end
    // (exit 18) that only Content-Length would give away.
    assert_eq!(
        f.status.code(),
        Some(56),
        "curl must see a reset: {}\n{}",
        f.stderr.trim(),
        c.tails()
    );
    eprintln!(
        "remote killed after {killed_at} bytes: curl {} after {} bytes: {}",
        f.status,
        f.len,
        f.stderr.lines().next().unwrap_or("")
    );

    // While the remote is down, a request fails, with no body.
    let o = curl(&[
        "--socks5-hostname",
        &c.socks,
        &format!("http://{}/bytes/1000", c.http),
    ]);
    assert!(
        !o.status.success() && o.stdout.is_empty(),
        "with the remote down: curl {} with {} bytes\n{}",
        o.status,
        o.stdout.len(),
        c.tails()
    );

    // A new remote on the same port; the same local serves the next request.
    let listen = c.remote_url.clone();
    let (remote2, url2) = start_remote(&listen, &c.dir);
    assert_eq!(url2, listen);
    c.remote = remote2;
    let n = 10 << 20;
    let f = fetch(&c.socks, &c.http, n);
    assert_intact(&f, n, "the first request after the restart", || c.tails());
    let _ = std::fs::remove_dir_all(&c.dir);
}

// ---------------------------------------------------------------------------------------
// 6. Usage errors

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let dir = scratch("usage");
    let cert = dir.join("c.pem");
    std::fs::write(&cert, "").unwrap();
    let cert = cert.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "pong",
                "remote",
                "--listen",
                "tcp://127.0.0.1:0",
                "--client-id",
                "not-a-uuid",
            ],
            "expected a UUID",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "127.0.0.1:0",
                "--remote",
                "tcp://127.0.0.1:9",
                "--client-id",
                "6f1c2a4e93b74d218e5a0c7d9f3b1a52",
            ],
            "expected a UUID",
        ),
        (
            &[
                "pong",
                "remote",
                "--listen",
                "tls://127.0.0.1:0",
                "--client-id",
                ID,
            ],
            "needs --cert FILE --key FILE or --self-signed-cert-out FILE",
        ),
        (
            &[
                "pong",
                "remote",
                "--listen",
                "wss://127.0.0.1:0",
                "--client-id",
                ID,
            ],
            "needs --cert FILE --key FILE or --self-signed-cert-out FILE",
        ),
        (
            &[
                "pong",
                "remote",
                "--listen",
                "tcp://127.0.0.1:0",
                "--client-id",
                ID,
                "--self-signed-cert-out",
                cert,
            ],
            "certificates are only for tls://, wss://, h2://, h3:// and https://",
        ),
        (
            &[
                "pong",
                "remote",
                "--listen",
                "quic://127.0.0.1:0",
                "--client-id",
                ID,
            ],
            "--listen",
        ),
        (
            &[
                "pong",
                "remote",
                "--listen",
                "h2://127.0.0.1:0",
                "--client-id",
                ID,
            ],
            "needs --cert FILE --key FILE or --self-signed-cert-out FILE",
        ),
        (
            &[
                "pong",
                "remote",
                "--listen",
                "grpc://127.0.0.1:0",
                "--client-id",
                ID,
            ],
            "unsupported scheme \"grpc\"",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "127.0.0.1:0",
                "--remote",
                "h2c://127.0.0.1",
                "--client-id",
                ID,
            ],
            "no port",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "127.0.0.1:0",
                "--remote",
                "https://127.0.0.1:1/",
                "--client-id",
                ID,
            ],
            "a TLS carrier needs --ca FILE",
        ),
        (
            &[
                "pong",
                "remote",
                "--listen",
                "tcp://127.0.0.1:0",
                "--client-id",
                ID,
                "--dial-timeout",
                "0",
            ],
            "--dial-timeout must be more than 0",
        ),
        (
            &[
                "pong",
                "remote",
                "--listen",
                "tcp://127.0.0.1:0",
                "--client-id",
                ID,
                "--cert",
                cert,
            ],
            "--key",
        ),
        (
            &["pong", "remote", "--listen", "tcp://127.0.0.1:0"],
            "--client-id",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "127.0.0.1:0",
                "--remote",
                "tls://127.0.0.1:9",
                "--client-id",
                ID,
            ],
            "needs --ca FILE",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "127.0.0.1:0",
                "--remote",
                "tls://127.0.0.1:9",
                "--client-id",
                ID,
                "--ca",
                cert,
                "--insecure",
            ],
            "cannot be used with",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "127.0.0.1:0",
                "--remote",
                "udp://127.0.0.1:9",
                "--client-id",
                ID,
            ],
            "--remote",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "127.0.0.1:0",
                "--remote",
                "tcp://127.0.0.1:9",
                "--client-id",
                ID,
                "--max-streams-per-conn",
                "0",
            ],
            "--max-streams-per-conn must be at least 1",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "127.0.0.1:0",
                "--remote",
                "tcp://127.0.0.1:9",
                "--client-id",
                ID,
                "--idle-close=-1",
            ],
            "--idle-close",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "127.0.0.1:0",
                "--remote",
                "tcp://127.0.0.1:9",
                "--client-id",
                ID,
                "--idle-timeout",
                "0",
            ],
            "--idle-timeout must be more than 0",
        ),
        (
            &[
                "pong",
                "local",
                "--socks",
                "localhost:1080",
                "--remote",
                "tcp://127.0.0.1:9",
                "--client-id",
                ID,
            ],
            "--socks",
        ),
    ];
    let mut failures = Vec::new();
    for (args, want) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
            .args(*args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.code() != Some(2) || !err.contains(want) {
            failures.push(format!(
                "{args:?}: exit {:?}, stderr {:?} (expected exit 2 and {want:?})",
                o.status.code(),
                err.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Resets reach the application as resets (both were findings of this file, fixed in
// protocols/pong: the front used to close with a FIN, the remote used to hold a target's
// reset until the local half-closed).

/// A raw SOCKS5 CONNECT (no authentication) to `target` through `socks`; the reply must
/// be success (pong local answers before the remote has dialed).
fn socks_connect(socks: &str, target: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(socks).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0], "method selection");
    let SocketAddr::V4(v4) = target else {
        panic!("an IPv4 target")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend(v4.ip().octets());
    req.extend(v4.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep).unwrap();
    assert_eq!(rep[..2], [5, 0], "CONNECT reply");
    s
}

/// Reads until EOF, reset, or `wait`: what came, and how it ended.
fn read_until_end(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, String) {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, "a clean EOF (FIN)".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, "reset".into()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, format!("nothing within {wait:?}"))
            }
            Err(e) => return (got, format!("error {e}")),
        }
    }
}

/// Closes `s` with RST (SO_LINGER 0).
fn close_with_reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger value.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER");
    drop(s);
}

/// A stream that ends abnormally (rst from the remote after a refused dial) reaches the
/// SOCKS5 application as a reset (RST), never as a clean end of stream: an application
/// without its own length framing would take a truncated stream for a complete one.
#[test]
fn a_refused_dial_reaches_the_application_as_a_reset() {
    let c = chain("tcp", "refused-dial");
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut s = socks_connect(&c.socks, refused);
    let (got, end) = read_until_end(&mut s, Duration::from_secs(10));
    assert!(
        got.is_empty() && end == "reset",
        "a refused dial: the application got {} bytes, then {end} (expected a reset)\n{}",
        got.len(),
        c.tails()
    );
}

/// When the target resets a connection, the application sees the reset promptly even
/// while its own direction is still open (request/response over one connection): the
/// remote ends both directions at the first failure.
#[test]
fn a_target_reset_reaches_an_application_that_keeps_its_side_open() {
    let c = chain("tcp", "target-reset");
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let taddr = target.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = target.accept() {
            let _ = s.write_all(b"partial");
            std::thread::sleep(Duration::from_millis(300));
            close_with_reset(s);
        }
    });
    let mut s = socks_connect(&c.socks, taddr);
    let (got, end) = read_until_end(&mut s, Duration::from_secs(10));
    assert!(
        got == b"partial" && end == "reset",
        "the target sent 7 bytes and reset: the application got {:?}, then {end} \
         (expected a reset)\n{}",
        String::from_utf8_lossy(&got),
        c.tails()
    );
}

// ---------------------------------------------------------------------------------------
// An origin that accepts slowly: python3 -m http.server (threaded, listen backlog 5)

/// Parallel downloads through pong from `python3 -m http.server`, whose listen backlog
/// of 5 overflows under a burst of connects. Linux then loses some connections silently
/// (the remote's connect succeeds by SYN cookie, the server never gets the socket and
/// never acknowledges the request): before the fix those downloads hung with zero bytes.
/// Every download must now either arrive intact or fail loudly (curl reports an error,
/// here the RST the local sends when the remote's target ack timeout fires); none may
/// hang until curl's own `--max-time`, and none may end clean with wrong bytes.
///
/// `TUNNELBED_PY_ORIGIN_N` sets the number of parallel downloads (default 100; the
/// issue's case is 200) and `TUNNELBED_PY_ORIGIN_ACK_TIMEOUT` the remote's
/// `--target-ack-timeout` in seconds (default 3, so lost connections fail quickly; the
/// role's own default is 30).
#[test]
fn parallel_downloads_from_a_backlog_5_python_origin_never_hang() {
    let n: usize = std::env::var("TUNNELBED_PY_ORIGIN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(100);
    let ack_timeout = std::env::var("TUNNELBED_PY_ORIGIN_ACK_TIMEOUT")
        .ok()
        .filter(|v| v.parse::<u32>().is_ok_and(|s| s > 0))
        .unwrap_or_else(|| "3".to_string());
    const SIZE: usize = 300_000;
    let dir = scratch("python-origin");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let mut body = vec![0u8; SIZE];
    fill_pattern(0, &mut body);
    std::fs::write(www.join("f.bin"), &body).unwrap();
    let want = hex::encode(Sha256::digest(&body));

    let mut py = Command::new("python3");
    py.args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
        .arg("--directory")
        .arg(&www);
    let origin = Proc::spawn("python3 -m http.server", py);
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let line = origin.wait_for("Serving HTTP on", Duration::from_secs(20));
    let port = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {line:?} (python3 needs only its standard library)"));
    let http = format!("127.0.0.1:{port}");
    let (remote, url) = start_remote_with(
        "tcp://127.0.0.1:0",
        &dir,
        &["--target-ack-timeout", &ack_timeout, "--idle-timeout", "60"],
    );
    let (local, socks) = start_local("127.0.0.1:0", &url, ID, &dir);
    let tails = || format!("{}{}{}", local.tail(), remote.tail(), origin.tail());

    let mut cmd = curl_command();
    cmd.args([
        "--parallel",
        "--parallel-max",
        &n.to_string(),
        "--parallel-immediate",
    ])
    .args(["--socks5-hostname", &socks])
    .args(["-w", "%{exitcode} %{filename_effective}\\n"]);
    for i in 0..n {
        cmd.arg("-o")
            .arg(dir.join(format!("body-{i}")))
            .arg(format!("http://{http}/f.bin?{i}"));
    }
    let o = cmd.output().unwrap_or_else(|e| curl_missing(e));
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    let mut code_of: BTreeMap<String, i32> = BTreeMap::new();
    for l in report.lines() {
        if let Some((code, file)) = l.split_once(' ') {
            code_of.insert(file.to_string(), code.parse().unwrap_or(-1));
        }
    }
    let (mut intact, mut loud, mut hung, mut wrong) = (0, 0, Vec::new(), Vec::new());
    for i in 0..n {
        let p = dir.join(format!("body-{i}"));
        let got = std::fs::read(&p).unwrap_or_default();
        let code = code_of.get(p.to_str().unwrap()).copied();
        let sha_ok = got.len() == SIZE && hex::encode(Sha256::digest(&got)) == want;
        match code {
            Some(0) if sha_ok => intact += 1,
            Some(0) => wrong.push(format!("#{i}: clean end with {} bytes", got.len())),
            Some(28) => hung.push(format!("#{i}: timed out after {} bytes", got.len())),
            Some(_) => loud += 1,
            None => wrong.push(format!("#{i}: curl reported nothing")),
        }
    }
    eprintln!(
        "{n} parallel downloads from a backlog-5 python origin: {intact} intact, {loud} failed \
         loudly, {} hung, {} wrong",
        hung.len(),
        wrong.len()
    );
    assert!(
        hung.is_empty() && wrong.is_empty(),
        "{} hung {hung:?}, {} wrong {wrong:?} (of {n}; {intact} intact, {loud} failed loudly)\n{}",
        hung.len(),
        wrong.len(),
        tails()
    );
    assert!(intact > 0, "no download arrived intact\n{}", tails());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asks a child to stop (SIGTERM, as a service manager would) and waits, bounded, for
/// it to exit; returns its status.
fn terminate(p: &mut Proc, wait: Duration) -> ExitStatus {
    let pid = p.id().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(st.success(), "kill -TERM {pid} failed");
    let deadline = Instant::now() + wait;
    loop {
        if let Some(st) = p.exited() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not exit within {wait:?} of SIGTERM\n{}",
            p.name(),
            p.tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The per-stream lines of `tunnelbed replay` for a pong capture: (request bytes,
/// response bytes) of every `stream N: -> X B ..., <- Y B ...` line.
fn replayed_streams(capture: &Path) -> (Vec<(u64, u64)>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .arg("replay")
        .arg(capture)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "replay {}: {text}{}",
        capture.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes_after = |s: &str, mark: &str| -> Option<u64> {
        let rest = &s[s.find(mark)? + mark.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let streams = text
        .lines()
        .filter(|l| l.trim_start().starts_with("stream "))
        .filter_map(|l| Some((bytes_after(l, "-> ")?, bytes_after(l, "<- ")?)))
        .collect();
    (streams, text)
}

#[test]
fn real_roles_with_pcap_give_captures_replay_decodes_stream_by_stream() {
    let dir = scratch("observe");
    let (remote_pcap, local_pcap) = (dir.join("remote.pcapng"), dir.join("local.pcapng"));
    let (remote_trace, local_trace) = (dir.join("remote.trace"), dir.join("local.trace"));
    let (_origin, http) = Proc::start(
        "http-source",
        &["http-source", "--listen", "127.0.0.1:0"],
        "listening ",
    );
    let (mut remote, url) = start_remote_with(
        "tcp://127.0.0.1:0",
        &dir,
        &[
            "--pcap",
            remote_pcap.to_str().unwrap(),
            "--trace",
            remote_trace.to_str().unwrap(),
        ],
    );
    let (mut local, socks) = Proc::start(
        "pong local",
        &[
            "pong",
            "local",
            "--socks",
            "127.0.0.1:0",
            "--remote",
            &url,
            "--client-id",
            ID,
            "--pcap",
            local_pcap.to_str().unwrap(),
            "--trace",
            local_trace.to_str().unwrap(),
        ],
        "pong local: SOCKS5 on ",
    );
    let sizes = [1_000u64, 200_000, 3_000_000];
    for n in sizes {
        let f = fetch(&socks, &http, n);
        assert_intact(&f, n, &format!("{n}-byte download"), || {
            format!("{}{}", local.tail(), remote.tail())
        });
    }
    for p in [&mut local, &mut remote] {
        let st = terminate(p, Duration::from_secs(60));
        assert!(
            st.success(),
            "{} exited with {st} after SIGTERM\n{}",
            p.name(),
            p.tail()
        );
    }
    // Each end's capture alone holds both directions of every stream: the request
    // curl sent (a GET of a few dozen bytes) and the whole response (body + headers).
    for (who, pcap) in [("local", &local_pcap), ("remote", &remote_pcap)] {
        let (streams, text) = replayed_streams(pcap);
        assert_eq!(
            streams.len(),
            sizes.len(),
            "{who}: streams in the replay:\n{text}"
        );
        for (n, (req, resp)) in sizes.iter().zip(&streams) {
            assert!(
                (20..1000).contains(req) && *resp >= *n && *resp < n + 1000,
                "{who}: the {n}-byte download replays as -> {req} B, <- {resp} B:\n{text}"
            );
        }
    }
    for (who, path) in [("local", &local_trace), ("remote", &remote_trace)] {
        let t = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{who} trace: {e}"));
        let streams = t
            .lines()
            .filter(|l| l.contains("/s") && l.contains("idle -> open"))
            .count();
        let closed = t
            .lines()
            .filter(|l| l.contains("/s") && l.contains("-> closed"))
            .count();
        assert!(
            streams == sizes.len() && closed == sizes.len(),
            "{who} trace: {streams} streams opened, {closed} closed, want {}:\n{t}",
            sizes.len()
        );
    }
}

// ---------------------------------------------------------------------------------------
// curl's HTTP/2 (nghttp2) as the carrier's client

/// curl, an HTTP/2 client we did not write (nghttp2), against `pong remote` over
/// `scheme` (h2c with prior knowledge, or h2 over TLS with ALPN and the remote's
/// certificate): a `POST` is answered `200` over HTTP/2 (the carrier opens; curl's empty
/// body then ends it), a `GET` gets `405`. curl does not drive a pong session here: in
/// our tries curl 7.88 passed the response on only once its piped upload had ended
/// (not investigated further; our own client streams both ways in the other tests).
fn curl_http2_handshake(scheme: &str) {
    let dir = scratch(&format!("curl-{scheme}"));
    let (remote, url) = start_remote(&format!("{scheme}://127.0.0.1:0"), &dir);
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let ask = |method: &str| {
        let mut cmd = curl_command();
        cmd.args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
            .args(["-X", method]);
        if method == "POST" {
            cmd.args(["--data-binary", ""]);
        }
        let target = if scheme == "h2c" {
            cmd.arg("--http2-prior-knowledge");
            format!("http://127.0.0.1:{port}/pong")
        } else {
            cmd.arg("--http2")
                .arg("--cacert")
                .arg(dir.join("remote-cert.pem"));
            format!("https://127.0.0.1:{port}/pong")
        };
        let o = cmd
            .arg(&target)
            .output()
            .unwrap_or_else(|e| curl_missing(e));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(ask("POST"), "200 2", "{scheme}\n{}", remote.tail());
    assert_eq!(ask("GET"), "405 2", "{scheme}\n{}", remote.tail());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn curl_http2_cleartext_gets_the_carrier_answer() {
    curl_http2_handshake("h2c");
}

#[test]
fn curl_http2_with_tls_gets_the_carrier_answer() {
    curl_http2_handshake("h2");
}
