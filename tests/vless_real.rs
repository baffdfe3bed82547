//! `tunnelbed vless` against Debian's v2ray 4.34 on real loopback sockets, both ways:
//!
//! - v2ray's VLESS outbound through OUR server: `curl --socks5-hostname` -> v2ray (socks
//!   inbound -> vless outbound) -> `tunnelbed vless server` -> `tunnelbed http-source`;
//! - OUR client through v2ray's VLESS inbound: curl -> `tunnelbed vless client` -> v2ray
//!   (vless inbound -> freedom) -> http-source;
//!
//! over tcp and ws, with 100 MiB downloads and 200 parallel ones checked by length and
//! SHA-256, UDP ASSOCIATE datagrams (tests/pong_udp.py, standard library only) to a UDP
//! echo, the request bytes v2ray sends compared with our encoder's, and an unknown user
//! id closed with nothing written back and nothing dialed. v2ray's config files are
//! written into a scratch directory; v2ray is told a port, and a start that fails on an
//! address in use is retried on another. A missing v2ray, curl or python3 fails the
//! test with an install hint.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tunnelbed_vless::wire::{Address, Command as VCommand, Request, Version};

const ID: &str = "5d8a1c3e-7b24-4f6a-9e10-2c4b6d8f0a13";
const WRONG_ID: &str = "5d8a1c3e-7b24-4f6a-9e10-2c4b6d8f0a14";
const BULK: u64 = 100 << 20;

// ---------------------------------------------------------------------------------------
// Child processes (tests/support/child.rs)

#[path = "support/child.rs"]
mod child;
use child::Proc;

/// A scratch directory for this test process and `name`.
fn scratch(name: &str) -> PathBuf {
    child::scratch("vless_real", name)
}

// ---------------------------------------------------------------------------------------
// v2ray

fn v2ray_missing(e: impl std::fmt::Display) -> ! {
    panic!(
        "v2ray not runnable ({e}); install Debian's v2ray 4.34 with `apt-get install -y v2ray` \
         (or `bash .ci/setup`)"
    )
}

/// A port for v2ray to bind, different for every call and process (v2ray is told the
/// port; a start that fails because it is in use is retried with the next one).
fn next_port() -> u16 {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let seed = u64::from(std::process::id()).wrapping_mul(2_654_435_761) ^ (n * 7919);
    20_000 + (seed % 40_000) as u16
}

/// Starts v2ray on a config made by `config(port)`; returns it and the port it bound.
fn start_v2ray(dir: &Path, name: &str, config: impl Fn(u16) -> String) -> (Proc, u16) {
    if let Err(e) = Command::new("v2ray").arg("-version").output() {
        v2ray_missing(e);
    }
    let mut last = String::new();
    for _ in 0..10 {
        let port = next_port();
        let file = dir.join(format!("{name}-{port}.json"));
        std::fs::write(&file, config(port)).unwrap();
        let mut cmd = Command::new("v2ray");
        cmd.arg("-config").arg(&file);
        let p = Proc::spawn(name, cmd);
        match p.wait_any(&["started"], Duration::from_secs(20)) {
            Ok(_) => return (p, port),
            Err(e) if e.contains("address already in use") => last = e,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("v2ray could not bind a port in 10 tries:\n{last}")
}

fn stream_settings(network: &str) -> String {
    match network {
        "ws" => r#"{"network":"ws","wsSettings":{"path":"/vless"}}"#.into(),
        _ => r#"{"network":"tcp"}"#.into(),
    }
}

/// v2ray as a client: socks inbound on `port` -> vless outbound to `server` as `id`.
fn v2ray_client_config(port: u16, server: SocketAddr, id: &str, network: &str) -> String {
    format!(
        r#"{{"log":{{"loglevel":"warning"}},
"inbounds":[{{"listen":"127.0.0.1","port":{port},"protocol":"socks",
  "settings":{{"auth":"noauth","udp":true,"ip":"127.0.0.1"}}}}],
"outbounds":[{{"protocol":"vless","settings":{{"vnext":[{{"address":"{}","port":{},
  "users":[{{"id":"{id}","encryption":"none","level":0}}]}}]}},
  "streamSettings":{}}}]}}"#,
        server.ip(),
        server.port(),
        stream_settings(network)
    )
}

/// v2ray as a server: vless inbound on `port` for `id` -> freedom.
fn v2ray_server_config(port: u16, id: &str, network: &str) -> String {
    format!(
        r#"{{"log":{{"loglevel":"warning"}},
"inbounds":[{{"listen":"127.0.0.1","port":{port},"protocol":"vless",
  "settings":{{"clients":[{{"id":"{id}","level":0}}],"decryption":"none"}},
  "streamSettings":{}}}],
"outbounds":[{{"protocol":"freedom","settings":{{}}}}]}}"#,
        stream_settings(network)
    )
}

// ---------------------------------------------------------------------------------------
// Chains

struct Chain {
    procs: Vec<Proc>,
    http: String,
    socks: String,
    dir: PathBuf,
}

impl Chain {
    fn tails(&self) -> String {
        self.procs.iter().map(|p| p.tail()).collect()
    }

    fn proc_mut(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name() == name).unwrap()
    }
}

fn http_source() -> (Proc, String) {
    Proc::start(
        "http-source",
        &["http-source", "--listen", "127.0.0.1:0"],
        "listening ",
    )
}

fn our_server(network: &str) -> (Proc, SocketAddr) {
    let listen = match network {
        "ws" => "ws://127.0.0.1:0/vless",
        _ => "tcp://127.0.0.1:0",
    };
    let (p, url) = Proc::start(
        "vless server",
        &["vless", "server", "--listen", listen, "--uuid", ID],
        "vless server listening on ",
    );
    let hostport = url
        .split("://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    (p, hostport.parse().unwrap())
}

/// curl -> v2ray (socks -> vless outbound as `id`) -> our server -> http-source.
fn v2ray_through_ours(network: &str, id: &str, name: &str) -> Chain {
    let dir = scratch(name);
    let (origin, http) = http_source();
    let (server, addr) = our_server(network);
    let (v2, port) = start_v2ray(&dir, "v2ray client", |p| {
        v2ray_client_config(p, addr, id, network)
    });
    Chain {
        procs: vec![v2, server, origin],
        http,
        socks: format!("127.0.0.1:{port}"),
        dir,
    }
}

/// `tunnelbed vless client` as user [`ID`] on the server at `url`, with `extra` arguments
/// (`--version 1`, `--idle-timeout 1`); returns it and its SOCKS5 address.
fn our_client(url: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "vless",
        "client",
        "--socks",
        "127.0.0.1:0",
        "--server",
        url,
        "--uuid",
        ID,
    ];
    args.extend_from_slice(extra);
    Proc::start("vless client", &args, "vless client: SOCKS5 on ")
}

/// curl -> our client -> v2ray (vless inbound -> freedom) -> http-source.
fn ours_through_v2ray(network: &str, name: &str) -> Chain {
    let dir = scratch(name);
    let (origin, http) = http_source();
    let (v2, port) = start_v2ray(&dir, "v2ray server", |p| {
        v2ray_server_config(p, ID, network)
    });
    let url = match network {
        "ws" => format!("ws://127.0.0.1:{port}/vless"),
        _ => format!("tcp://127.0.0.1:{port}"),
    };
    let (client, socks) = our_client(&url, &[]);
    Chain {
        procs: vec![client, v2, origin],
        http,
        socks,
        dir,
    }
}

// ---------------------------------------------------------------------------------------
// Applications (tests/support/downloads.rs)

#[path = "support/downloads.rs"]
mod downloads;
use downloads::{
    assert_intact, curl_command, curl_missing, fetch, parallel_downloads, pong_udp, UdpEcho,
};

fn bulk(c: &Chain, what: &str) {
    let t = Instant::now();
    let f = fetch(&c.socks, &c.http, BULK);
    let took = t.elapsed();
    assert_intact(&f, BULK, what, || c.tails());
    eprintln!(
        "{what}: 100 MiB intact in {:.2} s ({:.0} MB/s)",
        took.as_secs_f64(),
        BULK as f64 / took.as_secs_f64() / 1e6
    );
}

fn parallel(c: &Chain, what: &str) {
    let p = parallel_downloads(&c.socks, &c.http, &c.dir, 256 << 10, || c.tails());
    assert!(
        p.bad.is_empty(),
        "{what}: {} of 200 parallel downloads differ: {:?}\n{}",
        p.bad.len(),
        p.bad,
        c.tails()
    );
    eprintln!(
        "{what}: 200 parallel downloads intact in {:.2} s",
        p.took.as_secs_f64()
    );
}

/// Through v2ray's VLESS inbound: payloads up to 2046 bytes (v2ray drops longer
/// downlink ones).
const UDP_SIZES: [usize; 8] = [1, 10, 100, 512, 1000, 1400, 2000, 2046];
/// Through v2ray's SOCKS5 inbound: up to 2038 bytes (it reads client datagrams into a
/// 2048-byte buffer, so a 2046-byte payload plus its 10-byte header is cut to 2038).
const UDP_SIZES_V2RAY_SOCKS: [usize; 8] = [1, 10, 100, 512, 1000, 1400, 2000, 2038];

fn udp_echo(c: &Chain, what: &str, sizes: &[usize]) {
    let echo = UdpEcho::start("127.0.0.1:0");
    let o = pong_udp(&c.socks, &echo.addr.to_string(), sizes);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{what}: UDP through SOCKS5: {out}{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        c.tails()
    );
    let n = sizes.len();
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), n);
    assert_eq!(
        echo.echoed.load(Ordering::Relaxed),
        n as u64,
        "{what}: echoes"
    );
    eprintln!(
        "{what}: {n} datagrams of 1..={} bytes echoed intact",
        sizes[n - 1]
    );
}

// ---------------------------------------------------------------------------------------
// v2ray's client through our server

#[test]
fn v2ray_client_through_our_server_tcp() {
    let c = v2ray_through_ours("tcp", ID, "v2c-tcp");
    bulk(&c, "v2ray -> our server (tcp)");
    parallel(&c, "v2ray -> our server (tcp)");
    udp_echo(&c, "v2ray -> our server (tcp)", &UDP_SIZES_V2RAY_SOCKS);
}

#[test]
fn v2ray_client_through_our_server_ws() {
    let c = v2ray_through_ours("ws", ID, "v2c-ws");
    bulk(&c, "v2ray -> our server (ws)");
    parallel(&c, "v2ray -> our server (ws)");
    udp_echo(&c, "v2ray -> our server (ws)", &UDP_SIZES_V2RAY_SOCKS);
}

/// v2ray with a user id our server does not know: curl gets nothing, the target is
/// never dialed, and our server's log names the reason.
#[test]
fn v2ray_with_unknown_uuid_is_refused() {
    let mut c = v2ray_through_ours("tcp", WRONG_ID, "v2c-wrong");
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    let taddr = target.local_addr().unwrap();
    let o = curl_command()
        .args(["--max-time", "20", "--socks5-hostname", &c.socks])
        .arg(format!("http://{taddr}/"))
        .output()
        .unwrap_or_else(|e| curl_missing(e));
    assert!(!o.status.success(), "curl succeeded with an unknown id");
    assert!(o.stdout.is_empty());
    c.proc_mut("vless server")
        .wait_any(&["rejected (unknown user id)"], Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    match target.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the target was dialed: {other:?}"),
    }
}

/// The request header v2ray sends is byte for byte what our encoder writes for the same
/// request (v0, no addons, command 1, domain address), and our server accepts it.
#[test]
fn v2ray_request_bytes_match_our_encoder() {
    let dir = scratch("v2c-bytes");
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let faddr = fake.local_addr().unwrap();
    let (_v2, port) = start_v2ray(&dir, "v2ray client", |p| {
        v2ray_client_config(p, faddr, ID, "tcp")
    });
    let mut app = TcpStream::connect(("127.0.0.1", port)).unwrap();
    app.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // SOCKS5 CONNECT to example.test:8080 by name, then 5 bytes of payload.
    app.write_all(&[5, 1, 0]).unwrap();
    let mut r = [0u8; 2];
    app.read_exact(&mut r).unwrap();
    assert_eq!(r, [5, 0]);
    let mut req = vec![5, 1, 0, 3, 12];
    req.extend_from_slice(b"example.test");
    req.extend_from_slice(&8080u16.to_be_bytes());
    app.write_all(&req).unwrap();
    let mut rep = [0u8; 10];
    app.read_exact(&mut rep).unwrap();
    assert_eq!(rep[1], 0, "v2ray's SOCKS5 reply");
    app.write_all(b"hello").unwrap();
    let (mut s, _) = fake.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let uuid = tunnelbed_pong::wire::parse_uuid(ID).unwrap();
    let want = Request {
        version: Version::V0,
        uuid,
        addons: vec![],
        command: VCommand::Tcp,
        target: Some(Address::Domain("example.test".into(), 8080)),
    }
    .to_bytes()
    .unwrap();
    let mut got = vec![0u8; want.len() + 5];
    s.read_exact(&mut got).unwrap();
    assert_eq!(
        &got[..want.len()],
        &want[..],
        "v2ray's header vs our encoder"
    );
    assert_eq!(&got[want.len()..], b"hello");
    let (decoded, n) = Request::decode(&got).unwrap().unwrap();
    assert_eq!(n, want.len());
    assert_eq!(decoded.target.unwrap().to_string(), "example.test:8080");
}

// ---------------------------------------------------------------------------------------
// Our client through v2ray's server

#[test]
fn our_client_through_v2ray_server_tcp() {
    let c = ours_through_v2ray("tcp", "ourc-tcp");
    bulk(&c, "our client -> v2ray (tcp)");
    parallel(&c, "our client -> v2ray (tcp)");
    udp_echo(&c, "our client -> v2ray (tcp)", &UDP_SIZES);
}

#[test]
fn our_client_through_v2ray_server_ws() {
    let c = ours_through_v2ray("ws", "ourc-ws");
    bulk(&c, "our client -> v2ray (ws)");
    parallel(&c, "our client -> v2ray (ws)");
    udp_echo(&c, "our client -> v2ray (ws)", &UDP_SIZES);
}

// ---------------------------------------------------------------------------------------
// Our server on its own: an unknown id from a raw kernel TCP client

#[test]
fn unknown_uuid_gets_zero_bytes_and_no_dial() {
    let (server, addr) = our_server("tcp");
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    let req = Request {
        version: Version::V0,
        uuid: tunnelbed_pong::wire::parse_uuid(WRONG_ID).unwrap(),
        addons: vec![],
        command: VCommand::Tcp,
        target: Some(Address::Ip(target.local_addr().unwrap())),
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&req.to_bytes().unwrap()).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading: {e}\n{}", server.tail()),
    }
    assert!(got.is_empty(), "the server wrote {got:?}");
    server
        .wait_any(&["rejected (unknown user id)"], Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    match target.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the target was dialed: {other:?}"),
    }
    assert_eq!(server.count("rejected"), 1);
}

// ---------------------------------------------------------------------------------------
// v1 through the binaries: full-cone UDP

/// A SOCKS5 UDP association from a std socket (no authentication): the control
/// connection (kept open) and the relay address.
fn socks_udp_associate(socks: &str) -> (TcpStream, SocketAddr) {
    let mut ctl = TcpStream::connect(socks).unwrap();
    ctl.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    ctl.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    ctl.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0]);
    ctl.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    let mut r = [0u8; 10];
    ctl.read_exact(&mut r).unwrap();
    assert_eq!((r[1], r[3]), (0, 1), "UDP ASSOCIATE reply {r:?}");
    let relay = SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[8], r[9]])));
    (ctl, relay)
}

fn socks_dgram(to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(a) = to else {
        panic!("IPv4 only")
    };
    let mut b = vec![0, 0, 0, 1];
    b.extend_from_slice(&a.ip().octets());
    b.extend_from_slice(&a.port().to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn socks_parse(d: &[u8]) -> (SocketAddr, Vec<u8>) {
    assert_eq!(&d[..4], &[0, 0, 0, 1], "SOCKS5 UDP header {:?}", &d[..4]);
    let from = SocketAddr::from(([d[4], d[5], d[6], d[7]], u16::from_be_bytes([d[8], d[9]])));
    (from, d[10..].to_vec())
}

fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut b = vec![0u8; 65_535];
    let (n, from) = s.recv_from(&mut b).expect("a datagram within 20 s");
    (b[..n].to_vec(), from)
}

/// Our v1 client and server (default mapping rule): the application contacts one peer;
/// two peers it never contacted send to the mapped port first and reach it with their
/// true addresses; its answers leave the server from that same port, and so does its
/// first datagram to a fourth peer nobody introduced (RFC 4787 endpoint-independent
/// mapping and endpoint-independent filtering).
#[test]
fn v1_full_cone_through_the_binaries() {
    let (_server, addr) = {
        let (p, url) = Proc::start(
            "vless server",
            &[
                "vless",
                "server",
                "--listen",
                "tcp://127.0.0.1:0",
                "--uuid",
                ID,
                "--version",
                "1",
            ],
            "vless server listening on ",
        );
        let a: SocketAddr = url.trim_start_matches("tcp://").parse().unwrap();
        (p, a)
    };
    let server_url = format!("tcp://{addr}");
    let (_client, socks) = Proc::start(
        "vless client",
        &[
            "vless",
            "client",
            "--socks",
            "127.0.0.1:0",
            "--server",
            &server_url,
            "--uuid",
            ID,
            "--version",
            "1",
        ],
        "vless client: SOCKS5 on ",
    );
    let (_ctl, relay) = socks_udp_associate(&socks);
    let app = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peers: Vec<UdpSocket> = ["127.0.0.1:0", "127.0.0.2:0", "127.0.0.3:0"]
        .iter()
        .map(|a| UdpSocket::bind(a).unwrap())
        .collect();
    for s in [&app].into_iter().chain(peers.iter()) {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
    app.send_to(&socks_dgram(addrs[0], b"hello"), relay)
        .unwrap();
    let (d, mapped) = recv(&peers[0]);
    assert_eq!(d, b"hello");
    for (i, p) in peers.iter().enumerate().skip(1) {
        let msg = format!("unsolicited from peer {i}");
        p.send_to(msg.as_bytes(), mapped).unwrap();
        let (d, _) = recv(&app);
        assert_eq!(socks_parse(&d), (addrs[i], msg.into_bytes()), "peer {i}");
        let answer = format!("answer to peer {i}");
        app.send_to(&socks_dgram(addrs[i], answer.as_bytes()), relay)
            .unwrap();
        let (d, from) = recv(p);
        assert_eq!(d, answer.as_bytes());
        assert_eq!(
            from, mapped,
            "the answer to peer {i} left from another port"
        );
    }
    let fourth = UdpSocket::bind("127.0.0.4:0").unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    app.send_to(
        &socks_dgram(fourth.local_addr().unwrap(), b"new destination"),
        relay,
    )
    .unwrap();
    let (d, from) = recv(&fourth);
    assert_eq!(d, b"new destination");
    assert_eq!(from, mapped, "a new destination saw another port");
    eprintln!(
        "v1 full cone: peers 2 and 3 reached the app unsolicited and were answered from \
         {mapped}; a new destination saw the same port"
    );
}

/// Bad command lines exit 2 with a message naming the problem.
#[test]
fn bad_command_lines_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["vless", "server", "--listen", "http://x:1", "--uuid", ID],
            "unsupported scheme",
        ),
        (
            &[
                "vless",
                "server",
                "--listen",
                "tcp://127.0.0.1:0",
                "--uuid",
                "nope",
            ],
            "--uuid",
        ),
        (
            &[
                "vless",
                "server",
                "--listen",
                "tcp://127.0.0.1:0",
                "--uuid",
                ID,
                "--version",
                "2",
            ],
            "expected 0 or 1",
        ),
        (
            &[
                "vless",
                "server",
                "--listen",
                "tcp://127.0.0.1:0",
                "--uuid",
                ID,
                "--udp-timeout",
                "0",
            ],
            "--udp-timeout",
        ),
        (
            &[
                "vless",
                "server",
                "--listen",
                "tls://127.0.0.1:0",
                "--uuid",
                ID,
            ],
            "TLS carrier needs",
        ),
        (
            &[
                "vless",
                "client",
                "--socks",
                "127.0.0.1:0",
                "--server",
                "tcp://127.0.0.1:1",
                "--uuid",
                "x",
            ],
            "--uuid",
        ),
        (
            &[
                "vless",
                "client",
                "--socks",
                "127.0.0.1:0",
                "--server",
                "wss://127.0.0.1:1/",
                "--uuid",
                ID,
            ],
            "--ca FILE",
        ),
        (
            &["vless", "server", "--listen", "tcp://127.0.0.1:0"],
            "--uuid",
        ),
        (
            &[
                "vless",
                "server",
                "--listen",
                "tcp://127.0.0.1:0",
                "--uuid",
                ID,
                "--udp-mapping",
                "full",
            ],
            "--udp-mapping",
        ),
        (
            &[
                "vless",
                "client",
                "--socks",
                "127.0.0.1:0",
                "--server",
                "tcp://127.0.0.1:1",
                "--uuid",
                ID,
                "--idle-timeout",
                "0",
            ],
            "--idle-timeout",
        ),
    ];
    for (args, want) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Our client's idle bound, through v2ray's server to a kernel TCP server that accepts
/// and never says a word: with `--idle-timeout 1` the application's connection ends
/// (reset) about a second after the last byte, instead of waiting for good, as it did
/// when a carrier's server crashed silently (`vless-server-crash` over real TCP).
#[test]
fn our_client_ends_a_relay_silent_past_its_idle_timeout() {
    let dir = scratch("idle");
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        // Accept, read what comes and never answer, until the peer ends it (or 30 s).
        let (mut c, _) = silent.accept().unwrap();
        let mut b = [0u8; 64];
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        while matches!(c.read(&mut b), Ok(n) if n > 0) {}
    });
    let (v2, port) = start_v2ray(&dir, "v2ray server", |p| v2ray_server_config(p, ID, "tcp"));
    let url = format!("tcp://127.0.0.1:{port}");
    let (client, socks) = our_client(&url, &["--idle-timeout", "1"]);
    let mut s = TcpStream::connect(&socks).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // SOCKS5: no authentication, then CONNECT to the silent server (IPv4).
    s.write_all(&[5, 1, 0]).unwrap();
    let mut r = [0u8; 2];
    s.read_exact(&mut r).unwrap();
    assert_eq!(r, [5, 0]);
    let SocketAddr::V4(t) = target else {
        unreachable!()
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep).unwrap();
    assert_eq!(rep[1], 0, "CONNECT refused: {rep:?}");
    s.write_all(b"hello").unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 64];
    let end = s.read(&mut b);
    let took = t0.elapsed();
    let tails = format!("{}{}", client.tail(), v2.tail());
    match end {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the relay to end, got {other:?} after {took:?}\n{tails}"),
    }
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "ended after {took:?}, expected about 1 s\n{tails}"
    );
    drop((client, v2));
    let _ = held.join();
}

// ---------------------------------------------------------------------------------------
// The checkers: `check vless` and `check fullcone` against ours and v2ray

/// Runs `tunnelbed check ARGS`; returns the exit code, stdout and stderr. The checkers
/// bound every wait themselves.
fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .arg("check")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running tunnelbed check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Case id -> status from a checker's table (`ID  LEVEL  STATUS  clause  detail`).
fn statuses(table: &str, prefix: &str) -> BTreeMap<String, String> {
    table
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((w.first()?.to_string(), w.get(2)?.to_string()))
        })
        .collect()
}

/// The ids whose status is not PASS (with the status).
fn departures(st: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    st.iter()
        .filter(|(_, s)| *s != "PASS")
        .map(|(i, s)| (i.clone(), s.clone()))
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(i, s)| (i.to_string(), s.to_string()))
        .collect()
}

fn our_v1_server(listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "vless",
        "server",
        "--listen",
        listen,
        "--uuid",
        ID,
        "--version",
        "1",
    ];
    args.extend_from_slice(extra);
    Proc::start("vless server", &args, "vless server listening on ")
}

/// `check vless --version 1` passes every case against our server, over tcp and ws
/// (over ws the half-close case is N/A: WebSocket has none).
#[test]
fn check_vless_passes_our_server() {
    let dir = scratch("check-ours");
    for (listen, na) in [
        ("tcp://127.0.0.1:0", expect(&[])),
        (
            "ws://127.0.0.1:0/vless",
            expect(&[("VLESS-TCP-HALF-CLOSE", "N/A")]),
        ),
    ] {
        let (server, url) = our_v1_server(listen, &[]);
        let junit = dir.join("ours.xml");
        let (code, out, err) = check(&[
            "vless",
            "--server",
            &url,
            "--uuid",
            ID,
            "--version",
            "1",
            "--strict",
            "--junit",
            junit.to_str().unwrap(),
        ]);
        let st = statuses(&out, "VLESS-");
        assert!(st.len() >= 30, "{out}\n{err}");
        assert_eq!(departures(&st), na, "{out}\n{err}\n{}", server.tail());
        assert_eq!(code, 0, "{out}\n{err}");
        let xml = std::fs::read_to_string(&junit).unwrap();
        assert!(xml.contains("VLESS-AUTH-UNKNOWN-UUID-SILENT"));
        eprintln!("{url}:\n{out}");
    }
}

/// v2ray 4.34's VLESS inbound, checked as v0: what it does differently (see
/// reports/vless-conformance.md) is exactly this list, so a change shows.
#[test]
fn check_vless_against_v2ray_finds_its_deviations() {
    let dir = scratch("check-v2ray");
    let (_v2, port) = start_v2ray(&dir, "v2ray server", |p| v2ray_server_config(p, ID, "tcp"));
    let url = format!("tcp://127.0.0.1:{port}");
    let (code, out, err) = check(&["vless", "--server", &url, "--uuid", ID, "--version", "0"]);
    let st = statuses(&out, "VLESS-");
    assert!(st.len() >= 30, "{out}\n{err}");
    eprintln!("{out}");
    assert_eq!(departures(&st), expect(V2RAY_DEPARTURES), "{out}\n{err}");
    // The must-show in so many words: an unknown uuid gets zero bytes and no dial.
    assert_eq!(
        st.get("VLESS-AUTH-UNKNOWN-UUID-SILENT").map(String::as_str),
        Some("PASS"),
        "{out}"
    );
    let fails = V2RAY_DEPARTURES.iter().any(|(_, s)| *s == "FAIL");
    assert_eq!(code, if fails { 1 } else { 0 }, "{out}\n{err}");
}

/// Non-PASS results of `check vless --version 0` against v2ray 4.34 (v1 cases are N/A).
const V2RAY_DEPARTURES: &[(&str, &str)] = &[
    // It relays a request whose flow it does not implement.
    ("VLESS-HDR-FLOW-UNKNOWN", "FAIL"),
    // The client's FIN ends the whole connection: the target's answer after it is lost.
    ("VLESS-TCP-HALF-CLOSE", "WARN"),
    // Uplink frames are cut into datagrams of at most 2048 bytes.
    ("VLESS-UDP-LARGE", "WARN"),
    ("VLESS-UDP-LEN-OVERSIZE", "WARN"),
    // Any source's datagram to the flow's port comes back as the target's.
    ("VLESS-UDP-ONLY-TARGET", "WARN"),
    ("VLESS-V1-CRUMFURS", "N/A"),
    ("VLESS-V1-REPLY-SAME-PORT", "N/A"),
    ("VLESS-V1-RESP-VERSION", "N/A"),
    ("VLESS-V1-UMFURS", "N/A"),
];

/// Runs `check fullcone` on `socks` with the timer cases on (a 3 s mapping timeout, 2 s
/// idle); returns the non-PASS cases and the NAT line.
fn fullcone(socks: &str, tails: &dyn Fn() -> String) -> (BTreeMap<String, String>, String, i32) {
    let (code, out, err) = check(&[
        "fullcone",
        "--socks",
        socks,
        "--mapping-timeout",
        "3",
        "--idle",
        "2",
    ]);
    let st = statuses(&out, "FULLCONE-");
    assert_eq!(st.len(), 8, "{out}\n{err}\n{}", tails());
    let nat = out
        .lines()
        .find(|l| l.starts_with("NAT behaviour: "))
        .unwrap_or_else(|| panic!("no NAT line:\n{out}\n{err}"))
        .to_string();
    eprintln!("{socks}:\n{out}");
    (departures(&st), nat, code)
}

/// `check fullcone` through our v1 client and server: by default (no `--udp-mapping`)
/// every test passes: full cone; with `--udp-mapping seed` (the seed's literal rule 3) a
/// destination nobody introduced gets a new socket, so T1 and T4 fail (the finding in
/// the README) while everything else stays full cone with true sources.
#[test]
fn check_fullcone_on_our_v1() {
    for (mapping, want, nat) in [
        (
            None,
            expect(&[]),
            "NAT behaviour: full cone: mapping endpoint-independent, filtering endpoint-independent; sources reported truly",
        ),
        (
            Some("seed"),
            expect(&[
                ("FULLCONE-MAP-ADDRESS", "FAIL"),
                ("FULLCONE-MAP-PORT", "FAIL"),
            ]),
            "mapping address-and-port-dependent, filtering endpoint-independent; sources reported truly",
        ),
    ] {
        let mut args = vec!["--udp-timeout", "3"];
        args.extend(mapping.iter().flat_map(|m| ["--udp-mapping", *m]));
        let (server, url) = our_v1_server("tcp://127.0.0.1:0", &args);
        let (client, socks) = our_client(&url, &["--version", "1"]);
        let tails = || format!("{}{}", server.tail(), client.tail());
        let (dep, line, code) = fullcone(&socks, &tails);
        assert_eq!(dep, want, "--udp-mapping {mapping:?}: {line}\n{}", tails());
        assert!(line.contains(nat), "--udp-mapping {mapping:?}: {line}");
        assert_eq!(code, i32::from(!want.is_empty()));
    }
}

/// v0 has no CRUMFURS: our v0 client and server are a symmetric NAT that reports true
/// sources; v2ray 4.34 (socks inbound -> vless -> vless inbound -> freedom) maps every
/// destination anew and hands an unsolicited datagram to the application as if it came
/// from the first destination.
#[test]
fn check_fullcone_on_v0_and_v2ray() {
    let (server, url) = our_v1_server("tcp://127.0.0.1:0", &["--udp-timeout", "3"]);
    let (client, socks) = our_client(&url, &["--version", "0"]);
    let tails = || format!("{}{}", server.tail(), client.tail());
    let (dep, line, _) = fullcone(&socks, &tails);
    assert_eq!(
        dep,
        expect(&[
            ("FULLCONE-MAP-ADDRESS", "FAIL"),
            ("FULLCONE-MAP-PORT", "FAIL"),
            ("FULLCONE-FILTER-ADDRESS", "FAIL"),
            ("FULLCONE-FILTER-SOURCE", "N/A"),
            ("FULLCONE-FILTER-PORT", "FAIL"),
            ("FULLCONE-REPLY-PORT", "FAIL"),
        ]),
        "{line}"
    );
    assert!(
        line.starts_with("NAT behaviour: symmetric") && line.ends_with("sources reported truly"),
        "{line}"
    );
    drop((server, client));

    let dir = scratch("fullcone-v2ray");
    let (v2s, sport) = start_v2ray(&dir, "v2ray server", |p| v2ray_server_config(p, ID, "tcp"));
    let saddr: SocketAddr = format!("127.0.0.1:{sport}").parse().unwrap();
    let (v2c, cport) = start_v2ray(&dir, "v2ray client", |p| {
        v2ray_client_config(p, saddr, ID, "tcp")
    });
    let tails = || format!("{}{}", v2s.tail(), v2c.tail());
    let (dep, line, _) = fullcone(&format!("127.0.0.1:{cport}"), &tails);
    // v2ray's UDP session ends about 4 s after the last datagram *from* the destination,
    // whatever the application keeps sending, so T5's 6 s of outbound-only traffic
    // moves the mapping; T6's 2 s of silence is within it.
    assert_eq!(
        dep,
        expect(&[
            ("FULLCONE-MAP-ADDRESS", "FAIL"),
            ("FULLCONE-MAP-PORT", "FAIL"),
            ("FULLCONE-FILTER-SOURCE", "FAIL"),
            ("FULLCONE-FILTER-PORT", "FAIL"),
            ("FULLCONE-REPLY-PORT", "FAIL"),
            ("FULLCONE-TIMER-REFRESH", "FAIL"),
        ]),
        "{line}\n{}",
        tails()
    );
    assert!(line.ends_with("sources MISREPORTED"), "{line}");
}
