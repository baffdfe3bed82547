//! The tcpstack scenarios beyond the harness: how our stack's connections moved through
//! seed 002's states in one clean run of each (transition counts, addresses and
//! sequence numbers left out), snapshotted so a change of behaviour shows in review.

use std::collections::BTreeMap;

use tunnelbed_sim::scenario::{run, RunConfig};
use tunnelbed_sim::scenarios;

/// "<from> -> <to> (<cause without numbers>)" of our stack's connections, counted.
fn transitions(scenario: &str, seed: u64) -> String {
    let s = scenarios::find(scenario).expect("registered");
    let r = run(
        &s,
        &RunConfig {
            seed,
            profile: "clean".into(),
            capture: false,
            sabotage: None,
            tcp: Default::default(),
        },
    )
    .expect("run");
    assert!(r.ok(), "{} ({})", r.failure_summary(), r.replay_line());
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in r.trace.lines() {
        let mut parts = line.trim_start().splitn(3, ' ');
        let (Some(_), Some(machine), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !machine.starts_with("tcp[") && !machine.starts_with("tcp-listen[") {
            continue;
        }
        let kind = if machine.starts_with("tcp[") {
            "conn"
        } else {
            "listener"
        };
        let rest: String = rest
            .split(' ')
            .map(|w| {
                let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
                if core.starts_with(|c: char| c.is_ascii_digit()) {
                    "N"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        *counts.entry(format!("{kind}: {rest}")).or_default() += 1;
    }
    counts.iter().map(|(k, n)| format!("{n:5} {k}\n")).collect()
}

#[test]
fn tcpstack_bulk_transitions() {
    insta::assert_snapshot!(transitions("tcpstack-bulk", 1));
}

#[test]
fn tcpstack_many_transitions() {
    insta::assert_snapshot!(transitions("tcpstack-many", 1));
}
