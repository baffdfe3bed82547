//! `.ci/check-pcaps` can fail: a clean scenario capture passes, and the same capture with
//! one byte flipped (in an RST segment's header, in a data segment's payload, in an IPv4
//! header) fails, naming the frame. The RST case matters: tshark rates every RST with a
//! warning, which the script exempts, and that exemption must not hide a bad checksum.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tmpdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `.ci/check-pcaps FILE`; returns (exit code, output). tshark missing is exit 2 with
/// an install hint, which fails the callers' assertions with that text.
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

/// Where in a packet to flip a byte.
#[derive(Clone, Copy, Debug)]
enum Spot {
    /// The window field of the first TCP RST segment.
    RstHeader,
    /// The third payload byte of the first TCP segment with a payload.
    TcpPayload,
    /// The TTL of the first IPv4 packet.
    IpHeader,
}

/// Flips one byte of the first packet in `pcapng` that has `spot`; returns the frame
/// number (1-based). Walks the pcapng blocks: enhanced packet blocks (type 6) hold raw
/// IPv4 packets here (link type RAW), their data 28 bytes into the block.
fn flip(pcapng: &mut [u8], spot: Spot) -> usize {
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let mut off = 0;
    let mut frame = 0;
    while off + 12 <= pcapng.len() {
        let (kind, len) = (u32_at(pcapng, off), u32_at(pcapng, off + 4));
        assert!(len >= 12, "bad block length at {off}");
        if kind == 6 {
            frame += 1;
            let caplen = u32_at(pcapng, off + 20);
            let d = off + 28;
            let p = &pcapng[d..d + caplen];
            if caplen >= 20 && p[0] >> 4 == 4 {
                let ihl = (p[0] as usize & 15) * 4;
                let is_tcp = p[9] == 6 && caplen >= ihl + 20;
                let at = match spot {
                    Spot::IpHeader => Some(8),
                    Spot::RstHeader if is_tcp && p[ihl + 13] & 0x04 != 0 => Some(ihl + 14),
                    Spot::TcpPayload if is_tcp => {
                        let data = ihl + (p[ihl + 12] as usize >> 4) * 4;
                        (caplen > data + 2).then_some(data + 2)
                    }
                    _ => None,
                };
                if let Some(at) = at {
                    pcapng[d + at] ^= 0x5a;
                    return frame;
                }
            }
        }
        off += len;
    }
    panic!("no packet with {spot:?} in the capture");
}

/// The capture's first `keep` packets (every other block kept): a small capture that
/// still holds the first RSTs, so tshark runs quickly.
fn first_packets(pcapng: &[u8], keep: usize) -> Vec<u8> {
    let u32_at = |o: usize| u32::from_le_bytes(pcapng[o..o + 4].try_into().unwrap()) as usize;
    let (mut off, mut frames, mut out) = (0, 0, Vec::new());
    while off + 12 <= pcapng.len() {
        let (kind, len) = (u32_at(off), u32_at(off + 4));
        assert!(len >= 12, "bad block length at {off}");
        if kind == 6 {
            frames += 1;
        }
        if kind != 6 || frames <= keep {
            out.extend_from_slice(&pcapng[off..off + len]);
        }
        off += len;
    }
    out
}

#[test]
fn check_pcaps_fails_on_a_flipped_byte_even_in_an_rst() {
    let d = tmpdir("check_pcaps");
    let clean = d.join("clean.pcapng");
    // pong-streams resets streams on purpose: its capture has RSTs.
    let o = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args(["sim", "run", "pong-streams", "--seed", "1", "--pcap"])
        .arg(&clean)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let bytes = first_packets(&std::fs::read(&clean).unwrap(), 2500);
    std::fs::write(&clean, &bytes).unwrap();
    let (code, out) = check_pcaps(&clean);
    assert_eq!(code, 0, "the untouched capture must pass:\n{out}");
    assert!(out.contains(": 2500 packets"), "{out}");
    for spot in [Spot::RstHeader, Spot::TcpPayload, Spot::IpHeader] {
        let mut b = bytes.clone();
        let frame = flip(&mut b, spot);
        let f = d.join(format!("{spot:?}.pcapng"));
        std::fs::write(&f, &b).unwrap();
        let (code, out) = check_pcaps(&f);
        assert_eq!(code, 1, "{spot:?} (frame {frame}) passed:\n{out}");
        assert!(
            out.contains(&format!("frame {frame}: Bad checksum")),
            "{spot:?}: the failure does not name frame {frame}:\n{out}"
        );
    }
}
