//! Small pieces any scenario's hosts and applications use inside the simulation: the
//! simulated clock, seeded random payloads, and waiting (bounded) until the hosts have
//! let go of everything.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

pub use crate::clock::now;

/// `n` random bytes from the run's seeded `rng`, one draw per byte (the order every
/// scenario has always drawn its payloads in, so their traces stay as they were).
pub fn random_bytes<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.gen()).collect()
}

/// `count` payloads of 1 to `max_len` random bytes each (length drawn first, then the
/// bytes), for request/answer scenarios.
pub fn random_payloads<R: Rng + ?Sized>(rng: &mut R, count: usize, max_len: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            let n = rng.gen_range(1..=max_len);
            random_bytes(rng, n)
        })
        .collect()
}

/// How often [`settle`] looks again.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Looks at the hosts with `probe` every 100 ms until it says they are done (the first
/// value) or `limit` has passed; returns what the last look saw and how long it took. The
/// no-leak checks of a scenario judge what this returns, so a leak shows as a count
/// that never went to zero, never as a hang.
pub async fn settle<T, F, Fut>(limit: Duration, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (bool, T)>,
{
    let since = now();
    loop {
        let (done, seen) = probe().await;
        if done || now() > since + limit {
            return (seen, now() - since);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}
