//! The I/O seam of tunnelbed: the [`Net`] trait that drivers are generic over, its
//! tokio implementation, the IP-packet link ([`IpLink`], [`IpNet`]: TUN devices and
//! simulated links), packet capture into pcapng, and the transition trace.
//!
//! Protocol cores never touch sockets; their drivers take an `N: Net`, so the same
//! code runs on real sockets and inside the simulator. The async half (`Net`, its
//! implementations, the ARQ driver, the stream multiplexers' carrier reader and batching
//! writer ([`mux`]), the in-memory IP link) is the `runtime` feature (on by default);
//! without it netio builds with no tokio, which is how protocol cores use it.

#[cfg(feature = "runtime")]
pub mod arq;
pub mod capture;
#[cfg(feature = "runtime")]
pub mod captured;
pub mod corpus;
pub mod fault;
#[cfg(feature = "runtime")]
pub mod idle;
pub mod iplink;
#[cfg(feature = "runtime")]
pub mod mux;
pub mod mux_session;
#[cfg(feature = "runtime")]
pub mod net;
pub mod pcap_read;
#[cfg(feature = "runtime")]
pub mod timer;
#[cfg(feature = "runtime")]
pub mod tokio_net;
pub mod trace;
#[cfg(all(target_os = "linux", feature = "runtime"))]
pub mod tun;

pub use capture::{Capture, CaptureIface, Clock, ResetRecorded, TcpFlow};
#[cfg(feature = "runtime")]
pub use captured::CaptureNet;
pub use fault::DataFault;
pub use iplink::{IpLink, IpLinkConfig, IpLinkError, IpNet, Ipv4Cidr};
#[cfg(feature = "runtime")]
pub use net::{Net, TcpConn, TcpListen, UdpSock};
#[cfg(feature = "runtime")]
pub use timer::sleep_until;
#[cfg(feature = "runtime")]
pub use tokio_net::TokioNet;
pub use trace::{Trace, Transition};
#[cfg(all(target_os = "linux", feature = "runtime"))]
pub use tun::TunLink;
