//! `tunnelbed check fullcone`: RFC 4787 NAT-behaviour tests through any SOCKS5 UDP
//! proxy (our VLESS client in front of our server or v2ray's, v2ray's own SOCKS inbound,
//! ...). The checker is the application (a UDP ASSOCIATE client) and runs the outside
//! world itself: UDP peers on several loopback addresses (127.0.0.2, 127.0.0.3,
//! 127.0.0.4 by default). It reports each test (T1-T6) as a case and the NAT type the
//! answers add up to (full cone, restricted, port-restricted, symmetric).
//!
//! - [`app`]: the SOCKS5 UDP application.
//! - [`survey`]: the experiments (T1-T4 in one association; T5, T6).
//! - [`cases`]: the case list, and [`cases::classify`].
//! - [`runner`]: runs them on the conformance framework.

pub mod app;
pub mod cases;
pub mod runner;
pub mod survey;

pub use cases::{classify, Behaviour, Timers};
pub use runner::{run, select, FullconeReport};
pub use survey::Setup;

/// The report as JUnit XML (suite `fullcone conformance (<proxy>)`).
pub fn to_junit(r: &crate::framework::Report) -> String {
    crate::framework::to_junit(r, "fullcone")
}
