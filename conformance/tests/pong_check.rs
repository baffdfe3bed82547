//! `tunnelbed check pong` against three remotes:
//!
//! 1. a mock (`pong_check::faulty_remote`) with the raw codec that has pong-go's known faults
//!    (`shared/protocols/pong.md`): the checker must FAIL exactly the cases for those
//!    faults and pass the rest, which shows it can fail and says why;
//! 2. remotes that never answer or cannot be reached: every case ends within its limit;
//! 3. our own remote (`tunnelbed_pong::remote::serve`) over tcp, tls, ws and wss: every
//!    case passes, SHOULD cases included (`strict`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tunnelbed_carrier::tls::{ClientTls, ServerTls};
use tunnelbed_carrier::{CarrierKind, CarrierUrl};
use tunnelbed_conformance::pong_check::{self, faulty_remote, CheckConfig, Report, Status};
use tunnelbed_netio::{Net, TokioNet, Trace};
use tunnelbed_pong::remote::RemoteConfig;

const CLIENT_ID: [u8; 16] = [
    0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00,
];

fn config(url: &str, tls: ClientTls, wait: Duration) -> CheckConfig {
    let mut c = CheckConfig::new(url.parse().unwrap(), tls, CLIENT_ID);
    c.wait = wait;
    c
}

fn show(r: &Report) -> String {
    r.table(60)
}

async fn start_mock() -> String {
    let lsn = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("tcp://{}", lsn.local_addr().unwrap());
    tokio::spawn(pong_check::faulty_remote::serve(lsn, CLIENT_ID));
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_mock_fails_exactly_the_pong_go_faults() {
    let url = start_mock().await;
    let cfg = config(&url, ClientTls::insecure(), Duration::from_secs(2));
    let r = pong_check::Checker::run(cfg).await;
    let table = show(&r);
    println!("{table}");
    assert_eq!(
        r.ids(Status::Fail),
        faulty_remote::EXPECTED_FAILS,
        "\n{table}"
    );
    // pong-go's rst has a code but no description: a SHOULD case, so WARN.
    assert_eq!(r.ids(Status::Warn), ["PONG-RST-DESC"], "\n{table}");
    assert_eq!(r.count(Status::NotApplicable), 0, "\n{table}");
    assert_eq!(
        r.count(Status::Pass),
        r.cases.len() - faulty_remote::EXPECTED_FAILS.len() - 1,
        "\n{table}"
    );
    assert!(!r.passed());
    // The details say what went wrong.
    let detail = |id: &str| {
        r.cases
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.detail.clone())
            .unwrap_or_default()
    };
    assert!(
        detail("PONG-DATA-SMALL-UP").contains("were lost"),
        "\n{table}"
    );
    assert!(
        detail("PONG-FRAME-LEN-SHORT").contains("not rejected"),
        "\n{table}"
    );
    assert!(
        detail("PONG-CONNECT-LONG-DOMAIN").contains("no answer within 2s"),
        "\n{table}"
    );
    assert!(
        detail("PONG-FINISH-HALF-CLOSE").contains("without the destination's reply"),
        "\n{table}"
    );
    assert!(
        detail("PONG-RST-LONG-DESC").contains("connection closed by the remote"),
        "\n{table}"
    );

    // Under --strict the missing description counts too; JUnit lists every case.
    let mut cfg = config(&url, ClientTls::insecure(), Duration::from_secs(2));
    cfg.strict = true;
    cfg.cases = pong_check::Checker::select(&["PONG-RST".into(), "PONG-DIAL".into()]).unwrap();
    let r = pong_check::Checker::run(cfg).await;
    let table = show(&r);
    println!("{table}");
    assert_eq!(
        r.ids(Status::Fail),
        ["PONG-RST-LONG-DESC", "PONG-RST-DESC"],
        "\n{table}"
    );
    let x = pong_check::to_junit(&r);
    assert_eq!(x.matches("<testcase ").count(), r.cases.len());
    assert_eq!(x.matches("<failure ").count(), 2);
}

// ---------------------------------------------------------------------------------------
// Remotes that never answer, or are not there

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_remote_fails_in_bounded_time() {
    // Accepts, reads everything, never writes, never closes.
    let lsn = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("tcp://{}", lsn.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = lsn.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut b = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 {
                        // Keep the socket until the checker is gone.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        break;
                    }
                }
            });
        }
    });
    let wait = Duration::from_millis(500);
    let cfg = config(&url, ClientTls::insecure(), wait);
    let n = pong_check::Checker::select(&[]).unwrap().len() as u32;
    let t0 = Instant::now();
    let r = pong_check::Checker::run(cfg).await;
    let table = show(&r);
    println!("{table}");
    // Each case waits at most a few times `wait`.
    assert!(t0.elapsed() < wait * 4 * n, "{:?}\n{table}", t0.elapsed());
    assert!(!r.passed());
    let c = &r.cases[0];
    assert_eq!(
        (c.id, c.status),
        ("PONG-HDR-ACCEPT", Status::Fail),
        "{table}"
    );
    assert!(c.detail.contains("no answer within 500ms"), "{table}");
    // A SHOULD case never FAILs without --strict.
    assert!(r
        .cases
        .iter()
        .filter(|c| c.level == pong_check::Level::Should)
        .all(|c| c.status != Status::Fail));
}

#[tokio::test]
async fn an_unreachable_remote_fails_every_case_at_once() {
    // Held for the whole test: nothing else can take the port and answer.
    let port = tunnelbed_conformance::ports::RefusingPort::new().unwrap();
    // A long per-wait limit: if any case waited for the remote instead of failing on the
    // refused dial, the run would take at least this long.
    let wait = Duration::from_secs(60);
    let cfg = config(
        &format!("tcp://{}", port.addr()),
        ClientTls::insecure(),
        wait,
    );
    let t0 = Instant::now();
    let r = pong_check::Checker::run(cfg).await;
    assert!(t0.elapsed() < wait, "{:?}", t0.elapsed());
    // Every MUST case fails; a SHOULD case is a WARN without --strict.
    let should = r
        .cases
        .iter()
        .filter(|c| c.level == pong_check::Level::Should)
        .count();
    assert!(should > 0);
    assert_eq!(r.count(Status::Fail), r.cases.len() - should);
    assert_eq!(r.count(Status::Warn), should);
    assert!(r.cases[0].detail.contains("carrier to tcp://127.0.0.1"));
}

// ---------------------------------------------------------------------------------------
// Our remote

async fn start_ours(kind: CarrierKind) -> (String, ClientTls) {
    let lsn = TokioNet
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = tunnelbed_netio::TcpListen::local_addr(&lsn).unwrap();
    let (tls, client_tls) = if kind.uses_tls() {
        let s = ServerTls::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let c = ClientTls::trusting_der(&s.cert_der).unwrap();
        (Some(Arc::new(s)), c)
    } else {
        (None, ClientTls::insecure())
    };
    let cfg = RemoteConfig {
        allowed: vec![CLIENT_ID],
        ..RemoteConfig::default()
    };
    tokio::spawn(tunnelbed_pong::remote::serve(
        TokioNet,
        lsn,
        kind,
        tls,
        Arc::new(cfg),
        Trace::disabled(),
        "remote".into(),
    ));
    let scheme = kind.scheme();
    let host = if !kind.uses_tls() {
        addr.ip().to_string()
    } else {
        "localhost".into()
    };
    let url: CarrierUrl = format!("{scheme}://{host}:{}/pong", addr.port())
        .parse()
        .unwrap();
    (url.to_string(), client_tls)
}

async fn check_ours(kind: CarrierKind, cases: &[&str]) {
    let (url, tls) = start_ours(kind).await;
    let mut cfg = config(&url, tls, Duration::from_secs(5));
    cfg.strict = true;
    cfg.cases =
        pong_check::Checker::select(&cases.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let r = pong_check::Checker::run(cfg).await;
    let table = show(&r);
    println!("{table}");
    assert!(r.passed(), "\n{table}");
    assert_eq!(r.count(Status::Pass), r.cases.len(), "\n{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_remote_passes_every_case_over_tcp() {
    check_ours(CarrierKind::Tcp, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_remote_passes_over_tls_ws_and_wss() {
    let some = [
        "PONG-HDR",
        "PONG-FINISH",
        "PONG-DATA-SMALL-UP",
        "PONG-DATA-MAX",
        "PONG-FRAME",
        "PONG-RST-LONG-DESC",
        "PONG-STREAMS",
    ];
    check_ours(CarrierKind::Tls, &some).await;
    check_ours(CarrierKind::Ws, &some).await;
    check_ours(CarrierKind::Wss, &some).await;
}
