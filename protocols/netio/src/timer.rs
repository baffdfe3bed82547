//! The one timer wait every driver's `select!` uses.

use tokio::time::Instant;

/// Sleeps until `at` (`tokio::time`, virtual in the simulator); never returns for `None`,
/// so a `select!` branch on it is simply idle while the machine has no timer.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
