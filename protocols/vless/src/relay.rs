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
        wr.write_all(&buf[..n]).await?;
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
