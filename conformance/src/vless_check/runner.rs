//! How `check vless` plugs into the framework's live runner ([`crate::framework::Live`]):
//! every case against the server, each on connections of its own and under a time limit
//! of eight waits, after one preflight connection.

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
            checker: "vless check",
            target: cfg.server.to_string(),
            strict: cfg.strict,
            wait: cfg.wait,
            limit: cfg.wait * 8 + Duration::from_secs(2),
        };
        (run, &cfg.cases)
    }

    fn context(cfg: &CheckConfig, id: &'static str) -> Self {
        Ctx {
            cfg: cfg.clone(),
            id,
        }
    }

    async fn preflight(self) -> Result<(), String> {
        self.conn().await.map(|_| ())
    }
}
