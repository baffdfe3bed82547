//! Faults a scenario schedules on the simulated network: partitions, holds (stalls),
//! swizzle-clogging, crashes and restarts. Applied by [`crate::scenario::Ctx::drive`].

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One network or host fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Drop everything between two hosts, both ways.
    Partition(String, String),
    /// Drop everything from the first host to the second.
    PartitionOneway(String, String),
    /// End a partition (both ways).
    Repair(String, String),
    /// Hold messages between two hosts (a stall: nothing is lost).
    Hold(String, String),
    /// Release held messages.
    Release(String, String),
    /// Stop a host (its state is lost).
    Crash(String),
    /// Restart a crashed host from its start function.
    Bounce(String),
}

/// A fault at a point in simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub action: FaultAction,
}

/// A schedule of faults, kept sorted by time.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// The faults in time order.
    pub faults: Vec<Fault>,
}

impl FaultPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a fault.
    pub fn at(mut self, at: Duration, action: FaultAction) -> Self {
        self.faults.push(Fault { at, action });
        self.faults.sort_by_key(|f| f.at);
        self
    }

    /// The echo scenarios' outage on faulty profiles: `client` and `server` partitioned
    /// at 200 ms and repaired at 500 ms, then `server` crashed at 700 ms and restarted at
    /// 1 s; a client that retries must carry every request through both.
    pub fn partition_then_restart(client: &str, server: &str) -> Self {
        let ms = Duration::from_millis;
        Self::new()
            .at(
                ms(200),
                FaultAction::Partition(client.into(), server.into()),
            )
            .at(ms(500), FaultAction::Repair(client.into(), server.into()))
            .at(ms(700), FaultAction::Crash(server.into()))
            .at(ms(1000), FaultAction::Bounce(server.into()))
    }

    /// Swizzle-clogging: between `from` and `to`, randomly hold and release the link
    /// between `a` and `b` in slices of up to `max_slice` (from the seed).
    pub fn swizzle(
        mut self,
        a: &str,
        b: &str,
        from: Duration,
        to: Duration,
        max_slice: Duration,
        seed: u64,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a5a_5a5a);
        let mut t = from;
        let mut held = false;
        let max_ms = max_slice.as_millis().max(2) as u64;
        while t < to {
            let action = if held {
                FaultAction::Release(a.into(), b.into())
            } else {
                FaultAction::Hold(a.into(), b.into())
            };
            self.faults.push(Fault { at: t, action });
            held = !held;
            t += Duration::from_millis(rng.gen_range(1..max_ms));
        }
        if held {
            self.faults.push(Fault {
                at: to,
                action: FaultAction::Release(a.into(), b.into()),
            });
        }
        self.faults.sort_by_key(|f| f.at);
        self
    }

    /// When the last fault happens (zero for none): liveness is measured from here.
    pub fn quiet_after(&self) -> Duration {
        self.faults.last().map(|f| f.at).unwrap_or_default()
    }
}
