//! `pong-streams-h3`: pong over `h3://` (HTTP/3 over QUIC) inside the simulator, on the
//! lossy profile: every check passes, the run replays byte for byte (same trace, same
//! pcap), the capture holds the QUIC packets (UDP to the remote's port, both ways), and
//! a different seed gives a different capture.

use tunnelbed_netio::pcap_read::{decode_transport, read_capture, Transport};
use tunnelbed_sim::scenario::{check_determinism, run, RunConfig};
use tunnelbed_sim::scenarios::{self, pong_common as pc};

fn cfg(seed: u64) -> RunConfig {
    RunConfig {
        seed,
        profile: "lossy".into(),
        capture: true,
        sabotage: None,
        tcp: Default::default(),
    }
}

#[test]
fn pong_over_h3_with_loss_replays_byte_for_byte() {
    let s = scenarios::find("pong-streams-h3").unwrap();
    let (r, d) = check_determinism(&s, &cfg(3)).unwrap();
    assert!(r.ok(), "{} ({})", r.failure_summary(), r.replay_line());
    assert!(d.ok(), "pong-streams-h3 is not deterministic: {d:?}");
    assert!(
        r.link.dropped_loss > 0,
        "the lossy profile dropped nothing: {:?}",
        r.link
    );

    // The capture holds QUIC both ways between local and remote.
    let pcap = r.pcap.clone().expect("a capture");
    let (mut to_remote, mut from_remote) = (0usize, 0usize);
    for p in read_capture(&pcap).expect("a readable capture") {
        if let Ok(Transport::Udp { src, dst, .. }) = decode_transport(&p) {
            if dst.port() == pc::REMOTE_PORT {
                to_remote += 1;
            } else if src.port() == pc::REMOTE_PORT {
                from_remote += 1;
            }
        }
    }
    assert!(
        to_remote > 100 && from_remote > 100,
        "QUIC datagrams to/from the remote: {to_remote}/{from_remote}"
    );

    let other = run(&s, &cfg(4)).unwrap();
    assert!(other.ok(), "{}", other.failure_summary());
    assert_ne!(other.pcap, r.pcap, "seeds 3 and 4 gave the same capture");
}
