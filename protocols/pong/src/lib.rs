//! The pong multiplexed proxy (seed 001). Not implemented yet: this crate is reserved for
//! the pong issue, so the workspace layout matches DESIGN.md.
