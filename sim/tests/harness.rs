//! Every registered scenario passes on every named profile, replays byte for byte, and a
//! sabotaged run is reported as an integrity failure.

use tunnelbed_sim::scenario::{check_determinism, run, RunConfig};
use tunnelbed_sim::scenarios;

fn cfg(seed: u64, profile: &str) -> RunConfig {
    RunConfig {
        seed,
        profile: profile.into(),
        capture: false,
        sabotage: false,
    }
}

#[test]
fn every_scenario_passes_on_named_profiles() {
    for s in scenarios::all() {
        let name = s.name;
        for profile in ["clean", "lossy", "hostile", "swarm"] {
            let r = run(&s, &cfg(7, profile)).unwrap();
            assert!(
                r.ok(),
                "{} failed: {} (replay: {})",
                name,
                r.failure_summary(),
                r.replay_line()
            );
        }
    }
}

#[test]
fn same_seed_same_trace_and_pcap() {
    for s in scenarios::all() {
        let name = s.name;
        let (report, d) = check_determinism(&s, &cfg(7, "lossy")).unwrap();
        assert!(report.ok(), "{}", report.failure_summary());
        assert!(d.ok(), "{name}: not deterministic: {d:?}");
        assert!(d.pcap_sizes.0 > 1000, "{name}: capture is empty");
        assert!(!report.trace.is_empty(), "{name}: trace is empty");
    }
}

#[test]
fn different_seeds_differ() {
    let s = scenarios::find("udp-echo").unwrap();
    let a = run(&s, &cfg(1, "lossy")).unwrap();
    let b = run(&s, &cfg(2, "lossy")).unwrap();
    assert_ne!(a.trace_hash, b.trace_hash);
}

#[test]
fn sabotage_is_detected() {
    for s in scenarios::all() {
        let name = s.name;
        let r = run(
            &s,
            &RunConfig {
                sabotage: true,
                ..cfg(4, "clean")
            },
        )
        .unwrap();
        assert!(!r.ok(), "{name}: sabotage went unnoticed");
        assert!(
            r.checks.iter().any(|c| c.name == "integrity" && !c.ok),
            "{name}: sabotage not reported as an integrity failure: {}",
            r.failure_summary()
        );
    }
}
