//! [`Kcp`] behind the driver trait of `tunnelbed-netio`, so the generic driver turns each
//! session into a byte stream (stream mode) over any `Net`.

use std::time::Duration;

use tunnelbed_netio::arq::DatagramArq;

use crate::kcp::{Kcp, SendError};
use crate::wire::InputError;

/// Why the driver's call into KCP failed, typed for the driver's logs.
#[derive(Debug, thiserror::Error)]
pub enum ArqError {
    /// A datagram that is not valid KCP (segments before the bad one took effect).
    #[error(transparent)]
    Input(#[from] InputError),
    /// Application bytes KCP would not queue.
    #[error(transparent)]
    Send(#[from] SendError),
}

impl DatagramArq for Kcp {
    type Error = ArqError;

    fn handle_input(&mut self, now: Duration, datagram: &[u8]) -> Result<(), ArqError> {
        Ok(Kcp::handle_input(self, now, datagram)?)
    }
    fn handle_timeout(&mut self, now: Duration) {
        Kcp::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        Kcp::poll_transmit(self)
    }
    fn poll_timeout(&mut self, now: Duration) -> Duration {
        Kcp::poll_timeout(self, now)
    }
    fn send(&mut self, data: &[u8]) -> Result<(), ArqError> {
        // Large writes are split so message mode never exceeds the fragment limit.
        for chunk in data.chunks(self.mss() * 64) {
            Kcp::send(self, chunk)?;
        }
        Ok(())
    }
    fn recv(&mut self, out: &mut Vec<u8>) -> bool {
        match self.recv_bytes() {
            Some(b) => {
                out.extend_from_slice(&b);
                true
            }
            None => false,
        }
    }
    fn can_send(&self) -> bool {
        // Keep about two send windows queued: enough to fill the pipe, bounded memory.
        self.waitsnd() < 2 * self.snd_wnd() as usize
    }
    fn all_acked(&self) -> bool {
        Kcp::all_acked(self)
    }
    fn is_dead(&self) -> bool {
        Kcp::is_dead(self)
    }
    fn flush_now(&mut self) {
        Kcp::flush(self)
    }
}
