//! The Lua dissectors in `conformance/wireshark/` against `tunnelbed replay`: scenario
//! captures (h2tunnel-streams, pong-streams, kcp-bulk; seed 1, clean link) are read by
//! tshark with the dissectors loaded, and the frames tshark shows (per direction,
//! stream id and message: counts and data bytes; KCP segments, copies, acks, bytes; pong
//! rst codes) must equal what replay's decoders find in the same capture. No packet may
//! be malformed or carry an expert warning (TCP RSTs aside, as in `.ci/check-pcaps`),
//! and tshark must print no Lua error. tshark missing is a failure with an install hint.

// tshark's columns hold one occurrence per frame each; they are read in parallel by index.
#![allow(clippy::needless_range_loop)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tunnelbed::replay::flows::DatagramFlow;
use tunnelbed::replay::{self, h2t, kcp};
use tunnelbed_h2tunnel::wire::Message;
use tunnelbed_netio::pcap_read::{decode_transport, read_capture, Transport};
use tunnelbed_pong::wire::{frame_type, RawFrame, CONN_HEADER_LEN};

fn work(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wireshark");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn require_tshark() {
    let ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "tshark is not installed: run `bash .ci/setup` or `apt-get install -y tshark`"
    );
}

/// Writes a scenario's capture (once per test binary run; names are per scenario).
fn capture(scenario: &str) -> PathBuf {
    let p = work(&format!("{scenario}-clean-1.pcapng"));
    let out = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .args([
            "sim",
            "run",
            scenario,
            "--seed",
            "1",
            "--profile",
            "clean",
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

/// tshark with only our dissectors (a private HOME, so no user plugins or preferences).
fn tshark(pcap: &Path, test: &str, args: &[&str]) -> String {
    require_tshark();
    let home = work(&format!("home-{test}"));
    let plugins = home.join("dissectors");
    tunnelbed::wireshark::install(&plugins).unwrap();
    let out = Command::new("tshark")
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .args(tunnelbed::wireshark::tshark_args(&plugins))
        .args(["-n", "--disable-heuristic", "thrift_tcp", "-r"])
        .arg(pcap)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {err}");
    assert!(!err.contains("Lua"), "tshark printed a Lua error: {err}");
    String::from_utf8(out.stdout).unwrap()
}

/// Rows of `-T fields` output, each field split into its occurrences.
fn fields(pcap: &Path, test: &str, filter: &str, names: &[&str]) -> Vec<Vec<Vec<String>>> {
    let mut args = vec![
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ];
    for n in names {
        args.push("-e");
        args.push(n);
    }
    tshark(pcap, test, &args)
        .lines()
        .map(|l| {
            l.split('\t')
                .map(|c| {
                    if c.is_empty() {
                        vec![]
                    } else {
                        c.split('|').map(str::to_string).collect()
                    }
                })
                .collect()
        })
        .collect()
}

/// No packet malformed, no expert item of warning severity or worse (TCP RSTs aside).
fn assert_clean(pcap: &Path, test: &str) {
    let bad = tshark(
        pcap,
        test,
        &[
            "-Y",
            "_ws.malformed || (_ws.expert.severity >= \"Warning\" && !tcp.connection.rst)",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "_ws.expert.message",
        ],
    );
    assert!(bad.trim().is_empty(), "flagged packets:\n{bad}");
}

/// Fails naming only the keys whose values differ (the maps are large).
fn assert_same<K: std::fmt::Debug + Ord, V: std::fmt::Debug + PartialEq>(
    got: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, v) in want {
        if got.get(k) != Some(v) {
            diffs.push(format!("{k:?}: tshark {:?}, replay {v:?}", got.get(k)));
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            diffs.push(format!("{k:?}: tshark {v:?}, replay none"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences of {} entries:\n{}",
        diffs.len(),
        want.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn addr(ip: &str, port: &str) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

fn msg_name(m: &Message) -> (u32, &'static str, u64) {
    match m {
        Message::Handshake => (0, "handshake (SETTINGS)", 0),
        Message::Keepalive { .. } => (0, "keepalive", 0),
        Message::KeepaliveAck { .. } => (0, "keepalive ack", 0),
        Message::Shutdown { .. } => (0, "shutdown (GOAWAY)", 0),
        Message::Ignored => (0, "ignored frame", 0),
        Message::Syn { sid } => (*sid, "SYN / SYN-ACK", 0),
        Message::Rst { sid } => (*sid, "RST", 0),
        Message::Data { sid, payload, fin } => {
            let name = match (payload.is_empty(), fin) {
                (true, true) => "FIN",
                (false, true) => "PSH-FIN",
                _ => "DATA",
            };
            (*sid, name, payload.len() as u64)
        }
    }
}

/// (source, destination, stream id, message) -> (frames, data bytes).
type FrameCounts = BTreeMap<(SocketAddr, SocketAddr, u32, String), (u64, u64)>;

#[test]
fn h2tunnel_over_kcp_matches_replay() {
    let pcap = capture("h2tunnel-streams");
    assert_clean(&pcap, "h2t");
    // What replay's decoders find in every KCP direction that carries the tunnel. The
    // dissector reassembles every copy of a datagram (a datagram still in flight when the
    // run ended shows only on its sender's interface), so replay's KCP reassembly is fed
    // every copy too, not only the receiver's view `tunnelbed replay` prints.
    let bytes = std::fs::read(&pcap).unwrap();
    let mut udp: BTreeMap<(SocketAddr, SocketAddr), DatagramFlow> = BTreeMap::new();
    for p in read_capture(&bytes).unwrap() {
        if let Transport::Udp { src, dst, payload } = decode_transport(&p).unwrap() {
            udp.entry((src, dst))
                .or_default()
                .datagrams
                .push((p.number, p.ts, payload));
        }
    }
    let mut want = FrameCounts::new();
    for ((src, dst), f) in &udp {
        if !kcp::looks_like_kcp(f) {
            continue;
        }
        let k = kcp::reassemble(f).unwrap();
        if !h2t::is_h2tunnel(&k.bytes) {
            continue;
        }
        let (frames, _) = h2t::frames(&k.bytes, &k.marks);
        for fr in frames {
            let (sid, name, bytes) = msg_name(fr.msg.as_ref().unwrap());
            let e = want.entry((*src, *dst, sid, name.to_string())).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
    }
    // What tshark shows.
    let rows = fields(
        &pcap,
        "h2t",
        "udp",
        &[
            "ip.src",
            "udp.srcport",
            "ip.dst",
            "udp.dstport",
            "h2tunnel.sid",
            "h2tunnel.msg",
            "h2tunnel.data_len",
            "kcp.segments",
        ],
    );
    // Every UDP datagram of the capture is KCP.
    assert!(
        rows.iter().all(|r| r[7].len() == 1),
        "a UDP datagram not dissected as KCP"
    );
    let mut got = FrameCounts::new();
    for r in &rows {
        let (src, dst) = (addr(&r[0][0], &r[1][0]), addr(&r[2][0], &r[3][0]));
        assert_eq!(r[4].len(), r[5].len());
        assert_eq!(r[4].len(), r[6].len());
        for i in 0..r[4].len() {
            let e = got
                .entry((src, dst, num(&r[4][i]) as u32, r[5][i].clone()))
                .or_default();
            e.0 += 1;
            e.1 += num(&r[6][i]);
        }
    }
    let syns = want.keys().filter(|k| k.3 == "SYN / SYN-ACK").count();
    let rsts = want.keys().filter(|k| k.3 == "RST").count();
    let bytes: u64 = want.values().map(|v| v.1).sum();
    println!(
        "h2tunnel-streams: {} datagrams, {} (direction, stream, message) groups, {syns} SYN groups, {rsts} RST groups, {bytes} data bytes",
        rows.len(),
        want.len()
    );
    assert!(
        syns >= 200 && rsts > 0 && bytes > 1_000_000,
        "too little decoded by replay"
    );
    assert_same(&got, &want, "h2tunnel frames (tshark vs replay)");
}

#[test]
fn pong_over_tcp_matches_replay() {
    let pcap = capture("pong-streams");
    assert_clean(&pcap, "pong");
    let flows = replay::reassemble(&std::fs::read(&pcap).unwrap()).unwrap();
    // (src, dst, sid, type) -> (frames, data bytes); (src, dst) -> rst codes.
    let mut want: BTreeMap<(SocketAddr, SocketAddr, u32, u8), (u64, u64)> = BTreeMap::new();
    let mut want_rst: BTreeMap<(SocketAddr, SocketAddr), Vec<u64>> = BTreeMap::new();
    let mut carriers = 0;
    for ((src, dst), f) in &flows.tcp {
        if !replay::pong::is_pong(&f.bytes) {
            continue;
        }
        carriers += 1;
        let back = flows
            .tcp
            .get(&(*dst, *src))
            .map(|b| &b.bytes[..])
            .unwrap_or(&[]);
        for (s, d, bytes, skip) in [
            (*src, *dst, &f.bytes[..], CONN_HEADER_LEN),
            (*dst, *src, back, 0),
        ] {
            let mut off = skip;
            while let Ok(Some((raw, n))) = RawFrame::decode(&bytes[off..]) {
                let e = want.entry((s, d, raw.stream_id, raw.kind)).or_default();
                e.0 += 1;
                if raw.kind == frame_type::DATA {
                    e.1 += raw.payload.len() as u64;
                }
                if raw.kind == frame_type::RST && !raw.payload.is_empty() {
                    want_rst
                        .entry((s, d))
                        .or_default()
                        .push(u64::from(raw.payload[0]));
                }
                off += n;
            }
        }
    }
    let rows = fields(
        &pcap,
        "pong",
        "pong",
        &[
            "ip.src",
            "tcp.srcport",
            "ip.dst",
            "tcp.dstport",
            "pong.sid",
            "pong.type",
            "pong.data_len",
            "pong.rst_code",
            "pong.client_id",
        ],
    );
    let mut got: BTreeMap<(SocketAddr, SocketAddr, u32, u8), (u64, u64)> = BTreeMap::new();
    let mut got_rst: BTreeMap<(SocketAddr, SocketAddr), Vec<u64>> = BTreeMap::new();
    let mut headers = 0;
    for r in &rows {
        let (src, dst) = (addr(&r[0][0], &r[1][0]), addr(&r[2][0], &r[3][0]));
        assert_eq!(r[4].len(), r[5].len());
        assert_eq!(r[4].len(), r[6].len());
        for i in 0..r[4].len() {
            let e = got
                .entry((src, dst, num(&r[4][i]) as u32, num(&r[5][i]) as u8))
                .or_default();
            e.0 += 1;
            e.1 += num(&r[6][i]);
        }
        for c in &r[7] {
            got_rst.entry((src, dst)).or_default().push(num(c));
        }
        headers += r[8].len();
    }
    for v in want_rst.values_mut().chain(got_rst.values_mut()) {
        v.sort();
    }
    let streams = want.keys().filter(|k| k.3 == frame_type::CONNECT).count();
    let bytes: u64 = want.values().map(|v| v.1).sum();
    let rst_codes: usize = want_rst.values().map(Vec::len).sum();
    println!(
        "pong-streams: {carriers} carriers, {} packets with pong frames, {streams} connect streams, {rst_codes} rst codes, {bytes} data bytes",
        rows.len()
    );
    assert!(
        carriers > 0 && streams >= 100 && rst_codes > 0,
        "too little decoded by replay"
    );
    assert_eq!(headers, carriers, "one connection header per carrier");
    assert_same(&got, &want, "pong frames (tshark vs replay)");
    assert_same(&got_rst, &want_rst, "pong rst codes (tshark vs replay)");
}

#[test]
fn kcp_segments_match_replay() {
    let pcap = capture("kcp-bulk");
    assert_clean(&pcap, "kcp");
    let flows = replay::reassemble(&std::fs::read(&pcap).unwrap()).unwrap();
    let rows = fields(
        &pcap,
        "kcp",
        "udp",
        &[
            "frame.interface_id",
            "ip.src",
            "udp.srcport",
            "ip.dst",
            "udp.dstport",
            "kcp.conv",
            "kcp.cmd",
            "kcp.sn",
            "kcp.len",
            "kcp.copy",
            "h2tunnel.msg",
        ],
    );
    assert!(
        rows.iter().all(|r| !r[6].is_empty()),
        "every UDP datagram is KCP"
    );
    // A datagram shows on its sender's interface and, later, on its receiver's: as in
    // replay, the interface a source's datagrams show on first is its sender's (majority
    // vote), and the other copies are the receiver's view that replay counts.
    let mut first_iface: BTreeMap<String, (String, String)> = BTreeMap::new();
    for r in &rows {
        // Addresses and segment headers; not kcp.copy, which differs between copies.
        let key: Vec<String> = r[1..9].iter().map(|f| f.join(",")).collect();
        first_iface
            .entry(key.join(";"))
            .or_insert_with(|| (r[1][0].clone(), r[0][0].clone()));
    }
    let mut votes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (src, iface) in first_iface.values() {
        *votes
            .entry(src.clone())
            .or_default()
            .entry(iface.clone())
            .or_default() += 1;
    }
    let sender_iface: BTreeMap<String, String> = votes
        .into_iter()
        .filter_map(|(ip, v)| v.into_iter().max_by_key(|(_, n)| *n).map(|(i, _)| (ip, i)))
        .collect();
    #[derive(Default, Debug, PartialEq)]
    struct Dir {
        segments: usize,
        copies: usize,
        acks: usize,
        bytes: u64,
        conv: u64,
    }
    let mut got: BTreeMap<(SocketAddr, SocketAddr), Dir> = BTreeMap::new();
    let mut sns: BTreeMap<(SocketAddr, SocketAddr), BTreeMap<u64, u64>> = BTreeMap::new();
    let (mut all_push, mut marked_copies, mut distinct_all) = (0usize, 0usize, BTreeMap::new());
    for r in &rows {
        let (src, dst) = (addr(&r[1][0], &r[2][0]), addr(&r[3][0], &r[4][0]));
        let receiver = sender_iface.get(&r[1][0]) != Some(&r[0][0]);
        let d = got.entry((src, dst)).or_default();
        let mut copy_flags = r[9].iter();
        for i in 0..r[6].len() {
            d.conv = num(&r[5][i]);
            let (cmd, sn, len) = (num(&r[6][i]), num(&r[7][i]), num(&r[8][i]));
            if cmd == 81 {
                all_push += 1;
                distinct_all
                    .entry((src, dst))
                    .or_insert_with(std::collections::BTreeSet::new)
                    .insert(sn);
                if copy_flags.next().is_some_and(|c| c == "1" || c == "True") {
                    marked_copies += 1;
                }
            }
            if !receiver {
                continue;
            }
            match cmd {
                81 => {
                    let s = sns.entry((src, dst)).or_default();
                    if s.insert(sn, len).is_some() {
                        d.copies += 1;
                    }
                }
                82 => d.acks += 1,
                _ => {}
            }
        }
    }
    for (k, s) in &sns {
        let d = got.entry(*k).or_default();
        d.segments = s.len();
        d.bytes = s.values().sum();
    }
    let mut want: BTreeMap<(SocketAddr, SocketAddr), Dir> = BTreeMap::new();
    for ((src, dst), f) in &flows.udp {
        let k = kcp::reassemble(f).unwrap();
        assert!(!h2t::is_h2tunnel(&k.bytes));
        want.insert(
            (*src, *dst),
            Dir {
                segments: k.segments,
                copies: k.copies,
                acks: k.acks,
                bytes: k.bytes.len() as u64,
                conv: u64::from(k.conv),
            },
        );
    }
    let distinct: usize = distinct_all.values().map(|s| s.len()).sum();
    println!(
        "kcp-bulk: {} datagrams; replay {want:?}; {all_push} PUSH copies in the capture, {distinct} distinct, {marked_copies} marked kcp.copy",
        rows.len()
    );
    assert!(
        want.values().any(|d| d.bytes >= 1_000_000),
        "too little decoded by replay"
    );
    assert_same(&got, &want, "KCP segments (tshark vs replay)");
    assert_eq!(
        marked_copies,
        all_push - distinct,
        "kcp.copy marks every copy after the first"
    );
    // No h2tunnel inside a raw KCP stream.
    assert!(
        rows.iter().all(|r| r[10].is_empty()),
        "h2tunnel in kcp-bulk"
    );
}

#[test]
fn h2tunnel_over_tcp_is_reassembled_across_segments() {
    // A tunnel's client direction encoded by our codec, cut into 1400-byte TCP segments
    // (frames cross segment boundaries, a DATA frame spans four), written by text2pcap
    // (Wireshark's own tool) as one TCP flow.
    let mut bytes = Vec::new();
    for m in [
        Message::Handshake,
        Message::Syn { sid: 1 },
        Message::Data {
            sid: 1,
            payload: vec![7u8; 5000].into(),
            fin: false,
        },
        Message::Data {
            sid: 1,
            payload: bytes::Bytes::new(),
            fin: true,
        },
        Message::Keepalive { id: 9 },
        Message::Syn { sid: 3 },
        Message::Data {
            sid: 3,
            payload: vec![1u8; 3000].into(),
            fin: true,
        },
        Message::Rst { sid: 5 },
    ] {
        bytes.extend(m.to_bytes(false));
    }
    let mut hex = String::new();
    for seg in bytes.chunks(1400) {
        for (i, line) in seg.chunks(16).enumerate() {
            let h: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            hex.push_str(&format!("{:06x}  {}\n", i * 16, h.join(" ")));
        }
        hex.push('\n');
    }
    let (txt, pcap) = (work("h2t-tcp.txt"), work("h2t-tcp.pcap"));
    std::fs::write(&txt, hex).unwrap();
    require_tshark();
    let out = Command::new("text2pcap")
        .args(["-q", "-T", "49152,9100"])
        .arg(&txt)
        .arg(&pcap)
        .output()
        .expect("text2pcap (Debian package wireshark-common, installed with tshark)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean(&pcap, "h2t-tcp");
    let rows = fields(
        &pcap,
        "h2t-tcp",
        "h2tunnel",
        &["h2tunnel.sid", "h2tunnel.msg", "h2tunnel.data_len"],
    );
    let mut got = Vec::new();
    for r in &rows {
        for i in 0..r[0].len() {
            got.push((num(&r[0][i]) as u32, r[1][i].clone(), num(&r[2][i])));
        }
    }
    let (frames, trailing) = h2t::frames(&bytes, &[]);
    assert_eq!(trailing, 0);
    let want: Vec<(u32, String, u64)> = frames
        .iter()
        .map(|f| {
            let (sid, name, n) = msg_name(f.msg.as_ref().unwrap());
            (sid, name.to_string(), n)
        })
        .collect();
    assert_eq!(want.len(), 8);
    assert_eq!(
        got, want,
        "tshark's h2tunnel frames over TCP differ from replay's"
    );
}

/// vless.lua against our own VLESS decoder on a vless-fullcone capture: every carrier's
/// request (version, command, target), every UDP frame each way (lengths) and every
/// UMFURS message (source) that tshark shows must be exactly what `tunnelbed_vless::wire`
/// decodes from the reassembled TCP flows. The simulator's server listens on 443, which
/// Wireshark gives to TLS first, so the heuristic dissectors go first here.
#[test]
fn vless_fullcone_matches_our_decoder() {
    use tunnelbed_vless::wire::{decode_udp_frame, Request, Response, Umfurs, Version};
    let pcap = capture("vless-fullcone");
    let flows = replay::reassemble(&std::fs::read(&pcap).unwrap()).unwrap();
    // (client, server) -> (version, cmd, target); (src, dst) -> frame lengths; sources.
    let mut want_req: BTreeMap<(SocketAddr, SocketAddr), (u64, u64, String)> = BTreeMap::new();
    let mut want_udp: BTreeMap<(SocketAddr, SocketAddr), Vec<u64>> = BTreeMap::new();
    let mut want_umfurs: Vec<String> = Vec::new();
    for ((src, dst), f) in &flows.tcp {
        if dst.port() != 443 {
            continue;
        }
        let Ok(Some((req, hlen))) = Request::decode(&f.bytes) else {
            continue;
        };
        let target = req
            .target
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default();
        want_req.insert(
            (*src, *dst),
            (
                u64::from(req.version.byte()),
                u64::from(req.command.byte()),
                target,
            ),
        );
        let back = flows
            .tcp
            .get(&(*dst, *src))
            .map(|b| &b.bytes[..])
            .unwrap_or(&[]);
        match req.command.byte() {
            2 => {
                let resp = match Response::decode(back, req.version) {
                    Ok(Some((_, n))) => n,
                    _ => back.len(),
                };
                for (s, d, bytes) in [(*src, *dst, &f.bytes[hlen..]), (*dst, *src, &back[resp..])] {
                    let mut off = 0;
                    while let Ok(Some((p, n))) = decode_udp_frame(&bytes[off..], 65_535) {
                        want_udp.entry((s, d)).or_default().push(p.len() as u64);
                        off += n;
                    }
                }
            }
            4 => {
                let mut off = 1.min(back.len());
                while let Ok(Some((m, n))) = Umfurs::decode(&back[off..], 65_535) {
                    want_umfurs.push(m.from.to_string());
                    off += n;
                }
            }
            _ => {}
        }
        assert_eq!(req.version, Version::V1, "the scenario speaks v1");
    }
    assert!(
        want_req.len() >= 4 && !want_umfurs.is_empty(),
        "{want_req:?}"
    );

    let out = tshark(
        &pcap,
        "vless",
        &[
            "-o",
            "tcp.try_heuristic_first:TRUE",
            "-Y",
            "vless",
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=|",
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "tcp.dstport",
            "-e",
            "vless.version",
            "-e",
            "vless.cmd",
            "-e",
            "vless.address",
            "-e",
            "vless.udp_len",
            "-e",
            "vless.umfurs_from",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert.message",
        ],
    );
    let mut got_req = BTreeMap::new();
    let mut got_udp: BTreeMap<(SocketAddr, SocketAddr), Vec<u64>> = BTreeMap::new();
    let mut got_umfurs = Vec::new();
    for l in out.lines() {
        let c: Vec<&str> = l.split('\t').collect();
        assert!(c.len() >= 11, "{l}");
        assert!(c[9].is_empty() && c[10].is_empty(), "flagged: {l}");
        let (s, d) = (addr(c[0], c[1]), addr(c[2], c[3]));
        if !c[5].is_empty() {
            got_req.insert((s, d), (num(c[4]), num(c[5]), c[6].to_string()));
        }
        if !c[7].is_empty() {
            let e = got_udp.entry((s, d)).or_default();
            e.extend(c[7].split('|').map(num));
        }
        if !c[8].is_empty() {
            got_umfurs.extend(c[8].split('|').map(str::to_string));
        }
    }
    assert_same(&got_req, &want_req, "requests");
    assert_same(&got_udp, &want_udp, "UDP frames");
    assert_eq!(got_umfurs, want_umfurs, "UMFURS sources");
}
