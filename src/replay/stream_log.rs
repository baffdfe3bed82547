//! One stream's lines in a replay timeline, shared by the h2tunnel and pong decoders:
//! consecutive data frames in one direction fold into one line, and bytes and SHA-256
//! are counted per direction.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// What a replay has seen of one stream.
#[derive(Default)]
pub struct StreamLog {
    /// Timeline lines, in order.
    pub lines: Vec<String>,
    /// Data bytes per direction (0: the opener's, 1: the other).
    pub bytes: [u64; 2],
    /// Frames per direction.
    pub frames: [u64; 2],
    /// SHA-256 of the data per direction.
    pub hash: [Sha256; 2],
    /// A run of data frames in one direction: (start, dir, count, bytes).
    pub run: Option<(Duration, usize, usize, u64)>,
}

impl StreamLog {
    /// Writes out the pending run of data frames, named `data` (the protocol's word for
    /// them), as one line.
    pub fn flush_run(&mut self, data: &str) {
        if let Some((ts, dir, count, bytes)) = self.run.take() {
            let what = if count == 1 {
                format!("{data} {bytes} B")
            } else {
                format!("{data} x{count} ({bytes} B)")
            };
            self.lines.push(line(ts, dir, &what));
        }
    }
}

/// One timeline line: time, direction arrow, what happened.
pub fn line(ts: Duration, dir: usize, what: &str) -> String {
    format!(
        "{:>10.3}s {} {what}",
        ts.as_secs_f64(),
        if dir == 0 { "->" } else { "<-" }
    )
}

/// Appends a connection's timeline to `out`: the connection-level lines, the bytes of an
/// incomplete last frame per direction, then each stream's byte counts and SHA-256
/// prefixes each way and its lines (the pending run of data frames, named `data`,
/// written out first).
pub fn render_connection(
    out: &mut String,
    conn: &[String],
    trailing: [usize; 2],
    streams: BTreeMap<u32, StreamLog>,
    data: &str,
) {
    for l in conn {
        let _ = writeln!(out, "  {l}");
    }
    for (d, t) in trailing.iter().enumerate() {
        if *t > 0 {
            let _ = writeln!(
                out,
                "  {} {t} trailing bytes of an incomplete frame",
                if d == 0 { "->" } else { "<-" }
            );
        }
    }
    let _ = writeln!(out, "  {} streams", streams.len());
    for (sid, mut s) in streams {
        s.flush_run(data);
        let h: Vec<String> = s
            .hash
            .iter()
            .map(|h| hex::encode(&h.clone().finalize()[..8]))
            .collect();
        let _ = writeln!(
            out,
            "  stream {sid}: -> {} B sha256 {}.., <- {} B sha256 {}..",
            s.bytes[0], h[0], s.bytes[1], h[1]
        );
        for l in s.lines {
            let _ = writeln!(out, "    {l}");
        }
    }
}
