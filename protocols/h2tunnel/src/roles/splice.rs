//! Joins a TCP connection and a tunnel stream.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tunnelbed_netio::TcpConn;

use crate::driver::TunnelStream;

/// Copies both ways with half-closes (TCP FIN <-> tunnel FIN); an error on either side
/// resets both (RST on the TCP connection, RST on the stream), so neither end mistakes a
/// failure for a clean end of data. When nothing moves either way for `idle`, both are
/// reset too: a target that took the connection and never answers (or a peer that went
/// away silently) must end the stream with an error at the application, not hang it.
pub async fn splice<S: TcpConn>(tcp: S, s: TunnelStream, idle: Duration) {
    let (mut tr, mut tw) = tokio::io::split(tcp);
    let (mut sr, mut sw) = tokio::io::split(s);
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let failed = {
        let up = pump(&mut tr, &mut sw, start, &last);
        let down = pump(&mut sr, &mut tw, start, &last);
        let watchdog = async {
            loop {
                let at = start + Duration::from_millis(last.load(Ordering::SeqCst)) + idle;
                tokio::time::sleep_until(at).await;
                let quiet = start.elapsed() - Duration::from_millis(last.load(Ordering::SeqCst));
                if quiet >= idle {
                    return io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing moved either way for {idle:?}"),
                    );
                }
            }
        };
        tokio::pin!(up, down, watchdog);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                biased;
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(e) => break Some(e),
                },
                r = &mut down, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(e) => break Some(e),
                },
                e = &mut watchdog => break Some(e),
            }
            if up_done && down_done {
                break None;
            }
        }
    };
    if let Some(e) = failed {
        tracing::debug!("splice: {e}; resetting both sides");
        tr.unsplit(tw).abort();
        sr.unsplit(sw).reset();
    }
}

/// Copies `from` into `to` until the end of input, then shuts `to` down; every chunk
/// moved is noted in `last` (milliseconds since `start`).
async fn pump<R, W>(from: &mut R, to: &mut W, start: Instant, last: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        last.store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
    }
}
