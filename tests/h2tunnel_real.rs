//! `tunnelbed h2tunnel` on real loopback sockets with `curl` as the application:
//! `curl` -> `h2tunnel client` -> (KCP over UDP, or TCP; optionally through `tunnelbed
//! netem` at 10% loss) -> `h2tunnel server --forward` -> `tunnelbed http-source`, and the
//! SOCKS5 mode with `curl --socks5-hostname`. Every body is checked by SHA-256 against
//! http-source's documented pattern. Each test starts its own processes and kills them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
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
    let netem = args[0] == "netem";
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tunnelbed"));
    cmd.args(args);
    if netem {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().expect("starting tunnelbed");
    let mut line = String::new();
    let pipe: Box<dyn std::io::Read> = if netem {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    BufReader::new(pipe).read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no address in banner {line:?} of {args:?}"))
        .to_string();
    (Guard(child), addr)
}

fn curl(args: &[&str]) -> Output {
    match Command::new("curl").args(["-s", "--max-time", "120"]).args(args).output() {
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
    assert!(o.status.success(), "curl exit {:?}", o.status);
    assert_eq!(o.stdout.len() as u64, n, "short body");
    assert_eq!(sha256_hex(&o.stdout), expected_sha256(n));
}

/// http-source, a server forwarding to it on `carrier` (`udp` or `tcp`), and a client.
struct Chain {
    _origin: Guard,
    _server: Guard,
    _client: Guard,
    _relay: Option<Guard>,
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
            let (g, a) = start(&[
                "netem",
                "--listen",
                "127.0.0.1:0",
                "--forward",
                &srv,
                "--loss",
                pct,
                "--seed",
                "5",
                "--duration",
                "300",
            ]);
            (Some(g), a)
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
        _relay: relay,
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
}

#[test]
fn fifty_megabytes_over_a_tcp_carrier() {
    let c = chain("tcp", None);
    download(&c.client, 50 * 1024 * 1024);
}

#[test]
fn fifty_megabytes_through_ten_percent_loss() {
    let c = chain("udp", Some("10"));
    download(&c.client, 50 * 1024 * 1024);
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
    // A refused target is a SOCKS5 failure reply, not a hang or an empty success.
    let o = curl(&["--socks5-hostname", &client, "http://127.0.0.1:1/"]);
    assert!(!o.status.success());
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
