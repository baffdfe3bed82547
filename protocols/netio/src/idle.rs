//! A connection's idle bound (v2ray's `connIdle` policy, 300 s by default): a relay that
//! moved no byte either way for that long is ended with `TimedOut`. Without it a carrier
//! whose server crashed stays open for good on a client that only reads: a crashed host
//! sends nothing, not even a reset, and a reader sends nothing that could draw one (the
//! `vless-server-crash` and `pong-remote-crash` scenarios over real TCP hung this way).
//! Shared by VLESS's client and server and pong's local and remote.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// v2ray's default `connIdle`.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

/// When a connection last read a byte on either side (shared by its [`Touching`] halves).
#[derive(Clone, Debug)]
pub struct Activity {
    origin: Instant,
    /// Milliseconds from `origin` to the newest read.
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// Activity starting now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Notes bytes moving now.
    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// `io` whose reads count as activity.
    pub fn wrap<T>(&self, io: T) -> Touching<T> {
        Touching {
            io,
            activity: self.clone(),
        }
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Returns once nothing was read (or [touched](Self::touch)) for `idle`: one timer
    /// per idle period, for relays that keep their own watchdog.
    pub async fn until_idle(&self, idle: Duration) {
        until_all_idle(&[self], idle).await
    }
}

/// Returns once none of `all` was touched for `idle` (one timer per idle period): a pong
/// stream is idle only when its carrier fell silent too.
pub async fn until_all_idle(all: &[&Activity], idle: Duration) {
    loop {
        let Some(due) = all.iter().map(|a| a.last() + idle).max() else {
            return;
        };
        if Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}

/// Runs `relay` until it ends or `activity` saw no byte for `idle`; then `TimedOut`.
pub async fn bounded<T>(
    activity: &Activity,
    idle: Duration,
    relay: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::select! {
        biased;
        r = relay => r,
        () = activity.until_idle(idle) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no byte either way for {} s", idle.as_secs_f64()),
        )),
    }
}

/// A stream (or a read half) whose reads stamp an [`Activity`]; writes pass through.
#[derive(Debug)]
pub struct Touching<T> {
    io: T,
    activity: Activity,
}

impl<T> Touching<T> {
    /// The wrapped stream (to reset or shut it down after the relay).
    pub fn into_inner(self) -> T {
        self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Touching<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touching<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A relay that reads on while bytes keep coming outlives the bound; once the peer
    /// falls silent it ends with `TimedOut` one bound after the last byte.
    #[tokio::test(start_paused = true)]
    async fn a_silent_relay_ends_one_bound_after_its_last_byte() {
        let (a, mut b) = tokio::io::duplex(64);
        let act = Activity::new();
        let idle = Duration::from_secs(10);
        let t0 = Instant::now();
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                b.write_all(b"x").await.unwrap();
            }
            // Silent from 30 s on, but still open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(b);
        });
        let mut rd = act.wrap(a);
        let r = bounded(&act, idle, async {
            let mut buf = [0u8; 8];
            let mut n = 0;
            loop {
                n += rd.read(&mut buf).await?;
                if n > 5 {
                    return Ok(n);
                }
            }
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            t0.elapsed().as_secs(),
            40,
            "30 s of bytes, then the 10 s bound"
        );
        feeder.abort();
    }

    /// A stream quiet for the bound is not idle while its carrier still delivers (its
    /// bytes may be queued behind others'); once both are quiet it is.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_on_a_busy_carrier_is_not_idle() {
        let (stream, carrier) = (Activity::new(), Activity::new());
        let idle = Duration::from_secs(10);
        let t0 = Instant::now();
        let busy = {
            let carrier = carrier.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    carrier.touch();
                }
            })
        };
        until_all_idle(&[&stream, &carrier], idle).await;
        assert_eq!(
            t0.elapsed().as_secs(),
            30,
            "the carrier's last byte at 20 s, then the 10 s bound"
        );
        busy.await.unwrap();
    }

    /// A relay that ends on its own is not cut.
    #[tokio::test(start_paused = true)]
    async fn a_relay_that_ends_keeps_its_result() {
        let act = Activity::new();
        let r = bounded(&act, Duration::from_secs(1), async { Ok(7) }).await;
        assert_eq!(r.unwrap(), 7);
    }
}
