//! The carrier's reader and batching writer (see the module above).

use std::io;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

/// Most bytes the carrier writer gathers into one write: large enough that bulk
/// transfers pay one system call per quarter megabyte, small enough that a gathered
/// write does not hold up the next item for long.
pub const WRITE_BATCH: usize = 256 * 1024;

/// Most pieces handed to one vectored write (well under every platform's `IOV_MAX`).
pub const MAX_IOV: usize = 64;

/// Bytes one carrier read takes at most: several full frames per read, so a busy
/// carrier costs few wake-ups, while a driver that holds input stops after one read.
pub const READ_BUF: usize = 64 * 1024;

/// The carrier writer task: writes every queued item, in order, until `rx` closes, then
/// shuts the carrier down. Items already queued are gathered (up to [`WRITE_BATCH`]
/// bytes) into one write; `wake` is notified whenever queue room is freed, so a
/// connection task holding output can go on. Returns at the first write error (the
/// connection task then sees the queue closed).
pub async fn carrier_writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    wake: Arc<Notify>,
) {
    let vectored = wr.is_write_vectored();
    let mut batch = BytesMut::new();
    let mut pieces: Vec<Bytes> = Vec::new();
    while let Some(first) = rx.recv().await {
        wake.notify_one();
        let mut len: usize = first.iter().map(Bytes::len).sum();
        pieces.extend(first);
        let mut gathered = false;
        while len < WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => {
                    len += more.iter().map(Bytes::len).sum::<usize>();
                    pieces.extend(more);
                    gathered = true;
                }
                Err(_) => break,
            }
        }
        if gathered {
            wake.notify_one();
        }
        let r = if vectored || pieces.len() == 1 {
            // A socket takes the pieces as they are (one writev), nothing copied.
            write_pieces(&mut wr, &mut pieces).await
        } else {
            // One contiguous write (a carrier that frames each write, such as ws, sends
            // one message); the buffer is kept for the next batch.
            batch.clear();
            for p in pieces.drain(..) {
                batch.extend_from_slice(&p);
            }
            wr.write_all(&batch).await
        };
        pieces.clear();
        if r.is_err() {
            return;
        }
        if rx.is_empty() && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// One read of at most [`READ_BUF`] bytes into `buf`'s spare room (reusing its
/// allocation when nothing still holds a slice of it). `Ok(0)` is the end of the carrier.
pub async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(READ_BUF);
    let mut lim = (&mut *buf).limit(READ_BUF);
    rd.read_buf(&mut lim).await
}

/// Writes every piece in order with vectored writes (a writer that does not take vectors
/// writes the first piece per call); pieces are advanced past what was written.
pub async fn write_pieces<W: AsyncWrite + Unpin>(
    wr: &mut W,
    pieces: &mut [Bytes],
) -> io::Result<()> {
    let mut i = 0;
    while i < pieces.len() {
        if pieces[i].is_empty() {
            i += 1;
            continue;
        }
        let n = {
            let iov: Vec<io::IoSlice<'_>> = pieces[i..]
                .iter()
                .take(MAX_IOV)
                .map(|p| io::IoSlice::new(p))
                .collect();
            wr.write_vectored(&iov).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 && i < pieces.len() {
            let k = pieces[i].len().min(left);
            pieces[i].advance(k);
            left -= k;
            if pieces[i].is_empty() {
                i += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that records each write call and takes at most `cap` bytes per call.
    struct Recorder {
        writes: Vec<Vec<u8>>,
        vectored: bool,
        cap: usize,
        flushes: usize,
        shut: bool,
    }

    impl Recorder {
        fn new(vectored: bool, cap: usize) -> Self {
            Self {
                writes: Vec::new(),
                vectored,
                cap,
                flushes: 0,
                shut: false,
            }
        }

        fn all(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.cap);
            this.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut one = Vec::new();
            for b in bufs {
                let room = this.cap - one.len();
                one.extend_from_slice(&b[..b.len().min(room)]);
                if one.len() == this.cap {
                    break;
                }
            }
            let n = one.len();
            this.writes.push(one);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    fn piece(tag: u8, n: usize) -> Bytes {
        Bytes::from(vec![tag; n])
    }

    /// Short writes resume in the right piece at the right offset; empty pieces are
    /// skipped; every byte arrives once, in order.
    #[tokio::test]
    async fn write_pieces_survives_short_writes() {
        let mut pieces = vec![piece(1, 5), Bytes::new(), piece(2, 7), piece(3, 1)];
        let want: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        let mut w = Recorder::new(true, 3);
        write_pieces(&mut w, &mut pieces).await.unwrap();
        assert_eq!(w.all(), want);
        assert!(w.writes.iter().all(|x| x.len() <= 3));
        assert!(pieces.iter().all(Bytes::is_empty));
    }

    /// Items queued before the writer runs go out in one write: a vectored write on a
    /// socket-like carrier, one contiguous write on a framing one; then a flush, and a
    /// shutdown when the queue closes.
    #[tokio::test]
    async fn queued_items_are_gathered_into_one_write() {
        for vectored in [true, false] {
            let (tx, rx) = mpsc::channel(8);
            for i in 0..4u8 {
                tx.send(vec![piece(i, 100), piece(i + 10, 50)])
                    .await
                    .unwrap();
            }
            drop(tx);
            let mut w = Recorder::new(vectored, usize::MAX);
            carrier_writer(&mut w, rx, Arc::new(Notify::new())).await;
            assert_eq!(w.writes.len(), 1, "vectored={vectored}");
            assert_eq!(w.all().len(), 600);
            assert_eq!(&w.all()[..100], &[0u8; 100][..]);
            assert_eq!(w.flushes, 1);
            assert!(w.shut);
        }
    }

    /// A batch stops growing at [`WRITE_BATCH`]: the rest goes in the next write.
    #[tokio::test]
    async fn a_batch_is_bounded() {
        let (tx, rx) = mpsc::channel(8);
        for i in 0..3u8 {
            tx.send(vec![piece(i, WRITE_BATCH / 2)]).await.unwrap();
        }
        drop(tx);
        let mut w = Recorder::new(false, usize::MAX);
        carrier_writer(&mut w, rx, Arc::new(Notify::new())).await;
        let lens: Vec<usize> = w.writes.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![WRITE_BATCH, WRITE_BATCH / 2]);
    }

    /// `read_some` reads at most [`READ_BUF`] bytes per call and appends to the buffer.
    #[tokio::test]
    async fn read_some_is_bounded() {
        let data = vec![7u8; READ_BUF + 10];
        let mut rd: &[u8] = &data;
        let mut buf = BytesMut::new();
        assert_eq!(read_some(&mut rd, &mut buf).await.unwrap(), READ_BUF);
        assert_eq!(read_some(&mut rd, &mut buf).await.unwrap(), 10);
        assert_eq!(read_some(&mut rd, &mut buf).await.unwrap(), 0);
        assert_eq!(buf.len(), READ_BUF + 10);
    }
}
