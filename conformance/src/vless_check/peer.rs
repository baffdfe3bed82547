//! A UDP peer the checkers run for themselves on a loopback address: it records every
//! datagram it receives (payload and true source) and, as an echo, sends each back to
//! its sender. `check vless` asks the server to dial one; `check fullcone` places several
//! on 127.0.0.2, 127.0.0.3, ... as the outside world of a NAT. Dropping it stops it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Most datagrams a peer keeps unread (more are dropped, and counted).
const MAX_QUEUED: usize = 4096;

/// One received datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    /// Who sent it (the address as seen by this peer: the NAT's mapping).
    pub from: SocketAddr,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A UDP peer (see the module doc).
pub struct UdpPeer {
    /// Where it listens.
    pub addr: SocketAddr,
    sock: Arc<UdpSocket>,
    rx: mpsc::Receiver<Got>,
    task: JoinHandle<()>,
    /// Every datagram taken from the queue so far, in order.
    pub log: Vec<Got>,
}

impl Drop for UdpPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UdpPeer {
    /// A peer on `addr` (port 0 picks one) that records and, when `echo`, echoes.
    pub async fn bind(addr: SocketAddr, echo: bool) -> io::Result<UdpPeer> {
        let sock = Arc::new(UdpSocket::bind(addr).await?);
        let addr = sock.local_addr()?;
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        let s = sock.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                match s.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        if echo {
                            let _ = s.send_to(&buf[..n], from).await;
                        }
                        let _ = tx.try_send(Got {
                            from,
                            payload: buf[..n].to_vec(),
                        });
                    }
                    // e.g. ICMP port unreachable from an earlier send: keep serving.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        });
        Ok(UdpPeer {
            addr,
            sock,
            rx,
            task,
            log: Vec::new(),
        })
    }

    /// Sends `payload` to `to` from this peer's socket.
    pub async fn send_to(&self, payload: &[u8], to: SocketAddr) -> io::Result<()> {
        self.sock.send_to(payload, to).await.map(|_| ())
    }

    /// Takes what arrived so far into [`UdpPeer::log`].
    pub fn drain(&mut self) {
        while let Ok(g) = self.rx.try_recv() {
            self.log.push(g);
        }
    }

    /// Waits up to `within` until `cond` holds on the log; returns whether it does.
    pub async fn wait_for(&mut self, within: Duration, cond: impl Fn(&[Got]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            if cond(&self.log) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(g)) => self.log.push(g),
                _ => {
                    self.drain();
                    return cond(&self.log);
                }
            }
        }
    }

    /// The first logged datagram with this payload, if any.
    pub fn find(&self, payload: &[u8]) -> Option<&Got> {
        self.log.iter().find(|g| g.payload == payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_and_echoes() {
        let mut p = UdpPeer::bind("127.0.0.1:0".parse().unwrap(), true)
            .await
            .unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(b"hi", p.addr).await.unwrap();
        let mut b = [0u8; 8];
        let (n, from) = s.recv_from(&mut b).await.unwrap();
        assert_eq!((&b[..n], from), (&b"hi"[..], p.addr));
        assert!(p.wait_for(Duration::from_secs(5), |l| l.len() == 1).await);
        assert_eq!(p.find(b"hi").unwrap().from, s.local_addr().unwrap());
    }
}
