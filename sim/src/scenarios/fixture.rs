//! Small pieces any scenario's hosts and applications use inside the simulation: the
//! simulated clock, and waiting (bounded) until the hosts have let go of everything.

use std::future::Future;
use std::time::Duration;

pub use crate::clock::now;

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
