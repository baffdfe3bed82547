//! The carrier half of a multiplexer's connection task, generic over [`MuxSession`]:
//! held input, the bounded read, and moving output to the writer task. pong's and
//! h2tunnel's drivers both run their carrier side through it (the first piece of the one
//! generic driver, issue 10 item 2).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::carrier::{carrier_writer, read_some};
use crate::mux_session::MuxSession;

/// Items queued towards the writer task (each a list of pieces).
const OUT_QUEUE: usize = 8;

/// The writer task is gone: the carrier failed on a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteFailed;

/// A connection task's carrier side: the read half, the writer task and what sits
/// between them and the session.
pub struct CarrierPump<C> {
    rd: ReadHalf<C>,
    buf: BytesMut,
    /// Carrier bytes read but not yet taken by the session (it holds its input).
    pending: BytesMut,
    out_tx: mpsc::Sender<Vec<Bytes>>,
    /// Output taken from the session that the writer's queue had no room for.
    unsent: Option<Vec<Bytes>>,
    writer: JoinHandle<()>,
    wake: Arc<Notify>,
}

impl<C> CarrierPump<C>
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    /// Splits `carrier` and starts its writer task; `wake` is notified whenever the
    /// writer frees queue room (the connection task waits on it too).
    pub fn start(carrier: C, wake: Arc<Notify>) -> Self {
        let (rd, wr) = tokio::io::split(carrier);
        let (out_tx, out_rx) = mpsc::channel::<Vec<Bytes>>(OUT_QUEUE);
        let writer = tokio::spawn(carrier_writer::<WriteHalf<C>>(wr, out_rx, wake.clone()));
        Self {
            rd,
            buf: BytesMut::new(),
            pending: BytesMut::new(),
            out_tx,
            unsent: None,
            writer,
            wake,
        }
    }

    /// Feeds held input again while there is some, or while the session holds input (a
    /// call with nothing lets it retry what it holds).
    pub fn feed_held<S: MuxSession>(&mut self, m: &mut S, now: Duration) {
        if !self.pending.is_empty() || m.input_blocked() {
            let n = m.handle_input(now, &self.pending);
            self.pending.advance(n);
        }
    }

    /// Moves what the session queued to the writer, until its queue is full.
    pub fn emit<S: MuxSession>(&mut self, m: &mut S) -> Result<(), WriteFailed> {
        if self.unsent.is_none() {
            self.unsent = transmit(m);
        }
        while let Some(b) = self.unsent.take() {
            match self.out_tx.try_send(b) {
                Ok(()) => self.unsent = transmit(m),
                Err(mpsc::error::TrySendError::Full(b)) => {
                    self.unsent = Some(b);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(WriteFailed),
            }
        }
        Ok(())
    }

    /// Whether output is held back here (the writer's queue is full).
    pub fn has_unsent(&self) -> bool {
        self.unsent.is_some()
    }

    /// Whether the next carrier read may run: nothing held here and the session takes
    /// input.
    pub fn can_read<S: MuxSession>(&self, m: &S) -> bool {
        self.pending.is_empty() && !m.input_blocked()
    }

    /// One carrier read (cancel-safe: nothing is lost if another branch wins).
    pub async fn read(&mut self) -> std::io::Result<usize> {
        read_some(&mut self.rd, &mut self.buf).await
    }

    /// Hands the `n` bytes the last read gave to the session (as `Bytes`, so payloads
    /// can stay slices of the read buffer) and keeps what it did not take.
    pub fn take_read<S: MuxSession>(&mut self, m: &mut S, now: Duration, n: usize) {
        let got = self.buf.split().freeze();
        let used = m.handle_input_bytes(now, &got);
        if used < n {
            self.pending.extend_from_slice(&got[used..n]);
        }
    }

    /// The wake-up the writer task notifies.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Ends the carrier: with `flush`, what is still queued (here and in the session) is
    /// offered to the writer first; then the writer gets `close_delay` to write it all and
    /// shut the carrier down.
    pub async fn close<S: MuxSession>(mut self, m: &mut S, flush: bool, close_delay: Duration) {
        if flush {
            if let Some(b) = self.unsent.take() {
                let _ = self.out_tx.try_send(b);
            }
            while let Some(b) = transmit(m) {
                if self.out_tx.try_send(b).is_err() {
                    break;
                }
            }
        }
        drop(self.out_tx);
        let _ = tokio::time::timeout(close_delay, self.writer).await;
    }
}

/// What the session has queued for the carrier, as one writer item (payloads uncopied).
pub fn transmit<S: MuxSession>(m: &mut S) -> Option<Vec<Bytes>> {
    let mut v = Vec::new();
    (m.poll_transmit_chunks(&mut v) > 0).then_some(v)
}
