//! Conformance material: spec-clause cases with stable IDs, scripted peers, and the
//! checkers that play them against any implementation.

pub mod h2tunnel_cases;
pub mod pong_check;
