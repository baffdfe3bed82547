//! Destinations the checker starts for itself and asks the remote to dial: each case gets
//! fresh ones on the target address (127.0.0.1 by default, port 0), so cases cannot see
//! each other's traffic, and every one reports what happened on its side (accepted, EOF,
//! ended) so a case can check what reached the destination, not only what came back.
//!
//! - [`TcpTarget::echo`]: echoes; on EOF it shuts its write side down.
//! - [`TcpTarget::reply_after_eof`]: reads to EOF, then writes [`half_close_reply`] and
//!   closes (a relay that ends the stream on local's finish never delivers it).
//! - [`TcpTarget::dribble`]: writes [`pattern`] in writes of 1..=30 bytes, 2 ms apart, then
//!   closes (a relay that drops small reads loses them).
//! - [`UdpEcho`]: echoes every datagram to its sender.
//! - [`closed_port`]: a port nothing listens on (bound, then released).
//!
//! Nothing is buffered beyond one read: the echo streams, the reply target only counts.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a TCP target saw on its connection number `conn` (0 for the first accepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetEvent {
    /// A connection came in (the remote dialed).
    Accepted {
        /// Connection number.
        conn: usize,
    },
    /// The remote shut its write side down (TCP FIN) after `bytes_in` bytes.
    Eof {
        /// Connection number.
        conn: usize,
        /// Bytes read before EOF.
        bytes_in: u64,
    },
    /// The connection is gone (after EOF, a reset, or our own close).
    Ended {
        /// Connection number.
        conn: usize,
        /// Bytes read in all.
        bytes_in: u64,
        /// The error that ended it, if any.
        error: Option<String>,
    },
}

/// Aborts a task when dropped (a target lives as long as its case holds it).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Echo,
    ReplyAfterEof,
    Dribble(usize),
}

/// A TCP destination run by the checker.
pub struct TcpTarget {
    /// Where the remote should dial.
    pub addr: SocketAddr,
    events: mpsc::UnboundedReceiver<TargetEvent>,
    /// Everything received so far from `events`.
    pub log: Vec<TargetEvent>,
    _task: AbortOnDrop,
}

impl TcpTarget {
    /// An echo server.
    pub async fn echo(ip: IpAddr) -> io::Result<TcpTarget> {
        Self::start(ip, Behaviour::Echo).await
    }

    /// Reads until EOF, then writes [`half_close_reply`] for the byte count and closes.
    pub async fn reply_after_eof(ip: IpAddr) -> io::Result<TcpTarget> {
        Self::start(ip, Behaviour::ReplyAfterEof).await
    }

    /// Writes `total` bytes of [`pattern`] in small writes (sizes 1, 2, ..., 30, 1, ...),
    /// 2 ms apart, then closes.
    pub async fn dribble(ip: IpAddr, total: usize) -> io::Result<TcpTarget> {
        Self::start(ip, Behaviour::Dribble(total)).await
    }

    async fn start(ip: IpAddr, b: Behaviour) -> io::Result<TcpTarget> {
        let lsn = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = lsn.local_addr()?;
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // Connection tasks are owned here: aborting the target aborts them too.
            let mut conns = tokio::task::JoinSet::new();
            let mut n = 0usize;
            loop {
                let Ok((s, _)) = lsn.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = s.set_nodelay(true);
                let conn = n;
                n += 1;
                let _ = tx.send(TargetEvent::Accepted { conn });
                let tx = tx.clone();
                conns.spawn(serve(s, b, conn, tx));
                // Reap finished connection tasks so the set does not grow.
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(TcpTarget {
            addr,
            events,
            log: Vec::new(),
            _task: AbortOnDrop(task),
        })
    }

    /// Collects events that arrived so far.
    pub fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.log.push(e);
        }
    }

    /// Waits up to `within` until `cond` holds on the event log; returns whether it did.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        mut cond: impl FnMut(&[TargetEvent]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.drain();
            if cond(&self.log) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => self.log.push(e),
                _ => {
                    self.drain();
                    return cond(&self.log);
                }
            }
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&mut self) -> usize {
        self.drain();
        self.log
            .iter()
            .filter(|e| matches!(e, TargetEvent::Accepted { .. }))
            .count()
    }
}

/// Whether connection `conn` saw EOF or ended.
pub fn conn_closed(log: &[TargetEvent], conn: usize) -> bool {
    log.iter().any(|e| match e {
        TargetEvent::Eof { conn: c, .. } | TargetEvent::Ended { conn: c, .. } => *c == conn,
        TargetEvent::Accepted { .. } => false,
    })
}

/// Bytes connection `conn` had read when it saw EOF or ended (the largest count seen).
pub fn conn_bytes_in(log: &[TargetEvent], conn: usize) -> Option<u64> {
    log.iter()
        .filter_map(|e| match e {
            TargetEvent::Eof { conn: c, bytes_in }
            | TargetEvent::Ended {
                conn: c, bytes_in, ..
            } if *c == conn => Some(*bytes_in),
            _ => None,
        })
        .max()
}

async fn serve(
    mut s: TcpStream,
    b: Behaviour,
    conn: usize,
    tx: mpsc::UnboundedSender<TargetEvent>,
) {
    let mut bytes_in = 0u64;
    let error = match b {
        Behaviour::Echo => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => {
                        let _ = tx.send(TargetEvent::Eof { conn, bytes_in });
                        let _ = s.shutdown().await;
                        break None;
                    }
                    Ok(n) => {
                        bytes_in += n as u64;
                        if let Err(e) = s.write_all(&buf[..n]).await {
                            break Some(e.to_string());
                        }
                    }
                    Err(e) => break Some(e.to_string()),
                }
            }
        }
        Behaviour::ReplyAfterEof => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => {
                        let _ = tx.send(TargetEvent::Eof { conn, bytes_in });
                        let r = s.write_all(&half_close_reply(bytes_in)).await;
                        let _ = s.shutdown().await;
                        break r.err().map(|e| e.to_string());
                    }
                    Ok(n) => bytes_in += n as u64,
                    Err(e) => break Some(e.to_string()),
                }
            }
        }
        Behaviour::Dribble(total) => {
            let data = pattern(total);
            let mut at = 0;
            let mut size = 1;
            let mut err = None;
            while at < data.len() {
                let end = (at + size).min(data.len());
                if let Err(e) = s.write_all(&data[at..end]).await {
                    err = Some(e.to_string());
                    break;
                }
                at = end;
                size = size % 30 + 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = s.shutdown().await;
            err
        }
    };
    let _ = tx.send(TargetEvent::Ended {
        conn,
        bytes_in,
        error,
    });
}

/// What [`TcpTarget::reply_after_eof`] writes after reading `n` bytes and EOF.
pub fn half_close_reply(n: u64) -> Vec<u8> {
    format!("pong-check reply after EOF: received {n} bytes").into_bytes()
}

/// The bytes [`TcpTarget::dribble`] writes: a repeating pattern that is not periodic
/// in 30 (so a lost or repeated piece shows).
pub fn pattern(total: usize) -> Vec<u8> {
    (0..total).map(|i| (i % 251) as u8 ^ 0x5a).collect()
}

/// A UDP echo.
pub struct UdpEcho {
    /// Where the remote should send.
    pub addr: SocketAddr,
    _task: AbortOnDrop,
}

impl UdpEcho {
    /// Binds on `ip` port 0 and echoes every datagram (up to 65535 bytes) to its sender.
    pub async fn start(ip: IpAddr) -> io::Result<UdpEcho> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addr = sock.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                match sock.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        let _ = sock.send_to(&buf[..n], from).await;
                    }
                    // e.g. ICMP port unreachable from an earlier send: keep serving.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        });
        Ok(UdpEcho {
            addr,
            _task: AbortOnDrop(task),
        })
    }
}

/// A TCP address on `ip` where nothing listens: a port bound and released at once, so
/// a dial there is refused.
pub async fn closed_port(ip: IpAddr) -> io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0))?;
    let a = l.local_addr()?;
    drop(l);
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn echo_reports_eof_and_echoes() {
        let mut t = TcpTarget::echo(LO).await.unwrap();
        let mut c = TcpStream::connect(t.addr).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        assert!(
            t.wait_for(Duration::from_secs(2), |l| conn_closed(l, 0))
                .await
        );
        assert_eq!(conn_bytes_in(&t.log, 0), Some(5));
    }

    #[tokio::test]
    async fn reply_and_dribble() {
        let t = TcpTarget::reply_after_eof(LO).await.unwrap();
        let mut c = TcpStream::connect(t.addr).await.unwrap();
        c.write_all(b"abc").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, half_close_reply(3));

        let t = TcpTarget::dribble(LO, 100).await.unwrap();
        let mut c = TcpStream::connect(t.addr).await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, pattern(100));
    }

    #[tokio::test]
    async fn udp_echo_and_closed_port() {
        let e = UdpEcho::start(LO).await.unwrap();
        let s = UdpSocket::bind((LO, 0)).await.unwrap();
        s.send_to(b"ping", e.addr).await.unwrap();
        let mut b = [0u8; 16];
        let (n, _) = s.recv_from(&mut b).await.unwrap();
        assert_eq!(&b[..n], b"ping");
        let a = closed_port(LO).await.unwrap();
        assert!(TcpStream::connect(a).await.is_err());
    }
}
