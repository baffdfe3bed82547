//! `tunnelbed h2tunnel` on real loopback sockets with `curl` as the application:
//! `curl` -> `h2tunnel client` -> (KCP over UDP, or TCP; optionally through `tunnelbed
//! netem` at 10% loss) -> `h2tunnel server --forward` -> `tunnelbed http-source`, and the
//! SOCKS5 mode with `curl --socks5-hostname`. Every body is checked by SHA-256 against
//! http-source's documented pattern. Each test starts its own processes and kills them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tunnelbed::cmd::http_source::expected_sha256;

/// Kills a child process on every path out of a test.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tunnelbed ARGS`; returns it and the address its banner names (`listening ADDR`
/// on stdout, or `netem: ADDR -> ...` on stderr).
fn start(args: &[&str]) -> (Guard, String) {
    let (g, addr, _) = start_with(args, None);
    (g, addr)
}

/// [`start`], with the process's log (stderr) written to `log` when given. For `netem`
/// the rest of its stderr (the counters it prints on SIGINT) is handed back instead.
fn start_with(
    args: &[&str],
    log: Option<&PathBuf>,
) -> (Guard, String, Option<BufReader<ChildStderr>>) {
    let netem = args[0] == "netem";
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tunnelbed"));
    cmd.args(args);
    if netem {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped());
        match log {
            Some(p) => cmd.stderr(std::fs::File::create(p).expect("creating a log file")),
            None => cmd.stderr(Stdio::null()),
        };
    }
    let mut child = cmd.spawn().expect("starting tunnelbed");
    let mut line = String::new();
    let mut rest = None;
    if netem {
        let mut r = BufReader::new(child.stderr.take().unwrap());
        r.read_line(&mut line).unwrap();
        rest = Some(r);
    } else {
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
    }
    let addr = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no address in banner {line:?} of {args:?}"))
        .to_string();
    (Guard(child), addr, rest)
}

/// A log file name for this test process.
fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("h2tunnel_real-{}-{name}.log", std::process::id()))
}

/// Runs curl quietly but with its error message kept (`-sS`), bounded by `--max-time`
/// (a later `--max-time` in `args` overrides it).
fn curl(args: &[&str]) -> Output {
    match Command::new("curl").args(["-sS", "--max-time", "120"]).args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("curl not runnable ({e}); install it with `apt-get install -y curl` (or `bash .ci/setup`)"),
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}

/// Downloads `n` bytes through the client at `client` and checks size and SHA-256.
fn download(client: &str, n: u64) {
    let o = curl(&[&format!("http://{client}/bytes/{n}")]);
    assert!(
        o.status.success(),
        "curl exit {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.stdout.len() as u64, n, "short body");
    assert_eq!(sha256_hex(&o.stdout), expected_sha256(n));
}

/// Sends `GET /bytes/n` on a raw connection to the client, half-closes it (TCP FIN,
/// which must cross the tunnel as a stream FIN and reach http-source as a FIN, not end
/// the stream), then reads the whole response and checks the body.
fn half_closed_request(client: &str, n: u64) {
    let mut c = TcpStream::connect(client).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(c, "GET /bytes/{n} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp)
        .expect("reading the response after our half-close");
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response header in {} bytes", resp.len()))
        + 4;
    let head = String::from_utf8_lossy(&resp[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = &resp[head_end..];
    assert_eq!(body.len() as u64, n, "short body after a half-close");
    assert_eq!(sha256_hex(body), expected_sha256(n));
}

/// Stops netem with SIGINT and returns its counters (datagrams sent, dropped).
fn netem_counters(relay: (Guard, BufReader<ChildStderr>)) -> (u64, u64) {
    let (g, mut err) = relay;
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe {
        libc::kill(g.0.id() as libc::pid_t, libc::SIGINT);
    }
    let mut text = String::new();
    let _ = err.read_to_string(&mut text);
    // "netem: sent S delivered D dropped X duplicated U corrupted C"
    let line = text
        .lines()
        .find(|l| l.starts_with("netem: sent "))
        .unwrap_or_else(|| panic!("no counters from netem: {text:?}"));
    let field = |name: &str| -> u64 {
        let w: Vec<&str> = line.split_whitespace().collect();
        let i = w.iter().position(|x| *x == name).unwrap();
        w[i + 1].parse().unwrap()
    };
    (field("sent"), field("dropped"))
}

/// http-source, a server forwarding to it on `carrier` (`udp` or `tcp`), and a client.
struct Chain {
    _origin: Guard,
    _server: Guard,
    _client: Guard,
    relay: Option<(Guard, BufReader<ChildStderr>)>,
    client: String,
}

fn chain(carrier: &str, loss: Option<&str>) -> Chain {
    let (origin, http) = start(&["http-source", "--listen", "127.0.0.1:0"]);
    let listen = format!("{carrier}://127.0.0.1:0");
    let (server, srv) = start(&[
        "h2tunnel",
        "server",
        "--listen",
        &listen,
        "--forward",
        &http,
    ]);
    let (relay, target) = match loss {
        None => (None, srv),
        Some(pct) => {
            // No --duration: netem prints its counters when it gets SIGINT.
            let (g, a, rest) = start_with(
                &[
                    "netem",
                    "--listen",
                    "127.0.0.1:0",
                    "--forward",
                    &srv,
                    "--loss",
                    pct,
                    "--seed",
                    "5",
                ],
                None,
            );
            (Some((g, rest.unwrap())), a)
        }
    };
    let server_url = format!("{carrier}://{target}");
    let (client_g, client) = start(&[
        "h2tunnel",
        "client",
        "--listen",
        "tcp://127.0.0.1:0",
        "--server",
        &server_url,
    ]);
    Chain {
        _origin: origin,
        _server: server,
        _client: client_g,
        relay,
        client,
    }
}

#[test]
fn fifty_megabytes_over_kcp_and_one_hundred_parallel_downloads() {
    let c = chain("udp", None);
    download(&c.client, 50 * 1024 * 1024);
    let client = c.client.clone();
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || download(&client, 1 << 20))
        })
        .collect();
    for h in handles {
        h.join().expect("a parallel download failed");
    }
    half_closed_request(&c.client, 1 << 20);
}

#[test]
fn fifty_megabytes_over_a_tcp_carrier() {
    let c = chain("tcp", None);
    download(&c.client, 50 * 1024 * 1024);
    half_closed_request(&c.client, 1 << 20);
}

#[test]
fn fifty_megabytes_through_ten_percent_loss() {
    let mut c = chain("udp", Some("10"));
    download(&c.client, 50 * 1024 * 1024);
    // The datagrams really crossed netem, and about 10% of them were dropped. (The
    // pattern gzips about 2:1 in DATA frames, so 50 MB is ~21 000 data datagrams.)
    let (sent, dropped) = netem_counters(c.relay.take().unwrap());
    assert!(sent > 15_000, "only {sent} datagrams crossed netem");
    let rate = dropped as f64 / sent as f64;
    assert!(
        (0.08..0.12).contains(&rate),
        "netem dropped {dropped} of {sent} ({rate:.3})"
    );
}

/// Sends `request` on a fresh connection to `addr` and reads until the connection ends;
/// returns the bytes read and how it ended (`eof`, `reset`, or another error), so a test
/// can assert the reset itself rather than a client program's exit code for it.
fn request_until_end(addr: &str, request: &[u8]) -> (Vec<u8>, String) {
    let mut s = TcpStream::connect(addr).expect("connecting to the client");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    if let Err(e) = s.write_all(request) {
        // The reset may already have arrived: that is the answer.
        return (Vec::new(), end_name(&e));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, "eof".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, end_name(&e)),
        }
    }
}

fn end_name(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | BrokenPipe => "reset".into(),
        WouldBlock | TimedOut => "nothing within 60 s".into(),
        _ => format!("error {e}"),
    }
}

/// Accepts connections on `lsn` and splices each to `to` (both ways, half-closes
/// passed on), until the test process ends.
fn splice_to(lsn: TcpListener, to: String) {
    std::thread::spawn(move || {
        for c in lsn.incoming() {
            let Ok(a) = c else { return };
            let Ok(b) = TcpStream::connect(&to) else {
                return;
            };
            for (mut from, mut into) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(Shutdown::Write);
                });
            }
        }
    });
}

#[test]
fn a_refused_forward_resets_that_stream_only() {
    // A port that refuses connections, held for the whole test (no other test can be
    // given it meanwhile).
    let port = tunnelbed_conformance::ports::RefusingPort::new().unwrap();
    let target = port.addr().to_string();
    let log = log_path("refused-server");
    let (_server, srv, _) = start_with(
        &[
            "-v",
            "h2tunnel",
            "server",
            "--listen",
            "udp://127.0.0.1:0",
            "--forward",
            &target,
        ],
        Some(&log),
    );
    let (_client, client) = start(&[
        "h2tunnel",
        "client",
        "--listen",
        "tcp://127.0.0.1:0",
        "--server",
        &format!("udp://{srv}"),
    ]);
    // The stream is reset, so the application's connection is reset (RST), never ended
    // with a clean FIN and never left hanging.
    let (got, end) = request_until_end(&client, b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(end, "reset", "after {} bytes", got.len());
    assert!(got.is_empty(), "{} bytes before the reset", got.len());
    // The target comes up on the same port (the test relays it to an http-source); the
    // same tunnel carries the next stream.
    let (_origin, http) = start(&["http-source", "--listen", "127.0.0.1:0"]);
    splice_to(port.listen().unwrap(), http);
    download(&client, 1 << 20);
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("resetting the stream"), "{text}");
    assert_eq!(
        text.matches("new KCP session").count(),
        1,
        "the tunnel did not survive a refused stream: {text}"
    );
}

#[test]
fn without_a_tunnel_connections_are_refused_after_the_wait() {
    // A UDP port held by the test that never answers: the handshake cannot complete.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = format!("udp://{}", silent.local_addr().unwrap());
    let (_client, client) = start(&[
        "h2tunnel",
        "client",
        "--listen",
        "tcp://127.0.0.1:0",
        "--server",
        &server,
        "--wait-secs",
        "2",
    ]);
    let t = Instant::now();
    let (got, end) = request_until_end(&client, b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n");
    let took = t.elapsed();
    // A reset (not a hang, which would read "nothing within 60 s"), and only after the
    // client waited its 2 s for a tunnel.
    assert_eq!(end, "reset", "after {} bytes", got.len());
    assert!(got.is_empty());
    assert!(
        took >= Duration::from_millis(1900),
        "refused after {took:?}, before the 2 s wait"
    );
}

#[test]
fn socks5_inside_the_tunnel() {
    let (_origin, http) = start(&["http-source", "--listen", "127.0.0.1:0"]);
    let port = http.rsplit(':').next().unwrap();
    let (_server, srv) = start(&[
        "h2tunnel",
        "server",
        "--listen",
        "udp://127.0.0.1:0",
        "--socks5",
    ]);
    let (_client, client) = start(&[
        "h2tunnel",
        "client",
        "--listen",
        "tcp://127.0.0.1:0",
        "--server",
        &format!("udp://{srv}"),
    ]);
    let n = 10 * 1024 * 1024;
    // The name is resolved by the server, inside the tunnel.
    let o = curl(&[
        "--socks5-hostname",
        &client,
        &format!("http://localhost:{port}/bytes/{n}"),
    ]);
    assert!(o.status.success(), "curl exit {:?}", o.status);
    assert_eq!(sha256_hex(&o.stdout), expected_sha256(n));
    // A refused target is a SOCKS5 failure reply (curl: 97, "proxy handshake error"),
    // not a hang (28) or an empty success.
    let refusing = tunnelbed_conformance::ports::RefusingPort::new().unwrap();
    let o = curl(&[
        "--max-time",
        "60",
        "--socks5-hostname",
        &client,
        &format!("http://{}/", refusing.addr()),
    ]);
    assert_eq!(
        o.status.code(),
        Some(97),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn the_client_reconnects_after_the_server_comes_back() {
    let (_origin, http) = start(&["http-source", "--listen", "127.0.0.1:0"]);
    let (server, srv) = start(&[
        "h2tunnel",
        "server",
        "--listen",
        "udp://127.0.0.1:0",
        "--forward",
        &http,
    ]);
    let (_client, client) = start(&[
        "h2tunnel",
        "client",
        "--listen",
        "tcp://127.0.0.1:0",
        "--server",
        &format!("udp://{srv}"),
    ]);
    download(&client, 1 << 20);
    // The server dies and a new one takes its port: the client's tunnel fails on its
    // keepalive and it reconnects with a new KCP session.
    drop(server);
    let (_server2, _) = start(&[
        "h2tunnel",
        "server",
        "--listen",
        &format!("udp://{srv}"),
        "--forward",
        &http,
    ]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let n = 1 << 20;
    loop {
        let o = curl(&["--max-time", "10", &format!("http://{client}/bytes/{n}")]);
        if o.status.success() && o.stdout.len() as u64 == n {
            assert_eq!(sha256_hex(&o.stdout), expected_sha256(n));
            break;
        }
        // Until then a request must fail visibly, never return a short body as success.
        assert!(
            !o.status.success() || o.stdout.is_empty() || o.stdout.len() as u64 == n,
            "a short body was returned as a success"
        );
        assert!(
            Instant::now() < deadline,
            "the client did not reconnect within 90 s"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &[
            "h2tunnel",
            "server",
            "--listen",
            "quic://127.0.0.1:0",
            "--socks5",
        ][..],
        &["h2tunnel", "server", "--listen", "udp://127.0.0.1:0"][..],
        &[
            "h2tunnel",
            "client",
            "--listen",
            "udp://127.0.0.1:0",
            "--server",
            "udp://127.0.0.1:9",
        ][..],
        &[
            "h2tunnel",
            "client",
            "--listen",
            "tcp://127.0.0.1:0",
            "--server",
            "udp://127.0.0.1:9",
            "--profile",
            "fast9",
        ][..],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
