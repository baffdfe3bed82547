//! A link for tests in virtual time: packets delayed, jittered (so reordered), lost and
//! duplicated from a seeded RNG.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Link faults.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    pub loss: f64,
    pub dup: f64,
    pub delay_ms: u64,
    pub jitter_ms: u64,
}

/// Packets in flight, keyed by delivery time and a counter (stable order).
pub(crate) struct Link {
    rng: ChaCha8Rng,
    faults: Faults,
    pub queue: BTreeMap<(Duration, u64), (bool, Bytes)>,
    n: u64,
    pub lost: u64,
    pub carried: u64,
}

impl Link {
    pub(crate) fn new(seed: u64, faults: Faults) -> Link {
        Link {
            rng: ChaCha8Rng::seed_from_u64(seed),
            faults,
            queue: BTreeMap::new(),
            n: 0,
            lost: 0,
            carried: 0,
        }
    }

    /// Takes the next packet due at or before `now`: (towards B, bytes).
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<(bool, Bytes)> {
        let (&k, _) = self.queue.iter().next()?;
        if k.0 > now {
            return None;
        }
        self.queue.remove(&k)
    }

    pub(crate) fn send(&mut self, now: Duration, to_b: bool, p: Bytes) {
        self.carried += 1;
        if self.rng.gen_bool(self.faults.loss) {
            self.lost += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let j = self.rng.gen_range(0..=self.faults.jitter_ms * 1000);
            let at = now + Duration::from_millis(self.faults.delay_ms) + Duration::from_micros(j);
            self.n += 1;
            self.queue.insert((at, self.n), (to_b, p.clone()));
        }
    }

    pub(crate) fn next_due(&self) -> Option<Duration> {
        self.queue.keys().next().map(|k| k.0)
    }
}
