//! `tunnelbed replay` on a `candy-mesh` capture decodes Candy: every client's WebSocket
//! (the upgrade both ways), every Candy message in it, and the IPv4 packet inside every
//! FORWARD, with counts the run fixes: 4 clients send VMAC, DHCP and AUTH once each (the
//! server answers each DHCP), 64 numbered requests (32 UDP echo, 32 ICMP echo) and their
//! answers, each crossing two hops (client -> server, server -> client), none resent on
//! the clean profile; and smoltcp's three TCP connections to our stack open with a SYN
//! on each hop.

use tunnelbed_sim::scenario::{run, RunConfig};
use tunnelbed_sim::scenarios;

fn count(out: &str, needle: &str) -> usize {
    out.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn replay_shows_websocket_frames_candy_messages_and_inner_packets() {
    let s = scenarios::find("candy-mesh").expect("candy-mesh is registered");
    let r = run(
        &s,
        &RunConfig {
            seed: 3,
            profile: "clean".into(),
            capture: true,
            sabotage: None,
            tcp: Default::default(),
        },
    )
    .expect("the run");
    assert!(r.ok(), "{}", r.failure_summary());
    let out = tunnelbed::replay::render(r.pcap.as_deref().expect("a capture")).expect("replay");
    let shown = || out.lines().take(80).collect::<Vec<_>>().join("\n");
    assert_eq!(count(&out, "candy over websocket tcp"), 4, "{}", shown());
    assert_eq!(count(&out, "-> HTTP GET / HTTP/1.1"), 4, "{}", shown());
    assert_eq!(count(&out, "<- HTTP HTTP/1.1 101"), 4, "{}", shown());
    assert_eq!(count(&out, "-> VMAC "), 4, "{}", shown());
    assert_eq!(count(&out, "-> DHCP 0.0.0.0/0"), 4, "{}", shown());
    assert_eq!(count(&out, "<- DHCP 10.77.0."), 4, "{}", shown());
    assert_eq!(count(&out, "-> AUTH 10.77.0."), 4, "{}", shown());
    assert_eq!(count(&out, "UDP 40000 -> 7,"), 64, "{}", shown());
    assert_eq!(count(&out, "UDP 7 -> 40000,"), 64, "{}", shown());
    assert_eq!(count(&out, "ICMP echo request"), 64, "{}", shown());
    assert_eq!(count(&out, "ICMP echo reply"), 64, "{}", shown());
    assert_eq!(count(&out, "-> 7 [SYN]"), 6, "{}", shown());
    assert_eq!(count(&out, "[SYN,ACK]"), 6, "{}", shown());
    assert_eq!(count(&out, "not a Candy message"), 0, "{}", shown());
    assert_eq!(count(&out, "trailing bytes"), 0, "{}", shown());
}
