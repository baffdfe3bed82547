//! The simulator's IP-packet link: two hosts exchange crafted IPv4/ICMP echo and
//! IPv4/UDP packets over the lossy profile. The counters must add up exactly, the reply
//! rate must be what the profile's loss and corruption give, the capture must hold every
//! packet once as sent and pass tshark with checksum validation, and one seed must give
//! one capture, byte for byte. Partitions cut the link; a missing route drops.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tunnelbed_netio::iplink::echo::{self, parse_icmp_echo, parse_ipv4, parse_udp, Answer};
use tunnelbed_netio::pcap_read::read_capture;
use tunnelbed_netio::{IpLink, IpLinkConfig, IpLinkError, IpNet, Ipv4Cidr};
use tunnelbed_sim::iplink::IpRouteStats;
use tunnelbed_sim::link::{LinkModel, LinkParams, LinkStats};
use tunnelbed_sim::profile;
use tunnelbed_sim::scenario::sim_epoch;
use tunnelbed_sim::simnet::SimWorld;

const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
/// Pings and UDP datagrams A sends, each.
const N: u16 = 300;
/// Packets A sends that fit the link's MTU (1500) but not the lossy profile's (1472).
const OVERSIZE: u64 = 5;

fn sim(seed: u64, p: &LinkParams, limit: Duration) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(sim_epoch())
        .simulation_duration(limit)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(p.latency)
        .max_message_latency(p.latency)
        .udp_capacity(1 << 16)
        .build()
}

fn cfg(addr: Ipv4Addr) -> IpLinkConfig {
    IpLinkConfig::new("sim0", Some(Ipv4Cidr::new(addr, 32).unwrap()))
}

/// UDP payload of datagram `seq`: its number, then bytes up to a size that varies.
fn udp_payload(seq: u16) -> Vec<u8> {
    let len = 2 + (usize::from(seq) * 37) % 1400;
    let mut v: Vec<u8> = (0..len).map(|i| (i as u16 ^ seq) as u8).collect();
    v[..2].copy_from_slice(&seq.to_be_bytes());
    v
}

/// What one run saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// A: every reply received, in order: (is_udp, seq).
    replies: Vec<(bool, u16)>,
    /// B: packets received and replies sent.
    b_received: u64,
    b_replied: u64,
    /// A: packets received that were not a valid reply to something sent.
    a_bad: u64,
}

struct Run {
    seen: Seen,
    stats: LinkStats,
    routes: IpRouteStats,
    pcap: Vec<u8>,
    params: LinkParams,
}

fn run(seed: u64, params: LinkParams) -> Run {
    let w = SimWorld::new(LinkModel::new(seed, params.clone()), true);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut sim = sim(seed, &params, Duration::from_secs(120));

    let (bw, bseen) = (w.clone(), seen.clone());
    sim.host("b", move || {
        let (w, seen) = (bw.clone(), bseen.clone());
        async move {
            let link = w.net("b").open_ip_link(cfg(B)).await?;
            let mut buf = vec![0u8; link.mtu()];
            loop {
                let n = link.recv(&mut buf).await?;
                seen.lock().unwrap().b_received += 1;
                match echo::answer(&buf[..n], B) {
                    Answer::Pong(r) | Answer::UdpEcho(r) => {
                        link.send(&r).await?;
                        seen.lock().unwrap().b_replied += 1;
                    }
                    Answer::Ignored => {}
                }
            }
        }
    });

    let (aw, aseen) = (w.clone(), seen.clone());
    sim.client("a", async move {
        let link = Arc::new(aw.net("a").open_ip_link(cfg(A)).await?);
        // Typed refusals.
        let big = echo::build_udp(A, 1, B, 2, 0, &[0; 1500]).unwrap();
        assert!(matches!(
            link.send(&big).await,
            Err(IpLinkError::TooLarge {
                len: 1528,
                mtu: 1500
            })
        ));
        assert!(matches!(
            link.send(b"not a packet").await,
            Err(IpLinkError::NotIpv4(_))
        ));
        assert!(matches!(
            aw.net("a").open_ip_link(cfg(A)).await,
            Err(IpLinkError::AddrInUse(a)) if a == A
        ));
        let rx = {
            let (link, seen) = (link.clone(), aseen.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1500];
                loop {
                    let n = link.recv(&mut buf).await.expect("recv");
                    let mut s = seen.lock().unwrap();
                    let Some(v) = parse_ipv4(&buf[..n]).filter(|v| v.src == B && v.dst == A) else {
                        s.a_bad += 1;
                        continue;
                    };
                    if let Some((0, 1, seq, data)) = parse_icmp_echo(&v) {
                        if seq < N && data == seq.to_be_bytes().repeat(28) {
                            s.replies.push((false, seq));
                            continue;
                        }
                    }
                    if let Some((7, 40000, data)) = parse_udp(&v) {
                        let seq = u16::from_be_bytes([data[0], data.get(1).copied().unwrap_or(0)]);
                        if seq < N && data == udp_payload(seq) {
                            s.replies.push((true, seq));
                            continue;
                        }
                    }
                    s.a_bad += 1;
                }
            })
        };
        for seq in 0..N {
            let ping = echo::build_icmp_echo(A, B, 8, 1, seq, seq, &seq.to_be_bytes().repeat(28));
            link.send(&ping.unwrap()).await?;
            let udp = echo::build_udp(A, 40000, B, 7, seq, &udp_payload(seq));
            link.send(&udp.unwrap()).await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for i in 0..OVERSIZE {
            let p = echo::build_udp(A, 40001, B, 9, i as u16, &[0; 1450]).unwrap();
            link.send(&p).await?; // 1478 bytes: the link takes it, the lossy path drops it
        }
        let nowhere = echo::build_udp(A, 40002, Ipv4Addr::new(10, 9, 9, 9), 9, 0, b"x");
        link.send(&nowhere.unwrap()).await?;
        // Everything in flight has landed well within this (latency 20 ms, jitter 10 ms).
        tokio::time::sleep(Duration::from_secs(2)).await;
        rx.abort();
        Ok(())
    });
    sim.run().unwrap();
    let seen = seen.lock().unwrap().clone();
    Run {
        seen,
        stats: w.link.stats(),
        routes: w.ip_routes.stats(),
        pcap: w.capture.unwrap().to_bytes(),
        params,
    }
}

fn lossy() -> LinkParams {
    profile::params("lossy", 0).unwrap()
}

/// Packets A sends that exceed `mtu` (the oversize ones and the larger UDP datagrams).
fn over_mtu(mtu: usize) -> u64 {
    let udp = (0..N).filter(|&q| udp_payload(q).len() + 28 > mtu).count() as u64;
    OVERSIZE * u64::from(1478 > mtu) + udp
}

fn check_pcap(name: &str, pcap: &[u8]) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, pcap).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/check-pcaps");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark check of {} failed (exit 2: install tshark with `apt-get install -y tshark`):\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lossy_profile_counters_capture_and_replay() {
    let r = run(7, lossy());
    let (s, st) = (&r.seen, &r.stats);
    let n = u64::from(N);

    // Every packet offered to the link model is one A sent through a route, or one of
    // B's replies; every delivered one reached A or B (nothing was left in flight).
    assert_eq!(st.sent, 2 * n + OVERSIZE + s.b_replied, "{st:?}");
    assert_eq!(
        st.delivered,
        s.replies.len() as u64 + s.b_received,
        "{st:?} {s:?}"
    );
    assert_eq!(st.dropped_mtu, OVERSIZE);
    assert_eq!(
        r.routes,
        IpRouteStats {
            no_route: 1,
            skipped_malformed: 0
        }
    );
    // Corrupted packets are discarded in the lossy profile (as the receiver's checksums
    // would): B answered everything it got, and A got nothing it did not ask for.
    assert_eq!(s.b_replied, s.b_received);
    assert_eq!(s.a_bad, 0);
    assert_eq!(
        st.sent,
        st.delivered - st.duplicated + st.dropped() + st.corrupted,
        "every packet is delivered (plus its duplicates), dropped or corrupted: {st:?}"
    );
    assert!(
        st.duplicated > 0 && st.dropped_loss > 0 && st.corrupted > 0,
        "{st:?}"
    );

    // Reply rate: both directions must survive loss and corruption.
    let unique: std::collections::BTreeSet<_> = s.replies.iter().copied().collect();
    let dups = s.replies.len() - unique.len();
    let p = (1.0 - r.params.loss) * (1.0 - r.params.corrupt);
    let trials = 2.0 * f64::from(N);
    let mean = trials * p * p;
    let sd = (trials * p * p * (1.0 - p * p)).sqrt();
    let got = unique.len() as f64;
    assert!(
        (got - mean).abs() < 6.0 * sd,
        "{got} round trips of {trials}, expected {mean:.0} +- {:.0}",
        6.0 * sd
    );
    assert!(dups > 0, "duplicated replies arrive twice");
    // Jitter reorders: some ping reply arrives after one with a higher sequence number.
    let pings: Vec<u16> = s
        .replies
        .iter()
        .filter(|(u, _)| !u)
        .map(|(_, q)| *q)
        .collect();
    assert!(pings.windows(2).any(|w| w[0] > w[1]), "no reordering seen");
    println!(
        "lossy seed 7: {} of {} round trips ({} dup replies), link {st:?}",
        unique.len(),
        2 * N,
        dups
    );

    // The capture: every packet once, as sent, on the sender's interface.
    let pkts = read_capture(&r.pcap).unwrap();
    let on = |host: &str| {
        pkts.iter()
            .filter(|p| p.iface_name.as_deref() == Some(host))
            .count() as u64
    };
    assert_eq!(on("a"), 2 * n + OVERSIZE + 1);
    assert_eq!(on("b"), s.b_replied);
    assert_eq!(pkts.len() as u64, on("a") + on("b"));
    check_pcap("iplink_lossy_seed7.pcapng", &r.pcap);

    // One seed, one capture; another seed, another.
    assert_eq!(run(7, lossy()).pcap, r.pcap, "same seed, same pcap bytes");
    assert_ne!(run(8, lossy()).pcap, r.pcap);
}

/// The hostile profile with corrupted packets delivered (bits flipped): the receiver gets
/// packets that fail their checksums (never answered, never taken for a reply) or their
/// IPv4 form (skipped by the link); never a panic. The capture holds them as sent.
#[test]
fn delivered_corruption_is_rejected_by_the_endpoints() {
    let mut params = profile::params("hostile", 0).unwrap();
    params.corrupt = 0.2;
    params.corrupt_delivered = true;
    let r = run(3, params.clone());
    let (s, st) = (&r.seen, &r.stats);
    assert_eq!(st.dropped_mtu, over_mtu(params.mtu), "{st:?}");
    assert!(st.corrupted > 0 && st.dropped_queue == 0, "{st:?}");
    let rejected = (s.b_received - s.b_replied) + s.a_bad + r.routes.skipped_malformed;
    // A duplicated corrupted packet arrives twice but counts once as corrupted.
    assert!(
        rejected >= st.corrupted,
        "rejected {rejected}, corrupted {st:?} {s:?}"
    );
    assert!(
        rejected <= st.corrupted + st.duplicated,
        "rejected {rejected}, {st:?} {s:?}"
    );
    assert_eq!(
        st.delivered,
        s.replies.len() as u64 + s.a_bad + s.b_received + r.routes.skipped_malformed,
        "{st:?} {s:?}"
    );
    println!(
        "hostile seed 3, 20% corruption delivered: {} replies, rejected {rejected}, link {st:?}, routes {:?}",
        s.replies.len(),
        r.routes
    );
    check_pcap("iplink_hostile_seed3.pcapng", &r.pcap);
}

/// A partition cuts the link both ways and a repair restores it; a prefix routes every
/// address in it to one link, while a link's own address always reaches that link.
#[test]
fn partitions_cut_and_prefixes_route() {
    let params = profile::params("clean", 0).unwrap();
    let w = SimWorld::new(LinkModel::new(1, params.clone()), false);
    let got: Arc<Mutex<Vec<(Ipv4Addr, u16)>>> = Arc::default();
    let mut sim = sim(1, &params, Duration::from_secs(60));
    for (host, cidr) in [("b", "10.9.0.2/32"), ("c", "10.9.0.0/24")] {
        let w = w.clone();
        sim.host(host, move || {
            let w = w.clone();
            async move {
                let cfg = IpLinkConfig::new("sim0", Some(cidr.parse().unwrap()));
                let link = w.net(host).open_ip_link(cfg).await?;
                let mut buf = vec![0u8; link.mtu()];
                loop {
                    let n = link.recv(&mut buf).await?;
                    // Answer for whichever address the packet was for.
                    let Some(dst) = parse_ipv4(&buf[..n]).map(|v| v.dst) else {
                        continue;
                    };
                    if let Answer::Pong(r) = echo::answer(&buf[..n], dst) {
                        link.send(&r).await?;
                    }
                }
            }
        });
    }
    let (aw, agot) = (w.clone(), got.clone());
    sim.client("a", async move {
        let link = Arc::new(aw.net("a").open_ip_link(cfg(A)).await?);
        let rx = {
            let (link, got) = (link.clone(), agot.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1500];
                loop {
                    let n = link.recv(&mut buf).await.expect("recv");
                    if let Some(v) = parse_ipv4(&buf[..n]) {
                        if let Some((0, _, seq, _)) = parse_icmp_echo(&v) {
                            got.lock().unwrap().push((v.src, seq));
                        }
                    }
                }
            })
        };
        let settle = Duration::from_millis(200); // > twice the clean latency
        for seq in 0..30u16 {
            if seq == 10 {
                tokio::time::sleep(settle).await;
                turmoil::partition("a", "b");
            }
            if seq == 20 {
                turmoil::repair("a", "b");
            }
            let ping = echo::build_icmp_echo(A, B, 8, 1, seq, seq, b"partition").unwrap();
            link.send(&ping).await?;
            // Any address of 10.9.0.0/24 but .2 goes to c.
            let other = Ipv4Addr::new(10, 9, 0, 77);
            let ping = echo::build_icmp_echo(A, other, 8, 1, seq, seq, b"prefix").unwrap();
            link.send(&ping).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(settle).await;
        rx.abort();
        Ok(())
    });
    sim.run().unwrap();
    let got = got.lock().unwrap().clone();
    let from_b: Vec<u16> = got
        .iter()
        .filter(|(s, _)| *s == B)
        .map(|(_, q)| *q)
        .collect();
    let from_c = got
        .iter()
        .filter(|(s, _)| *s == Ipv4Addr::new(10, 9, 0, 77))
        .count();
    let expect: Vec<u16> = (0..10).chain(20..30).collect();
    assert_eq!(
        from_b, expect,
        "pings during the partition are lost, the rest answered"
    );
    assert_eq!(
        from_c, 30,
        "the /24 prefix reaches c, untouched by the a-b partition"
    );
    assert_eq!(w.ip_routes.stats(), IpRouteStats::default());
}

/// A crashed host's link gives up its address (packets for it have no route), and the
/// host, restarted, opens a link with the same address again.
#[test]
fn crash_frees_the_address_and_a_bounce_takes_it_again() {
    let params = profile::params("clean", 0).unwrap();
    let w = SimWorld::new(LinkModel::new(1, params.clone()), false);
    let got: Arc<Mutex<Vec<u16>>> = Arc::default();
    let mut sim = sim(1, &params, Duration::from_secs(60));
    let bw = w.clone();
    sim.host("b", move || {
        let w = bw.clone();
        async move {
            let link = w.net("b").open_ip_link(cfg(B)).await?;
            let mut buf = vec![0u8; link.mtu()];
            loop {
                let n = link.recv(&mut buf).await?;
                if let Answer::Pong(r) = echo::answer(&buf[..n], B) {
                    link.send(&r).await?;
                }
            }
        }
    });
    let (aw, agot) = (w.clone(), got.clone());
    sim.client("a", async move {
        let link = Arc::new(aw.net("a").open_ip_link(cfg(A)).await?);
        let rx = {
            let (link, got) = (link.clone(), agot.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1500];
                loop {
                    let n = link.recv(&mut buf).await.expect("recv");
                    if let Some(v) = parse_ipv4(&buf[..n]) {
                        if let Some((0, _, seq, _)) = parse_icmp_echo(&v) {
                            got.lock().unwrap().push(seq);
                        }
                    }
                }
            })
        };
        // One ping every 10 ms for 3 s: seq i leaves at i * 10 ms.
        for seq in 0..300u16 {
            let ping = echo::build_icmp_echo(A, B, 8, 1, seq, seq, b"crash").unwrap();
            link.send(&ping).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        rx.abort();
        Ok(())
    });
    let (crash_at, bounce_at) = (Duration::from_secs(1), Duration::from_millis(1500));
    let (mut crashed, mut bounced) = (false, false);
    loop {
        if !crashed && sim.elapsed() >= crash_at {
            w.begin_crash("b");
            sim.crash("b");
            w.end_crash();
            crashed = true;
        }
        if !bounced && sim.elapsed() >= bounce_at {
            w.begin_crash("b");
            sim.bounce("b");
            w.end_crash();
            bounced = true;
        }
        if sim.step().expect("simulation step") {
            break;
        }
    }
    let got = got.lock().unwrap().clone();
    // Sent before the crash (less the one in flight at it): answered.
    assert!((0..99).all(|q| got.contains(&q)), "{got:?}");
    // Sent while b was down: no route, nothing back.
    assert!(!got.iter().any(|q| (101..150).contains(q)), "{got:?}");
    let no_route = w.ip_routes.stats().no_route;
    assert!((45..=51).contains(&no_route), "no_route {no_route}");
    // After the bounce (and its link is open again): answered.
    assert!((152..300).all(|q| got.contains(&q)), "{got:?}");
}

/// A TCP segment from A to B with a correct checksum (ACK set unless SYN).
fn tcp_segment(seq: u32, syn: bool, data: &[u8]) -> Vec<u8> {
    use tunnelbed_netio::iplink::checksum::{checksum, pseudo_header};
    let mut t = Vec::with_capacity(20 + data.len());
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&80u16.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&(if syn { 0u32 } else { 5000 }).to_be_bytes());
    t.extend_from_slice(&[0x50, if syn { 0x02 } else { 0x18 }, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(data);
    let ph = pseudo_header(A, B, 6, t.len() as u16);
    let c = checksum(&[&ph, &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    tunnelbed_netio::iplink::echo::build_ipv4(A, B, 6, 0, &t).unwrap()
}

/// Each packet is in the capture once, so Wireshark's TCP analysis judges the segments
/// themselves: a segment sent twice is one retransmission, nothing else is.
#[test]
fn wireshark_tcp_analysis_sees_each_segment_once() {
    let params = profile::params("clean", 0).unwrap();
    let w = SimWorld::new(LinkModel::new(1, params.clone()), true);
    let mut sim = sim(1, &params, Duration::from_secs(10));
    let bw = w.clone();
    sim.host("b", move || {
        let w = bw.clone();
        async move {
            let link = w.net("b").open_ip_link(cfg(B)).await?;
            let mut buf = vec![0u8; link.mtu()];
            loop {
                link.recv(&mut buf).await?;
            }
        }
    });
    let aw = w.clone();
    sim.client("a", async move {
        let link = aw.net("a").open_ip_link(cfg(A)).await?;
        let data = [7u8; 100];
        for p in [
            tcp_segment(1000, true, &[]),
            tcp_segment(1001, false, &data),
            tcp_segment(1001, false, &data), // the retransmission
            tcp_segment(1101, false, &data),
        ] {
            link.send(&p).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    });
    sim.run().unwrap();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("iplink_tcp_retrans.pcapng");
    std::fs::write(&path, w.capture.unwrap().to_bytes()).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args([
            "-o",
            "tcp.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .args([
            "-Y",
            "tcp.analysis.retransmission && tcp.checksum.status == 1",
        ])
        .output()
        .expect("run tshark (install it with `apt-get install -y tshark`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        frames.split_whitespace().collect::<Vec<_>>(),
        ["3"],
        "{frames}"
    );
}

/// Two links on one host reach each other (through the link model, host to itself).
#[test]
fn two_links_on_one_host() {
    let params = profile::params("clean", 0).unwrap();
    let w = SimWorld::new(LinkModel::new(1, params.clone()), false);
    let mut sim = sim(1, &params, Duration::from_secs(10));
    let aw = w.clone();
    sim.client("a", async move {
        let net = aw.net("a");
        let one = net.open_ip_link(cfg(A)).await?;
        let three = Ipv4Addr::new(10, 9, 0, 3);
        let other = net.open_ip_link(cfg(three)).await?;
        let p = echo::build_udp(A, 1, three, 2, 0, b"same host").unwrap();
        one.send(&p).await?;
        let mut buf = vec![0u8; 1500];
        let n = tokio::time::timeout(Duration::from_secs(1), other.recv(&mut buf)).await??;
        assert_eq!(&buf[..n], &p[..]);
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(w.link.stats().delivered, 1);
}
