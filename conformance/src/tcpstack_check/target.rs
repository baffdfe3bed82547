//! What a script runs against: a TCP implementation that takes injected IPv4 packets,
//! gives the packets it sends, and lets the script make application calls.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// The target's address in every script (the kernel's side of the TUN device, or our
/// stack's address).
pub const TARGET_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 5, 1);
/// The checker's address (routed into the TUN device).
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 5, 2);
/// The port the target listens on.
pub const LISTEN_PORT: u16 = 80;
/// A port nobody listens on.
pub const CLOSED_PORT: u16 = 81;

/// A case's connection: the checker's end and the target's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The checker's address and port.
    pub peer: SocketAddrV4,
    /// The target's listening address.
    pub target: SocketAddrV4,
}

/// An application call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppOp {
    /// Accept the case's connection from the listener.
    Accept,
    /// Read up to this many bytes.
    Read(usize),
    /// Write this many bytes.
    Write(usize),
    /// Half-close (send FIN).
    Shutdown,
    /// Close the socket.
    Close,
}

/// What an application call gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppResult {
    /// Success without a count (accept, shutdown, close).
    Done,
    /// Bytes read (0: end of stream) or written.
    Bytes(usize),
    /// Nothing to read yet.
    WouldBlock,
    /// The connection was reset.
    Reset,
    /// Another failure.
    Err(String),
}

/// A TCP implementation under test.
pub trait Target {
    /// Its name in the report.
    fn name(&self) -> String;
    /// The flow of the case whose checker port is `sport`.
    fn flow(&self, sport: u16) -> Flow {
        Flow {
            peer: SocketAddrV4::new(PEER_IP, sport),
            target: SocketAddrV4::new(TARGET_IP, LISTEN_PORT),
        }
    }
    /// The time since the target's origin (virtual or real).
    fn now(&self) -> Duration;
    /// Hands one IPv4 packet to the target.
    fn inject(&mut self, packet: &[u8]);
    /// The next packet the target sends, with when it was sent, if one comes before
    /// `deadline`; otherwise `None` with the time advanced to `deadline`.
    fn poll_packet(&mut self, deadline: Duration) -> Option<(Duration, Vec<u8>)>;
    /// An application call on the connection of the case whose checker port is `sport`.
    fn app(&mut self, sport: u16, op: AppOp) -> AppResult;
}
