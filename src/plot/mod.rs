//! `tunnelbed plot`: pictures of one capture, as standalone SVG files.
//!
//! - [`tsg`]: a time-sequence graph (sequence number over time, Stevens / tcptrace
//!   style) of one direction of a KCP session or a TCP connection;
//! - [`ladder`]: a stream ladder (message sequence chart) of each h2tunnel and pong
//!   connection;
//! - [`svg`]: the axes, scales and escaping the plots share.

pub mod ladder;
pub mod svg;
pub mod tsg;
