//! `check tcpstack`'s scripts against our stack: every case passes with vproxy's
//! constants, and a stack with known faults fails exactly the cases that watch them (so
//! no case passes whatever the stack does).

use tunnelbed_conformance::framework::Status;
use tunnelbed_conformance::tcpstack_check::{run_ours, run_ours_with, CheckConfig};
use tunnelbed_tcpstack::StackConfig;

#[test]
fn every_script_passes_against_our_stack() {
    let r = run_ours(&CheckConfig::default(), |_| {});
    assert!(r.cases.len() >= 24);
    let bad: Vec<_> = r
        .cases
        .iter()
        .filter(|c| c.status != Status::Pass)
        .map(|c| format!("{} {}: {}", c.id, c.status.name(), c.detail))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn a_stack_with_faults_fails_the_cases_that_watch_them() {
    let faulty = StackConfig {
        // More than 45 segments un-acked, a different MSS, a slower RTO, an immediate ACK.
        cap_segments: 100,
        mss: 1400,
        rto_initial: std::time::Duration::from_millis(100),
        ..StackConfig::default()
    };
    let r = run_ours_with(&CheckConfig::default(), &faulty, |_| {});
    let fails = r.ids(Status::Fail);
    assert_eq!(
        fails,
        [
            "TCP-RETRANSMIT-DATA",
            "TCP-RETRANSMIT-FIN",
            "TCP-CAP-UNACKED"
        ],
        "{:#?}",
        r.cases
    );
    assert_eq!(r.ids(Status::Warn), ["TCP-HS-MSS-1360"]);
}
