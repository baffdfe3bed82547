//! The [`Arq`] adapter for crate `kcp` (a Rust port of ikcp), the reference the KCP
//! benchmark compares against.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::rc::Rc;

use super::link_loop::Arq;

/// Collects the datagrams the port writes.
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

/// Knobs shared by both implementations in a benchmark run.
#[derive(Clone, Copy, Debug)]
pub struct Knobs {
    /// ikcp_nodelay's nodelay.
    pub nodelay: bool,
    /// Update interval in ms.
    pub interval: u32,
    /// Fast-resend trigger.
    pub resend: u32,
    /// Congestion window off.
    pub nc: bool,
    /// Send window (segments).
    pub snd_wnd: u16,
    /// Receive window (segments).
    pub rcv_wnd: u16,
    /// MTU.
    pub mtu: usize,
}

/// Crate `kcp` behind the [`Arq`] trait.
pub struct PortArq {
    kcp: kcp_rs::Kcp<Outbox>,
    out: Outbox,
    buf: Vec<u8>,
}

impl PortArq {
    /// A message-mode session configured with `k`.
    pub fn new(conv: u32, k: &Knobs) -> Self {
        let out = Outbox::default();
        let mut kcp = kcp_rs::Kcp::new(conv, out.clone());
        kcp.set_nodelay(k.nodelay, k.interval as i32, k.resend as i32, k.nc);
        kcp.set_wndsize(k.snd_wnd, k.rcv_wnd);
        let _ = kcp.set_mtu(k.mtu);
        Self {
            kcp,
            out,
            buf: vec![0u8; 1 << 20],
        }
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
        self.kcp.check(now_ms)
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        match self.kcp.recv(&mut self.buf) {
            Ok(n) => Some(self.buf[..n].to_vec()),
            Err(_) => None,
        }
    }
    fn poll_output(&mut self) -> Option<Vec<u8>> {
        self.out.0.borrow_mut().pop_front()
    }
    fn waitsnd(&self) -> usize {
        self.kcp.wait_snd()
    }
}
