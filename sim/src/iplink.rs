//! The simulator's IP-packet link: [`SimIpLink`], what the simulator's `SimNet` hands out as an
//! [`IpLink`]. Each raw IPv4 packet goes to the link that owns its destination address
//! (a virtual address given when the link is opened, see [`IpRoutes`]), crossing the same
//! [`crate::link::LinkModel`] as UDP datagrams (loss, duplication, reordering, corruption,
//! MTU, bandwidth; keyed by the two hosts' addresses) and then turmoil as a datagram
//! between the hosts (latency, partitions, holds, crashes).
//!
//! Capture: a packet is recorded once, exactly as sent, on the sending host's interface
//! ([`IpLink::sender_records`] is true), so Wireshark's TCP analysis sees each segment
//! once and a lost segment's retransmission as a retransmission.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tunnelbed_netio::iplink::{
    check_ipv4, check_recv_buf, check_send, ipv4_addrs, IpLink, IpLinkConfig, IpLinkError, Ipv4Cidr,
};

use crate::clock::now;
use crate::link::LinkModel;

/// Counters of what the IP links of a run did beyond the link model's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpRouteStats {
    /// Packets sent to an address no link owns (dropped, as IP does).
    pub no_route: u64,
    /// Packets a link received that were no longer well-formed IPv4 (bits flipped in
    /// transit with `corrupt_delivered`, or cut by a smaller receive MTU) and skipped.
    pub skipped_malformed: u64,
}

#[derive(Default)]
struct RoutesInner {
    /// Prefix -> the turmoil socket of the link that owns it.
    table: BTreeMap<Ipv4Cidr, SocketAddr>,
    stats: IpRouteStats,
}

/// The routing table of a run's IP links: which link receives a destination address.
/// A link always receives its own address; otherwise the longest prefix wins (equal
/// prefixes: the lowest one, so the choice is deterministic).
#[derive(Clone, Default)]
pub struct IpRoutes(Arc<Mutex<RoutesInner>>);

impl IpRoutes {
    fn lock(&self) -> std::sync::MutexGuard<'_, RoutesInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, cidr: Ipv4Cidr, to: SocketAddr) -> Result<(), IpLinkError> {
        let mut r = self.lock();
        if r.table.keys().any(|c| c.addr == cidr.addr) {
            return Err(IpLinkError::AddrInUse(cidr.addr));
        }
        r.table.insert(cidr, to);
        Ok(())
    }

    fn remove(&self, cidr: Ipv4Cidr, to: SocketAddr) {
        let mut r = self.lock();
        if r.table.get(&cidr) == Some(&to) {
            r.table.remove(&cidr);
        }
    }

    /// The socket of the link that receives `dst`, if any.
    fn lookup(&self, dst: Ipv4Addr) -> Option<SocketAddr> {
        let r = self.lock();
        if let Some((_, to)) = r.table.iter().find(|(c, _)| c.addr == dst) {
            return Some(*to);
        }
        let mut best: Option<(u8, SocketAddr)> = None;
        for (c, to) in &r.table {
            if c.contains(dst) && best.is_none_or(|(p, _)| c.prefix > p) {
                best = Some((c.prefix, *to));
            }
        }
        best.map(|(_, to)| to)
    }

    /// The counters so far.
    pub fn stats(&self) -> IpRouteStats {
        self.lock().stats
    }
}

/// A simulated host's IP link (see the module notes).
pub struct SimIpLink {
    name: String,
    cidr: Ipv4Cidr,
    mtu: usize,
    sock: Arc<turmoil::net::UdpSocket>,
    /// Our turmoil socket: (host address, port).
    local: SocketAddr,
    link: LinkModel,
    routes: IpRoutes,
}

impl SimIpLink {
    /// Opens a link for `host` with `cfg` (its `addr` is required: the prefix routed to it).
    pub(crate) async fn open(
        host_ip: IpAddr,
        link: LinkModel,
        routes: IpRoutes,
        cfg: IpLinkConfig,
    ) -> Result<Self, IpLinkError> {
        cfg.validate()?;
        let cidr = cfg.addr.ok_or(IpLinkError::InvalidConfig(
            "a simulated IP link needs an address (the prefix routed to it)",
        ))?;
        let io = |op| move |source| IpLinkError::Io { op, source };
        let sock =
            turmoil::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
                .await
                .map_err(io("bind the link's datagram socket"))?;
        let port = sock
            .local_addr()
            .map_err(io("the link's datagram socket address"))?
            .port();
        let local = SocketAddr::new(host_ip, port);
        routes.add(cidr, local)?;
        Ok(Self {
            name: cfg.name,
            cidr,
            mtu: cfg.mtu,
            sock: Arc::new(sock),
            local,
            link,
            routes,
        })
    }

    /// The prefix routed to this link.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }
}

impl Drop for SimIpLink {
    fn drop(&mut self) {
        self.routes.remove(self.cidr, self.local);
    }
}

impl IpLink for SimIpLink {
    async fn send(&self, packet: &[u8]) -> Result<(), IpLinkError> {
        check_send(packet, self.mtu)?;
        let Some((_, dst)) = ipv4_addrs(packet) else {
            return Err(IpLinkError::NotIpv4("no addresses"));
        };
        let Some(to) = self.routes.lookup(dst) else {
            self.routes.lock().stats.no_route += 1;
            return Ok(());
        };
        for d in self.link.transmit(now(), self.local.ip(), to.ip(), packet) {
            if d.extra_delay.is_zero() {
                // A partitioned or crashed destination loses the packet, as IP does.
                let _ = self.sock.send_to(&d.payload, to).await;
            } else {
                let sock = self.sock.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d.extra_delay).await;
                    let _ = sock.send_to(&d.payload, to).await;
                });
            }
        }
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, IpLinkError> {
        check_recv_buf(buf, self.mtu)?;
        loop {
            let (n, _) = self
                .sock
                .recv_from(buf)
                .await
                .map_err(|source| IpLinkError::Io {
                    op: "receive on the link's datagram socket",
                    source,
                })?;
            if check_ipv4(&buf[..n]).is_ok() {
                return Ok(n);
            }
            self.routes.lock().stats.skipped_malformed += 1;
        }
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn sender_records(&self) -> bool {
        true
    }
}
