//! A smoltcp `phy::Device` made of two packet queues, for driving smoltcp (a TCP we did
//! not write) sans-IO over any of our IP links: the caller pushes received packets into
//! [`QueueDevice::rx`], polls smoltcp's interface, and sends what it left in
//! [`QueueDevice::tx`]. One device serves the tcpstack's smoltcp peer test, the tcpstack
//! scenarios' client and the simulator's real TCP (`--tcp real`), so the three cannot
//! drift. Behind netio's `smoltcp` feature: the cores never see smoltcp.

use std::collections::VecDeque;

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

/// Received packets in, sent packets out; IP medium (no link-layer header).
#[derive(Debug, Default)]
pub struct QueueDevice {
    /// Packets for smoltcp to read, oldest first.
    pub rx: VecDeque<Vec<u8>>,
    /// Packets smoltcp sent, oldest first, for the caller to put on the link.
    pub tx: VecDeque<Vec<u8>>,
    /// The MTU smoltcp sizes its segments by.
    pub mtu: usize,
}

impl QueueDevice {
    /// An empty device with `mtu`.
    pub fn new(mtu: usize) -> Self {
        Self {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
        }
    }
}

/// One received packet, handed to smoltcp.
#[derive(Debug)]
pub struct Rx(Vec<u8>);

/// Room for one packet smoltcp sends.
#[derive(Debug)]
pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0u8; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_come_out_in_order_and_the_mtu_is_reported() {
        let mut d = QueueDevice::new(1400);
        assert_eq!(d.capabilities().max_transmission_unit, 1400);
        d.rx.push_back(vec![1]);
        d.rx.push_back(vec![2]);
        let (rx, tx) = d.receive(Instant::from_millis(0)).unwrap();
        assert_eq!(rx.consume(|p| p.to_vec()), vec![1]);
        tx.consume(3, |b| b.copy_from_slice(&[7, 8, 9]));
        let tx = d.transmit(Instant::from_millis(0)).unwrap();
        tx.consume(1, |b| b[0] = 5);
        assert_eq!(d.tx, VecDeque::from(vec![vec![7, 8, 9], vec![5]]));
        assert_eq!(d.rx, VecDeque::from(vec![vec![2]]));
    }
}
