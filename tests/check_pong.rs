//! `tunnelbed check pong` as a user runs it: against `tunnelbed pong remote` (every case
//! passes, the table is printed, JUnit written, exit 0) and against `tunnelbed check
//! pong-go-mock` (exactly pong-go's faults FAIL, exit 1), plus command-line errors.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ID: &str = "123e4567-e89b-12d3-a456-426614174000";

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tunnelbed ARGS` and waits for the stderr line starting with `banner`; returns
/// the child and the banner's last word (the URL it listens on).
fn start(args: &[&str], banner: &str) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning tunnelbed");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let want = banner.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && line.starts_with(&want) {
                let url = line.split_whitespace().last().unwrap_or("").to_string();
                let _ = tx.send(url);
                sent = true;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no {banner:?} line from tunnelbed {args:?}"));
    (Running(child), url)
}

fn check(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(["check", "pong"])
        .args(args)
        .output()
        .expect("running tunnelbed check pong");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The RESULT column of the table row for `id`.
fn result_of<'a>(table: &'a str, id: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{table}"))
}

fn case_ids() -> Vec<String> {
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(["check", "pong", "--remote", "tcp://127.0.0.1:1"])
        .args(["--client-id", ID, "--list"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(ids.len() >= 20, "{ids:?}");
    assert!(ids.iter().all(|i| i.starts_with("PONG-")), "{ids:?}");
    ids
}

#[test]
fn our_remote_passes_every_case_strict_with_junit() {
    passes_every_case_over("tcp");
}

#[test]
fn our_remote_passes_every_case_over_h2c() {
    passes_every_case_over("h2c");
}

#[test]
fn our_remote_passes_every_case_over_h2() {
    passes_every_case_over("h2");
}

#[test]
fn our_remote_passes_every_case_over_h3() {
    passes_every_case_over("h3");
}

#[test]
fn our_remote_passes_every_case_over_http() {
    passes_every_case_over("http");
}

#[test]
fn our_remote_passes_every_case_over_https() {
    passes_every_case_over("https");
}

/// `check pong --strict --junit` against `pong remote` listening on `scheme`: every
/// case passes (for TLS carriers the checker trusts the remote's self-signed
/// certificate with `--ca`).
fn passes_every_case_over(scheme: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("check_pong-{scheme}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("remote-cert.pem");
    let cert = cert.to_str().unwrap();
    let listen = format!("{scheme}://127.0.0.1:0");
    let tls = matches!(scheme, "tls" | "wss" | "h2" | "h3" | "https");
    let mut args = vec!["pong", "remote", "--listen", &listen, "--client-id", ID];
    if tls {
        args.extend(["--self-signed-cert-out", cert]);
    }
    let (_remote, url) = start(&args, "pong remote listening on");
    let junit = dir.join("out/pong.xml");
    let t0 = Instant::now();
    let mut check_args = vec![
        "--remote",
        &url,
        "--client-id",
        ID,
        "--strict",
        "--junit",
        junit.to_str().unwrap(),
    ];
    if tls {
        check_args.extend(["--ca", cert]);
    }
    let (code, table, err) = check(&check_args);
    println!("over {scheme}://\n{table}\n({:?})", t0.elapsed());
    assert_eq!(code, 0, "{table}\n{err}");
    let ids = case_ids();
    for id in &ids {
        assert_eq!(result_of(&table, id), "PASS", "{table}");
    }
    assert!(
        table.contains(&format!("{} PASS, 0 FAIL, 0 WARN, 0 N/A", ids.len())),
        "{table}"
    );
    // Progress on stderr, one line per case.
    assert_eq!(
        err.matches(&format!("/{}] PONG-", ids.len())).count(),
        ids.len()
    );
    let x = std::fs::read_to_string(&junit).expect("JUnit written");
    assert_eq!(x.matches("<testcase ").count(), ids.len());
    assert!(!x.contains("<failure"), "{x}");
}

#[test]
fn the_pong_go_mock_fails_exactly_its_known_faults() {
    let (_mock, url) = start(
        &["check", "pong-go-mock", "--client-id", ID],
        "pong-go mock listening on",
    );
    let (code, table, err) = check(&["--remote", &url, "--client-id", ID, "--wait", "2"]);
    println!("{table}");
    assert_eq!(
        code, 1,
        "a faulty remote must fail the check\n{table}\n{err}"
    );
    // The mock drops target reads of 30 bytes or less; when the kernel hands the 65 500 B
    // echo of PONG-DATA-MAX over with a tail piece that small (it depends on scheduling),
    // that case fails too, by exactly that fault: allowed, and only with that signature.
    let tail_piece_dropped = |l: &str| {
        l.split(" got ")
            .nth(1)
            .and_then(|r| r.strip_suffix(" of 65500 bytes"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|got| got < 65_500 && 65_500 - got <= 30)
    };
    let fails: Vec<&str> = table
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("FAIL"))
        .filter(|l| !(l.starts_with("PONG-DATA-MAX ") && tail_piece_dropped(l)))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        fails,
        tunnelbed_conformance::pong_check::faulty_remote::EXPECTED_FAILS,
        "{table}"
    );
    // "small reads dropped" and "finish ends the whole stream", the two faults the issue
    // names, are among them with a reason.
    assert_eq!(result_of(&table, "PONG-DATA-SMALL-DOWN"), "FAIL");
    assert_eq!(result_of(&table, "PONG-FINISH-HALF-CLOSE"), "FAIL");
    assert_eq!(result_of(&table, "PONG-RST-DESC"), "WARN", "{table}");
}

#[test]
fn bad_command_lines_exit_2_with_a_reason() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--remote", "udp://127.0.0.1:1", "--client-id", ID],
            "--remote",
        ),
        (
            &["--remote", "tcp://127.0.0.1:1", "--client-id", "nope"],
            "UUID",
        ),
        (
            &[
                "--remote",
                "tcp://127.0.0.1:1",
                "--client-id",
                ID,
                "--case",
                "NOPE",
            ],
            "PONG-HDR-ACCEPT",
        ),
        (
            &["--remote", "tls://127.0.0.1:1", "--client-id", ID],
            "--insecure",
        ),
        (
            &[
                "--remote",
                "tcp://127.0.0.1:1",
                "--client-id",
                ID,
                "--wait",
                "0",
            ],
            "--wait",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err) = check(args);
        assert_eq!(code, 2, "{args:?}\n{out}\n{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn an_unreachable_remote_fails_fast() {
    // Held for the whole test: nothing else can take the port and answer.
    let port = tunnelbed_conformance::ports::RefusingPort::new().unwrap();
    let t0 = Instant::now();
    // A long per-wait limit: a case that waited on the remote instead of failing on the
    // refused dial would make the run take at least this long.
    let (code, table, _) = check(&[
        "--remote",
        &format!("tcp://{}", port.addr()),
        "--client-id",
        ID,
        "--wait",
        "120",
    ]);
    assert_eq!(code, 1, "{table}");
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(result_of(&table, "PONG-HDR-ACCEPT"), "FAIL");
}
