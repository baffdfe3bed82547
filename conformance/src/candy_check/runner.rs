//! How `check candy` plugs into the framework's live runner ([`crate::framework::Live`]):
//! every case against the server, each with fake clients of its own (their addresses
//! from the case's place in the list) and under a time limit of ten waits.

use std::time::Duration;

use super::cases::{self, Case};
use super::ctx::{CheckConfig, Ctx};
use crate::framework::{LiveCheck, NetworkRun};

impl LiveCheck for Ctx {
    type Config = CheckConfig;

    fn cases() -> Vec<Case> {
        cases::all()
    }

    fn plan(cfg: &CheckConfig) -> (NetworkRun, &[&'static str]) {
        let run = NetworkRun {
            checker: "candy check",
            target: cfg.server.to_url(),
            strict: cfg.strict,
            wait: cfg.wait,
            limit: cfg.wait * 10 + Duration::from_secs(2),
        };
        (run, &cfg.cases)
    }

    /// The case's index in the list picks its addresses (0 for the preflight).
    fn context(cfg: &CheckConfig, id: &'static str) -> Self {
        let index = cases::all().iter().position(|c| c.id == id).unwrap_or(0);
        Ctx::new(cfg.clone(), id, index as u32)
    }

    /// A server that cannot be reached fails every case at once, with the reason.
    async fn preflight(self) -> Result<(), String> {
        self.connect().await.map(|_| ())
    }
}
