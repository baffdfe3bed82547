//! The copy buffer of a relay between a socket and a pong stream. It starts small and
//! doubles while reads fill it, up to 64 KiB: a bulk transfer then moves 64 KiB per
//! system call and per pair of data frames (a fixed 8 or 16 KiB buffer costs four to
//! eight times the calls and wake-ups, which is what the proxy path pays for), while
//! thousands of idle streams keep a few KiB each.

/// The largest buffer: a 64 KiB socket read, or every queued chunk of a pong stream that
/// fits.
pub const PUMP_MAX: usize = 64 * 1024;

/// The buffer a relay starts with.
pub const PUMP_START: usize = 4 * 1024;

/// A read buffer that grows with the traffic.
pub struct PumpBuf {
    buf: Vec<u8>,
}

impl Default for PumpBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PumpBuf {
    /// A buffer of [`PUMP_START`] bytes.
    pub fn new() -> Self {
        Self {
            buf: vec![0u8; PUMP_START],
        }
    }

    /// Where the next read goes.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The first `n` bytes of the last read.
    pub fn filled(&self, n: usize) -> &[u8] {
        &self.buf[..n]
    }

    /// Called after a read of `n` bytes has been passed on: a read that filled the
    /// buffer doubles it (up to [`PUMP_MAX`]).
    pub fn used(&mut self, n: usize) {
        if n == self.buf.len() && self.buf.len() < PUMP_MAX {
            self.buf = vec![0u8; (self.buf.len() * 2).min(PUMP_MAX)];
        }
    }

    /// The buffer's size now.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_only_on_full_reads_and_stops_at_the_cap() {
        let mut b = PumpBuf::new();
        b.used(100);
        assert_eq!(b.capacity(), PUMP_START);
        for _ in 0..10 {
            let n = b.capacity();
            b.used(n);
        }
        assert_eq!(b.capacity(), PUMP_MAX);
        assert_eq!(b.space().len(), PUMP_MAX);
    }
}
