//! The network-namespace world `bench candy` runs in: a server namespace and two client
//! namespaces joined to it by veth pairs (10.99.N.1 on the server's side, 10.99.N.2 on
//! client N's), deleted on drop; and threads that enter a namespace to run a kernel-TCP
//! byte source or sink there.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{bail, Context};

/// A server namespace and client namespaces, named after a tag unique to this process.
pub struct World {
    /// The server's namespace.
    pub srv: String,
    /// The clients' namespaces, client 1 first.
    pub clients: Vec<String>,
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// Runs a command to completion, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl World {
    /// Creates the namespaces `TAGs`, `TAGc1`.. and the veth pairs.
    pub fn new(tag: &str, n_clients: usize) -> anyhow::Result<World> {
        let mut w = World {
            srv: format!("{tag}s"),
            clients: Vec::new(),
        };
        ip(&["netns", "add", &w.srv]).context("creating a network namespace (root needed)")?;
        ip(&["-n", &w.srv, "link", "set", "lo", "up"])?;
        for i in 1..=n_clients {
            let ns = format!("{tag}c{i}");
            ip(&["netns", "add", &ns])?;
            w.clients.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let (s_if, c_if) = (format!("s{i}"), format!("c{i}"));
            ip(&[
                "link", "add", &s_if, "netns", &w.srv, "type", "veth", "peer", "name", &c_if,
                "netns", &ns,
            ])?;
            let (s_addr, c_addr) = (format!("10.99.{i}.1/24"), format!("10.99.{i}.2/24"));
            ip(&["-n", &w.srv, "addr", "add", &s_addr, "dev", &s_if])?;
            ip(&["-n", &ns, "addr", "add", &c_addr, "dev", &c_if])?;
            ip(&["-n", &w.srv, "link", "set", &s_if, "up"])?;
            ip(&["-n", &ns, "link", "set", &c_if, "up"])?;
        }
        Ok(w)
    }

    /// `ip netns exec NS PROG`: the program runs in the namespace (ip execs it, so the
    /// child's pid is the program's).
    pub fn exec(ns: &str, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, prog]);
        c
    }

    /// Pings `to` from client `i` (1-based) with source `from` until one echo comes back
    /// (at most 20 one-second tries): the path is up.
    pub fn wait_ping(&self, i: usize, from: &str, to: &str) -> anyhow::Result<()> {
        let ok = (0..20).any(|_| {
            Self::exec(&self.clients[i - 1], "ping")
                .args(["-c", "1", "-W", "1", "-I", from, to])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !ok {
            bail!("no echo from {to} to {from} within 20 tries");
        }
        Ok(())
    }

    /// The IPv4 address on `dev` in namespace `ns`.
    pub fn addr_of(ns: &str, dev: &str) -> anyhow::Result<String> {
        let out = ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", dev])?;
        let cidr = out
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .with_context(|| format!("no address on {dev} in {ns}: {out}"))?;
        Ok(cidr.split('/').next().unwrap_or_default().to_string())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for ns in self.clients.iter().chain(std::iter::once(&self.srv)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Moves the calling thread into network namespace `ns` (sockets it opens afterwards
/// live there); other threads stay where they are.
pub fn enter(ns: &str) -> anyhow::Result<()> {
    let f = File::open(format!("/var/run/netns/{ns}"))
        .with_context(|| format!("opening namespace {ns}"))?;
    // SAFETY: setns(2) on a namespace descriptor we hold open; it only changes this
    // thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
