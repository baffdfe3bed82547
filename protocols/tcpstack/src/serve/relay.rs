//! The echo and forward services: byte pumps with an idle bound on every wait.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tunnelbed_netio::{DataFault, Net, TcpConn};

use crate::socket::TcpStackStream;

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "idle timeout")
}

/// Whether the simulator's data-path sabotage drops this chunk (never on real networks).
pub(crate) fn dropped(fault: &Option<Arc<DataFault>>, len: usize) -> bool {
    fault.as_ref().is_some_and(|f| f.drop_chunk(len))
}

/// Copies `r` into `w` until `r`'s end of stream, then half-closes `w`.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    idle: Duration,
    fault: &Option<Arc<DataFault>>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0u64;
    loop {
        let n = tokio::time::timeout(idle, r.read(&mut buf))
            .await
            .map_err(|_| idle_error())??;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        if dropped(fault, n) {
            continue;
        }
        tokio::time::timeout(idle, w.write_all(&buf[..n]))
            .await
            .map_err(|_| idle_error())??;
        total += n as u64;
    }
}

/// Lingers (at most `bound`) until the peer acknowledged everything and our FIN, so
/// the reset that dropping the stream sends cannot strand the peer (see
/// [`TcpStackStream::linger`]).
pub(crate) async fn linger(s: &TcpStackStream, bound: Duration) -> io::Result<()> {
    tokio::time::timeout(bound, s.linger())
        .await
        .map_err(|_| idle_error())?
}

/// Echoes every byte back; answers the client's FIN with ours, lingers until it is
/// acknowledged (bounded) and returns, which closes the connection.
/// `fault` is the simulator's data-path sabotage (`Net::data_fault`), `None` elsewhere.
pub async fn echo(
    mut s: TcpStackStream,
    idle: Duration,
    linger_for: Duration,
    fault: Option<Arc<DataFault>>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::time::timeout(idle, s.read(&mut buf))
            .await
            .map_err(|_| idle_error())??;
        if n == 0 {
            s.shutdown().await?;
            return linger(&s, linger_for).await;
        }
        if dropped(&fault, n) {
            continue;
        }
        tokio::time::timeout(idle, s.write_all(&buf[..n]))
            .await
            .map_err(|_| idle_error())??;
    }
}

/// Relays `s` to `host:port` dialled on `net`, both directions, each half-closed when
/// its source ends. A failure of either side ends both (the target is aborted so its
/// peer sees a reset; dropping our stream resets the client).
pub async fn forward<N: Net>(
    net: &N,
    s: TcpStackStream,
    host: &str,
    port: u16,
    idle: Duration,
    linger_for: Duration,
) -> io::Result<()> {
    let addrs = tokio::time::timeout(idle, net.resolve(host, port))
        .await
        .map_err(|_| idle_error())??;
    let addr = addrs
        .first()
        .copied()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "target resolved to nothing"))?;
    let t = tokio::time::timeout(idle, net.connect_tcp(addr))
        .await
        .map_err(|_| idle_error())??;
    let (mut cr, mut cw) = tokio::io::split(s);
    let (mut tr, mut tw) = tokio::io::split(t);
    let fault = net.data_fault();
    let r = tokio::try_join!(
        pump(&mut cr, &mut tw, idle, &fault),
        pump(&mut tr, &mut cw, idle, &fault)
    );
    if r.is_err() {
        // The target learns of the failure as a reset, not as a clean end; the
        // client's stream resets when it is dropped.
        tr.unsplit(tw).abort();
        return r.map(|_| ());
    }
    linger(&cr.unsplit(cw), linger_for).await
}
