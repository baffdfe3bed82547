//! The simulated network: [`SimNet`](simnet::SimNet) over turmoil with a seeded
//! [`LinkModel`](link::LinkModel), fault plans, scenarios with invariants, sweeps, and
//! the reports `tunnelbed sim` writes.

pub mod clock;
pub mod fault;
pub mod flatjson;
pub mod html;
pub mod iplink;
pub mod ledger;
pub mod link;
pub mod profile;
pub mod realtcp;
pub mod record;
pub mod report;
pub mod sabotage;
pub mod scenario;
pub mod scenarios;
pub mod simnet;
pub mod sweep;

pub use scenario::{run, Check, Ctx, RunConfig, RunReport, Scenario};
