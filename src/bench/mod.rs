//! Benchmark machinery shared by `tunnelbed bench` subcommands: a virtual-time loop over
//! the simulator's link model ([`link_loop`]), the adapters that put our KCP and crate
//! `kcp` behind one interface ([`kcp_port`]), and the KCP comparison itself
//! ([`kcp_bench`]); and our h2tunnel against kcptun on real loopback sockets
//! ([`h2tunnel_bench`]); and our pong local and remote against direct TCP on loopback
//! ([`pong_bench`]).

pub mod h2tunnel_bench;
pub mod kcp_bench;
pub mod kcp_port;
pub mod link_loop;
pub mod pong_bench;
