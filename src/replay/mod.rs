//! `tunnelbed replay`: read a capture, reassemble KCP sessions and TCP flows, decode the
//! tunnel protocols inside, and print a timeline per stream.

pub mod flows;

use std::fmt::Write;

pub use flows::{reassemble, Flows};

/// A human-readable summary of the flows in a capture.
pub fn summarize(flows: &Flows) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} packets: {} UDP directions, {} TCP directions, {} other packets",
        flows.packets,
        flows.udp.len(),
        flows.tcp.len(),
        flows.other
    );
    for ((src, dst), f) in &flows.udp {
        let bytes: usize = f.datagrams.iter().map(|d| d.2.len()).sum();
        let _ = writeln!(
            s,
            "udp {src} -> {dst}: {} datagrams, {bytes} bytes",
            f.datagrams.len()
        );
    }
    for ((src, dst), f) in &flows.tcp {
        let _ = writeln!(
            s,
            "tcp {src} -> {dst}: {} bytes{}{}{}",
            f.bytes.len(),
            if f.fin { ", FIN" } else { "" },
            if f.rst { ", RST" } else { "" },
            if f.gaps > 0 {
                format!(", {} bytes missing from the capture", f.gaps)
            } else {
                String::new()
            }
        );
    }
    s
}
