//! [`Kcp`] behind the driver trait of `tunnelbed-netio`, so the generic driver turns each
//! session into a byte stream (stream mode) over any `Net`.

use std::time::Duration;

use tunnelbed_netio::arq::DatagramArq;

use crate::kcp::Kcp;
use crate::wire::InputError;

impl DatagramArq for Kcp {
    type Error = String;

    fn input(&mut self, now: Duration, datagram: &[u8]) -> Result<(), String> {
        Kcp::input(self, now, datagram).map_err(|e: InputError| e.to_string())
    }
    fn update(&mut self, now: Duration) {
        Kcp::update(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        Kcp::poll_transmit(self)
    }
    fn poll_timeout(&mut self, now: Duration) -> Duration {
        Kcp::poll_timeout(self, now)
    }
    fn send(&mut self, data: &[u8]) -> Result<(), String> {
        // Large writes are split so message mode never exceeds the fragment limit.
        for chunk in data.chunks(self.mss() * 64) {
            Kcp::send(self, chunk).map_err(|e| e.to_string())?;
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
