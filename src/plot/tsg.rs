//! Time-sequence graphs (Stevens / tcptrace style) of one direction of a KCP session or a
//! TCP connection read from a capture: every data segment as an I-beam at its capture
//! time spanning its sequence range, the other direction's acknowledgements, the
//! cumulative acknowledgement as a step line and, for KCP, the advertised window's edge.
//!
//! Segments are classified the way `tunnelbed replay` counts them, in the same view of
//! the capture (with one interface per host, the receiver's copies): `retx` is a copy of
//! a segment already seen (a retransmission or duplicate; replay's "copies"), `late` is a
//! first copy below the highest sequence seen (it was reordered, or resent after its
//! earlier copies were lost), and `data` is any other first copy.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use tunnelbed_kcp::wire::{Segment, CMD_ACK, CMD_PUSH};
use tunnelbed_netio::pcap_read::{decode_transport, read_capture, Transport};

use super::svg::{esc, open, Frame, Scale};
use crate::replay::{flows::DatagramFlow, kcp::looks_like_kcp, reassemble};

/// Which direction to plot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowSpec {
    /// The direction that carried the most data.
    Auto,
    /// The KCP direction with this conversation id that carried the most data segments.
    Conv(u32),
    /// The direction from the first address to the second (KCP over UDP, or TCP).
    Addrs(SocketAddr, SocketAddr),
}

impl FromStr for FlowSpec {
    type Err = String;
    /// `auto`, `conv=N`, or `SRC->DST` with socket addresses (`10.0.0.1:4000->10.0.0.2:5000`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(FlowSpec::Auto);
        }
        if let Some(n) = s.strip_prefix("conv=") {
            return n
                .parse()
                .map(FlowSpec::Conv)
                .map_err(|e| format!("conv {n:?}: {e}"));
        }
        let (a, b) = s
            .split_once("->")
            .ok_or_else(|| format!("{s:?}: expected auto, conv=N or SRC->DST"))?;
        let p = |x: &str| {
            x.trim()
                .parse::<SocketAddr>()
                .map_err(|e| format!("{x:?}: {e}"))
        };
        Ok(FlowSpec::Addrs(p(a)?, p(b)?))
    }
}

impl std::fmt::Display for FlowSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowSpec::Auto => write!(f, "auto"),
            FlowSpec::Conv(c) => write!(f, "conv={c}"),
            FlowSpec::Addrs(a, b) => write!(f, "{a}->{b}"),
        }
    }
}

/// How a data segment counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// First copy, at or above the highest sequence seen so far.
    Data,
    /// First copy below the highest sequence seen (reordered, or resent after a loss).
    Late,
    /// A copy of a segment already seen: a retransmission or a duplicate.
    Retx,
}

impl Kind {
    /// The SVG class and colour of its marks.
    fn style(self) -> (&'static str, &'static str) {
        match self {
            Kind::Data => ("data", "#1f4e9c"),
            Kind::Late => ("late", "#e08a00"),
            Kind::Retx => ("retx", "#d62728"),
        }
    }
}

/// One data segment: capture time (seconds from the capture's first packet), sequence
/// range `[lo, hi)` (KCP: sn, sn + 1; TCP: bytes relative to the initial sequence).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataMark {
    /// Seconds from the capture's first packet.
    pub t: f64,
    /// First sequence unit.
    pub lo: f64,
    /// One past the last.
    pub hi: f64,
    /// How it counts.
    pub kind: Kind,
}

/// Marks per kind, as the graph draws them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// First copies at the front.
    pub data: usize,
    /// First copies below the highest sequence seen.
    pub late: usize,
    /// Copies of segments already seen (replay's "copies" for KCP).
    pub retransmissions: usize,
    /// Acknowledgements from the other direction (KCP: ACK segments; TCP: segments with
    /// the ACK flag).
    pub acks: usize,
}

/// A time-sequence graph, ready to render.
#[derive(Clone, Debug, Default)]
pub struct Tsg {
    /// What is plotted (protocol, addresses, conv).
    pub title: String,
    /// The y axis' unit.
    pub unit: &'static str,
    /// Data segments in capture order.
    pub data: Vec<DataMark>,
    /// Selective acknowledgements (KCP: the acked sn) at their capture time.
    pub acks: Vec<(f64, f64)>,
    /// The cumulative acknowledgement (KCP una, TCP ack) over time.
    pub cumulative: Vec<(f64, f64)>,
    /// The receive window's right edge (KCP una + wnd) over time.
    pub window: Vec<(f64, f64)>,
    /// Marks per kind.
    pub counts: Counts,
    /// A TCP graph: its acks are the cumulative ones (TCP has no selective ack segments).
    pub tcp: bool,
}

/// A direction that has data, for choosing and for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `kcp` or `tcp`.
    pub proto: &'static str,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// KCP conversation id (0 for TCP).
    pub conv: u32,
    /// Data segments (KCP) or payload bytes (TCP).
    pub amount: u64,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.proto {
            "kcp" => write!(
                f,
                "kcp {}->{} conv={} ({} data segments)",
                self.src, self.dst, self.conv, self.amount
            ),
            _ => write!(f, "tcp {}->{} ({} bytes)", self.src, self.dst, self.amount),
        }
    }
}

fn secs(ts: Duration, base: Duration) -> f64 {
    ts.saturating_sub(base).as_secs_f64()
}

/// Every KCP and TCP direction that carried data, most data first.
fn candidates(
    udp: &BTreeMap<(SocketAddr, SocketAddr), DatagramFlow>,
    tcp: &BTreeMap<(SocketAddr, SocketAddr), u64>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for ((src, dst), f) in udp {
        if !looks_like_kcp(f) {
            continue;
        }
        let mut per_conv: BTreeMap<u32, u64> = BTreeMap::new();
        for (_, _, d) in &f.datagrams {
            for s in Segment::decode_all(d).unwrap_or_default() {
                if s.cmd == CMD_PUSH {
                    *per_conv.entry(s.conv).or_default() += 1;
                }
            }
        }
        for (conv, n) in per_conv {
            out.push(Candidate {
                proto: "kcp",
                src: *src,
                dst: *dst,
                conv,
                amount: n,
            });
        }
    }
    for ((src, dst), n) in tcp {
        if *n > 0 {
            out.push(Candidate {
                proto: "tcp",
                src: *src,
                dst: *dst,
                conv: 0,
                amount: *n,
            });
        }
    }
    out.sort_by(|a, b| b.amount.cmp(&a.amount).then_with(|| a.src.cmp(&b.src)));
    out
}

/// One TCP segment as the graph needs it.
struct TcpSeg {
    ts: Duration,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    len: u32,
}

/// Reads `capture` and builds the graph of the direction `spec` names. Errors say why
/// (unreadable capture, no such direction) and list the directions there are.
pub fn build(capture: &[u8], spec: &FlowSpec) -> Result<Tsg, String> {
    let pkts = read_capture(capture).map_err(|e| e.to_string())?;
    let base = pkts.iter().map(|p| p.ts).min().unwrap_or_default();
    let mut tcp: BTreeMap<(SocketAddr, SocketAddr), Vec<TcpSeg>> = BTreeMap::new();
    for p in &pkts {
        if let Ok(Transport::Tcp {
            src,
            dst,
            seq,
            ack,
            syn,
            payload,
            ..
        }) = decode_transport(p)
        {
            tcp.entry((src, dst)).or_default().push(TcpSeg {
                ts: p.ts,
                seq,
                ack,
                syn,
                len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            });
        }
    }
    drop(pkts);
    let udp = reassemble(capture)?.udp;
    let tcp_bytes: BTreeMap<_, u64> = tcp
        .iter()
        .map(|(k, v)| (*k, v.iter().map(|s| u64::from(s.len)).sum()))
        .collect();
    let all = candidates(&udp, &tcp_bytes);
    let chosen = match spec {
        FlowSpec::Auto => all.first(),
        FlowSpec::Conv(c) => all.iter().find(|x| x.proto == "kcp" && x.conv == *c),
        FlowSpec::Addrs(s, d) => all.iter().find(|x| x.src == *s && x.dst == *d),
    };
    let Some(c) = chosen.cloned() else {
        let list: Vec<String> = all.iter().map(|c| format!("  {c}")).collect();
        return Err(format!(
            "no direction with data matches --flow {spec}; the capture has:\n{}",
            if list.is_empty() {
                "  (no KCP or TCP data)".to_string()
            } else {
                list.join("\n")
            }
        ));
    };
    let empty = DatagramFlow::default();
    Ok(match c.proto {
        "kcp" => kcp(
            &c,
            udp.get(&(c.src, c.dst)).unwrap_or(&empty),
            udp.get(&(c.dst, c.src)).unwrap_or(&empty),
            base,
        ),
        _ => {
            let none = Vec::new();
            tcp_graph(
                &c,
                tcp.get(&(c.src, c.dst)).unwrap_or(&none),
                tcp.get(&(c.dst, c.src)).unwrap_or(&none),
                base,
            )
        }
    })
}

/// KCP: data from `fwd`'s PUSH segments of the chosen conv; acks, una and window from
/// `back`'s segments of that conv.
fn kcp(c: &Candidate, fwd: &DatagramFlow, back: &DatagramFlow, base: Duration) -> Tsg {
    let mut g = Tsg {
        title: format!("KCP {} -> {} conv {}: sn over time", c.src, c.dst, c.conv),
        unit: "sn (segment sequence number)",
        ..Tsg::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut top: Option<u32> = None;
    for (_, ts, d) in &fwd.datagrams {
        for s in Segment::decode_all(d).unwrap_or_default() {
            if s.conv != c.conv || s.cmd != CMD_PUSH {
                continue;
            }
            let kind = if !seen.insert(s.sn) {
                Kind::Retx
            } else if top.is_some_and(|t| s.sn < t) {
                Kind::Late
            } else {
                Kind::Data
            };
            top = top.max(Some(s.sn));
            g.data.push(DataMark {
                t: secs(*ts, base),
                lo: f64::from(s.sn),
                hi: f64::from(s.sn) + 1.0,
                kind,
            });
        }
    }
    for (_, ts, d) in &back.datagrams {
        let t = secs(*ts, base);
        for s in Segment::decode_all(d).unwrap_or_default() {
            if s.conv != c.conv {
                continue;
            }
            if s.cmd == CMD_ACK {
                g.acks.push((t, f64::from(s.sn)));
            }
            g.cumulative.push((t, f64::from(s.una)));
            g.window.push((t, f64::from(s.una) + f64::from(s.wnd)));
        }
    }
    g.count();
    g
}

/// TCP: sequence numbers relative to the sender's initial one (its SYN, or the first
/// segment's sequence less one when the capture missed the SYN).
fn tcp_graph(c: &Candidate, fwd: &[TcpSeg], back: &[TcpSeg], base: Duration) -> Tsg {
    let mut g = Tsg {
        title: format!("TCP {} -> {}: bytes over time", c.src, c.dst),
        unit: "sequence (bytes from the initial sequence number)",
        tcp: true,
        ..Tsg::default()
    };
    let isn = fwd
        .iter()
        .find(|s| s.syn)
        .map(|s| s.seq)
        .or_else(|| fwd.first().map(|s| s.seq.wrapping_sub(1)))
        .unwrap_or(0);
    let rel = |seq: u32| f64::from(seq.wrapping_sub(isn).wrapping_sub(1));
    // Byte ranges seen, merged: start -> end.
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let mut top = 0u64;
    for s in fwd.iter().filter(|s| s.len > 0 && !s.syn) {
        let lo = rel(s.seq) as u64;
        let hi = lo + u64::from(s.len);
        let covered = seen
            .range(..=lo)
            .next_back()
            .is_some_and(|(_, end)| *end >= hi);
        let kind = if covered {
            Kind::Retx
        } else if lo < top {
            Kind::Late
        } else {
            Kind::Data
        };
        top = top.max(hi);
        // Merge [lo, hi) into the set.
        let (mut a, mut b) = (lo, hi);
        let overlapping: Vec<u64> = seen
            .range(..=hi)
            .filter(|(s0, e0)| **e0 >= lo && **s0 <= hi)
            .map(|(s0, _)| *s0)
            .collect();
        for s0 in overlapping {
            if let Some(e0) = seen.remove(&s0) {
                a = a.min(s0);
                b = b.max(e0);
            }
        }
        seen.insert(a, b);
        g.data.push(DataMark {
            t: secs(s.ts, base),
            lo: lo as f64,
            hi: hi as f64,
            kind,
        });
    }
    for s in back {
        if let Some(a) = s.ack {
            g.cumulative.push((secs(s.ts, base), rel(a)));
        }
    }
    g.count();
    g
}

impl Tsg {
    /// Keeps only what happened between `from` and `to` seconds (to zoom into a dense
    /// graph); the counts then describe what is kept.
    pub fn between(&mut self, from: f64, to: f64) {
        let keep = |t: f64| t >= from && t <= to;
        self.data.retain(|d| keep(d.t));
        self.acks.retain(|a| keep(a.0));
        self.cumulative.retain(|a| keep(a.0));
        self.window.retain(|a| keep(a.0));
        self.count();
    }

    /// One past the highest sequence any data segment covered.
    pub fn top(&self) -> u64 {
        self.data.iter().map(|d| d.hi as u64).max().unwrap_or(0)
    }

    fn count(&mut self) {
        let n = |k| self.data.iter().filter(|d| d.kind == k).count();
        self.counts = Counts {
            data: n(Kind::Data),
            late: n(Kind::Late),
            retransmissions: n(Kind::Retx),
            acks: if self.tcp {
                self.cumulative.len()
            } else {
                self.acks.len()
            },
        };
    }

    /// The graph as a standalone SVG document: one element per mark, its class naming
    /// its kind (`data`, `late`, `retx`, `ack`), so the marks can be counted.
    pub fn render(&self) -> String {
        let (w, h) = (980.0, 680.0);
        let t_max = self
            .data
            .iter()
            .map(|d| d.t)
            .chain(self.acks.iter().map(|a| a.0))
            .chain(self.cumulative.iter().map(|a| a.0))
            .fold(0.0, f64::max);
        let y_max = self
            .data
            .iter()
            .map(|d| d.hi)
            .chain(self.acks.iter().map(|a| a.1 + 1.0))
            .chain(self.cumulative.iter().map(|a| a.1))
            .chain(self.window.iter().map(|a| a.1))
            .fold(0.0, f64::max);
        let t_min = self
            .data
            .iter()
            .map(|d| d.t)
            .chain(self.acks.iter().map(|a| a.0))
            .chain(self.cumulative.iter().map(|a| a.0))
            .fold(f64::INFINITY, f64::min);
        let t_min = if t_min.is_finite() { t_min } else { 0.0 };
        let y_min = self
            .data
            .iter()
            .map(|d| d.lo)
            .chain(self.acks.iter().map(|a| a.1))
            .chain(self.cumulative.iter().map(|a| a.1))
            .fold(f64::INFINITY, f64::min);
        let y_min = if y_min.is_finite() { y_min } else { 0.0 };
        let x = Scale::new(t_min, t_min + (t_max - t_min) * 1.02, 80.0, w - 20.0);
        let y = Scale::new(y_min, y_min + (y_max - y_min) * 1.02, h - 50.0, 66.0);
        let ibeam =
            |c: &str| format!("<path d=\"M6 1V11M3 1H9M3 11H9\" fill=\"none\" stroke=\"{c}\"/>");
        let c = &self.counts;
        let legend = [
            (
                Kind::Data.style().1,
                ibeam(Kind::Data.style().1),
                format!("data ({})", c.data),
            ),
            (
                Kind::Late.style().1,
                ibeam(Kind::Late.style().1),
                format!("late ({})", c.late),
            ),
            (
                Kind::Retx.style().1,
                ibeam(Kind::Retx.style().1),
                format!("retransmission / copy ({})", c.retransmissions),
            ),
            (
                "#2a9d2a",
                "<path d=\"M2 6H10\" stroke-width=\"2\"/>".to_string(),
                format!("ack ({})", c.acks),
            ),
            (
                "#2a9d2a",
                "<path d=\"M0 9H6V3H12\" fill=\"none\"/>".to_string(),
                "cumulative ack".to_string(),
            ),
            (
                "#999",
                "<path d=\"M0 9H6V3H12\" fill=\"none\" stroke-dasharray=\"2 2\"/>".to_string(),
                "window edge".to_string(),
            ),
        ];
        let frame = Frame {
            size: (w, h),
            title: &self.title,
            labels: ("time (s from the capture's first packet)", self.unit),
            legend: &legend,
        };
        let mut s = open(&frame, &x, &y);
        let step = |pts: &[(f64, f64)], attrs: &str, s: &mut String| {
            if pts.is_empty() {
                return;
            }
            let mut d = String::new();
            for (i, (t, v)) in pts.iter().enumerate() {
                let (px, py) = (x.px(*t), y.px(*v));
                if i == 0 {
                    let _ = write!(d, "M{px:.1} {py:.1}");
                } else {
                    let _ = write!(d, "H{px:.1}V{py:.1}");
                }
            }
            let _ = write!(s, "<path d=\"{d}\" fill=\"none\" {attrs}/>");
        };
        step(
            &self.window,
            "stroke=\"#999\" stroke-dasharray=\"3 3\" class=\"window-line\"",
            &mut s,
        );
        step(
            &self.cumulative,
            "stroke=\"#2a9d2a\" class=\"cumulative-line\"",
            &mut s,
        );
        for (t, v) in &self.acks {
            let _ = write!(
                s,
                "<path class=\"ack\" d=\"M{:.1} {:.1}h4\" stroke=\"#2a9d2a\" stroke-width=\"2\"/>",
                x.px(*t),
                y.px(*v + 0.5)
            );
        }
        for d in &self.data {
            let (class, colour) = d.kind.style();
            let px = x.px(d.t);
            let (top, bottom) = (y.px(d.hi), y.px(d.lo));
            // At least 4 px tall so single sequence numbers stay visible.
            let (top, bottom) = if bottom - top < 4.0 {
                let mid = (top + bottom) / 2.0;
                (mid - 2.0, mid + 2.0)
            } else {
                (top, bottom)
            };
            let _ = write!(
                s,
                "<path class=\"{class}\" d=\"M{px:.1} {top:.1}V{bottom:.1}M{:.1} {top:.1}h4M{:.1} {bottom:.1}h4\" stroke=\"{colour}\"/>",
                px - 2.0,
                px - 2.0
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"54\" font-size=\"10\" fill=\"#666\">{}</text>",
            x.from,
            esc("retransmission / copy: a segment already seen in this view of the capture (replay's copies); late: below the highest sequence seen (reordered, or resent after a loss)")
        );
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_specs_parse() {
        assert_eq!("auto".parse::<FlowSpec>(), Ok(FlowSpec::Auto));
        assert_eq!("conv=7".parse::<FlowSpec>(), Ok(FlowSpec::Conv(7)));
        assert_eq!(
            "10.0.0.1:4000->10.0.0.2:5000".parse::<FlowSpec>(),
            Ok(FlowSpec::Addrs(
                "10.0.0.1:4000".parse().unwrap(),
                "10.0.0.2:5000".parse().unwrap()
            ))
        );
        assert!("10.0.0.1->x".parse::<FlowSpec>().is_err());
        assert!("conv=x".parse::<FlowSpec>().is_err());
        for s in ["auto", "conv=7", "10.0.0.1:4000->10.0.0.2:5000"] {
            assert_eq!(s.parse::<FlowSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(build(b"not a capture", &FlowSpec::Auto).is_err());
        assert!(build(&[], &FlowSpec::Auto).is_err());
    }
}
