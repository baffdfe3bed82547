//! The I/O seam of tunnelbed: the [`Net`] trait that drivers are generic over, its
//! tokio implementation, the IP-packet link ([`IpLink`], [`IpNet`]: TUN devices and
//! simulated links), packet capture into pcapng, and the transition trace.
//!
//! Protocol cores never touch sockets; their drivers take an `N: Net`, so the same
//! code runs on real sockets and inside the simulator.

pub mod arq;
pub mod capture;
pub mod captured;
pub mod corpus;
pub mod fault;
pub mod iplink;
pub mod net;
pub mod pcap_read;
pub mod tokio_net;
pub mod trace;
#[cfg(target_os = "linux")]
pub mod tun;

pub use capture::{Capture, CaptureIface, Clock, ResetRecorded, TcpFlow};
pub use captured::CaptureNet;
pub use fault::DataFault;
pub use iplink::{IpLink, IpLinkConfig, IpLinkError, IpNet, Ipv4Cidr};
pub use net::{Net, TcpConn, TcpListen, UdpSock};
pub use tokio_net::TokioNet;
pub use trace::{Trace, Transition};
#[cfg(target_os = "linux")]
pub use tun::TunLink;
