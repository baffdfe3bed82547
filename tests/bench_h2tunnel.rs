//! `tunnelbed bench h2tunnel` end to end with a tiny plan: every stack (ours, Debian's
//! kcptun with its fast3, and kcptun with our KCP knobs, which the bench checks from
//! kcptun's log) comes up, every download and request is checked and succeeds, and the
//! table has every row and both ratios; our row runs through `--tunnel-binary` (here the
//! same build) as an A/B of two builds would. This checks the machinery, not performance. kcptun comes
//! from `bash .ci/setup` (`apt-get install -y kcptun`); without it the test fails.

use std::process::Command;

#[test]
fn bench_h2tunnel_runs_both_stacks() {
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args([
            "bench", "h2tunnel", "--losses", "0,10", "--bytes", "1000000",
        ])
        .args(["--reps", "1", "--requests", "5"])
        .args(["--tunnel-binary", env!("CARGO_BIN_EXE_tunnelbed")])
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
        "| 0% | kcptun, our knobs |",
        "| 10% | **ours/kcptun** |",
        "| 10% | **ours/kcptun, same knobs** |",
        "log `nodelay parameters: 1 10 1 1`",
        "--tunnel-binary",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn a_missing_tunnel_binary_is_a_usage_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args([
            "bench",
            "h2tunnel",
            "--tunnel-binary",
            "/nonexistent/tunnelbed",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/nonexistent/tunnelbed: no such file"),
        "{err}"
    );
}
