//! Small-request latency at many concurrent connections, for benchmarks that put a proxy
//! (or a relay chain) between a client and an echo target: `streams` connections open at
//! once, each doing `exchanges` timed [`MSG`]-byte request / answer round trips back to
//! back (a closed loop, every stream at the same time). The method `bench pong` uses,
//! made independent of any one bench's stack type so `bench vless` measures the same way.
//! Percentiles come from [`super::stats`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stats::percentile;

/// Bytes of each request and answer.
pub const MSG: usize = 100;

/// Backlog of the echo target's listener.
pub const BACKLOG: u32 = 4096;

/// How long one connection set-up, or one exchange, may take before the stream counts
/// as failed.
pub const WAIT: Duration = Duration::from_secs(30);

/// How a stream reaches the echo target.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Where to connect (`None`: the target itself).
    pub via: Option<SocketAddr>,
    /// Whether `via` is a SOCKS5 server to ask for the target (CONNECT, no auth).
    pub socks: bool,
}

impl Route {
    /// Connects to `target` along the route, `TCP_NODELAY` on.
    pub async fn connect(&self, target: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let mut s = tokio::net::TcpStream::connect(self.via.unwrap_or(target)).await?;
        s.set_nodelay(true)?;
        if self.socks {
            let (code, _) =
                tunnelbed_socks5::handshake::connect(&mut s, &tunnelbed_socks5::Addr::Ip(target))
                    .await?;
            if code != 0 {
                return Err(io::Error::other(format!("SOCKS5 reply {code}")));
            }
        }
        Ok(s)
    }
}

/// An echo target on loopback: every [`MSG`]-byte request is answered with [`MSG`] bytes
/// (each XOR 0xA5), until the client ends. Runs on the current tokio runtime.
pub async fn start_echo() -> io::Result<SocketAddr> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(([127, 0, 0, 1], 0).into())?;
    let l = sock.listen(BACKLOG)?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut b = [0u8; MSG];
                while s.read_exact(&mut b).await.is_ok() {
                    for x in b.iter_mut() {
                        *x ^= 0xA5;
                    }
                    if s.write_all(&b).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// One round trip on stream `stream`, the `k`-th; the answer is checked byte for byte.
async fn exchange(s: &mut tokio::net::TcpStream, stream: usize, k: usize) -> io::Result<()> {
    let mut req = [0u8; MSG];
    req[..4].copy_from_slice(&(stream as u32).to_le_bytes());
    req[4..8].copy_from_slice(&(k as u32).to_le_bytes());
    for (i, x) in req.iter_mut().enumerate().skip(8) {
        *x = (i + stream + k) as u8;
    }
    s.write_all(&req).await?;
    let mut ans = [0u8; MSG];
    s.read_exact(&mut ans).await?;
    if ans.iter().zip(req.iter()).any(|(a, r)| *a != r ^ 0xA5) {
        return Err(io::Error::other("wrong answer"));
    }
    Ok(())
}

/// What one or more measurements found (samples pooled).
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Round-trip times of the timed exchanges, ms.
    pub rtt_ms: Vec<f64>,
    /// Per stream: connect + SOCKS5 + the first (untimed) exchange, all streams at once, ms.
    pub open_ms: Vec<f64>,
    /// Streams that failed to open or to finish their exchanges.
    pub failures: usize,
    /// Wall time from the common start to the last stream's end, summed over rounds.
    pub wall: Duration,
}

impl Sample {
    /// Adds another round's figures.
    pub fn absorb(&mut self, other: Sample) {
        self.rtt_ms.extend(other.rtt_ms);
        self.open_ms.extend(other.open_ms);
        self.failures += other.failures;
        self.wall += other.wall;
    }

    /// The p-th percentile of the round-trip times, ms (nearest rank).
    pub fn rtt(&self, p: f64) -> f64 {
        percentile(&self.rtt_ms, p)
    }

    /// The p-th percentile of the open times, ms (nearest rank).
    pub fn open(&self, p: f64) -> f64 {
        percentile(&self.open_ms, p)
    }

    /// Timed exchanges per second of wall time.
    pub fn rate(&self) -> f64 {
        self.rtt_ms.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// `streams` connections along `route` to `echo`, opened at once; after all are open (or
/// failed), each does `exchanges` timed round trips. Every wait is bounded by [`WAIT`].
pub async fn measure(route: Route, echo: SocketAddr, streams: usize, exchanges: usize) -> Sample {
    let barrier = Arc::new(tokio::sync::Barrier::new(streams + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..streams {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let t0 = Instant::now();
            let opened = tokio::time::timeout(WAIT, async {
                let mut s = route.connect(echo).await?;
                exchange(&mut s, i, 0).await?;
                io::Result::Ok(s)
            })
            .await;
            let open_ms = t0.elapsed().as_secs_f64() * 1e3;
            barrier.wait().await;
            let mut s = match opened {
                Ok(Ok(s)) => s,
                _ => return Err(()),
            };
            let mut rtts = Vec::with_capacity(exchanges);
            for k in 1..=exchanges {
                let t = Instant::now();
                match tokio::time::timeout(WAIT, exchange(&mut s, i, k)).await {
                    Ok(Ok(())) => rtts.push(t.elapsed().as_secs_f64() * 1e3),
                    _ => return Err(()),
                }
            }
            Ok((open_ms, rtts))
        });
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let mut out = Sample::default();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((o, rtts))) => {
                out.open_ms.push(o);
                out.rtt_ms.extend(rtts);
            }
            _ => out.failures += 1,
        }
    }
    out.wall = t0.elapsed();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct to the echo target: every stream opens and every exchange is timed; a
    /// route through a dead SOCKS5 address fails every stream.
    #[test]
    fn measures_every_exchange_and_counts_failures() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let echo = start_echo().await.unwrap();
            let direct = Route {
                via: None,
                socks: false,
            };
            let s = measure(direct, echo, 8, 5).await;
            assert_eq!((s.failures, s.rtt_ms.len(), s.open_ms.len()), (0, 40, 8));
            assert!(s.rtt(50.0) > 0.0 && s.rtt(99.0) >= s.rtt(50.0));
            // A "SOCKS5 server" that closes every connection at once: every stream fails.
            let closer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let via = closer.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((c, _)) = closer.accept().await {
                    drop(c);
                }
            });
            let s = measure(
                Route {
                    via: Some(via),
                    socks: true,
                },
                echo,
                3,
                2,
            )
            .await;
            assert_eq!((s.failures, s.rtt_ms.len()), (3, 0));
        });
    }
}
