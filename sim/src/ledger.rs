//! [`FlowLedger`]: what each flow sent and what arrived, hashed, so a scenario can prove
//! integrity (bytes out equal bytes in) and that nothing is left open.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

#[derive(Default)]
struct Flow {
    sent: Sha256,
    received: Sha256,
    sent_bytes: u64,
    received_bytes: u64,
    closed: bool,
}

/// Per-flow running hashes of sent and received bytes, shared by the hosts of a run.
#[derive(Clone, Default)]
pub struct FlowLedger {
    flows: Arc<Mutex<BTreeMap<String, Flow>>>,
    /// The leak sabotage: the next close is ignored (see [`FlowLedger::keep_first_close_open`]).
    skip_close: Arc<std::sync::atomic::AtomicBool>,
}

/// The verdict on one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowResult {
    /// Flow name.
    pub name: String,
    /// Bytes the source produced.
    pub sent_bytes: u64,
    /// Bytes the sink got.
    pub received_bytes: u64,
    /// Hashes agree and byte counts agree.
    pub intact: bool,
    /// The flow was closed by the scenario.
    pub closed: bool,
}

impl FlowLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, name: &str, f: impl FnOnce(&mut Flow) -> R) -> R {
        let mut m = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        f(m.entry(name.to_string()).or_default())
    }

    /// The leak sabotage: the first flow closed after this call stays open, as if its
    /// application had forgotten to close it, so the no-leak check must fail.
    pub fn keep_first_close_open(&self) {
        self.skip_close
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Records bytes the source of `flow` produced.
    pub fn sent(&self, flow: &str, data: &[u8]) {
        self.with(flow, |f| {
            f.sent.update(data);
            f.sent_bytes += data.len() as u64;
        })
    }

    /// Records bytes the sink of `flow` received.
    pub fn received(&self, flow: &str, data: &[u8]) {
        self.with(flow, |f| {
            f.received.update(data);
            f.received_bytes += data.len() as u64;
        })
    }

    /// Marks `flow` finished (its sink saw the end).
    pub fn close(&self, flow: &str) {
        if self
            .skip_close
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        self.with(flow, |f| f.closed = true)
    }

    /// Every flow's verdict, in name order.
    pub fn results(&self) -> Vec<FlowResult> {
        let m = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .map(|(name, f)| FlowResult {
                name: name.clone(),
                sent_bytes: f.sent_bytes,
                received_bytes: f.received_bytes,
                intact: f.sent_bytes == f.received_bytes
                    && f.sent.clone().finalize() == f.received.clone().finalize(),
                closed: f.closed,
            })
            .collect()
    }

    /// Total bytes received over all flows.
    pub fn total_received(&self) -> u64 {
        self.results().iter().map(|r| r.received_bytes).sum()
    }
}

/// Deterministic bytes for flow `tag` of run `seed`: both ends of a flow can make (and
/// check) them without sending a reference copy.
pub fn payload(seed: u64, tag: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
