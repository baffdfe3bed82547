//! `tunnelbed check pong`: an h2spec-style conformance checker for any pong remote
//! (seed 001). It plays scripted cases against the remote over a carrier (`tcp://`,
//! `tls://`, `ws://`, `wss://`), one connection per case, and reports PASS / FAIL /
//! WARN / N/A per case with what it saw.
//!
//! - [`cases`]: the case list (stable ids `PONG-<AREA>-<RULE>`, level, clause) and
//!   their bodies.
//! - [`client`]: the checker's end of one pong connection (raw bytes out, frames in,
//!   bounded buffers, writes never block reads).
//! - [`targets`]: destinations the checker starts on the target address and asks the
//!   remote to dial (TCP echo, reply-after-EOF, small-writes source, UDP echo, closed
//!   port).
//! - [`ctx`]: the settings and what a case body gets to reach the remote.
//! - [`runner`]: how the checker plugs into the framework's live runner ([`Checker`]:
//!   selection, running under time limits; the case type, the runner, the table and
//!   the JUnit XML are the shared [`crate::framework`]).
//! - [`faulty_remote`]: a remote with pong-go's known faults, to show the checker finds
//!   them.
//!
//! The remote must reach the checker's targets: by default they listen on 127.0.0.1, so
//! the remote runs on the same host (use [`CheckConfig::target_ip`] otherwise).

pub mod cases;
pub mod client;
pub mod ctx;
pub mod faulty_remote;
pub mod runner;
pub mod targets;

pub use crate::framework::{CaseReport, Level, Outcome, Report, Status, Verdict};
pub use ctx::CheckConfig;

/// This checker's runner: `Checker::select`, `Checker::run` and `Checker::run_with`.
pub type Checker = crate::framework::Live<ctx::Ctx>;

/// The report as JUnit XML (suite `pong conformance (<remote>)`, classes `pong.<AREA>`).
pub fn to_junit(r: &Report) -> String {
    crate::framework::to_junit(r, "pong")
}

pub use tunnelbed_pong::wire::parse_uuid;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection() {
        let all = Checker::select(&[]).unwrap();
        assert!(all.len() >= 20);
        let rst = Checker::select(&["pong-rst".into()]).unwrap();
        assert!(rst.iter().all(|i| i.starts_with("PONG-RST-")));
        assert!(rst.contains(&"PONG-RST-REPEAT-ID"));
        let two = Checker::select(&["PONG-RST-CODE".into(), "PONG-HDR-ACCEPT".into()]).unwrap();
        assert_eq!(two, ["PONG-HDR-ACCEPT", "PONG-RST-CODE"]);
        // a prefix must end at a dash
        assert!(Checker::select(&["PONG-RS".into()]).is_err());
        assert!(Checker::select(&["NOPE".into()])
            .unwrap_err()
            .contains("PONG-HDR-ACCEPT"));
    }
}
