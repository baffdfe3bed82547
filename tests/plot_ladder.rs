//! `tunnelbed plot ladder`: on `h2tunnel-streams` and `pong-streams` captures every
//! stream has as many arrows as `tunnelbed replay` prints lines for it, the arrows of
//! each kind (SYN, FIN, RST, data runs) match replay's lines of that kind, connection-level
//! arrows match replay's connection lines, `--stream` keeps one stream, and headless
//! Chromium renders the SVG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/chromium.rs"]
mod chromium;

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plot_ladder")
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

fn capture(d: &Path, scenario: &str) -> PathBuf {
    let p = d.join(format!("{scenario}.pcapng"));
    tunnelbed(&[
        "sim",
        "run",
        scenario,
        "--seed",
        "3",
        "--profile",
        "lossy",
        "--pcap",
        p.to_str().unwrap(),
    ]);
    p
}

/// Whether a replay line is a timeline line (`  1.234s -> what`), and its text.
fn event(l: &str) -> Option<&str> {
    let t = l.trim_start();
    let (time, rest) = t.split_once("s ")?;
    time.parse::<f64>().ok()?;
    rest.strip_prefix("-> ")
        .or_else(|| rest.strip_prefix("<- "))
}

/// Replay's lines: per stream id (summed over connections) the events, and the
/// connection-level events (those after a connection's heading, before its streams).
fn replay_lines(out: &str) -> (BTreeMap<u32, Vec<String>>, Vec<String>) {
    enum At {
        Outside,
        Conn,
        Stream(u32),
    }
    let (mut streams, mut conn) = (BTreeMap::<u32, Vec<String>>::new(), Vec::new());
    let mut at = At::Outside;
    for l in out.lines() {
        if l.starts_with("h2tunnel over ") || l.starts_with("pong over ") {
            at = At::Conn;
        } else if !l.starts_with(' ') {
            at = At::Outside;
        } else if let Some(rest) = l.strip_prefix("  stream ") {
            let sid: u32 = rest.split(':').next().unwrap().parse().unwrap();
            streams.entry(sid).or_default();
            at = At::Stream(sid);
        } else if let Some(e) = event(l) {
            match at {
                At::Conn => conn.push(e.to_string()),
                At::Stream(sid) => streams.entry(sid).or_default().push(e.to_string()),
                At::Outside => panic!("event outside a connection: {l}"),
            }
        } else if l.ends_with(" streams") {
            at = At::Outside;
        }
    }
    (streams, conn)
}

/// Arrows in the SVG: per stream id, per class, and connection-level.
fn arrows(svg: &str) -> (BTreeMap<u32, usize>, BTreeMap<String, usize>) {
    let (mut per_stream, mut per_class) = (BTreeMap::new(), BTreeMap::new());
    for g in svg.split("<g class=\"msg ").skip(1) {
        let class = g.split('"').next().unwrap().to_string();
        *per_class.entry(class).or_default() += 1;
        if let Some(rest) = g.split("data-stream=\"").nth(1) {
            let sid: u32 = rest.split('"').next().unwrap().parse().unwrap();
            *per_stream.entry(sid).or_default() += 1;
        }
    }
    (per_stream, per_class)
}

fn count(lines: &BTreeMap<u32, Vec<String>>, f: impl Fn(&str) -> bool) -> usize {
    lines.values().flatten().filter(|l| f(l)).count()
}

/// Checks the ladder of `scenario` against replay; `kinds` maps SVG classes to the
/// replay lines they stand for. Returns (the SVG's path, a stream id with the most lines).
/// SVG classes and the replay lines they stand for.
type Kinds<'a> = [(&'a [&'a str], &'a dyn Fn(&str) -> bool)];

fn check(d: &Path, scenario: &str, kinds: &Kinds<'_>) -> (PathBuf, u32) {
    let pcap = capture(d, scenario);
    let replay = tunnelbed(&["replay", pcap.to_str().unwrap()]);
    let svg_path = d.join(format!("{scenario}.svg"));
    let log = tunnelbed(&[
        "plot",
        "ladder",
        pcap.to_str().unwrap(),
        "-o",
        svg_path.to_str().unwrap(),
    ]);
    println!("{scenario}: {log}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let (lines, conn) = replay_lines(&replay);
    let (per_stream, per_class) = arrows(&svg);
    assert!(lines.len() > 5, "{scenario}: several streams: {replay}");
    let want: BTreeMap<u32, usize> = lines.iter().map(|(k, v)| (*k, v.len())).collect();
    assert_eq!(per_stream, want, "{scenario}: arrows per stream");
    assert_eq!(
        per_class.get("conn").copied().unwrap_or(0),
        conn.len(),
        "{scenario}: connection-level arrows {conn:?}"
    );
    let mut matched = 0;
    for (classes, f) in kinds {
        let n = count(&lines, f);
        assert!(n > 0, "{scenario}: replay has {classes:?} lines");
        let drawn: usize = classes
            .iter()
            .map(|c| per_class.get(*c).copied().unwrap_or(0))
            .sum();
        assert_eq!(drawn, n, "{scenario}: {classes:?} arrows");
        matched += n;
    }
    let on_streams: usize = want.values().sum();
    let other = per_class.get("other").copied().unwrap_or(0);
    assert_eq!(
        matched + other,
        on_streams,
        "every stream arrow has its kind"
    );
    let busiest = want
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(s, _)| *s)
        .unwrap();
    // One stream alone: the same arrows, nothing else.
    let one = d.join(format!("{scenario}-{busiest}.svg"));
    tunnelbed(&[
        "plot",
        "ladder",
        pcap.to_str().unwrap(),
        "--stream",
        &busiest.to_string(),
        "-o",
        one.to_str().unwrap(),
    ]);
    let (only, _) = arrows(&std::fs::read_to_string(&one).unwrap());
    assert_eq!(only, BTreeMap::from([(busiest, want[&busiest])]));
    (svg_path, busiest)
}

#[test]
fn h2tunnel_streams_ladder_matches_replay() {
    let d = dir("h2tunnel");
    let (svg, _) = check(
        &d,
        "h2tunnel-streams",
        &[
            (&["syn", "synack"], &|l: &str| l == "SYN / SYN-ACK"),
            (&["fin"], &|l: &str| l == "FIN" || l.starts_with("PSH-FIN")),
            (&["rst"], &|l: &str| l == "RST"),
            (&["data"], &|l: &str| l.starts_with("DATA")),
        ],
    );
    // Replay names SYN and SYN-ACK alike; the ladder tells them apart.
    let text = std::fs::read_to_string(&svg).unwrap();
    let (_, per_class) = arrows(&text);
    assert!(
        per_class.get("synack").copied().unwrap_or(0) > 0,
        "{per_class:?}"
    );
    chromium::assert_renders(&svg, &d, 4);
}

#[test]
fn pong_streams_ladder_matches_replay() {
    let d = dir("pong");
    check(
        &d,
        "pong-streams",
        &[
            (&["syn"], &|l: &str| {
                ["connect ", "relay (udp) ", "bind", "associate"]
                    .iter()
                    .any(|p| l.starts_with(p))
            }),
            (&["fin"], &|l: &str| l.starts_with("finish") || l == "close"),
            (&["rst"], &|l: &str| l.starts_with("rst")),
            (&["data"], &|l: &str| l.starts_with("data")),
        ],
    );
}
