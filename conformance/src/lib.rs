//! Conformance material: spec-clause cases with stable IDs, scripted peers, and the
//! checkers that play them against any implementation. Today it holds the KCP
//! differential test against the reference ikcp (`tests/kcp_vs_ikcp.rs`, peer scripts in
//! `peers/`); the h2tunnel and pong case lists come with their issues.

/// The case / runner / report / JUnit framework every checker uses.
pub mod framework;

/// vproxy HTTP/2-framed tunnel cases (seed 000 and the notes), one stable ID per rule.
pub mod h2tunnel_cases;

/// `tunnelbed check candy`: the conformance checker for any Candy server (seed 003).
pub mod candy_check;

/// `tunnelbed check pong`: the conformance checker for any pong remote (seed 001).
pub mod pong_check;

/// `tunnelbed check vless`: the conformance checker for any VLESS server (seed 004).
pub mod vless_check;

/// `tunnelbed check fullcone`: RFC 4787 NAT behaviour through any SOCKS5 UDP proxy.
pub mod fullcone_check;
/// `tunnelbed check tcpstack`: scripted segment exchanges against our TCP stack and
/// the Linux kernel (seed 002).
pub mod tcpstack_check;

/// Loopback ports that refuse connections without racing other tests for the port.
pub mod ports;
