//! Every registered scenario passes on every named profile and replays byte for byte
//! (also across processes), and every invariant is shown to fail on its sabotage, for
//! every scenario: integrity, liveness, no-leak and determinism (plus the data-path
//! sabotage, which loses bytes inside the network or the ARQ driver).

use tunnelbed_sim::sabotage::Sabotage;
use tunnelbed_sim::scenario::{check_determinism, run, RunConfig, RunReport};
use tunnelbed_sim::scenarios;

fn cfg(seed: u64, profile: &str) -> RunConfig {
    RunConfig {
        seed,
        profile: profile.into(),
        capture: false,
        sabotage: None,
        tcp: Default::default(),
    }
}

/// Runs every scenario on `profile` with seed 4 (a sabotaged seed) and `kind`.
fn sabotaged_runs(kind: Sabotage, profile: &str) -> Vec<RunReport> {
    scenarios::all()
        .iter()
        .map(|s| {
            run(
                s,
                &RunConfig {
                    sabotage: Some(kind),
                    ..cfg(4, profile)
                },
            )
            .unwrap()
        })
        .collect()
}

/// The check named `name` failed in `r` (and the run as a whole failed).
fn failed_check(r: &RunReport, name: &str) -> bool {
    !r.ok() && r.checks.iter().any(|c| c.name == name && !c.ok)
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
fn integrity_sabotage_fails_integrity() {
    for r in sabotaged_runs(Sabotage::Integrity, "clean") {
        assert!(
            failed_check(&r, "integrity"),
            "{}: integrity sabotage not reported as an integrity failure: {}",
            r.scenario,
            r.failure_summary()
        );
    }
}

#[test]
fn a_seed_the_sabotage_does_not_pick_passes() {
    for s in scenarios::all() {
        let r = run(
            &s,
            &RunConfig {
                sabotage: Some(Sabotage::Integrity),
                ..cfg(5, "clean")
            },
        )
        .unwrap();
        assert!(r.ok(), "{}: {}", s.name, r.failure_summary());
    }
}

#[test]
fn liveness_sabotage_fails_liveness() {
    for r in sabotaged_runs(Sabotage::Liveness, "clean") {
        assert!(
            failed_check(&r, "liveness"),
            "{}: a run that overran its deadline passed liveness: {}",
            r.scenario,
            r.failure_summary()
        );
    }
}

#[test]
fn leak_sabotage_fails_no_leak() {
    for r in sabotaged_runs(Sabotage::Leak, "clean") {
        assert!(
            failed_check(&r, "no-leak"),
            "{}: a flow left open passed no-leak: {}",
            r.scenario,
            r.failure_summary()
        );
    }
}

#[test]
fn data_path_sabotage_fails_integrity() {
    // Where the fault cannot act, the run passes: plain datagrams (UDP, raw IP packets)
    // cross no TCP stream and no ARQ driver, and vless-fullcone's carriers move a few
    // hundred bytes in all (headers and 30 bytes of datagrams), under the fault's
    // threshold. Every other scenario must notice the loss.
    const OUT_OF_REACH: [&str; 3] = ["udp-echo", "ip-echo", "vless-fullcone"];
    for r in sabotaged_runs(Sabotage::DataPath, "clean") {
        if OUT_OF_REACH.contains(&r.scenario.as_str()) {
            assert!(r.ok(), "{}: {}", r.scenario, r.failure_summary());
            continue;
        }
        assert!(
            failed_check(&r, "integrity"),
            "{}: bytes lost inside the data path went unnoticed: {}",
            r.scenario,
            r.failure_summary()
        );
    }
}

#[test]
fn determinism_sabotage_fails_the_determinism_check() {
    for s in scenarios::all() {
        let (report, d) = check_determinism(
            &s,
            &RunConfig {
                sabotage: Some(Sabotage::Determinism),
                ..cfg(4, "lossy")
            },
        )
        .unwrap();
        // The run itself is healthy; only replaying it fails.
        assert!(report.ok(), "{}: {}", s.name, report.failure_summary());
        assert!(
            !d.ok(),
            "{}: an unseeded choice went unnoticed by the determinism check: {d:?}",
            s.name
        );
    }
}
