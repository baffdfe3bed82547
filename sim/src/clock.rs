//! The simulated clock, read the one way every part of the simulator reads it.

use std::time::Duration;

/// The simulated time since the run started (zero outside a simulation): what the
/// network, the real-TCP stacks and the scenarios stamp events with.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}
