//! `.ci/check-pcaps` on `tcpstack-*` captures: Wireshark's "ACKed segment that wasn't
//! captured" and "Previous segment(s) not captured" are no longer exempt there, they are
//! checked against the capture. A lossy `tcpstack-bulk` run passes although Wireshark
//! flags one of its ACKs "ACKed segment that wasn't captured" (smoltcp re-cut a resend
//! across Wireshark's mark; the script shows from the capture that every byte was
//! there), and the same capture with one data segment taken out fails, naming the
//! warning.
//!
//! Needs tshark (`apt-get install -y tshark`): check-pcaps exits 2 with that hint.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tmpdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn check_pcaps(file: &Path) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/check-pcaps");
    let o = Command::new("bash")
        .arg(script)
        .arg(file)
        .output()
        .expect("running bash .ci/check-pcaps");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// The capture without its `n`-th TCP segment that carries data (1-based); returns the
/// new file and the removed frame's number. Enhanced packet blocks (type 6) hold raw
/// IPv4 packets here (link type RAW), their data 28 bytes into the block.
fn without_data_segment(pcapng: &[u8], n: usize) -> (Vec<u8>, usize) {
    let u32_at = |o: usize| u32::from_le_bytes(pcapng[o..o + 4].try_into().unwrap()) as usize;
    let (mut off, mut frame, mut seen, mut removed) = (0, 0, 0, 0);
    let mut out = Vec::new();
    while off + 12 <= pcapng.len() {
        let (kind, len) = (u32_at(off), u32_at(off + 4));
        assert!(len >= 12, "bad block length at {off}");
        let mut keep = true;
        if kind == 6 {
            frame += 1;
            let caplen = u32_at(off + 20);
            let p = &pcapng[off + 28..off + 28 + caplen];
            if caplen >= 40 && p[0] >> 4 == 4 && p[9] == 6 && removed == 0 {
                let ihl = (p[0] as usize & 15) * 4;
                let total = u16::from_be_bytes([p[2], p[3]]) as usize;
                let doff = (p[ihl + 12] >> 4) as usize * 4;
                if total > ihl + doff {
                    seen += 1;
                    if seen == n {
                        keep = false;
                        removed = frame;
                    }
                }
            }
        }
        if keep {
            out.extend_from_slice(&pcapng[off..off + len]);
        }
        off += len;
    }
    assert!(removed > 0, "the capture has fewer than {n} data segments");
    (out, removed)
}

#[test]
fn check_pcaps_checks_not_captured_claims_on_tcpstack_captures() {
    let d = tmpdir("tcpstack_pcaps");
    let clean = d.join("tcpstack-bulk-lossy.pcapng");
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args([
            "sim",
            "run",
            "tcpstack-bulk",
            "--seed",
            "0",
            "--profile",
            "lossy",
            "--pcap",
        ])
        .arg(&clean)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let flagged = Command::new("tshark")
        .arg("-r")
        .arg(&clean)
        .args([
            "-Y",
            "tcp.analysis.ack_lost_segment || tcp.analysis.lost_segment",
        ])
        .output()
        .expect("tshark (apt-get install -y tshark)");
    let flagged = String::from_utf8_lossy(&flagged.stdout).lines().count();
    assert!(
        flagged >= 1,
        "the run no longer has a false 'not captured' item, so it does not test the check"
    );
    let (code, out) = check_pcaps(&clean);
    assert_eq!(code, 0, "the untouched capture must pass:\n{out}");
    let bytes = std::fs::read(&clean).unwrap();
    let (cut, frame) = without_data_segment(&bytes, 200);
    let f = d.join("tcpstack-bulk-cut.pcapng");
    std::fs::write(&f, &cut).unwrap();
    let (code, out) = check_pcaps(&f);
    assert_eq!(code, 1, "frame {frame} removed, yet it passed:\n{out}");
    assert!(
        out.contains("not captured"),
        "the failure does not say a segment was not captured:\n{out}"
    );
}
