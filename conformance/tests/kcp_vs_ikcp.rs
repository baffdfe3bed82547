//! Differential test: tunnelbed's KCP against the reference ikcp C code (PyPI `kcp`
//! 0.1.6, driven by `conformance/peers/kcp_diff.py`). Both run the same generated
//! scripts — sends of random sizes, lossy/duplicating/reordering delivery, irregular
//! clock steps (across the 32-bit wrap), corrupted datagrams — over a grid of knobs, and
//! every emitted datagram, received message and input error must be identical.
//!
//! `KCP_DIFF_SCRIPTS=N` runs N scripts (default 2000); `KCP_DIFF_SEED=S` changes the seed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tunnelbed_kcp::{InputError, Kcp, KcpConfig, SendError};
use tunnelbed_netio::Trace;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TUNNELBED_PYTHON") {
        return p.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

/// Knobs the Python binding can set: mtu, nodelay (0/1), interval, resend, nc, snd, rcv.
type Knobs = [u32; 7];

fn draw_knobs(r: &mut ChaCha8Rng) -> Knobs {
    let mtu = *[60u32, 200, 576, 1400, 1250]
        .get(r.gen_range(0..5))
        .unwrap();
    let nodelay = r.gen_range(0..2);
    let interval = *[10u32, 20, 40, 100].get(r.gen_range(0..4)).unwrap();
    let resend = r.gen_range(0..3);
    let nc = r.gen_range(0..2);
    let snd = *[4u32, 32, 128].get(r.gen_range(0..3)).unwrap();
    let rcv = *[16u32, 128, 256].get(r.gen_range(0..3)).unwrap();
    [mtu, nodelay, interval, resend, nc, snd, rcv]
}

fn config(k: &Knobs) -> KcpConfig {
    KcpConfig {
        mtu: k[0],
        nodelay: k[1] as i32,
        interval: k[2],
        resend: k[3] as i32,
        nc: k[4] != 0,
        snd_wnd: k[5],
        rcv_wnd: k[6],
        ..KcpConfig::default()
    }
}

fn code(e: &InputError) -> i32 {
    match e {
        InputError::Short(_) | InputError::ConvMismatch { .. } => -1,
        InputError::BadLength { .. } => -2,
        InputError::UnknownCommand(_) => -3,
    }
}

/// One script: the ops for the reference and the transcript ours produced.
struct Script {
    ops: Vec<String>,
    transcript: Vec<String>,
}

struct Runner {
    sides: [Kcp; 2],
    emitted: [Vec<Vec<u8>>; 2],
    ops: Vec<String>,
    transcript: Vec<String>,
}

impl Runner {
    fn drain(&mut self, side: usize) -> usize {
        let mut n = 0;
        while let Some(d) = self.sides[side].poll_transmit() {
            self.transcript
                .push(format!("out {side} {}", hex::encode(&d)));
            self.emitted[side].push(d);
            n += 1;
        }
        n
    }
    fn update(&mut self, side: usize, t: u64) {
        self.ops.push(format!(
            r#"{{"op":"update","side":{side},"ts":{}}}"#,
            t as u32
        ));
        self.sides[side].handle_timeout(Duration::from_millis(t));
        self.drain(side);
    }
    /// Both sides get every send, accepted or not, and both report the outcome, so a
    /// difference in what is rejected shows as a divergence like any other.
    fn send(&mut self, side: usize, data: &[u8]) {
        self.ops.push(format!(
            r#"{{"op":"send","side":{side},"data":"{}"}}"#,
            hex::encode(data)
        ));
        self.send_outcome(side, data);
    }
    /// A send of `len` copies of `byte` (large messages without a large script line).
    fn send_fill(&mut self, side: usize, byte: u8, len: usize) {
        self.ops.push(format!(
            r#"{{"op":"send","side":{side},"fill":{byte},"len":{len}}}"#
        ));
        self.send_outcome(side, &vec![byte; len]);
    }
    fn send_outcome(&mut self, side: usize, data: &[u8]) {
        let outcome = match self.sides[side].send(data) {
            Ok(()) => "ok".to_string(),
            // ikcp_send's code for a message of 128 or more fragments.
            Err(SendError::TooLarge { .. }) => "err -2".to_string(),
            // ikcp has no queue cap: if ours ever refuses here, that is a difference.
            Err(e @ SendError::QueueFull(_)) => format!("err ours-only: {e}"),
        };
        self.transcript.push(format!("send {side} {outcome}"));
    }
    fn feed(&mut self, side: usize, data: &[u8]) {
        if let Err(e) = self.sides[side].handle_input(Duration::ZERO, data) {
            self.transcript.push(format!("err {side} {}", code(&e)));
        }
        self.drain(side);
    }
    fn deliver(&mut self, from: usize, index: usize) {
        self.ops.push(format!(
            r#"{{"op":"deliver","from":{from},"index":{index}}}"#
        ));
        let d = self.emitted[from][index].clone();
        self.feed(1 - from, &d);
    }
    fn raw(&mut self, side: usize, data: &[u8]) {
        self.ops.push(format!(
            r#"{{"op":"raw","side":{side},"data":"{}"}}"#,
            hex::encode(data)
        ));
        self.feed(side, data);
    }
    fn recv(&mut self, side: usize) {
        self.ops.push(format!(r#"{{"op":"recv","side":{side}}}"#));
        while let Some(m) = self.sides[side].recv_bytes() {
            self.transcript
                .push(format!("msg {side} {}", hex::encode(&m)));
        }
    }
}

fn generate(id: u64, seed: u64) -> Script {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let knobs = draw_knobs(&mut r);
    // The binding takes conv as a signed 32-bit int.
    let conv: u32 = r.gen_range(0..=i32::MAX as u32);
    let cfg = config(&knobs);
    let mut run = Runner {
        sides: [
            Kcp::new(conv, &cfg, Trace::disabled(), "a"),
            Kcp::new(conv, &cfg, Trace::disabled(), "b"),
        ],
        emitted: [Vec::new(), Vec::new()],
        ops: vec![format!(
            r#"{{"op":"begin","id":{id},"conv":{conv},"knobs":[{}]}}"#,
            knobs.map(|k| k.to_string()).join(",")
        )],
        transcript: Vec::new(),
    };
    let loss = [0.0, 0.05, 0.2, 0.5][r.gen_range(0..4)];
    let dup = [0.0, 0.1][r.gen_range(0..2)];
    let jitter = [0u64, 30, 300][r.gen_range(0..3)];
    let latency = r.gen_range(1..80u64);
    // Start anywhere on the 32-bit clock, sometimes just before it wraps.
    let mut t: u64 = if r.gen_bool(0.2) {
        (1u64 << 32) - r.gen_range(1..5000)
    } else {
        r.gen_range(0..1_000_000)
    };
    let mss = cfg.mtu as usize - 24;
    // (due time, tie-break, from, index)
    let mut wire: BTreeMap<(u64, u64), (usize, usize)> = BTreeMap::new();
    let mut tie = 0u64;
    let mut seen = [0usize, 0usize];
    let steps = r.gen_range(20..160);
    for _ in 0..steps {
        // Clock: mostly small steps, sometimes a stall, sometimes none.
        t += match r.gen_range(0..10) {
            0 => 0,
            1 => r.gen_range(500..5000),
            _ => r.gen_range(1..(knobs[2] as u64 * 2)),
        };
        for side in 0..2 {
            if r.gen_bool(if side == 0 { 0.4 } else { 0.1 }) {
                let n = match r.gen_range(0..4) {
                    0 => r.gen_range(1..16),
                    1 => r.gen_range(1..mss + 1),
                    _ => r.gen_range(1..mss * 4 + 1),
                };
                let data: Vec<u8> = (0..n).map(|_| r.gen()).collect();
                run.send(side, &data);
                // Now and then a message at the fragment limit: 127 fragments are
                // accepted, 128 or more refused (by both, or the scripts diverge).
                if r.gen_bool(0.01) {
                    let len = if r.gen_bool(0.1) {
                        mss * 127
                    } else {
                        mss * 127 + r.gen_range(1..mss * 3)
                    };
                    run.send_fill(side, r.gen(), len);
                }
            }
        }
        // Deliveries due by now.
        let due: Vec<_> = wire.range(..(t + 1, 0)).map(|(k, v)| (*k, *v)).collect();
        for (k, (from, index)) in due {
            wire.remove(&k);
            run.deliver(from, index);
        }
        for side in 0..2 {
            if r.gen_bool(0.85) {
                run.update(side, t);
            }
            if r.gen_bool(0.01) {
                // A corrupted copy of something this side would have received.
                let from = 1 - side;
                if let Some(d) = run.emitted[from].last().cloned() {
                    let mut d = d;
                    let i = r.gen_range(0..d.len());
                    d[i] ^= 1 << r.gen_range(0..8);
                    if r.gen_bool(0.3) {
                        d.truncate(r.gen_range(0..d.len()));
                    }
                    run.raw(side, &d);
                }
            }
            if r.gen_bool(0.6) {
                run.recv(side);
            }
        }
        // Put new datagrams on the wire.
        for (from, seen_n) in seen.iter_mut().enumerate() {
            while *seen_n < run.emitted[from].len() {
                let idx = *seen_n;
                *seen_n += 1;
                if r.gen_bool(loss) {
                    continue;
                }
                let copies = if r.gen_bool(dup) { 2 } else { 1 };
                for _ in 0..copies {
                    let at = t
                        + latency
                        + if jitter > 0 {
                            r.gen_range(0..jitter)
                        } else {
                            0
                        };
                    tie += 1;
                    wire.insert((at, tie), (from, idx));
                }
            }
        }
    }
    run.ops.push(r#"{"op":"end"}"#.to_string());
    run.transcript.push(format!("end {id}"));
    Script {
        ops: run.ops,
        transcript: run.transcript,
    }
}

#[test]
fn kcp_matches_reference_ikcp() {
    let py = python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/kcp_diff.py");
    assert!(
        py.exists(),
        "reference peer missing: {} not found. Install it with `bash .ci/setup` \
         (python3 -m venv .venv && .venv/bin/pip install kcp==0.1.6), or set TUNNELBED_PYTHON",
        py.display()
    );
    let n: u64 = std::env::var("KCP_DIFF_SCRIPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let base: u64 = std::env::var("KCP_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xC0FFEE);
    let mut child = Command::new(&py)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the reference driver");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let scripts: Vec<Script> = (0..n).map(|i| generate(i, base.wrapping_add(i))).collect();
    let total_datagrams: usize = scripts
        .iter()
        .map(|s| {
            s.transcript
                .iter()
                .filter(|l| l.starts_with("out "))
                .count()
        })
        .sum();
    let writer = std::thread::spawn({
        let ops: Vec<String> = scripts.iter().flat_map(|s| s.ops.iter().cloned()).collect();
        move || {
            for op in ops {
                writeln!(stdin, "{op}").unwrap();
            }
        }
    });
    let mut lines = stdout.lines();
    for (i, s) in scripts.iter().enumerate() {
        for (j, want) in s.transcript.iter().enumerate() {
            let got = lines
                .next()
                .unwrap_or_else(|| panic!("reference driver ended early in script {i}"))
                .unwrap();
            if &got != want {
                panic!(
                    "script {i} (seed {}) diverges at transcript line {j}:\n  ikcp:      {got}\n  tunnelbed: {want}\nreplay with KCP_DIFF_SEED={} KCP_DIFF_SCRIPTS=1",
                    base.wrapping_add(i as u64),
                    base.wrapping_add(i as u64)
                );
            }
        }
    }
    writer.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let refused = scripts
        .iter()
        .flat_map(|s| &s.transcript)
        .filter(|l| l.starts_with("send ") && l.ends_with(" err -2"))
        .count();
    eprintln!(
        "{n} scripts, {total_datagrams} datagrams byte-identical to ikcp, {refused} sends refused by both"
    );
    assert!(
        n < 100 || refused > 0,
        "no script tried a send over the fragment limit: the refusal path went untested"
    );
    assert!(
        total_datagrams > n as usize * 5,
        "scripts exchanged too little traffic"
    );
}
