//! `tunnelbed check vless`: a conformance checker for any VLESS server (seed 004 and
//! shared/protocols/vless.md), ours or v2ray's. It plays scripted cases over a carrier
//! (`tcp://`, `tls://`, `ws://`, `wss://`), each on connections of its own and against
//! destinations of its own, and reports PASS / FAIL / WARN / N/A per case with what it saw.
//!
//! - [`cases`]: the case list (stable ids `VLESS-<AREA>-<RULE>`) and their bodies.
//! - [`conn`]: the checker's end of one connection (raw bytes both ways, bounded).
//! - [`peer`]: UDP peers that record what reaches them (also `check fullcone`'s outside
//!   world).
//! - [`ctx`]: the settings and what a body gets to reach the server.
//! - [`runner`]: how the checker plugs into the framework's live runner ([`Checker`]:
//!   selection and running under time limits on [`crate::framework`]).
//!
//! The server must reach the checker's destinations: by default they listen on
//! 127.0.0.1, so the server runs on the same host.

pub mod cases;
pub mod conn;
pub mod ctx;
pub mod peer;
pub mod runner;

pub use crate::framework::{CaseReport, Level, Outcome, Report, Status, Verdict};
pub use ctx::CheckConfig;

/// This checker's runner: `Checker::select`, `Checker::run` and `Checker::run_with`.
pub type Checker = crate::framework::Live<ctx::Ctx>;

/// The report as JUnit XML (suite `vless conformance (<server>)`, classes `vless.<AREA>`).
pub fn to_junit(r: &Report) -> String {
    crate::framework::to_junit(r, "vless")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let all = Checker::select(&[]).unwrap();
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert!(all.iter().all(|i| i.starts_with("VLESS-")
            && i.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')));
        let udp = Checker::select(&["vless-udp".into()]).unwrap();
        assert!(udp.contains(&"VLESS-UDP-LEN") && udp.iter().all(|i| i.starts_with("VLESS-UDP-")));
    }
}
