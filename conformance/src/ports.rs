//! Loopback ports for tests that need an address where nothing answers.
//!
//! Binding port 0, reading the port and closing the socket leaves a window in which any
//! other test running in parallel can be handed the same port; a test that expects a
//! refusal then talks to a stranger. [`RefusingPort`] keeps the port bound for as long as
//! it lives, without listening, so the kernel answers every connection attempt with a
//! reset and no other socket can take the port.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// A loopback TCP port that refuses connections (RST) while this value lives, and can
/// later become a listener on the very same port.
#[derive(Debug)]
pub struct RefusingPort {
    sock: Socket,
    addr: SocketAddr,
}

impl RefusingPort {
    /// Binds a fresh port on 127.0.0.1 without listening.
    pub fn new() -> io::Result<Self> {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let addr = sock.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "bound socket has no IP address")
        })?;
        Ok(Self { sock, addr })
    }

    /// The refusing address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening on the same port: from now on connections are accepted.
    pub fn listen(self) -> io::Result<TcpListener> {
        self.sock.listen(128)?;
        Ok(self.sock.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::net::TcpStream;

    #[test]
    fn refuses_then_accepts_on_the_same_port() {
        let p = RefusingPort::new().unwrap();
        let addr = p.addr();
        let e = TcpStream::connect(addr).expect_err("a bound, non-listening port refuses");
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        // Nobody else can take it while it is held.
        assert!(std::net::TcpListener::bind(addr).is_err());
        let lsn = p.listen().unwrap();
        assert_eq!(lsn.local_addr().unwrap(), addr);
        let _c = TcpStream::connect(addr).expect("listening now");
        lsn.accept().unwrap();
    }
}
