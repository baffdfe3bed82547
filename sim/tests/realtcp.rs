//! Real TCP in the simulator (`--tcp real`): TCP-carried scenarios pass over smoltcp
//! under the link model, the capture holds real segments that Wireshark's TCP analysis
//! reads (retransmissions included), and a seed replays byte for byte.

use std::process::Command;

use tunnelbed_sim::realtcp::TcpMode;
use tunnelbed_sim::scenario::{check_determinism, run, RunConfig, RunReport};
use tunnelbed_sim::scenarios;

fn cfg(seed: u64, profile: &str, capture: bool) -> RunConfig {
    RunConfig {
        seed,
        profile: profile.into(),
        capture,
        sabotage: None,
        tcp: TcpMode::Real,
    }
}

/// The detail of a run's check `name`.
fn check_detail(r: &RunReport, name: &str) -> String {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("the check {name} ran"))
        .detail
        .clone()
}

/// The detail of a run's `ends-as-planned` check (which names lost resets).
fn planned_detail(r: &RunReport) -> String {
    check_detail(r, "ends-as-planned")
}

fn scenario(name: &str) -> tunnelbed_sim::Scenario {
    scenarios::find(name).unwrap_or_else(|| panic!("scenario {name} is registered"))
}

/// Runs tshark on `pcap` with display filter `filter`; the matching frame numbers.
fn tshark_frames(pcap: &[u8], filter: &str) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("tunnelbed-realtcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!(
        "{}.pcapng",
        filter.replace(|c: char| !c.is_alphanumeric(), "_")
    ));
    std::fs::write(&path, pcap).expect("write pcap");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        // Verify the checksums (Wireshark leaves them unverified by default).
        .args([
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
        ])
        .args(["-Y", filter, "-T", "fields", "-e", "frame.number"])
        .output()
        .unwrap_or_else(|e| {
            panic!("tshark is needed for this test ({e}); install it: apt-get install -y tshark")
        });
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&path);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn tcp_echo_passes_on_lossy_with_real_tcp() {
    let r = run(&scenario("tcp-echo"), &cfg(3, "lossy", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    assert!(
        r.replay_line().ends_with("--tcp real"),
        "{}",
        r.replay_line()
    );
    // The TCP segments crossed the link model, so it counted (and dropped) some.
    assert!(r.link.sent > 0 && r.link.dropped() > 0, "{:?}", r.link);
}

#[test]
fn lossy_capture_shows_real_segments_and_retransmissions_to_tshark() {
    let r = run(&scenario("tcp-echo"), &cfg(3, "lossy", true)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    let pcap = r.pcap.expect("captured");
    let retrans = tshark_frames(&pcap, "tcp.analysis.retransmission");
    assert!(
        !retrans.is_empty(),
        "5% loss on TCP segments must show retransmissions"
    );
    let dup_acks = tshark_frames(&pcap, "tcp.analysis.duplicate_ack");
    assert!(
        !dup_acks.is_empty(),
        "lost segments must draw duplicate ACKs"
    );
    let bad = tshark_frames(
        &pcap,
        "tcp.checksum.status == 0 || ip.checksum.status == 0 || _ws.malformed",
    );
    assert!(bad.is_empty(), "bad checksums or malformed frames: {bad:?}");
    // Real handshakes: every connection's SYN and SYN-ACK are in the capture.
    let syns = tshark_frames(&pcap, "tcp.flags == 0x002");
    assert!(syns.len() >= 16, "{} SYNs for 16 connections", syns.len());
}

#[test]
fn vless_over_real_tcp_passes_on_hostile() {
    let r = run(&scenario("vless-fullcone"), &cfg(3, "hostile", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    assert!(r.link.sent > 0, "VLESS's TCP crossed the link model");
}

#[test]
fn real_tcp_replays_byte_for_byte() {
    let (r, d) = check_determinism(&scenario("tcp-echo"), &cfg(7, "hostile", true)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    assert!(d.ok(), "{d:?}");
    assert!(d.pcap_sizes.0 > 10_000, "{d:?}");
}

/// Swarm seed 9 (MTU 1301: an odd MSS of 1261, 4 ms jitter) made smoltcp 0.12 panic in
/// `window_to_update` while the buffers were 64 KiB (window scaling's rounding moved the
/// advertised edge back by a byte; see `realtcp::stack::BUFFER`).
#[test]
fn pong_streams_swarm_seed_9_real_tcp_passes_without_smoltcp_panic() {
    let r = run(&scenario("pong-streams"), &cfg(9, "swarm", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
}

/// Over real TCP at 5% loss, phase A of pong-remote-crash was still running at the
/// crash (3.4 s on seed 1): 18 of its 24 streams were reset with the carriers, and the
/// transfers meant to be in flight at the crash ran after the restart. Real TCP now
/// crashes the remote later (`REAL_TCP_CRASH_DELAY`).
#[test]
fn pong_remote_crash_lossy_seed_1_real_tcp_passes() {
    let r = run(&scenario("pong-remote-crash"), &cfg(1, "lossy", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
}

/// Issue 17's first "must show": pong-streams on lossy over real TCP passes, and the
/// capture shows retransmitted segments to tshark. It failed two ways: a window update
/// lost after a zero window (smoltcp has no persist timer; the direct slow readers' pong
/// streams hit their 20 s idle reset), and pong's pool holding its lock while one
/// backed-up carrier made room for an open (UDP relays waited 14 s).
#[test]
fn pong_streams_lossy_seed_1_real_tcp_passes_and_shows_retransmissions() {
    let r = run(&scenario("pong-streams"), &cfg(1, "lossy", true)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    let pcap = r.pcap.expect("captured");
    let retrans = tshark_frames(&pcap, "tcp.analysis.retransmission");
    assert!(
        retrans.len() > 100,
        "{} retransmissions at 5% loss",
        retrans.len()
    );
}

/// A reset the link lost, told apart from a hang. With the stall watch's first timing
/// (1.5 s) swarm seed 12 had one (s299: the local ACKed the application's FIN, reset the
/// connection, and all three copies were lost; an application that only reads sends
/// nothing that would draw another reset, and a kernel peer waits the same way). With
/// today's 300 ms seed 12 has none, and seed 97 has one (s018; under 1.5 s it was s125,
/// a failed dial whose application still waited for its SOCKS5 reply). The run's
/// reset log tells this apart from a local that never reset: the verdict names the stream
/// and still fails any other hang.
///
/// Seed 97 was first the mirror image (1.5 s timing): the application reset its
/// connection after the local's whole answer and every copy was lost; the local's relay
/// waited on the application for good, so the remote's idle reset of the pong stream went
/// unnoticed and stream and carrier stayed open (`no-leak-pong`). The relay now fails on
/// a reset that comes after the answer ended. Under the 300 ms timing the run no longer
/// takes that path (not re-checked without the fix); the run passing keeps both rules.
/// Since every pump that touched a connection owes a stall-watch walk (Dec 3, eighth
/// session) seed 97
/// takes another path too; seed 47's s212 is such a stream now.
#[test]
fn pong_streams_swarm_seed_47_real_tcp_tells_a_lost_reset_from_a_hang() {
    let r = run(&scenario("pong-streams"), &cfg(47, "swarm", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    let metric = |k: &str| r.metrics.iter().find(|(n, _)| n == k).map(|m| m.1.clone());
    assert_eq!(metric("resets_lost").as_deref(), Some("1"));
    let planned = planned_detail(&r);
    assert!(
        planned.contains("the local reset them and the link lost every copy (s212 (3 sent))"),
        "{planned}"
    );
}

/// The target-side twin of the lost reset above. Traced on swarm seed 129, s261 (an
/// application that aborts): the target answered at once and read on; the application
/// dropped its connection, the remote reset its connection to the target (3 copies at
/// 7.70 s, after the target's FIN and all request bytes were acknowledged) and the link
/// lost all three in a bad spell, so the target, which has nothing left to send, reads
/// for good, as a kernel target would. The verdict counts it only because the run's
/// reset log shows the remote's resets on that connection all lost; a target left
/// reading without that still fails (it was `target None` before the target noted its
/// connection). Since resets carry a sequence number the peer's window holds (`rst_seq`)
/// seed 129 takes another path; seed 259's s223 was such a stream, and since every pump
/// that touched a connection owes a stall-watch walk (Dec 3, eighth session) seed 20's
/// s170 is.
#[test]
fn pong_streams_swarm_seed_20_real_tcp_tells_a_lost_reset_to_the_target_from_a_hang() {
    let r = run(&scenario("pong-streams"), &cfg(20, "swarm", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    let planned = planned_detail(&r);
    assert!(
        planned.contains(
            "1 aborted streams left their target reading: the remote reset them and the link lost every copy (s170 (3 sent))"
        ),
        "{planned}"
    );
}

/// A reset must carry a sequence number the peer's window holds. Swarm seed 172, s082
/// (an application that aborts; 9.9% loss): the remote was resending from 56 473 when it
/// reset its connection to the target, and smoltcp built the reset from that rewound
/// point; the target had already acknowledged 57 272, took the reset as outside its
/// window, and read on for good (`target Some(Waiting { .. })`, with the reset
/// delivered). Seed 288, s233, the other way: smoltcp's reset carried the highest
/// sequence number sent, 72 446, while the target, which had lost bytes before it, still
/// acknowledged 6 911 with a 65 535-byte window: one byte past its edge. The glue now
/// picks the number (`realtcp::rst_seq`) and both runs pass.
#[test]
fn pong_streams_swarm_seeds_172_and_288_real_tcp_reset_inside_the_peers_window() {
    for seed in [172, 288] {
        let r = run(&scenario("pong-streams"), &cfg(seed, "swarm", false)).unwrap();
        assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    }
}

/// smoltcp ends TIME-WAIT (10 s) by resetting the socket, which threw away what the
/// application had not read yet and made the next read fail with `ConnectionReset`. A
/// kernel keeps that data and then reports a clean end. Seed 199's s005 met it (swarm):
/// the remote had sent its finish to the target first, the answer came back while the
/// pong stream it was copied into was slow, and 10 s later the rest of the answer was
/// gone and the stream reset. Here the client finishes first, the server answers and
/// closes, and the client reads only after TIME-WAIT ran out.
#[test]
fn unread_data_outlives_time_wait_and_ends_cleanly() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tunnelbed_netio::{Net, TcpListen};
    use tunnelbed_sim::scenario::Ctx;
    use tunnelbed_sim::simnet::any;

    const ANSWER: usize = 50_000;
    let ctx = Ctx::new(&cfg(1, "clean", false)).expect("context");
    let mut sim = ctx.builder(Duration::from_secs(60)).build();
    let world = ctx.world.clone();
    sim.host("server", move || {
        let net = world.net("server");
        async move {
            let lsn = net.listen_tcp(any(9000)).await?;
            let (mut s, _) = lsn.accept().await?;
            let mut req = Vec::new();
            s.read_to_end(&mut req).await?;
            s.write_all(&vec![7u8; ANSWER]).await?;
            s.shutdown().await?;
            tokio::time::sleep(Duration::from_secs(40)).await;
            Ok(())
        }
    });
    let world = ctx.world.clone();
    sim.client("client", async move {
        let net = world.net("client");
        let server = net.resolve("server", 9000).await?[0];
        let mut s = net.connect_tcp(server).await?;
        s.write_all(b"request").await?;
        s.shutdown().await?;
        // The answer and the server's FIN arrive; our TIME-WAIT runs out meanwhile.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await?;
        assert_eq!(got.len(), ANSWER, "the whole answer, then a clean end");
        assert!(got.iter().all(|&b| b == 7));
        Ok(())
    });
    sim.run().expect("the answer read after TIME-WAIT is whole");
}

/// Seed 26 (swarm, 19% loss): the remote's answer was empty and reached the local after
/// its application had been silent (half-closed, waiting) for 61 s; the local shut the
/// application's connection and dropped it at once, and smoltcp's socket timeout, set
/// on drop and counted from the peer's last segment, reset it instead of sending the FIN
/// (`read ... ConnectionReset after 0 B`). The orphan timeout now counts from the drop.
#[test]
fn a_stream_dropped_after_a_long_silence_still_ends_with_a_fin() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tunnelbed_netio::{Net, TcpListen};
    use tunnelbed_sim::scenario::Ctx;
    use tunnelbed_sim::simnet::any;

    let ctx = Ctx::new(&cfg(1, "clean", false)).expect("context");
    let mut sim = ctx.builder(Duration::from_secs(150)).build();
    let world = ctx.world.clone();
    sim.host("server", move || {
        let net = world.net("server");
        async move {
            let lsn = net.listen_tcp(any(9000)).await?;
            let (mut s, _) = lsn.accept().await?;
            let mut req = Vec::new();
            s.read_to_end(&mut req).await?;
            // Longer than the orphan timeout without a segment from the client.
            tokio::time::sleep(Duration::from_secs(70)).await;
            s.shutdown().await?;
            drop(s);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    });
    let world = ctx.world.clone();
    sim.client("client", async move {
        let net = world.net("client");
        let server = net.resolve("server", 9000).await?[0];
        let mut s = net.connect_tcp(server).await?;
        s.write_all(b"request").await?;
        s.shutdown().await?;
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got).await;
        assert!(r.is_ok(), "an empty answer and a clean end, got {r:?}");
        assert!(got.is_empty());
        Ok(())
    });
    sim.run().expect("the dropped stream ends with a FIN");
}

/// Seed 200 (swarm, no random loss, 12 ms jitter, queue drops): the local's ACK that
/// closed its window and the one that opened it again left together; jitter delivered the
/// closing one last, so the application's smoltcp held a closed window with 31 KB in
/// flight (lost in the queue), sent nothing more, and the remote's 20 s idle reset cut
/// the target off (`clean end with no answer`). The stall watch now probes such a window
/// as a kernel does (`stall::window_probe`), and the run passes.
#[test]
fn pong_streams_swarm_seed_200_real_tcp_probes_a_window_a_reordered_ack_closed() {
    let r = run(&scenario("pong-streams"), &cfg(200, "swarm", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
}

/// A direct slow reader whose carrier dial timed out is excused by that dial. Swarm seed
/// 273 (17.3% loss): the pool's first carrier dial lost all four SYN-ACKs and gave up at
/// 3.1 s, and direct reader s10003, which waited on it, failed with "carrier timed out"
/// before any byte, as over a kernel TCP. The verdict used to look the direct readers up
/// under DIRECT_TAG twice (tag 20 003, which is a slow-target stream's tag), found that
/// stream's target record and refused the excuse. Seed 375 is the same with s10001.
#[test]
fn pong_streams_swarm_seeds_273_and_375_real_tcp_excuse_a_direct_reader_by_its_carrier_dial() {
    for (seed, reader) in [(273, "s10003"), (375, "s10001")] {
        let r = run(&scenario("pong-streams"), &cfg(seed, "swarm", false)).unwrap();
        assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
        let planned = planned_detail(&r);
        assert!(
            planned.contains(&format!("{reader} (carrier dial ")),
            "{planned}"
        );
    }
}

/// VLESS's server crash over real TCP. A crashed host sends nothing, so the downloads in
/// flight (whose applications only read) waited on their carriers for good (every seed
/// failed: `Hung of 307200 B`, or liveness past 120 s); the client's idle bound now ends
/// them (lossy seed 0). Hostile seed 1 (seed 38 since the stall watch's owed walk and the
/// 10 s dial bound over real TCP, Dec 3, eighth session): the client
/// reset s1002's application after its idle bound and the link lost all copies, so the
/// application waited to its own bound: visible, by the run's reset log. Hostile seed 26
/// (swarm seed 59's s1001 since Dec 3, eighth session): s1008's carrier came up only
/// after the restart (its SYNs lost), so it was never in flight at the crash and
/// completed.
#[test]
fn vless_server_crash_real_tcp_ends_in_flight_streams_visibly() {
    for (seed, profile, want) in [
        (0, "lossy", "9 reset at the application"),
        (
            38,
            "hostile",
            "the client reset them and the link lost every copy (s1002",
        ),
        (
            59,
            "swarm",
            "opened only after the restart and completed then (s1001)",
        ),
    ] {
        let r = run(&scenario("vless-server-crash"), &cfg(seed, profile, false)).unwrap();
        assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
        let detail = check_detail(&r, "in-flight-visible");
        assert!(detail.contains(want), "seed {seed} {profile}: {detail}");
    }
}

/// vless-tcp over real TCP. Swarm seed 2, s072 (a dial to a closed port): the client
/// reset the application's connection (3 copies at 1.818 s) and the link lost them all;
/// the application waited to its own bound, now told apart by the reset log (swarm
/// seed 28's s129 since the stall watch's owed walk, Dec 3, eighth session). Hostile
/// seed 7, s062: the server's reset of the carrier was lost instead, and the client,
/// with nothing to send, waited until its idle bound (60 s in this scenario) ended it.
#[test]
fn vless_tcp_real_tcp_lost_resets_and_the_idle_bound() {
    let r = run(&scenario("vless-tcp"), &cfg(28, "swarm", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    let planned = planned_detail(&r);
    assert!(
        planned.contains("the client reset them and the link lost every copy (s129 (3 sent))"),
        "{planned}"
    );
    // A dial on the link takes three SYN tries (10 s) over real TCP; at 5 s the server
    // gave up on swarm seed 26's s082, a clean stream.
    let r = run(&scenario("vless-tcp"), &cfg(26, "swarm", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    let r = run(&scenario("vless-tcp"), &cfg(7, "hostile", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
}

/// pong's remote crash over real TCP, the late-carrier case. Swarm seed 2 (21.7% loss):
/// the pool had closed its idle carriers before the long transfers began, and the new
/// carrier's SYNs were lost until the remote was back, so 13 of the 14 transfers opened
/// only after the restart and ended clean; the check failed them as "did not fail
/// loudly". It now records when each stream opened and names those (one stream did meet
/// the crash and failed loudly, which the check also requires). Hostile seed 5 likewise.
/// Since the long transfers lead the crash by 4 s and a carrier's connect gets 10 s over
/// real TCP (Dec 3, eighth session) neither takes that path; swarm and hostile seed 26 do.
#[test]
fn pong_remote_crash_real_tcp_names_transfers_that_opened_after_the_restart() {
    for (seed, profile) in [(26, "swarm"), (26, "hostile")] {
        let r = run(&scenario("pong-remote-crash"), &cfg(seed, profile, false)).unwrap();
        assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
        let detail = check_detail(&r, "in-flight-fail-loudly");
        assert!(
            detail.contains("opened only after the restart and completed then"),
            "seed {seed} {profile}: {detail}"
        );
    }
}

/// pong's remote crash over real TCP: the local's idle bound and lost resets. Swarm seeds
/// 15, 18, 24, 36, 38 (seed 0 here): the long downloads' carriers had nothing to send and
/// the crashed host sent nothing, so the downloads hung to their 60 s bound; pong's local
/// had no idle bound (the 20 s one was the remote's, dead with it). The local's bound
/// (30 s in the scenarios, with the carrier silent too) now fails them with a reset, and
/// the pool closes their carriers once idle: they end about 30 s after the crash, inside
/// the check's real-TCP bound (37 s; 5 s over turmoil's streams). Hostile seed 1: the
/// local reset the applications of s1000 and s1004 and the link lost all six copies of
/// each; they waited to their own bound, visible by the run's reset log.
#[test]
fn pong_remote_crash_real_tcp_local_idle_bound_and_lost_resets() {
    let r = run(&scenario("pong-remote-crash"), &cfg(0, "swarm", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    let detail = check_detail(&r, "in-flight-fail-loudly");
    assert!(detail.starts_with("14/14 streams"), "{detail}");
    let detail = check_detail(&r, "pool-drops-dead");
    assert!(
        detail.contains("ended within 30.") && detail.contains("bound 37s"),
        "{detail}"
    );
    let r = run(&scenario("pong-remote-crash"), &cfg(1, "hostile", false)).unwrap();
    assert!(r.ok(), "{}: {}", r.replay_line(), r.failure_summary());
    let detail = check_detail(&r, "in-flight-fail-loudly");
    assert!(
        detail.contains(
            "the local reset them and the link lost every copy (s1000 (6 sent), s1004 (6 sent))"
        ),
        "{detail}"
    );
}
