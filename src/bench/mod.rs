//! Benchmark machinery shared by `tunnelbed bench` subcommands, each built the same way:
//! a `Plan`, a `run` that measures, and a `render` that writes the Markdown report,
//! opening with [`report::opening`].
//!
//! - shared: [`stats`] (the one median and percentile), [`latency`] (small-request
//!   round trips at many concurrent connections), [`child`] (child processes
//!   waited for with a bound and killed on drop), [`measure`] (CPU, memory, load),
//!   [`report`] (the opening lines, the date, writing the file);
//! - `bench kcp`: a virtual-time loop over the simulator's link model ([`link_loop`]),
//!   the adapters that put our KCP and crate `kcp` behind one interface ([`kcp_port`]),
//!   and the comparison itself ([`kcp_bench`]);
//! - `bench h2tunnel`: our h2tunnel against kcptun on real loopback sockets
//!   ([`h2tunnel_bench`]);
//! - `bench pong`: our pong local and remote against direct TCP on loopback
//!   ([`pong_bench`]);
//! - `bench vless`: our VLESS client and server against v2ray and the two-relay
//!   reference on loopback ([`vless_bench`]);
//! - `bench candy`: our Candy server and clients against Candy's own, in network
//!   namespaces with real TUN devices ([`candy_bench`], [`candy_netns`]).

pub mod candy_bench;
pub mod candy_netns;
pub mod child;
pub mod h2tunnel_bench;
pub mod kcp_bench;
pub mod kcp_port;
pub mod latency;
pub mod link_loop;
pub mod measure;
pub mod pong_bench;
pub mod report;
pub mod stats;
pub mod vless_bench;

pub use report::machine;
