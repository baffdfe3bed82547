//! Stream ladders (message sequence charts) of the h2tunnel and pong connections in a
//! capture: the two ends as vertical lifelines, one arrow per message in time order,
//! labelled with its stream and kind (SYN, SYN-ACK, DATA, FIN, RST; pong's connect,
//! finish, close, rst with its code).
//!
//! The frames come from replay's decoders, and consecutive data frames of a stream in
//! one direction fold into one arrow exactly as `tunnelbed replay` folds them into one
//! line, so a stream has as many arrows as replay prints lines for it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tunnelbed_h2tunnel::wire::Message;
use tunnelbed_pong::wire::{Body, CONN_HEADER_LEN};

use super::svg::esc;
use crate::replay::{h2t, kcp, pong, reassemble};

/// Most arrows drawn in one picture; past it the chart says how many it left out.
pub const MAX_ARROWS: usize = 20_000;

/// What an arrow stands for; its SVG class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A stream opens (h2tunnel SYN; pong connect, relay, bind, associate).
    Syn,
    /// The answer to a SYN (h2tunnel SYN from the other end).
    SynAck,
    /// A run of data frames in one direction.
    Data,
    /// A stream's direction ends (h2tunnel FIN or PSH-FIN; pong finish and close).
    Fin,
    /// A stream is reset.
    Rst,
    /// Anything else on a stream (pong set, an unknown frame type).
    Other,
    /// Connection-level messages (handshake, keepalive, shutdown) and framing errors.
    Conn,
}

impl Kind {
    /// SVG class and colour.
    pub fn style(self) -> (&'static str, &'static str) {
        match self {
            Kind::Syn => ("syn", "#2a9d2a"),
            Kind::SynAck => ("synack", "#138a8a"),
            Kind::Data => ("data", "#1f4e9c"),
            Kind::Fin => ("fin", "#7b3fb0"),
            Kind::Rst => ("rst", "#d62728"),
            Kind::Other => ("other", "#8a6d00"),
            Kind::Conn => ("conn", "#777"),
        }
    }
}

/// One arrow.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrow {
    /// Capture time, from the capture's first packet.
    pub t: Duration,
    /// 0: from the left end (h2tunnel client, pong local), 1: from the right.
    pub dir: usize,
    /// The stream, or `None` for connection-level messages.
    pub stream: Option<u32>,
    /// What it is.
    pub kind: Kind,
    /// Its label.
    pub label: String,
}

/// One connection's chart.
#[derive(Clone, Debug)]
pub struct Ladder {
    /// Protocol and carrier (`h2tunnel over kcp`, `pong over tcp`).
    pub title: String,
    /// The two ends: left (client / local), right (server / remote).
    pub ends: [String; 2],
    /// Arrows in time order.
    pub arrows: Vec<Arrow>,
}

/// Folds data frames into runs per stream and direction, as replay's timeline does.
#[derive(Default)]
struct Folder {
    arrows: Vec<Arrow>,
    /// Per stream: the pending run (start, dir, frames, bytes).
    runs: BTreeMap<u32, (Duration, usize, u64, u64)>,
    /// Per stream: directions that sent a SYN (the second is the SYN-ACK).
    opened: BTreeMap<u32, [bool; 2]>,
}

impl Folder {
    fn flush(&mut self, sid: u32) {
        if let Some((t, dir, n, bytes)) = self.runs.remove(&sid) {
            let label = if n == 1 {
                format!("{sid}: DATA {bytes} B")
            } else {
                format!("{sid}: DATA x{n} ({bytes} B)")
            };
            self.arrows.push(Arrow {
                t,
                dir,
                stream: Some(sid),
                kind: Kind::Data,
                label,
            });
        }
    }

    fn data(&mut self, t: Duration, dir: usize, sid: u32, len: u64) {
        match self.runs.get_mut(&sid) {
            Some(r) if r.1 == dir => {
                r.2 += 1;
                r.3 += len;
            }
            _ => {
                self.flush(sid);
                self.runs.insert(sid, (t, dir, 1, len));
            }
        }
    }

    fn push(&mut self, t: Duration, dir: usize, stream: Option<u32>, kind: Kind, what: &str) {
        let label = match stream {
            Some(sid) => {
                self.flush(sid);
                format!("{sid}: {what}")
            }
            None => what.to_string(),
        };
        self.arrows.push(Arrow {
            t,
            dir,
            stream,
            kind,
            label,
        });
    }

    fn syn(&mut self, t: Duration, dir: usize, sid: u32) {
        let o = self.opened.entry(sid).or_default();
        let answer = o[1 - dir] && !o[dir];
        o[dir] = true;
        if answer {
            self.push(t, dir, Some(sid), Kind::SynAck, "SYN-ACK");
        } else {
            self.push(t, dir, Some(sid), Kind::Syn, "SYN");
        }
    }

    /// The arrows in time order (runs drawn at their first frame's time); ties keep the
    /// order they were made in.
    fn finish(mut self) -> Vec<Arrow> {
        let open: Vec<u32> = self.runs.keys().copied().collect();
        for sid in open {
            self.flush(sid);
        }
        self.arrows.sort_by_key(|a| a.t);
        self.arrows
    }
}

/// Merges two directions' items by time without reordering within a direction.
fn merge<'a, T>(a: &'a [T], b: &'a [T], ts: impl Fn(&T) -> Duration) -> Vec<(usize, &'a T)> {
    let mut all = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => ts(x) <= ts(y),
            (Some(_), None) => true,
            _ => false,
        };
        if take_a {
            all.push((0, &a[i]));
            i += 1;
        } else {
            all.push((1, &b[j]));
            j += 1;
        }
    }
    all
}

fn h2tunnel_ladder(
    title: String,
    ends: [String; 2],
    dirs: [&[h2t::FrameAt]; 2],
    base: Duration,
) -> Ladder {
    let mut f = Folder::default();
    for (d, fr) in merge(dirs[0], dirs[1], |x| x.ts) {
        let t = fr.ts.saturating_sub(base);
        match &fr.msg {
            Err(e) => f.push(
                t,
                d,
                None,
                Kind::Conn,
                &format!("PROTOCOL ERROR in packet {}: {e}", fr.packet),
            ),
            Ok(Message::Handshake) => f.push(t, d, None, Kind::Conn, "handshake (SETTINGS)"),
            Ok(Message::Keepalive { id }) => {
                f.push(t, d, None, Kind::Conn, &format!("keepalive {id}"))
            }
            Ok(Message::KeepaliveAck { id }) => {
                f.push(t, d, None, Kind::Conn, &format!("keepalive ack {id}"))
            }
            Ok(Message::Shutdown { reason }) => f.push(
                t,
                d,
                None,
                Kind::Conn,
                &format!("shutdown (GOAWAY): {reason}"),
            ),
            Ok(Message::Ignored) => f.push(t, d, None, Kind::Conn, "ignored frame"),
            Ok(Message::Syn { sid }) => f.syn(t, d, *sid),
            Ok(Message::Rst { sid }) => f.push(t, d, Some(*sid), Kind::Rst, "RST"),
            Ok(Message::Data { sid, payload, fin }) => {
                if !payload.is_empty() && !fin {
                    f.data(t, d, *sid, payload.len() as u64);
                } else if payload.is_empty() {
                    f.push(t, d, Some(*sid), Kind::Fin, "FIN");
                } else {
                    f.push(
                        t,
                        d,
                        Some(*sid),
                        Kind::Fin,
                        &format!("PSH-FIN {} B", payload.len()),
                    );
                }
            }
        }
    }
    Ladder {
        title,
        ends,
        arrows: f.finish(),
    }
}

fn pong_ladder(title: String, ends: [String; 2], dirs: [&[pong::At]; 2], base: Duration) -> Ladder {
    let mut f = Folder::default();
    for (d, at) in merge(dirs[0], dirs[1], |x| x.ts) {
        let t = at.ts.saturating_sub(base);
        let fr = match &at.frame {
            Err(e) => {
                f.push(
                    t,
                    d,
                    None,
                    Kind::Conn,
                    &format!("FRAMING ERROR in packet {}: {e}", at.packet),
                );
                continue;
            }
            Ok(Err((sid, kind, e))) => {
                f.push(
                    t,
                    d,
                    Some(*sid),
                    Kind::Other,
                    &format!("type {kind:#04x}: {e}"),
                );
                continue;
            }
            Ok(Ok(fr)) => fr,
        };
        let sid = Some(fr.stream_id);
        match &fr.body {
            Body::Data(p) => f.data(t, d, fr.stream_id, p.len() as u64),
            Body::Connect(a) => f.push(t, d, sid, Kind::Syn, &format!("connect {a}")),
            Body::Relay(a) => f.push(t, d, sid, Kind::Syn, &format!("relay (udp) {a}")),
            Body::Bind(_) => f.push(t, d, sid, Kind::Syn, "bind"),
            Body::Associate(_) => f.push(t, d, sid, Kind::Syn, "associate"),
            Body::Set(_) => f.push(t, d, sid, Kind::Other, "set"),
            Body::Finish(_) => f.push(t, d, sid, Kind::Fin, "finish"),
            Body::Close(_) => f.push(t, d, sid, Kind::Fin, "close"),
            Body::Rst(None) => f.push(t, d, sid, Kind::Rst, "rst (no code)"),
            Body::Rst(Some(i)) => f.push(t, d, sid, Kind::Rst, &format!("rst {i}")),
        }
    }
    Ladder {
        title,
        ends,
        arrows: f.finish(),
    }
}

/// Reads `capture` and builds one ladder per h2tunnel connection (over KCP or TCP) and
/// per pong connection, in replay's order. Errors name the packet.
pub fn build(capture: &[u8]) -> Result<Vec<Ladder>, String> {
    let flows = reassemble(capture)?;
    let base = tunnelbed_netio::pcap_read::read_capture(capture)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|p| p.ts)
        .min()
        .unwrap_or_default();
    /// One direction's bytes and their (offset, packet, time) marks.
    type Dir<'a> = (&'a [u8], &'a [(usize, usize, Duration)]);
    let mut out = Vec::new();
    let mut kcps: BTreeMap<(SocketAddr, SocketAddr), kcp::KcpDirection> = BTreeMap::new();
    for (k, f) in &flows.udp {
        if kcp::looks_like_kcp(f) {
            kcps.insert(*k, kcp::reassemble(f)?);
        }
    }
    let mut h2: Vec<(&str, SocketAddr, SocketAddr, Dir<'_>, Dir<'_>)> = Vec::new();
    for ((src, dst), k) in &kcps {
        if h2t::is_h2tunnel(&k.bytes) && src <= dst {
            let b = kcps
                .get(&(*dst, *src))
                .map(|b| (&b.bytes[..], &b.marks[..]))
                .unwrap_or((&[], &[]));
            h2.push(("kcp", *src, *dst, (&k.bytes[..], &k.marks[..]), b));
        }
    }
    for ((src, dst), f) in &flows.tcp {
        if h2t::is_h2tunnel(&f.bytes) && src <= dst {
            let b = flows
                .tcp
                .get(&(*dst, *src))
                .map(|b| (&b.bytes[..], &b.marks[..]))
                .unwrap_or((&[], &[]));
            h2.push(("tcp", *src, *dst, (&f.bytes[..], &f.marks[..]), b));
        }
    }
    for (carrier, src, dst, a, b) in h2 {
        let (fa, _) = h2t::frames(a.0, a.1);
        let (fb, _) = h2t::frames(b.0, b.1);
        // The client sends the first handshake.
        let a_first = match (fa.first(), fb.first()) {
            (Some(x), Some(y)) => (x.ts, x.packet) <= (y.ts, y.packet),
            (_, None) => true,
            (None, Some(_)) => false,
        };
        let (dirs, ends) = if a_first {
            ([&fa[..], &fb[..]], [src, dst])
        } else {
            ([&fb[..], &fa[..]], [dst, src])
        };
        out.push(h2tunnel_ladder(
            format!("h2tunnel over {carrier} {} <-> {}", ends[0], ends[1]),
            [format!("client {}", ends[0]), format!("server {}", ends[1])],
            dirs,
            base,
        ));
    }
    for ((src, dst), f) in &flows.tcp {
        if !pong::is_pong(&f.bytes) {
            continue;
        }
        let (b, bm) = flows
            .tcp
            .get(&(*dst, *src))
            .map(|b| (&b.bytes[..], &b.marks[..]))
            .unwrap_or((&[], &[]));
        let (fa, _) = pong::frames(&f.bytes, CONN_HEADER_LEN, &f.marks);
        let (fb, _) = pong::frames(b, 0, bm);
        out.push(pong_ladder(
            format!("pong over tcp {src} -> {dst}"),
            [format!("local {src}"), format!("remote {dst}")],
            [&fa[..], &fb[..]],
            base,
        ));
    }
    Ok(out)
}

impl Ladder {
    /// Keeps only the arrows of `stream` (connection-level arrows go too).
    pub fn only_stream(&mut self, stream: u32) {
        self.arrows.retain(|a| a.stream == Some(stream));
    }

    /// Arrows per kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.arrows.iter().filter(|a| a.kind == kind).count()
    }
}

/// Draws the ladders one under the other as one SVG document. Each arrow is a `<g>`
/// whose class is `msg` plus its kind and which carries `data-stream` when it belongs to
/// a stream, so arrows can be counted. At most [`MAX_ARROWS`] arrows are drawn; a note
/// says how many were left out.
pub fn render(ladders: &[Ladder]) -> String {
    let (w, row, head) = (900.0, 18.0, 64.0);
    let (lx, rx) = (260.0, 760.0);
    let total: usize = ladders.iter().map(|l| l.arrows.len()).sum();
    let drawn = total.min(MAX_ARROWS);
    let h = 40.0 + ladders.len() as f64 * (head + 20.0) + drawn as f64 * row + 30.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" role=\"img\" aria-label=\"stream ladder\"><title>stream ladder</title><rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/><defs><marker id=\"ah\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" fill=\"context-stroke\"/></marker></defs>"
    );
    let _ = write!(
        s,
        "<text x=\"20\" y=\"24\" font-size=\"14\" font-weight=\"bold\">Stream ladder: {} connection(s), {total} arrows (data frames folded into runs as `tunnelbed replay` prints them)</text>",
        ladders.len()
    );
    let mut y = 40.0;
    let mut left = MAX_ARROWS;
    for l in ladders {
        let _ = write!(
            s,
            "<text x=\"20\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\">{}</text>",
            y + 20.0,
            esc(&l.title)
        );
        for (x, name) in [(lx, &l.ends[0]), (rx, &l.ends[1])] {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"180\" height=\"22\" fill=\"#eef\" stroke=\"#446\"/><text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
                x - 90.0,
                y + 32.0,
                y + 47.0,
                esc(name)
            );
        }
        let n = l.arrows.len().min(left);
        let bottom = y + head + n as f64 * row + 8.0;
        for x in [lx, rx] {
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#446\"/>",
                y + 54.0
            );
        }
        let mut ay = y + head + row / 2.0;
        for a in l.arrows.iter().take(n) {
            let (class, colour) = a.kind.style();
            let (x1, x2) = if a.dir == 0 { (lx, rx) } else { (rx, lx) };
            let stream = a
                .stream
                .map(|sid| format!(" data-stream=\"{sid}\""))
                .unwrap_or_default();
            let _ = write!(
                s,
                "<g class=\"msg {class}\"{stream}><text x=\"20\" y=\"{:.1}\" font-size=\"10\" fill=\"#555\">{:.6} s</text><line x1=\"{x1:.1}\" y1=\"{ay:.1}\" x2=\"{x2:.1}\" y2=\"{ay:.1}\" stroke=\"{colour}\" stroke-width=\"1.5\" marker-end=\"url(#ah)\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"{colour}\" text-anchor=\"middle\">{}</text></g>",
                ay + 4.0,
                a.t.as_secs_f64(),
                (lx + rx) / 2.0,
                ay - 3.0,
                esc(&a.label)
            );
            ay += row;
        }
        left -= n;
        y = bottom + 20.0;
    }
    if drawn < total {
        let _ = write!(
            s,
            "<text x=\"20\" y=\"{:.1}\" font-size=\"12\" fill=\"#d62728\">{} more arrows not drawn (at most {MAX_ARROWS}); choose one with --stream</text>",
            y + 10.0,
            total - drawn
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_runs_fold_and_syns_pair() {
        let ms = Duration::from_millis;
        let mut f = Folder::default();
        f.syn(ms(1), 0, 1);
        f.syn(ms(2), 1, 1);
        f.data(ms(3), 0, 1, 10);
        f.data(ms(4), 0, 1, 5);
        f.data(ms(5), 1, 1, 7);
        f.push(ms(6), 0, Some(1), Kind::Fin, "FIN");
        f.data(ms(7), 0, 3, 1);
        let a = f.finish();
        let labels: Vec<&str> = a.iter().map(|a| a.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "1: SYN",
                "1: SYN-ACK",
                "1: DATA x2 (15 B)",
                "1: DATA 7 B",
                "1: FIN",
                "3: DATA 1 B"
            ]
        );
        let svg = render(&[Ladder {
            title: "t <&>".into(),
            ends: ["a".into(), "b".into()],
            arrows: a,
        }]);
        assert_eq!(svg.matches("<g class=\"msg ").count(), 6);
        assert_eq!(svg.matches("data-stream=\"1\"").count(), 5);
        assert!(svg.contains("t &lt;&amp;&gt;"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(build(b"nope").is_err());
    }
}
