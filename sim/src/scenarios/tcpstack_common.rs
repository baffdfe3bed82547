//! What the tcpstack scenarios share: smoltcp (a TCP we did not write) as the active
//! client over a simulated IP link, and the server host that runs `tunnelbed tcpstack
//! serve`'s library role (our stack over the same kind of link).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tunnelbed_netio::iplink::smol::QueueDevice;
use tunnelbed_netio::{IpLink, IpLinkConfig, IpLinkError, Ipv4Cidr, Trace};
use tunnelbed_tcpstack::serve::{start, ServeConfig, Service};
use tunnelbed_tcpstack::socket::TcpStack;
use tunnelbed_tcpstack::StackConfig;

use crate::ledger::FlowLedger;
use crate::simnet::SimWorld;

/// Our stack's address and port in the scenarios (port 7, echo: Wireshark then does
/// not read the random payloads as HTTP).
pub const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 8, 1, 1), 7);

pub use super::fixture::now;

fn ts(d: Duration) -> SInstant {
    SInstant::from_micros(d.as_micros() as i64)
}

/// smoltcp's interface on a simulated IP link: sockets, and the pump that moves packets.
pub struct SmolClient<L: IpLink> {
    link: L,
    dev: QueueDevice,
    iface: Interface,
    /// The TCP sockets.
    pub sockets: SocketSet<'static>,
    buf: Vec<u8>,
}

impl<L: IpLink> SmolClient<L> {
    /// An interface at `addr` over `link`, its RNG (ISNs, ports) seeded with `seed`.
    pub fn new(link: L, addr: Ipv4Addr, seed: u64) -> Self {
        let mut dev = QueueDevice {
            mtu: link.mtu(),
            ..QueueDevice::default()
        };
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, ts(now()));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(addr), 24));
        });
        let buf = vec![0u8; link.mtu()];
        Self {
            link,
            dev,
            iface,
            sockets: SocketSet::new(vec![]),
            buf,
        }
    }

    /// A socket connecting from `local_port` to `remote`, with buffers of `bufsize`.
    pub fn connect(
        &mut self,
        remote: SocketAddrV4,
        local_port: u16,
        bufsize: usize,
    ) -> Result<SocketHandle, String> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; bufsize]),
            tcp::SocketBuffer::new(vec![0; bufsize]),
        );
        s.connect(
            self.iface.context(),
            (IpAddress::Ipv4(*remote.ip()), remote.port()),
            local_port,
        )
        .map_err(|e| format!("smoltcp connect: {e}"))?;
        Ok(self.sockets.add(s))
    }

    /// The socket `h`.
    pub fn socket(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Lets smoltcp process what arrived and produce what it owes.
    pub fn poll(&mut self) {
        self.iface.poll(ts(now()), &mut self.dev, &mut self.sockets);
    }

    /// Sends what smoltcp produced over the link.
    pub async fn flush(&mut self) -> Result<(), IpLinkError> {
        while let Some(p) = self.dev.tx.pop_front() {
            self.link.send(&p).await?;
        }
        Ok(())
    }

    /// Polls, sends, then waits for a packet or smoltcp's next timer (at most `max`).
    pub async fn step(&mut self, max: Duration) -> Result<(), IpLinkError> {
        self.poll();
        self.flush().await?;
        let delay = self
            .iface
            .poll_delay(ts(now()), &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(max)
            .min(max);
        tokio::select! {
            biased;
            r = self.link.recv(&mut self.buf) => {
                let n = r?;
                self.dev.rx.push_back(self.buf[..n].to_vec());
            }
            _ = tokio::time::sleep(delay) => {}
        }
        Ok(())
    }

    /// Takes every packet already waiting on the link, without waiting (for a second
    /// client driven by another's [`SmolClient::step`]).
    pub async fn drain_rx(&mut self) -> Result<(), IpLinkError> {
        loop {
            tokio::select! {
                biased;
                r = self.link.recv(&mut self.buf) => {
                    let n = r?;
                    self.dev.rx.push_back(self.buf[..n].to_vec());
                }
                _ = std::future::ready(()) => return Ok(()),
            }
        }
    }

    /// Sends one raw packet (crafted segments: SYN floods).
    pub async fn send_raw(&self, p: &[u8]) -> Result<(), IpLinkError> {
        self.link.send(p).await
    }
}

/// The link configuration of a scenario host at `addr` whose packets are at most `mtu`.
pub fn link_cfg(addr: Ipv4Addr, mtu: usize) -> IpLinkConfig {
    let mut c = IpLinkConfig::new("tun0", Ipv4Cidr::new(addr, 32));
    c.mtu = mtu.clamp(576, 1500);
    c
}

/// Where the server host leaves its stack, so the scenario can check its table after
/// the run (no-leak inside our stack, beyond the ledger's flows).
pub type StackSlot = Arc<Mutex<Option<TcpStack>>>;

/// Runs our stack with `service` on host `server` of `world` (the same role as
/// `tunnelbed tcpstack serve`), with the link MTU `mtu` (the MSS follows it) and the
/// stack's tunables `stack`.
pub fn serve_host(
    sim: &mut turmoil::Sim<'_>,
    world: &SimWorld,
    mtu: usize,
    stack: StackConfig,
    idle: Duration,
    service: Service,
    slot: StackSlot,
) {
    let world = world.clone();
    sim.host("server", move || {
        let net = world.net("server");
        let trace = world.trace.clone();
        let service = service.clone();
        let slot = slot.clone();
        let stack = stack.clone();
        async move {
            let link = link_cfg(*SERVER.ip(), mtu);
            let mut cfg = ServeConfig::new(link.clone(), SERVER, service);
            cfg.idle = idle;
            cfg.stack = StackConfig {
                mss: (link.mtu - 40).min(usize::from(stack.mss)) as u16,
                ..stack
            };
            let server = start(net, cfg, trace).await?;
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(server.stack().clone());
            server.run().await?;
            Ok(())
        }
    });
}

/// Connections left in the stack of `slot` (`None`: the server never started).
pub fn stack_connections(slot: &StackSlot) -> Option<usize> {
    slot.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|s| s.connection_count())
}

/// One smoltcp connection a scenario drives against an echo: it writes `data`, sends FIN,
/// reads the echo until the peer's FIN, and reports to the ledger. Used by tcpstack-bulk
/// and by the TCP flows inside candy-mesh.
pub struct EchoConn {
    /// The ledger's flow name.
    pub flow: String,
    data: Vec<u8>,
    sent: usize,
    fin_sent: bool,
    got: Vec<u8>,
    /// The flow ended (echo's FIN read, or the connection died) and is in the ledger.
    pub done: bool,
    state: tcp::State,
}

impl EchoConn {
    /// A connection that will send `data` on flow `flow` (the socket is opened by the caller).
    pub fn new(flow: String, data: Vec<u8>) -> Self {
        Self {
            flow,
            data,
            sent: 0,
            fin_sent: false,
            got: Vec::new(),
            done: false,
            state: tcp::State::SynSent,
        }
    }

    /// One round on socket `s` at time `at`: write what fits, FIN once all is written,
    /// read what arrived (through `buf`), trace a state change, and on the echo's end (our
    /// FIN sent and the peer's read) or a dead connection, give the ledger what came back.
    pub fn pump(
        &mut self,
        s: &mut tcp::Socket<'_>,
        buf: &mut [u8],
        at: Duration,
        trace: &Trace,
        ledger: &FlowLedger,
    ) {
        if self.done {
            return;
        }
        while s.can_send() && self.sent < self.data.len() {
            self.sent += s.send_slice(&self.data[self.sent..]).unwrap_or(0);
        }
        if self.sent == self.data.len() && !self.fin_sent && s.may_send() {
            s.close();
            self.fin_sent = true;
        }
        while s.can_recv() {
            let n = s.recv_slice(buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            self.got.extend_from_slice(&buf[..n]);
        }
        let st = s.state();
        if st != self.state {
            trace.transition(
                at,
                format!("smoltcp[{}]", self.flow),
                format!("{}", self.state),
                format!("{st}"),
                "socket state",
            );
            self.state = st;
        }
        let ended = self.fin_sent && !s.may_recv() && !s.can_recv();
        if ended || st == tcp::State::Closed {
            ledger.received(&self.flow, &self.got);
            if ended {
                ledger.close(&self.flow);
            }
            self.done = true;
        }
    }
}
