//! [`DataFault`]: a deliberate loss of application data on a driver's data path.
//!
//! Only the simulator hands one out (its data-path sabotage, see `tunnelbed-sim`'s
//! `sabotage` module), through [`crate::Net::data_fault`]; real networks have none. It
//! exists to prove that the scenarios' checks catch a driver or a transport that loses
//! bytes: a check that has never been seen failing is not known to work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Drops exactly one chunk of data, the first one offered after `after` bytes have
/// passed through the points that consult it.
#[derive(Debug)]
pub struct DataFault {
    after: u64,
    passed: AtomicU64,
    fired: AtomicBool,
}

impl DataFault {
    /// A fault that fires once, after `after` bytes went through.
    pub fn new(after: u64) -> Self {
        Self {
            after,
            passed: AtomicU64::new(0),
            fired: AtomicBool::new(false),
        }
    }

    /// Called with each chunk of `len` bytes about to be delivered or sent: true when this
    /// chunk must be dropped (once per fault).
    pub fn drop_chunk(&self, len: usize) -> bool {
        if len == 0 || self.fired.load(Ordering::SeqCst) {
            return false;
        }
        let before = self.passed.fetch_add(len as u64, Ordering::SeqCst);
        before >= self.after && !self.fired.swap(true, Ordering::SeqCst)
    }

    /// Whether the fault has dropped its chunk.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_one_chunk_after_the_threshold() {
        let f = DataFault::new(100);
        assert!(!f.drop_chunk(60));
        assert!(!f.drop_chunk(60)); // 60 passed before this one
        assert!(!f.fired());
        assert!(f.drop_chunk(10)); // 120 passed
        assert!(f.fired());
        assert!(!f.drop_chunk(10));
        assert!(!f.drop_chunk(0));
    }
}
