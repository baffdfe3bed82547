//! `tunnelbed replay` on captures the simulator wrote: the per-stream data it decodes
//! does not depend on the link (the same seed over a clean and a hostile link gives the
//! same streams, byte counts and request hashes, though the packets differ), and bad
//! input gives a one-line error naming the packet.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Streams of an `h2tunnel-streams` run: 200 to the target, 20 to the slow target.
const STREAMS: usize = 220;

/// Captures `h2tunnel-streams` seed 1 on `profile` into a file of this test's own (tests
/// run in parallel). Seed 1's slow target leaves connections past its backlog waiting
/// (none refused or lost), so every stream's outcome is the same on any link.
fn capture(profile: &str, test: &str) -> PathBuf {
    let p = tmp(&format!("h2s-{profile}-{test}.pcapng"));
    let out = bin()
        .args([
            "sim",
            "run",
            "h2tunnel-streams",
            "--seed",
            "1",
            "--profile",
            profile,
            "--pcap",
        ])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    p
}

fn replay(p: &Path) -> (i32, String, String) {
    let out = bin().arg("replay").arg(p).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn streams_decoded_from_a_capture_do_not_depend_on_the_link() {
    let mut per_profile = Vec::new();
    for profile in ["clean", "hostile"] {
        let (code, out, err) = replay(&capture(profile, "link"));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("-> handshake (SETTINGS)"), "{out}");
        assert!(out.contains("<- handshake (SETTINGS)"), "{out}");
        assert!(out.contains(&format!("\n  {STREAMS} streams\n")), "{out}");
        assert!(!out.contains("missing from the capture"), "{out}");
        // Every stream opened and ended; streams that ended with FIN both ways carried
        // exactly their data (a reset stream's byte count depends on when RST overtook it).
        let timelines: Vec<&str> = out.split("\n  stream ").skip(1).collect();
        assert_eq!(timelines.len(), STREAMS);
        let mut finished = Vec::new();
        for t in &timelines {
            assert!(t.contains("-> SYN"), "no SYN: {t}");
            let rst = t.contains("RST");
            assert!(
                rst || (t.contains("-> FIN") && t.contains("<- FIN")),
                "no end: {t}"
            );
            if !rst {
                // The answer's hash is left out: it starts with the server's SOCKS5 reply,
                // which names the port of the server's connection to the target, and
                // which port that is depends on the order connections were made in.
                let line = t.lines().next().unwrap_or_default();
                let kept = line.rsplit_once(" sha256").map_or(line, |(head, _)| head);
                finished.push(kept.to_string());
            }
        }
        assert!(
            finished.len() > 150,
            "only {} streams finished",
            finished.len()
        );
        per_profile.push(finished);
    }
    for (a, b) in per_profile[0].iter().zip(&per_profile[1]) {
        assert_eq!(
            a, b,
            "a stream decoded differently over a clean and a hostile link"
        );
    }
    assert_eq!(per_profile[0].len(), per_profile[1].len());
}

#[test]
fn bad_input_is_a_clear_error() {
    let good = std::fs::read(capture("clean", "bad")).unwrap();
    let cut = tmp("cut.pcapng");
    std::fs::write(&cut, &good[..5000]).unwrap();
    let (code, _, err) = replay(&cut);
    assert_eq!(code, 1);
    assert!(err.contains("truncated at packet"), "{err}");
    let junk = tmp("junk.bin");
    std::fs::write(&junk, b"this is not a capture at all").unwrap();
    let (code, _, err) = replay(&junk);
    assert_eq!(code, 1);
    assert!(err.contains("not a pcapng or pcap file"), "{err}");
    let (code, _, err) = replay(&tmp("missing.pcapng"));
    assert_eq!(code, 1);
    assert!(err.contains("No such file"), "{err}");
}
