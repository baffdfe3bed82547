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
//! - [`runner`]: settings, case selection, running under time limits.
//! - [`report`] and [`junit`]: the table and the JUnit XML.
//! - [`faulty_remote`]: a remote with pong-go's known faults, to show the checker finds
//!   them.
//!
//! The remote must reach the checker's targets: by default they listen on 127.0.0.1, so
//! the remote runs on the same host (use [`CheckConfig::target_ip`] otherwise).

pub mod cases;
pub mod client;
pub mod faulty_remote;
pub mod junit;
pub mod report;
pub mod runner;
pub mod targets;

pub use report::{CaseReport, Level, Report, Status};
pub use runner::{run, run_with, select, CheckConfig, Verdict};

/// Parses a UUID in its canonical text form (`8-4-4-4-12` hex digits, either case) into
/// its 16 bytes in network order, as pong's connection header carries them.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let bad = || format!("{s:?}: expected a UUID such as 123e4567-e89b-12d3-a456-426614174000");
    let groups: Vec<&str> = s.split('-').collect();
    if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return Err(bad());
    }
    let hex = groups.concat();
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_parsing() {
        let u = parse_uuid("123E4567-e89b-12d3-a456-426614174000").unwrap();
        assert_eq!(u[0], 0x12);
        assert_eq!(u[15], 0x00);
        assert!(parse_uuid("123e4567e89b12d3a456426614174000").is_err());
        assert!(parse_uuid("+23e4567-e89b-12d3-a456-426614174000").is_err());
        assert!(parse_uuid("").is_err());
    }

    #[test]
    fn selection() {
        let all = select(&[]).unwrap();
        assert!(all.len() >= 20);
        let rst = select(&["pong-rst".into()]).unwrap();
        assert!(rst.iter().all(|i| i.starts_with("PONG-RST-")));
        assert!(rst.contains(&"PONG-RST-REPEAT-ID"));
        let two = select(&["PONG-RST-CODE".into(), "PONG-HDR-ACCEPT".into()]).unwrap();
        assert_eq!(two, ["PONG-HDR-ACCEPT", "PONG-RST-CODE"]);
        // a prefix must end at a dash
        assert!(select(&["PONG-RS".into()]).is_err());
        assert!(select(&["NOPE".into()])
            .unwrap_err()
            .contains("PONG-HDR-ACCEPT"));
    }
}
