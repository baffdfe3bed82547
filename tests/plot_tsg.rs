//! `tunnelbed plot tsg`: on a lossy `kcp-bulk` capture the graph marks exactly as many
//! retransmissions (copies of a segment already seen) as `tunnelbed replay` counts per
//! direction, as many first copies as replay's distinct data segments and as many acks
//! as replay's ACK segments of the other direction; on a TCP capture it spans the bytes
//! replay reassembled. Headless Chromium renders the SVG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/chromium.rs"]
mod chromium;

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plot_tsg")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tunnelbed(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tunnelbed {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn capture(d: &Path, scenario: &str, seed: &str, profile: &str) -> PathBuf {
    let p = d.join(format!("{scenario}-{profile}-{seed}.pcapng"));
    tunnelbed(&[
        "sim",
        "run",
        scenario,
        "--seed",
        seed,
        "--profile",
        profile,
        "--pcap",
        p.to_str().unwrap(),
    ]);
    p
}

/// Marks of one class in an SVG.
fn marks(svg: &str, class: &str) -> usize {
    svg.matches(&format!("<path class=\"{class}\"")).count()
}

/// The number before `word` in `s` (`"12 acks"` -> 12 for "acks").
fn before(s: &str, word: &str) -> usize {
    let i = s.find(word).unwrap_or_else(|| panic!("{word:?} in {s:?}"));
    let head = s[..i].trim_end().trim_end_matches(" copies)").trim_end();
    let n: String = head
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    n.chars().rev().collect::<String>().parse().unwrap()
}

/// Replay's KCP lines: (src, dst) -> (data segments, copies, acks).
fn replay_kcp(out: &str) -> BTreeMap<(String, String), (usize, usize, usize)> {
    let mut m = BTreeMap::new();
    for l in out.lines().filter(|l| l.starts_with("kcp ")) {
        let mut w = l.split_whitespace();
        let (src, dst) = (w.nth(1).unwrap(), w.nth(1).unwrap());
        let copies = l.split("(+").nth(1).unwrap();
        m.insert(
            (src.to_string(), dst.to_string()),
            (
                before(l, "data segments"),
                before(copies, "copies"),
                before(l, "acks"),
            ),
        );
    }
    m
}

#[test]
fn kcp_retransmissions_match_replay_and_the_svg_renders() {
    let d = dir("kcp");
    let pcap = capture(&d, "kcp-bulk", "1", "lossy");
    let replay = tunnelbed(&["replay", pcap.to_str().unwrap()]);
    let kcp = replay_kcp(&replay);
    assert_eq!(kcp.len(), 2, "two KCP directions: {replay}");
    let mut total_retx = 0;
    let mut biggest = (0, PathBuf::new());
    for ((src, dst), (segments, copies, _)) in &kcp {
        if *segments == 0 {
            continue;
        }
        let svg_path = d.join(format!("tsg-{}.svg", src.replace([':', '.'], "_")));
        let flow = format!("{src}->{dst}");
        let line = tunnelbed(&[
            "plot",
            "tsg",
            pcap.to_str().unwrap(),
            "--flow",
            &flow,
            "-o",
            svg_path.to_str().unwrap(),
        ]);
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        let acks_back = kcp
            .get(&(dst.clone(), src.clone()))
            .map(|k| k.2)
            .unwrap_or(0);
        println!(
            "{flow}: replay {segments} segments +{copies} copies, other way {acks_back} acks; plot: {line}"
        );
        assert_eq!(marks(&svg, "retx"), *copies, "{flow}: retransmissions");
        assert_eq!(
            marks(&svg, "data") + marks(&svg, "late"),
            *segments,
            "{flow}: first copies"
        );
        assert_eq!(marks(&svg, "ack"), acks_back, "{flow}: acks");
        assert!(svg.contains(&format!("retransmission / copy ({copies})")));
        total_retx += copies;
        if *segments > biggest.0 {
            biggest = (*segments, svg_path);
        }
    }
    assert!(
        total_retx > 0,
        "a lossy kcp-bulk run retransmits; the test needs a seed that does: {replay}"
    );
    // `--flow auto` picks the bulk direction; `conv=` finds it too.
    let auto = d.join("auto.svg");
    tunnelbed(&[
        "plot",
        "tsg",
        pcap.to_str().unwrap(),
        "-o",
        auto.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&auto).unwrap(),
        std::fs::read_to_string(&biggest.1).unwrap()
    );
    // Zoom: one second of the transfer keeps a part of the marks.
    let zoom = d.join("zoom.svg");
    let line = tunnelbed(&[
        "plot",
        "tsg",
        pcap.to_str().unwrap(),
        "--from",
        "1",
        "--to",
        "2",
        "-o",
        zoom.to_str().unwrap(),
    ]);
    let (z, full) = (
        std::fs::read_to_string(&zoom).unwrap(),
        std::fs::read_to_string(&biggest.1).unwrap(),
    );
    let all = |svg: &str| marks(svg, "data") + marks(svg, "late") + marks(svg, "retx");
    assert!(all(&z) > 0 && all(&z) < all(&full), "zoom: {line}");
    chromium::assert_renders(&biggest.1, &d, 4);
}

#[test]
fn tcp_flow_spans_the_reassembled_bytes() {
    let d = dir("tcp");
    let pcap = capture(&d, "pong-streams", "2", "clean");
    let replay = tunnelbed(&["replay", pcap.to_str().unwrap()]);
    // The TCP direction with the most bytes, from replay's `tcp A -> B: N bytes` lines.
    let (bytes, src, dst) = replay
        .lines()
        .filter(|l| l.starts_with("tcp "))
        .map(|l| {
            let mut w = l.split_whitespace();
            let (s, d) = (w.nth(1).unwrap().to_string(), w.nth(1).unwrap());
            let d = d.trim_end_matches(':').to_string();
            (before(l, "bytes"), s, d)
        })
        .max()
        .unwrap();
    let svg_path = d.join("tcp.svg");
    let flow = format!("{src}->{dst}");
    let line = tunnelbed(&[
        "plot",
        "tsg",
        pcap.to_str().unwrap(),
        "--flow",
        &flow,
        "-o",
        svg_path.to_str().unwrap(),
    ]);
    println!("{flow}: replay {bytes} bytes; plot: {line}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg "));
    assert!(line.contains(&format!("TCP {src} -> {dst}")), "{line}");
    // The simulator's TCP is reliable: no copies, no holes, and acks come back.
    assert_eq!(marks(&svg, "retx"), 0);
    assert_eq!(marks(&svg, "late"), 0);
    assert!(marks(&svg, "data") > 0);
    assert!(svg.contains("class=\"cumulative-line\""));
    assert!(bytes > 0, "{replay}");
    assert!(line.contains(&format!("sequence up to {bytes} ")), "{line}");
}
