//! The bench reports' goodput-vs-loss plot: `bench kcp` and `bench h2tunnel` write
//! `<report>-goodput.svg` beside the Markdown report, with one series for ours and one
//! per reference, a point per loss rate, and the report links it. Headless Chromium
//! renders it.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/chromium.rs"]
mod chromium;

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plot_bench")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "tunnelbed {args:?}: {text}");
    text
}

/// Points per series name in a goodput SVG.
fn points(svg: &str, series: &str) -> usize {
    svg.matches(&format!("<circle class=\"point\" data-series=\"{series}\""))
        .count()
}

#[test]
fn bench_kcp_report_has_a_goodput_plot_with_both_series() {
    let d = dir("kcp");
    let md = d.join("kcp.md");
    run(&[
        "bench",
        "kcp",
        "--bytes",
        "64KiB",
        "--reps",
        "1",
        "--profiles",
        "clean,loss1,loss10,hostile",
        "--out",
        md.to_str().unwrap(),
    ]);
    let svg_path = d.join("kcp-goodput.svg");
    let svg = std::fs::read_to_string(&svg_path).expect("the plot is written");
    assert_eq!(svg.matches("<polyline class=\"series\"").count(), 2);
    // clean, loss1 and loss10 are loss-only; hostile is not plotted.
    assert_eq!(points(&svg, "tunnelbed-kcp (ours)"), 3);
    assert_eq!(points(&svg, "crate kcp 0.6 (ref)"), 3);
    assert!(svg.contains("10% loss"), "loss10 at 10%");
    let doc = std::fs::read_to_string(&md).unwrap();
    assert!(doc.contains("## Goodput vs loss\n\n![KCP goodput vs loss"));
    assert!(doc.contains("](kcp-goodput.svg)"));
    chromium::assert_renders(&svg_path, &d, 3);
}

#[test]
fn bench_h2tunnel_report_has_a_goodput_plot_per_stack() {
    assert!(
        Command::new("kcptun-server")
            .arg("--version")
            .output()
            .is_ok(),
        "kcptun is not installed: run `bash .ci/setup` or `apt-get install -y kcptun`"
    );
    let d = dir("h2tunnel");
    let md = d.join("h2.md");
    run(&[
        "bench",
        "h2tunnel",
        "--losses",
        "0,5",
        "--bytes",
        "1000000",
        "--reps",
        "1",
        "--requests",
        "5",
        "--out",
        md.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(d.join("h2-goodput.svg")).expect("the plot is written");
    assert_eq!(svg.matches("<polyline class=\"series\"").count(), 3);
    for s in ["tunnelbed h2tunnel", "kcptun", "kcptun, our knobs"] {
        assert_eq!(points(&svg, s), 2, "{s}");
    }
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .contains("](h2-goodput.svg)"));
}
