//! pong scenarios beyond the harness's pass/replay/sabotage checks: how every pong
//! stream of one `pong-streams` run ended on each side (snapshot), and the RSTs of its
//! capture (who reset whom, each recorded once).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tunnelbed_netio::pcap_read::{decode_transport, read_capture, Transport};
use tunnelbed_sim::scenario::{run, RunConfig};
use tunnelbed_sim::scenarios::{self, pong_common as pc};

fn pong_streams(seed: u64, profile: &str) -> tunnelbed_sim::RunReport {
    let s = scenarios::find("pong-streams").unwrap();
    let r = run(
        &s,
        &RunConfig {
            seed,
            profile: profile.into(),
            capture: true,
            sabotage: None,
            tcp: Default::default(),
        },
    )
    .unwrap();
    assert!(r.ok(), "{} ({})", r.failure_summary(), r.replay_line());
    r
}

/// The cause of a transition without what differs from stream to stream.
fn normalize(cause: &str) -> String {
    let mut out = String::new();
    for w in cause.split(' ') {
        let w = if w.parse::<SocketAddr>().is_ok() || w.ends_with(":8000") {
            "ADDR"
        } else {
            w
        };
        out.push_str(w);
        out.push(' ');
    }
    out.trim_end().to_string()
}

/// Per side (local, remote), how many pong streams ended with which last transition.
fn stream_endings(trace: &str) -> String {
    // Lines: "<time>us <machine> <from> -> <to> (<cause>)".
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for line in trace.lines() {
        let mut parts = line.trim_start().splitn(3, ' ');
        let (Some(_), Some(machine), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let is_stream = machine.split('/').count() == 3;
        if !is_stream || rest.starts_with("reset -> reset") {
            continue; // frames ignored after a reset are not how it ended
        }
        let to_and_cause = rest.split_once(" -> ").map(|x| x.1).unwrap_or(rest);
        last.insert(machine.to_string(), to_and_cause.to_string());
    }
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (m, end) in last {
        let side = if m.starts_with("local/") {
            "local"
        } else {
            "remote"
        };
        *counts
            .entry((side.to_string(), normalize(&end)))
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|((side, end), n)| format!("{side:6} {n:4}  {end}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How the app's, the local's and the remote's connections ended, per direction of
/// the RST: e.g. `local:1080 -> app`. Fails if one RST is recorded on two interfaces.
fn resets(pcap: &[u8]) -> String {
    let name = |a: SocketAddr| match a.port() {
        pc::SOCKS_PORT => "local:socks".to_string(),
        pc::TARGET_PORT => "target".to_string(),
        pc::REMOTE_PORT => "remote:carrier".to_string(),
        _ => "ephemeral".to_string(),
    };
    let mut seen: BTreeMap<(SocketAddr, SocketAddr), Vec<String>> = BTreeMap::new();
    for p in read_capture(pcap).unwrap() {
        if let Ok(Transport::Tcp {
            src,
            dst,
            rst: true,
            ..
        }) = decode_transport(&p)
        {
            seen.entry((src, dst))
                .or_default()
                .push(p.iface_name.unwrap_or_default());
        }
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for ((src, dst), ifaces) in seen {
        assert_eq!(ifaces.len(), 1, "RST {src} -> {dst} recorded on {ifaces:?}");
        let key = format!(
            "{} ({}) -> {} on {}",
            name(src),
            src.ip(),
            name(dst),
            ifaces[0]
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n:4}  {k}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn pong_streams_endings_and_resets() {
    let r = pong_streams(7, "clean");
    let text = format!(
        "pong streams, last transition per stream:\n{}\n\nTCP RSTs in the capture:\n{}\n",
        stream_endings(&r.trace),
        resets(r.pcap.as_deref().unwrap())
    );
    insta::assert_snapshot!(text);
}
