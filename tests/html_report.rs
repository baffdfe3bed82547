//! `sim all --html` and `tunnelbed report`: one static page (no JavaScript) with the
//! pass/fail matrix, inline SVG plots, and each failing run's replay line and pcap link
//! (failures come from `--sabotage`). The page is rendered by headless Chromium (Debian's
//! `chromium`; missing is a failure with the install hint) and the screenshot must show
//! far more than a blank page does.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/chromium.rs"]
mod chromium;
use chromium::{png_size, screenshot};

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("html_report")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tunnelbed(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn sim_all_html_renders_with_matrix_plots_and_failures() {
    let d = dir("all");
    let out = d.join("out");
    let o = tunnelbed(&[
        "sim",
        "all",
        "--scenario",
        "udp-echo",
        "--scenario",
        "kcp-rpc",
        "--seeds",
        "2",
        "--sabotage",
        "--out",
        out.to_str().unwrap(),
        "--html",
        out.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "sabotaged seeds fail: {log}");
    let page = out.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "no JavaScript");
    assert!(html.contains("<table id=\"matrix\">"));
    for sc in ["kcp-rpc", "udp-echo"] {
        assert!(html.contains(&format!("<tr><td>{sc}</td>")), "{sc} row");
    }
    // kcp-rpc: completion plus p50 and p99 plots; udp-echo: completion.
    assert_eq!(html.matches("<svg ").count(), 4);
    assert!(html.contains("kcp-rpc: p99_ms over seeds"));
    // Every failing run of the log is on the page with its replay line and pcap link.
    let replays: Vec<&str> = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("replay: "))
        .collect();
    assert!(!replays.is_empty(), "{log}");
    for r in &replays {
        assert!(html.contains(&format!("<code>{r}</code>")), "{r} missing");
        let mut w = r.split_whitespace();
        let (scen, seed, prof) = (w.nth(3).unwrap(), w.nth(1).unwrap(), w.nth(1).unwrap());
        let pcap = format!("{scen}-{prof}-{seed}.pcapng");
        assert!(
            html.contains(&format!("<a href=\"{pcap}\">")),
            "{pcap} link"
        );
        assert!(out.join(&pcap).is_file(), "{pcap} written");
    }
    // `tunnelbed report DIR` renders the same results from runs.jsonl.
    std::fs::remove_file(&page).unwrap();
    let o = tunnelbed(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = std::fs::read_to_string(&page).unwrap();
    let body = |h: &str| h[h.find("<p id=\"totals\">").unwrap()..].to_string();
    assert_eq!(body(&again), body(&html));

    // Headless Chromium renders it; compared with a blank page of the same size.
    let blank = d.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let (shot, blank_shot) = (d.join("report.png"), d.join("blank.png"));
    screenshot(&page, &shot, &d.join("chromium-1"));
    screenshot(&blank, &blank_shot, &d.join("chromium-2"));
    let (png, empty) = (
        std::fs::read(&shot).unwrap(),
        std::fs::read(&blank_shot).unwrap(),
    );
    assert_eq!(png_size(&png), (1000, 1600));
    println!(
        "screenshot {} bytes, blank page {} bytes: {}",
        png.len(),
        empty.len(),
        shot.display()
    );
    assert!(
        png.len() > 8 * empty.len() && png.len() > 50_000,
        "the screenshot ({} bytes) looks empty next to a blank page ({} bytes)",
        png.len(),
        empty.len()
    );
}
