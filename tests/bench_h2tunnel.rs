//! `tunnelbed bench h2tunnel` end to end with a tiny plan: both stacks (ours and Debian's
//! kcptun) come up, every download and request is checked and succeeds, and the table
//! has both rows and the ratio. This checks the machinery, not performance. kcptun comes
//! from `bash .ci/setup` (`apt-get install -y kcptun`); without it the test fails.

use std::process::Command;

#[test]
fn bench_h2tunnel_runs_both_stacks() {
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args([
            "bench", "h2tunnel", "--losses", "0,10", "--bytes", "1000000",
        ])
        .args(["--reps", "1", "--requests", "5"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "bench failed (is kcptun installed? `apt-get install -y kcptun`):\n{out}"
    );
    for want in [
        "| 0% | tunnelbed h2tunnel |",
        "| 0% | kcptun |",
        "| 10% | **ours/kcptun** |",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}
