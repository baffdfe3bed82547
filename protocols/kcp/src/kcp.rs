//! The KCP state machine, sans-IO, behaviour-compatible with the reference ikcp: the
//! same calls at the same times produce byte-identical datagrams (the differential test
//! in `conformance/` checks this against the reference C code).
//!
//! As in ikcp, the clock only moves in [`Kcp::handle_timeout`] (ikcp_update);
//! `handle_input` uses the time of the last update for RTT samples. Datagrams produced by flushing are queued and taken with
//! [`Kcp::poll_transmit`].

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tunnelbed_netio::Trace;

use crate::config::KcpConfig;
use crate::wire::{self, InputError, CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, OVERHEAD};

const RTO_NDL: i32 = 30;
const RTO_MIN: i32 = 100;
const RTO_DEF: i32 = 200;
const RTO_MAX: u32 = 60_000;
const ASK_SEND: u32 = 1;
const ASK_TELL: u32 = 2;
const WND_RCV: u32 = 128;
const THRESH_INIT: u32 = 2;
const THRESH_MIN: u32 = 2;
const PROBE_INIT: u32 = 7000;
const PROBE_LIMIT: u32 = 120_000;

/// Signed difference of two wrapping millisecond clocks, as ikcp's `_itimediff`.
fn diff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

/// Milliseconds of `now` as ikcp's 32-bit clock.
pub fn millis(now: Duration) -> u32 {
    now.as_millis() as u64 as u32
}

/// Why `send` refused data.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SendError {
    /// A message would need 128 or more fragments (ikcp: -2).
    #[error("message of {len} bytes needs {fragments} fragments; at most 127 are allowed")]
    TooLarge {
        /// Message length.
        len: usize,
        /// Fragments it would need.
        fragments: usize,
    },
    /// The send queue is at its cap ([`KcpConfig::max_send_queue`]).
    #[error("send queue full ({0} segments waiting)")]
    QueueFull(usize),
}

struct SndSeg {
    frg: u8,
    ts: u32,
    sn: u32,
    resendts: u32,
    rto: u32,
    fastack: u32,
    xmit: u32,
    data: Vec<u8>,
}

struct RcvSeg {
    sn: u32,
    frg: u8,
    data: Vec<u8>,
}

/// Counters for reports and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KcpStats {
    /// Datagrams produced.
    pub datagrams_out: u64,
    /// Data segments sent for the first time.
    pub segments_sent: u64,
    /// Retransmissions after a timeout.
    pub timeout_retransmits: u64,
    /// Fast retransmissions.
    pub fast_retransmits: u64,
    /// Datagrams rejected by `handle_input`.
    pub input_errors: u64,
}

/// How many entries each internal queue holds, so tests and fuzzing can check that
/// memory stays bounded whatever the peer sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KcpQueues {
    /// Segments accepted by `send` and not yet in flight.
    pub snd_queue: usize,
    /// Bytes in those segments.
    pub snd_queue_bytes: usize,
    /// Segments in flight (sent, not acknowledged).
    pub snd_buf: usize,
    /// Segments in order, waiting for the application to read.
    pub rcv_queue: usize,
    /// Segments received out of order.
    pub rcv_buf: usize,
    /// Acknowledgements waiting for the next flush.
    pub acklist: usize,
    /// Datagrams waiting for `poll_transmit`.
    pub out: usize,
}

/// One KCP session.
pub struct Kcp {
    conv: u32,
    mtu: u32,
    mss: u32,
    state: u32,
    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    ssthresh: u32,
    rx_rttval: i32,
    rx_srtt: i32,
    rx_rto: i32,
    rx_minrto: i32,
    snd_wnd: u32,
    rcv_wnd: u32,
    rmt_wnd: u32,
    cwnd: u32,
    probe: u32,
    current: u32,
    interval: u32,
    ts_flush: u32,
    nodelay: i32,
    updated: bool,
    ts_probe: u32,
    probe_wait: u32,
    dead_link: u32,
    incr: u32,
    fastresend: i32,
    fastlimit: i32,
    nocwnd: bool,
    stream: bool,
    max_send_queue: usize,
    snd_queue: VecDeque<SndSeg>,
    snd_buf: VecDeque<SndSeg>,
    rcv_queue: VecDeque<RcvSeg>,
    rcv_buf: VecDeque<RcvSeg>,
    acklist: Vec<(u32, u32)>,
    out: VecDeque<Vec<u8>>,
    buffer: BytesMut,
    stats: KcpStats,
    trace: Trace,
    id: String,
    // What the trace last reported, so only changes are recorded.
    reported_window_closed: bool,
    reported_recovering: bool,
    reported_dead: bool,
    now: Duration,
}

impl Kcp {
    /// A session for conversation `conv` with `cfg`; transitions go to `trace` as `id`.
    pub fn new(conv: u32, cfg: &KcpConfig, trace: Trace, id: impl Into<String>) -> Self {
        let mut k = Kcp {
            conv,
            mtu: 1400,
            mss: 1400 - OVERHEAD as u32,
            state: 0,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            ssthresh: THRESH_INIT,
            rx_rttval: 0,
            rx_srtt: 0,
            rx_rto: RTO_DEF,
            rx_minrto: RTO_MIN,
            snd_wnd: 32,
            rcv_wnd: WND_RCV,
            rmt_wnd: WND_RCV,
            cwnd: 0,
            probe: 0,
            current: 0,
            interval: 100,
            ts_flush: 100,
            nodelay: 0,
            updated: false,
            ts_probe: 0,
            probe_wait: 0,
            dead_link: 20,
            incr: 0,
            fastresend: 0,
            fastlimit: 5,
            nocwnd: false,
            stream: cfg.stream,
            max_send_queue: cfg.max_send_queue.max(1),
            snd_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            rcv_queue: VecDeque::new(),
            rcv_buf: VecDeque::new(),
            acklist: Vec::new(),
            out: VecDeque::new(),
            buffer: BytesMut::with_capacity(1400 * 3),
            stats: KcpStats::default(),
            trace,
            id: id.into(),
            reported_window_closed: false,
            reported_recovering: false,
            reported_dead: false,
            now: Duration::ZERO,
        };
        k.set_mtu(cfg.mtu);
        k.set_nodelay(cfg.nodelay, cfg.interval as i32, cfg.resend, cfg.nc as i32);
        k.set_wndsize(cfg.snd_wnd as i32, cfg.rcv_wnd as i32);
        if let Some(m) = cfg.minrto {
            k.rx_minrto = m.min(i32::MAX as u32) as i32;
        }
        k.dead_link = cfg.dead_link;
        k.fastlimit = cfg.fastlimit;
        k
    }

    /// ikcp_setmtu: ignored below 50 (returns false).
    pub fn set_mtu(&mut self, mtu: u32) -> bool {
        if mtu < 50 {
            return false;
        }
        self.mtu = mtu;
        self.mss = mtu - OVERHEAD as u32;
        true
    }

    /// ikcp_nodelay: negative arguments leave a knob unchanged.
    pub fn set_nodelay(&mut self, nodelay: i32, interval: i32, resend: i32, nc: i32) {
        if nodelay >= 0 {
            self.nodelay = nodelay;
            self.rx_minrto = if nodelay != 0 { RTO_NDL } else { RTO_MIN };
        }
        if interval >= 0 {
            self.interval = interval.clamp(10, 5000) as u32;
        }
        if resend >= 0 {
            self.fastresend = resend;
        }
        if nc >= 0 {
            self.nocwnd = nc != 0;
        }
    }

    /// ikcp_wndsize: non-positive arguments leave a window unchanged.
    pub fn set_wndsize(&mut self, snd: i32, rcv: i32) {
        if snd > 0 {
            self.snd_wnd = snd as u32;
        }
        if rcv > 0 {
            self.rcv_wnd = (rcv as u32).max(WND_RCV);
        }
    }

    /// Conversation id.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// Largest payload per segment.
    pub fn mss(&self) -> usize {
        self.mss as usize
    }

    /// Segments queued or in flight (ikcp_waitsnd).
    pub fn waitsnd(&self) -> usize {
        self.snd_buf.len() + self.snd_queue.len()
    }

    /// The peer stopped acknowledging: a segment reached the dead-link count.
    pub fn is_dead(&self) -> bool {
        self.state != 0
    }

    /// Counters so far.
    pub fn stats(&self) -> KcpStats {
        self.stats
    }

    /// Current retransmission timeout in ms.
    pub fn rto(&self) -> u32 {
        self.rx_rto as u32
    }

    /// Send window in segments.
    pub fn snd_wnd(&self) -> u32 {
        self.snd_wnd
    }

    /// Receive window in segments (at least 128, as ikcp); bounds the receive buffers.
    pub fn rcv_wnd(&self) -> u32 {
        self.rcv_wnd
    }

    /// Queue lengths, for memory-bound checks in tests and fuzzing.
    pub fn queues(&self) -> KcpQueues {
        KcpQueues {
            snd_queue: self.snd_queue.len(),
            snd_queue_bytes: self.snd_queue.iter().map(|s| s.data.len()).sum(),
            snd_buf: self.snd_buf.len(),
            rcv_queue: self.rcv_queue.len(),
            rcv_buf: self.rcv_buf.len(),
            acklist: self.acklist.len(),
            out: self.out.len(),
        }
    }

    /// Queues application data (ikcp_send). In message mode a message is split into
    /// fragments; in stream mode data is appended to the last queued segment first.
    ///
    /// All or nothing: a refused send queues none of `data`, so the caller can retry it
    /// whole. (ikcp may have appended part of it to the last segment in stream mode before
    /// failing; the fuzzer found that this made a failed send deliver bytes twice.)
    pub fn send(&mut self, mut data: &[u8]) -> Result<(), SendError> {
        let mss = self.mss as usize;
        // Stream mode first tops up the last queued segment.
        let fill = match self.snd_queue.back() {
            Some(last) if self.stream && last.data.len() < mss => {
                data.len().min(mss - last.data.len())
            }
            _ => 0,
        };
        let rest = data.len() - fill;
        let count = if self.stream && rest == 0 {
            0
        } else if rest <= mss {
            1
        } else {
            rest.div_ceil(mss)
        };
        if count >= WND_RCV as usize {
            return Err(SendError::TooLarge {
                len: data.len(),
                fragments: count,
            });
        }
        if self.snd_queue.len() + count > self.max_send_queue {
            return Err(SendError::QueueFull(self.snd_queue.len()));
        }
        if fill > 0 {
            let last = self
                .snd_queue
                .back_mut()
                .expect("fill implies a last segment");
            last.data.extend_from_slice(&data[..fill]);
            last.frg = 0;
            data = &data[fill..];
        }
        for i in 0..count {
            let size = data.len().min(mss);
            self.snd_queue.push_back(SndSeg {
                frg: if self.stream {
                    0
                } else {
                    (count - i - 1) as u8
                },
                ts: 0,
                sn: 0,
                resendts: 0,
                rto: 0,
                fastack: 0,
                xmit: 0,
                data: data[..size].to_vec(),
            });
            data = &data[size..];
        }
        Ok(())
    }

    /// Size of the next complete message (ikcp_peeksize); None when none is ready.
    pub fn peek_size(&self) -> Option<usize> {
        let first = self.rcv_queue.front()?;
        if first.frg == 0 {
            return Some(first.data.len());
        }
        if self.rcv_queue.len() < first.frg as usize + 1 {
            return None;
        }
        let mut n = 0;
        for s in &self.rcv_queue {
            n += s.data.len();
            if s.frg == 0 {
                break;
            }
        }
        Some(n)
    }

    /// Takes the next complete message (ikcp_recv); in stream mode, the next segment's data.
    pub fn recv_bytes(&mut self) -> Option<Vec<u8>> {
        let size = self.peek_size()?;
        let recover = self.rcv_queue.len() >= self.rcv_wnd as usize;
        let mut out = Vec::with_capacity(size);
        while let Some(s) = self.rcv_queue.pop_front() {
            out.extend_from_slice(&s.data);
            if s.frg == 0 {
                break;
            }
        }
        self.move_rcv_buf();
        if (self.rcv_queue.len() as u32) < self.rcv_wnd && recover {
            self.probe |= ASK_TELL;
        }
        Some(out)
    }

    /// Copies the next message into `buf` (ikcp_recv); None when none is ready or it does
    /// not fit (then nothing is taken).
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let size = self.peek_size()?;
        if size > buf.len() {
            return None;
        }
        let m = self.recv_bytes()?;
        buf[..m.len()].copy_from_slice(&m);
        Some(m.len())
    }

    fn move_rcv_buf(&mut self) {
        while let Some(s) = self.rcv_buf.front() {
            if s.sn == self.rcv_nxt && (self.rcv_queue.len() as u32) < self.rcv_wnd {
                let s = self.rcv_buf.pop_front().expect("front exists");
                self.rcv_queue.push_back(s);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            } else {
                break;
            }
        }
    }

    fn update_ack(&mut self, rtt: i32) {
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt;
            self.rx_rttval = rtt / 2;
        } else {
            let delta = (rtt as i64 - self.rx_srtt as i64).abs();
            self.rx_rttval = ((3 * self.rx_rttval as i64 + delta) / 4) as i32;
            self.rx_srtt = ((7 * self.rx_srtt as i64 + rtt as i64) / 8) as i32;
            if self.rx_srtt < 1 {
                self.rx_srtt = 1;
            }
        }
        let rto = (self.rx_srtt as u32)
            .wrapping_add(self.interval.max(self.rx_rttval.wrapping_mul(4) as u32));
        self.rx_rto = (self.rx_minrto as u32).max(rto).min(RTO_MAX) as i32;
    }

    fn shrink_buf(&mut self) {
        self.snd_una = match self.snd_buf.front() {
            Some(s) => s.sn,
            None => self.snd_nxt,
        };
    }

    fn parse_ack(&mut self, sn: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        // ikcp scans from the front; snd_buf is sorted by sn and spans less than 2^31
        // (at most a 16-bit remote window), so a binary search finds the same segment.
        if let Ok(i) = self.snd_buf.binary_search_by(|s| diff(s.sn, sn).cmp(&0)) {
            self.snd_buf.remove(i);
        }
    }

    fn parse_una(&mut self, una: u32) {
        while let Some(s) = self.snd_buf.front() {
            if diff(una, s.sn) > 0 {
                self.snd_buf.pop_front();
            } else {
                break;
            }
        }
    }

    fn parse_fastack(&mut self, sn: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        for s in self.snd_buf.iter_mut() {
            if diff(sn, s.sn) < 0 {
                break;
            } else if sn != s.sn {
                s.fastack = s.fastack.wrapping_add(1);
            }
        }
    }

    fn parse_data(&mut self, sn: u32, frg: u8, data: &[u8]) {
        if diff(sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) >= 0 || diff(sn, self.rcv_nxt) < 0 {
            return;
        }
        // Find the insertion point; ignore repeats. ikcp scans from the back; rcv_buf is
        // sorted by sn and lies within [rcv_nxt, rcv_nxt + rcv_wnd), less than 2^31 wide,
        // so a binary search finds the same place.
        if let Err(pos) = self.rcv_buf.binary_search_by(|s| diff(s.sn, sn).cmp(&0)) {
            self.rcv_buf.insert(
                pos,
                RcvSeg {
                    sn,
                    frg,
                    data: data.to_vec(),
                },
            );
        }
        self.move_rcv_buf();
    }

    /// Feeds one datagram (ikcp_input). Like ikcp, segments before a bad one take effect.
    /// `now` only stamps trace records: RTT samples use the last `handle_timeout` time, as
    /// ikcp.
    pub fn handle_input(&mut self, now: Duration, data: &[u8]) -> Result<(), InputError> {
        self.now = now;
        let r = self.input_inner(data);
        if r.is_err() {
            self.stats.input_errors += 1;
        }
        self.report_window();
        r
    }

    fn input_inner(&mut self, mut data: &[u8]) -> Result<(), InputError> {
        let prev_una = self.snd_una;
        let mut maxack: Option<u32> = None;
        if data.len() < OVERHEAD {
            return Err(InputError::Short(data.len()));
        }
        while data.len() >= OVERHEAD {
            let h = wire::decode_header(data)?;
            if h.conv != self.conv {
                return Err(InputError::ConvMismatch {
                    want: self.conv,
                    got: h.conv,
                });
            }
            let remaining = data.len() - OVERHEAD;
            if (h.len as usize) > remaining || (h.len as i32) < 0 {
                return Err(InputError::BadLength {
                    len: h.len,
                    remaining,
                });
            }
            if !(CMD_PUSH..=CMD_WINS).contains(&h.cmd) {
                return Err(InputError::UnknownCommand(h.cmd));
            }
            let body = &data[OVERHEAD..OVERHEAD + h.len as usize];
            self.rmt_wnd = h.wnd as u32;
            self.parse_una(h.una);
            self.shrink_buf();
            match h.cmd {
                CMD_ACK => {
                    if diff(self.current, h.ts) >= 0 {
                        self.update_ack(diff(self.current, h.ts));
                    }
                    self.parse_ack(h.sn);
                    self.shrink_buf();
                    maxack = Some(match maxack {
                        None => h.sn,
                        Some(m) if diff(h.sn, m) > 0 => h.sn,
                        Some(m) => m,
                    });
                }
                CMD_PUSH if diff(h.sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 => {
                    self.acklist.push((h.sn, h.ts));
                    if diff(h.sn, self.rcv_nxt) >= 0 {
                        self.parse_data(h.sn, h.frg, body);
                    }
                }
                CMD_WASK => self.probe |= ASK_TELL,
                // WINS: the window was taken from the header above. A PUSH beyond the
                // receive window is dropped unacknowledged, as ikcp does.
                _ => {}
            }
            data = &data[OVERHEAD + h.len as usize..];
        }
        if let Some(m) = maxack {
            self.parse_fastack(m);
        }
        if diff(self.snd_una, prev_una) > 0 && self.cwnd < self.rmt_wnd {
            let mss = self.mss;
            if self.cwnd < self.ssthresh {
                self.cwnd = self.cwnd.wrapping_add(1);
                self.incr = self.incr.wrapping_add(mss);
            } else {
                if self.incr < mss {
                    self.incr = mss;
                }
                self.incr = self
                    .incr
                    .wrapping_add(mss.wrapping_mul(mss) / self.incr.max(1) + mss / 16);
                if self.cwnd.wrapping_add(1).wrapping_mul(mss) <= self.incr {
                    self.cwnd = self.incr.wrapping_add(mss).wrapping_sub(1) / mss.max(1);
                }
            }
            if self.cwnd > self.rmt_wnd {
                self.cwnd = self.rmt_wnd;
                self.incr = self.rmt_wnd.wrapping_mul(mss);
            }
        }
        Ok(())
    }

    fn wnd_unused(&self) -> u32 {
        let q = self.rcv_queue.len() as u32;
        self.rcv_wnd.saturating_sub(q)
    }

    fn output(&mut self) {
        if !self.buffer.is_empty() {
            // Copy out and keep the buffer (split() would share and reallocate it).
            let d = self.buffer.to_vec();
            self.buffer.clear();
            self.stats.datagrams_out += 1;
            self.out.push_back(d);
        }
    }

    fn make_room(&mut self, need: usize) {
        if self.buffer.len() + need > self.mtu as usize {
            self.output();
        }
    }

    /// Runs timers at `now` and flushes when due (ikcp_update).
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now;
        self.current = millis(now);
        if !self.updated {
            self.updated = true;
            self.ts_flush = self.current;
        }
        let mut slap = diff(self.current, self.ts_flush);
        if !(-10000..10000).contains(&slap) {
            self.ts_flush = self.current;
            slap = 0;
        }
        if slap >= 0 {
            self.ts_flush = self.ts_flush.wrapping_add(self.interval);
            if diff(self.current, self.ts_flush) >= 0 {
                self.ts_flush = self.current.wrapping_add(self.interval);
            }
            self.flush();
        }
    }

    /// Sends what is due now (ikcp_flush): acknowledgements, window probes, new data
    /// within the window, and retransmissions.
    pub fn flush(&mut self) {
        if !self.updated {
            return;
        }
        let current = self.current;
        let wnd = self.wnd_unused() as u16;
        let una = self.rcv_nxt;
        // ikcp reuses one header for acks and probes: the probes carry the last ack's sn/ts.
        let (mut sn, mut ts) = (0u32, 0u32);
        let mut acks = std::mem::take(&mut self.acklist);
        for &(asn, ats) in &acks {
            self.make_room(OVERHEAD);
            sn = asn;
            ts = ats;
            wire::encode_header(&mut self.buffer, self.conv, CMD_ACK, 0, wnd, ts, sn, una, 0);
        }
        // Hand the (now empty) list back so its capacity is reused.
        acks.clear();
        self.acklist = acks;

        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = PROBE_INIT;
                self.ts_probe = self.current.wrapping_add(self.probe_wait);
            } else if diff(self.current, self.ts_probe) >= 0 {
                if self.probe_wait < PROBE_INIT {
                    self.probe_wait = PROBE_INIT;
                }
                self.probe_wait += self.probe_wait / 2;
                if self.probe_wait > PROBE_LIMIT {
                    self.probe_wait = PROBE_LIMIT;
                }
                self.ts_probe = self.current.wrapping_add(self.probe_wait);
                self.probe |= ASK_SEND;
                if self.trace.is_enabled() {
                    let cause = format!("window probe sent, next in {}ms", self.probe_wait);
                    self.trace.transition(
                        self.now,
                        self.id.clone(),
                        "window-closed",
                        "window-closed",
                        cause,
                    );
                }
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }
        if self.probe & ASK_SEND != 0 {
            self.make_room(OVERHEAD);
            wire::encode_header(
                &mut self.buffer,
                self.conv,
                CMD_WASK,
                0,
                wnd,
                ts,
                sn,
                una,
                0,
            );
        }
        if self.probe & ASK_TELL != 0 {
            self.make_room(OVERHEAD);
            wire::encode_header(
                &mut self.buffer,
                self.conv,
                CMD_WINS,
                0,
                wnd,
                ts,
                sn,
                una,
                0,
            );
        }
        self.probe = 0;

        let mut cwnd = self.snd_wnd.min(self.rmt_wnd);
        if !self.nocwnd {
            cwnd = self.cwnd.min(cwnd);
        }
        while diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            let Some(mut s) = self.snd_queue.pop_front() else {
                break;
            };
            s.ts = current;
            s.sn = self.snd_nxt;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            s.resendts = current;
            s.rto = self.rx_rto as u32;
            s.fastack = 0;
            s.xmit = 0;
            self.snd_buf.push_back(s);
        }

        let resent: u32 = if self.fastresend > 0 {
            self.fastresend as u32
        } else {
            u32::MAX
        };
        let rtomin: u32 = if self.nodelay == 0 {
            (self.rx_rto >> 3) as u32
        } else {
            0
        };
        let mut change = 0u32;
        let mut lost = false;
        let mut lost_detail: Option<(u32, u32, u32)> = None;
        let mut fast_detail: Option<u32> = None;
        let mut dead_detail: Option<(u32, u32)> = None;
        for i in 0..self.snd_buf.len() {
            let mut needsend = false;
            {
                let s = &mut self.snd_buf[i];
                if s.xmit == 0 {
                    needsend = true;
                    s.xmit = s.xmit.wrapping_add(1);
                    s.rto = self.rx_rto as u32;
                    s.resendts = current.wrapping_add(s.rto).wrapping_add(rtomin);
                    self.stats.segments_sent += 1;
                } else if diff(current, s.resendts) >= 0 {
                    needsend = true;
                    s.xmit = s.xmit.wrapping_add(1);
                    if self.nodelay == 0 {
                        s.rto = s.rto.wrapping_add(s.rto.max(self.rx_rto as u32));
                    } else {
                        let step: i32 = if self.nodelay < 2 {
                            s.rto as i32
                        } else {
                            self.rx_rto
                        };
                        s.rto = (s.rto as i32).wrapping_add(step / 2) as u32;
                    }
                    s.resendts = current.wrapping_add(s.rto);
                    lost = true;
                    self.stats.timeout_retransmits += 1;
                    lost_detail.get_or_insert((s.sn, s.xmit, s.rto));
                } else if s.fastack >= resent
                    && (s.xmit as i32 <= self.fastlimit || self.fastlimit <= 0)
                {
                    needsend = true;
                    s.xmit = s.xmit.wrapping_add(1);
                    s.fastack = 0;
                    s.resendts = current.wrapping_add(s.rto);
                    change += 1;
                    self.stats.fast_retransmits += 1;
                    fast_detail.get_or_insert(s.sn);
                }
            }
            if needsend {
                let need = OVERHEAD + self.snd_buf[i].data.len();
                self.make_room(need);
                let s = &mut self.snd_buf[i];
                s.ts = current;
                wire::encode_header(
                    &mut self.buffer,
                    self.conv,
                    CMD_PUSH,
                    s.frg,
                    wnd,
                    s.ts,
                    s.sn,
                    una,
                    s.data.len() as u32,
                );
                self.buffer.extend_from_slice(&s.data);
                if s.xmit >= self.dead_link {
                    self.state = u32::MAX;
                    dead_detail.get_or_insert((s.sn, s.xmit));
                }
            }
        }
        self.output();

        if change > 0 {
            let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
            self.ssthresh = (inflight / 2).max(THRESH_MIN);
            self.cwnd = self.ssthresh.wrapping_add(resent);
            self.incr = self.cwnd.wrapping_mul(self.mss);
        }
        if lost {
            self.ssthresh = (cwnd / 2).max(THRESH_MIN);
            self.cwnd = 1;
            self.incr = self.mss;
        }
        if self.cwnd < 1 {
            self.cwnd = 1;
            self.incr = self.mss;
        }
        self.report_flush(lost_detail, fast_detail, dead_detail);
    }

    /// When `handle_timeout` must run next, as a time on the caller's clock.
    ///
    /// This is not ikcp_check: `check` answers "now" as soon as a retransmission is due,
    /// yet `handle_timeout` only flushes at the next flush tick, so a driver that trusted it would
    /// wake again and again at the same instant (in virtual time, forever). The next flush
    /// tick is the earliest moment `handle_timeout` can change anything.
    pub fn poll_timeout(&self, now: Duration) -> Duration {
        if !self.updated {
            return now;
        }
        let current = millis(now);
        let until_flush = diff(self.ts_flush, current);
        if !(-10000..10000).contains(&until_flush) {
            return now; // handle_timeout resynchronises a clock that jumped
        }
        now + Duration::from_millis(until_flush.max(0) as u64)
    }

    /// ikcp_check on the 32-bit millisecond clock.
    pub fn check(&self, current: u32) -> u32 {
        if !self.updated {
            return current;
        }
        let mut ts_flush = self.ts_flush;
        let d = diff(current, ts_flush);
        if !(-10000..10000).contains(&d) {
            ts_flush = current;
        }
        if diff(current, ts_flush) >= 0 {
            return current;
        }
        let tm_flush = diff(ts_flush, current);
        let mut tm_packet = i32::MAX;
        for s in &self.snd_buf {
            let d = diff(s.resendts, current);
            if d <= 0 {
                return current;
            }
            tm_packet = tm_packet.min(d);
        }
        let minimal = (tm_packet.min(tm_flush) as u32).min(self.interval);
        current.wrapping_add(minimal)
    }

    /// Takes the next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Whether everything sent has been acknowledged and nothing is queued.
    pub fn all_acked(&self) -> bool {
        self.snd_buf.is_empty() && self.snd_queue.is_empty()
    }

    fn report_window(&mut self) {
        let closed = self.rmt_wnd == 0;
        if closed != self.reported_window_closed {
            self.reported_window_closed = closed;
            if self.trace.is_enabled() {
                let (from, to, cause) = if closed {
                    (
                        "window-open",
                        "window-closed",
                        "remote window 0".to_string(),
                    )
                } else {
                    (
                        "window-closed",
                        "window-open",
                        format!("remote window {}", self.rmt_wnd),
                    )
                };
                self.trace
                    .transition(self.now, self.id.clone(), from, to, cause);
            }
        }
    }

    fn report_flush(
        &mut self,
        lost: Option<(u32, u32, u32)>,
        fast: Option<u32>,
        dead: Option<(u32, u32)>,
    ) {
        if !self.trace.is_enabled() {
            self.reported_recovering = lost.is_some()
                || (self.reported_recovering && !self.snd_buf.iter().all(|s| s.xmit <= 1));
            return;
        }
        if let Some(sn) = fast {
            self.trace.transition(
                self.now,
                self.id.clone(),
                "sending",
                "sending",
                format!("fast retransmit sn={sn}"),
            );
        }
        if let Some((sn, xmit, rto)) = lost {
            // Every timeout is reported, so the trace shows the backoff growing; the
            // first one enters `rto-backoff`, later ones stay in it.
            let from = if self.reported_recovering {
                "rto-backoff"
            } else {
                "sending"
            };
            self.reported_recovering = true;
            self.trace.transition(
                self.now,
                self.id.clone(),
                from,
                "rto-backoff",
                format!("timeout sn={sn} xmit={xmit} rto={rto}ms"),
            );
        } else if self.reported_recovering && self.snd_buf.iter().all(|s| s.xmit <= 1) {
            self.reported_recovering = false;
            self.trace.transition(
                self.now,
                self.id.clone(),
                "rto-backoff",
                "sending",
                format!("retransmitted data acknowledged, una={}", self.snd_una),
            );
        }
        if let Some((sn, xmit)) = dead {
            if !self.reported_dead {
                self.reported_dead = true;
                self.trace.transition(
                    self.now,
                    self.id.clone(),
                    if self.reported_recovering {
                        "rto-backoff"
                    } else {
                        "sending"
                    },
                    "dead",
                    format!("sn={sn} sent {xmit} times (dead_link {})", self.dead_link),
                );
            }
        }
    }
}
