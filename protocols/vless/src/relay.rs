//! Copies bytes both ways between two split streams with half closes: the end of one
//! side's input becomes a shutdown of the other side's output. Ends when both
//! directions have ended, or at the first error (which drops both).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Buffer of each direction.
const BUF: usize = 64 * 1024;

/// Copies `rd` to `wr` until `rd` ends, then shuts `wr` down; returns the bytes copied.
pub async fn one_way<R, W>(mut rd: R, mut wr: W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            wr.shutdown().await?;
            return Ok(total);
        }
        // Flushed at once: TLS and WebSocket carriers hold written bytes until then.
        wr.write_all(&buf[..n]).await?;
        wr.flush().await?;
        total += n as u64;
    }
}

/// Relays `a` to `b` and `b` to `a`; returns the bytes moved each way.
pub async fn copy_both<AR, AW, BR, BW>(ard: AR, awr: AW, brd: BR, bwr: BW) -> io::Result<(u64, u64)>
where
    AR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
    BR: AsyncRead + Unpin,
    BW: AsyncWrite + Unpin,
{
    tokio::try_join!(one_way(ard, bwr), one_way(brd, awr))
}

/// Writes `b` and flushes it (TLS and WebSocket carriers hold writes until a flush).
pub async fn send<W: AsyncWrite + Unpin>(wr: &mut W, b: &[u8]) -> io::Result<()> {
    wr.write_all(b).await?;
    wr.flush().await
}

/// Like [`one_way`], but at the end of input the writer is handed back unclosed.
async fn one_way_keep<R, W>(mut rd: R, mut wr: W) -> io::Result<W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Ok(wr);
        }
        wr.write_all(&buf[..n]).await?;
        wr.flush().await?;
    }
}

/// Relays between a local TCP stream (`lrd`/`lwr`: a target or an application) and a
/// carrier (`crd`/`cwr`).
///
/// Carriers with a half close (tcp, tls) get one: the local's end becomes the
/// carrier's. WebSocket carriers have none: closing one ends both directions, and
/// v2ray treats a close as an error that drops what it still buffers. So over them the
/// carrier is closed only once the other direction has ended too, or (when `linger` is
/// given, on the server) once it has had `linger` to end, as v2ray's own server does
/// after a response.
pub async fn relay_carrier<LR, LW, CR, CW>(
    lrd: LR,
    lwr: LW,
    crd: CR,
    cwr: CW,
    half_close: bool,
    linger: Option<std::time::Duration>,
) -> io::Result<()>
where
    LR: AsyncRead + Unpin,
    LW: AsyncWrite + Unpin,
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
{
    if half_close {
        return copy_both(lrd, lwr, crd, cwr).await.map(|_| ());
    }
    let to_carrier = one_way_keep(lrd, cwr);
    let from_carrier = one_way(crd, lwr);
    tokio::pin!(to_carrier);
    tokio::pin!(from_carrier);
    tokio::select! {
        biased;
        r = &mut from_carrier => {
            // The peer ended: what the local still sends goes nowhere useful.
            r?;
            Ok(())
        }
        r = &mut to_carrier => {
            let mut cwr = r?;
            match linger {
                Some(d) => {
                    let _ = tokio::time::timeout(d, &mut from_carrier).await;
                }
                None => {
                    let _ = (&mut from_carrier).await;
                }
            }
            cwr.shutdown().await
        }
    }
}
