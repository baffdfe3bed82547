//! Benchmark machinery shared by `tunnelbed bench` subcommands: a virtual-time loop over
//! the simulator's link model ([`link_loop`]), the adapters that put our KCP and crate
//! `kcp` behind one interface ([`kcp_port`]), and the KCP comparison itself
//! ([`kcp_bench`]); and our h2tunnel against kcptun on real loopback sockets
//! ([`h2tunnel_bench`]); and our pong local and remote against direct TCP on loopback
//! ([`pong_bench`]). [`machine`] is the machine line every report starts with.

pub mod h2tunnel_bench;
pub mod kcp_bench;
pub mod kcp_port;
pub mod link_loop;
pub mod pong_bench;

/// Machine facts: CPU model, cores, kernel, build.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "{cpu}, {cores} cores, Linux {kernel}, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}
