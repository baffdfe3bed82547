//! Runs every h2tunnel conformance case (`conformance/src/h2tunnel_cases/`): each must
//! pass, each case's frames and transition trace is an insta snapshot named after its ID,
//! and the Markdown list `reports/h2tunnel-conformance.md` must match what the cases give
//! (regenerate with `UPDATE_REPORTS=1`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use tunnelbed_conformance::h2tunnel_cases::{cases, report, run_all};

#[test]
fn every_case_passes_and_matches_its_snapshot() {
    let results = run_all();
    let mut failed = Vec::new();
    for (case, result) in &results {
        if let Err(e) = &result.outcome {
            failed.push(format!("{}: {e}\n{}", case.id, result.log));
        }
        insta::with_settings!({
            description => format!("{}: {}", case.id, case.clause),
            omit_expression => true,
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!(case.id, result.log);
        });
    }
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n\n"));
}

#[test]
fn ids_are_unique_and_well_formed() {
    let mut seen = BTreeSet::new();
    for c in cases() {
        assert!(c.id.starts_with("H2T-"), "{}", c.id);
        assert!(
            c.id.chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '-'),
            "{}",
            c.id
        );
        assert!(seen.insert(c.id), "duplicate id {}", c.id);
        assert!(!c.clause.is_empty());
    }
    assert!(seen.len() >= 50, "only {} cases", seen.len());
}

/// The checked-in report is what the cases produce now.
#[test]
fn report_is_current() {
    let md = report(&run_all());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reports/h2tunnel-conformance.md");
    if std::env::var_os("UPDATE_REPORTS").is_some() {
        std::fs::write(&path, &md).expect("write report");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} missing ({e}): run with UPDATE_REPORTS=1",
            path.display()
        )
    });
    assert_eq!(on_disk, md, "report out of date: run with UPDATE_REPORTS=1");
}

/// A case whose checks are broken must fail: run one against a wrong expectation by
/// tampering with nothing but the expected bytes (guards against cases that cannot fail).
#[test]
fn a_wrong_expectation_fails() {
    use tunnelbed_conformance::h2tunnel_cases::{frame, Script};
    use tunnelbed_h2tunnel::{Role, TunnelConfig};
    let mut s = Script::new(Role::Client, TunnelConfig::default());
    // The client sends the handshake; claim it sent a PING instead.
    let r = s.tx(&frame(6, 0, 0, &[0; 8]));
    assert!(r.is_err());
}
