//! The TUN link against peers we did not write: the Linux kernel's `ping` and a kernel UDP
//! socket, inside a network namespace this test creates (`unshare -n` re-runs this test
//! binary in a fresh namespace, which disappears with the process on every path).
//! Our side answers in user space over the link ([`echo::answer`]) and records every
//! packet into a capture that tshark must read cleanly with checksum validation.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tunnelbed_netio::iplink::echo::{self, Answer};
use tunnelbed_netio::pcap_read::read_capture;
use tunnelbed_netio::{
    Capture, CaptureNet, IpLink, IpLinkConfig, IpLinkError, IpNet, Ipv4Cidr, TokioNet,
};

/// Set in the re-run child: the body runs only inside the namespace.
const IN_NETNS: &str = "TUNNELBED_TEST_IN_NETNS";
/// Printed by the child when the body passed, so the parent knows it ran.
const PASSED: &str = "tun-netns-body-passed";
const KERNEL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const OURS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// Generous bound on the whole child run.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

fn pcap_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tun_netns.pcapng")
}

#[test]
fn kernel_pings_and_udp_through_tun_in_a_netns() {
    if std::env::var_os(IN_NETNS).is_some() {
        body();
        println!("{PASSED}");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(&exe)
        .args([
            "kernel_pings_and_udp_through_tun_in_a_netns",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_NETNS, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `unshare -n` ({e}): this test needs util-linux's unshare and root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to make a network namespace")
        });
    // Bounded wait: poll for the exit, kill the child past the deadline.
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait for the child").is_some() {
            break;
        }
        if start.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(PASSED),
        "the test body in a new network namespace failed (status {:?}; a namespace needs root: \
         `unshare -n` must work)\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // The capture the child wrote dissects cleanly, checksums verified by tshark.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.ci/check-pcaps");
    let check = Command::new("bash")
        .arg(&script)
        .arg(pcap_path())
        .output()
        .expect("run .ci/check-pcaps");
    assert!(
        check.status.success(),
        "tshark check of {} failed (exit 2: install tshark with `apt-get install -y tshark`):\n{}{}",
        pcap_path().display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

fn body() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(90), exchange())
            .await
            .expect("the exchange finished within 90 s");
    });
}

async fn exchange() {
    let start = tokio::time::Instant::now();
    let cap = Capture::new(Arc::new(move || start.elapsed()));
    let net = CaptureNet::new(TokioNet, cap.interface("tbtun0"));
    let cfg = IpLinkConfig::new("tbtun0", Some(Ipv4Cidr::new(KERNEL, 24).unwrap()));
    let link = Arc::new(net.open_ip_link(cfg).await.expect("open the TUN device"));
    assert_eq!(link.name(), "tbtun0");

    // Typed refusals, nothing sent.
    let big = echo::build_udp(OURS, 1, KERNEL, 2, 0, &[0u8; 1500]).unwrap();
    assert!(matches!(
        link.send(&big).await,
        Err(IpLinkError::TooLarge {
            len: 1528,
            mtu: 1500
        })
    ));
    assert!(matches!(
        link.send(&[0x60; 40]).await,
        Err(IpLinkError::NotIpv4(_))
    ));

    // Our endpoint at OURS, behind the device: answers pings and echoes UDP.
    let responder = {
        let link = link.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            let (mut pongs, mut udp) = (0u32, 0u32);
            loop {
                let n = link.recv(&mut buf).await.expect("recv from the TUN device");
                match echo::answer(&buf[..n], OURS) {
                    Answer::Pong(r) => {
                        pongs += 1;
                        link.send(&r).await.expect("send the echo reply");
                    }
                    Answer::UdpEcho(r) => {
                        udp += 1;
                        link.send(&r).await.expect("send the UDP echo");
                    }
                    Answer::Ignored => {}
                }
                if pongs >= 3 && udp >= 3 {
                    return (pongs, udp);
                }
            }
        })
    };

    // The kernel's ping: three echo requests, all answered.
    let ping = tokio::process::Command::new("ping")
        .args(["-n", "-c", "3", "-i", "0.2", "-W", "5", &OURS.to_string()])
        .output()
        .await
        .expect("run ping (install it with `apt-get install -y iputils-ping`)");
    let ping_out = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success() && ping_out.contains("3 received"),
        "ping through the TUN failed:\n{ping_out}{}",
        String::from_utf8_lossy(&ping.stderr)
    );

    // A kernel UDP socket: three datagrams (small, mid, as large as the MTU allows), each
    // answered with the same bytes by our code.
    let sock = tokio::net::UdpSocket::bind(SocketAddr::from((KERNEL, 0)))
        .await
        .expect("bind a kernel UDP socket on the device's address");
    for len in [5usize, 700, 1472] {
        let msg: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        sock.send_to(&msg, (OURS, 7)).await.expect("send_to");
        let mut buf = vec![0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("UDP answer within 10 s")
            .expect("recv_from");
        assert_eq!(from, SocketAddr::from((OURS, 7)));
        assert_eq!(&buf[..n], &msg[..], "echo of {len} bytes");
    }
    let (pongs, udp) = tokio::time::timeout(Duration::from_secs(10), responder)
        .await
        .expect("responder done")
        .expect("responder task");
    println!("answered {pongs} pings and {udp} UDP datagrams");

    // Every packet both ways is in the capture (skipping what the kernel sent besides).
    let bytes = cap.to_bytes();
    let pkts = read_capture(&bytes).expect("our capture reads back");
    let count = |pred: &dyn Fn(&[u8]) -> bool| pkts.iter().filter(|p| pred(&p.data)).count();
    let icmp = |t: u8| move |d: &[u8]| d.len() > 20 && d[9] == 1 && d[20] == t;
    assert_eq!(count(&icmp(8)), 3, "echo requests captured");
    assert_eq!(count(&icmp(0)), 3, "echo replies captured");
    assert_eq!(
        count(&|d: &[u8]| d.len() > 20 && d[9] == 17),
        6,
        "UDP captured"
    );
    std::fs::write(pcap_path(), &bytes).expect("write the capture");
}
