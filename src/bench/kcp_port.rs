//! The [`Arq`] adapters the KCP benchmark compares: crate `kcp` (a Rust port of ikcp,
//! the reference) and ours, both configured from one [`Knobs`] so the comparison is fair.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::rc::Rc;
use std::time::Duration;

use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::Trace;

use super::link_loop::Arq;

/// Collects the datagrams the port writes (crate `kcp` pushes output through `Write`).
#[derive(Clone, Default)]
pub struct Outbox(Rc<RefCell<VecDeque<Vec<u8>>>>);

impl Write for Outbox {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().push_back(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Knobs shared by both implementations in a benchmark run, limited to what both
/// accept (crate `kcp` takes nodelay as a bool and windows as u16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// ikcp_nodelay's nodelay.
    pub nodelay: bool,
    /// Update interval in ms.
    pub interval: u32,
    /// Fast-resend trigger (0: off).
    pub resend: u32,
    /// Congestion window off.
    pub nc: bool,
    /// Send window (segments).
    pub snd_wnd: u16,
    /// Receive window (segments; both raise it to at least 128).
    pub rcv_wnd: u16,
    /// MTU (largest datagram).
    pub mtu: usize,
    /// Stream mode (no message boundaries) instead of message mode.
    pub stream: bool,
}

impl Knobs {
    /// Our configuration for these knobs; everything else keeps ikcp's defaults
    /// (dead_link 20, fastlimit 5, minrto from nodelay), which crate `kcp` also uses.
    pub fn config(&self) -> KcpConfig {
        KcpConfig {
            mtu: self.mtu as u32,
            snd_wnd: self.snd_wnd as u32,
            rcv_wnd: self.rcv_wnd as u32,
            nodelay: self.nodelay as i32,
            interval: self.interval,
            resend: self.resend as i32,
            nc: self.nc,
            stream: self.stream,
            ..KcpConfig::default()
        }
    }
}

/// Crate `kcp` behind the [`Arq`] trait.
pub struct PortArq {
    kcp: kcp_rs::Kcp<Outbox>,
    out: Outbox,
}

impl PortArq {
    /// A session for conversation `conv` configured with `k`.
    pub fn new(conv: u32, k: &Knobs) -> anyhow::Result<Self> {
        let out = Outbox::default();
        let mut kcp = if k.stream {
            kcp_rs::Kcp::new_stream(conv, out.clone())
        } else {
            kcp_rs::Kcp::new(conv, out.clone())
        };
        kcp.set_nodelay(k.nodelay, k.interval as i32, k.resend as i32, k.nc);
        kcp.set_wndsize(k.snd_wnd, k.rcv_wnd);
        kcp.set_mtu(k.mtu)
            .map_err(|e| anyhow::anyhow!("crate kcp refused mtu {}: {e}", k.mtu))?;
        Ok(Self { kcp, out })
    }
}

impl Arq for PortArq {
    fn send(&mut self, msg: &[u8]) -> bool {
        self.kcp.send(msg).is_ok()
    }
    fn input(&mut self, datagram: &[u8]) {
        let _ = self.kcp.input(datagram);
    }
    fn update(&mut self, now_ms: u32) {
        let _ = self.kcp.update(now_ms);
    }
    fn check(&mut self, now_ms: u32) -> u32 {
        // Unlike ikcp_check, crate kcp returns the delay until the next update.
        now_ms.wrapping_add(self.kcp.check(now_ms))
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        // Size the buffer exactly, so the port copies each message once, as ours does.
        let n = self.kcp.peeksize().ok()?;
        let mut buf = vec![0u8; n];
        let got = self.kcp.recv(&mut buf).ok()?;
        buf.truncate(got);
        Some(buf)
    }
    fn poll_output(&mut self) -> Option<Vec<u8>> {
        self.out.0.borrow_mut().pop_front()
    }
    fn waitsnd(&self) -> usize {
        self.kcp.wait_snd()
    }
}

/// Our [`Kcp`] behind the [`Arq`] trait (trace disabled, as in production use).
pub struct OursArq {
    kcp: Kcp,
    now: Duration,
}

impl OursArq {
    /// A session for conversation `conv` configured with `k`.
    pub fn new(conv: u32, k: &Knobs) -> Self {
        Self {
            kcp: Kcp::new(conv, &k.config(), Trace::disabled(), "bench"),
            now: Duration::ZERO,
        }
    }
}

impl Arq for OursArq {
    fn send(&mut self, msg: &[u8]) -> bool {
        self.kcp.send(msg).is_ok()
    }
    fn input(&mut self, datagram: &[u8]) {
        let _ = self.kcp.handle_input(self.now, datagram);
    }
    fn update(&mut self, now_ms: u32) {
        self.now = Duration::from_millis(now_ms as u64);
        self.kcp.handle_timeout(self.now);
    }
    fn check(&mut self, now_ms: u32) -> u32 {
        self.kcp.check(now_ms)
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        self.kcp.recv_bytes()
    }
    fn poll_output(&mut self) -> Option<Vec<u8>> {
        self.kcp.poll_transmit()
    }
    fn waitsnd(&self) -> usize {
        self.kcp.waitsnd()
    }
}
