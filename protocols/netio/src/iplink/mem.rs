//! An in-memory pair of IP links joined back to back: what one end sends, the other
//! receives, in order, with nothing lost unless a bounded queue overflows. For a driver
//! and the IP endpoint behind it in one process, e.g. a simulated VPN client's virtual
//! interface and the stack that plays its kernel side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

use super::{check_recv_buf, check_send, IpLink, IpLinkError};

/// Packets each direction queues before dropping (as a full device queue does).
pub const DEFAULT_QUEUE: usize = 1024;

/// One end of an [`ip_link_pair`].
pub struct MemIpLink {
    name: String,
    mtu: usize,
    tx: mpsc::Sender<Vec<u8>>,
    rx: Mutex<mpsc::Receiver<Vec<u8>>>,
    dropped: Arc<AtomicU64>,
}

/// Two joined links named `a` and `b`, each with `mtu` and a queue of `queue` packets
/// per direction.
pub fn ip_link_pair(a: &str, b: &str, mtu: usize, queue: usize) -> (MemIpLink, MemIpLink) {
    let queue = queue.max(1);
    let (tx_ab, rx_ab) = mpsc::channel(queue);
    let (tx_ba, rx_ba) = mpsc::channel(queue);
    let end = |name: &str, tx, rx| MemIpLink {
        name: name.to_string(),
        mtu,
        tx,
        rx: Mutex::new(rx),
        dropped: Arc::default(),
    };
    (end(a, tx_ab, rx_ba), end(b, tx_ba, rx_ab))
}

impl MemIpLink {
    /// Packets this end sent that were dropped because the other end's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl IpLink for MemIpLink {
    async fn send(&self, packet: &[u8]) -> Result<(), IpLinkError> {
        check_send(packet, self.mtu)?;
        match self.tx.try_send(packet.to_vec()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(IpLinkError::Closed),
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, IpLinkError> {
        check_recv_buf(buf, self.mtu)?;
        let p = self
            .rx
            .lock()
            .await
            .recv()
            .await
            .ok_or(IpLinkError::Closed)?;
        // The other end checked it against the same MTU.
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        Ok(n)
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iplink::echo::build_udp;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn pair_carries_both_ways_and_bounds() {
        let (a, b) = ip_link_pair("a", "b", 1500, 2);
        let p = build_udp(
            Ipv4Addr::new(10, 0, 0, 1),
            1,
            Ipv4Addr::new(10, 0, 0, 2),
            2,
            0,
            b"x",
        )
        .unwrap();
        for _ in 0..3 {
            a.send(&p).await.unwrap();
        }
        assert_eq!(a.dropped(), 1);
        let mut buf = vec![0; 1500];
        assert_eq!(b.recv(&mut buf).await.unwrap(), p.len());
        assert_eq!(&buf[..p.len()], &p[..]);
        assert!(matches!(
            b.recv(&mut [0u8; 10]).await,
            Err(IpLinkError::BufferTooSmall { .. })
        ));
        b.send(&p).await.unwrap();
        assert_eq!(a.recv(&mut buf).await.unwrap(), p.len());
        drop(b);
        assert!(matches!(a.send(&p).await, Err(IpLinkError::Closed)));
        assert!(matches!(a.recv(&mut buf).await, Err(IpLinkError::Closed)));
    }
}
