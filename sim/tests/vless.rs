//! VLESS scenarios beyond the harness's pass/replay/sabotage checks: how every VLESS
//! machine of one `vless-tcp` run ended, per side (snapshot): relays closed, refused
//! users rejected with the reason, clients whose server gave no response failed.

use std::collections::BTreeMap;

use tunnelbed_sim::scenario::{run, RunConfig};
use tunnelbed_sim::scenarios;

/// Per side (client, server), how many VLESS machines ended with which last transition.
fn endings(trace: &str) -> String {
    // Lines: "<time>us <machine> <from> -> <to> (<cause>)".
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for line in trace.lines() {
        let mut parts = line.trim_start().splitn(3, ' ');
        let (Some(_), Some(machine), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !machine.starts_with("vless-") {
            continue;
        }
        last.insert(machine.to_string(), rest.to_string());
    }
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (m, end) in last {
        let side = m.split('[').next().unwrap_or("").to_string();
        *counts.entry((side, end)).or_default() += 1;
    }
    counts
        .iter()
        .map(|((side, end), n)| format!("{side:12} {n:4}  {end}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn vless_tcp_endings() {
    let s = scenarios::find("vless-tcp").unwrap();
    let r = run(
        &s,
        &RunConfig {
            seed: 7,
            profile: "clean".into(),
            capture: false,
            sabotage: None,
            tcp: Default::default(),
        },
    )
    .unwrap();
    assert!(r.ok(), "{} ({})", r.failure_summary(), r.replay_line());
    insta::assert_snapshot!(format!(
        "vless-tcp seed 7 clean, last transition per VLESS machine:\n{}\n",
        endings(&r.trace)
    ));
}
