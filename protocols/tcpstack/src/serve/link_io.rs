//! [`IpLinkIo`]: any [`IpLink`] (a TUN device, the simulator's link, a capturing wrapper)
//! as the socket API's [`PacketIo`], so a [`crate::socket::TcpStack`] runs on it.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tunnelbed_netio::IpLink;

use crate::socket::PacketIo;

/// An IP link carrying the stack's packets. Cloning shares the link.
pub struct IpLinkIo<L> {
    link: Arc<L>,
}

impl<L> Clone for IpLinkIo<L> {
    fn clone(&self) -> Self {
        Self {
            link: self.link.clone(),
        }
    }
}

impl<L: IpLink> IpLinkIo<L> {
    /// Wraps `link`.
    pub fn new(link: L) -> Self {
        Self {
            link: Arc::new(link),
        }
    }

    /// The wrapped link.
    pub fn link(&self) -> &L {
        &self.link
    }
}

impl<L: IpLink> PacketIo for IpLinkIo<L> {
    async fn send(&self, packet: Bytes) -> io::Result<()> {
        self.link.send(&packet).await.map_err(io::Error::from)
    }

    async fn recv(&self) -> io::Result<Bytes> {
        // A fresh buffer per packet: `IpLink::recv` is cancel-safe, and a packet
        // abandoned half-way must not leave bytes behind in a shared buffer.
        let mut buf = vec![0u8; self.link.mtu()];
        let n = self.link.recv(&mut buf).await.map_err(io::Error::from)?;
        buf.truncate(n);
        Ok(Bytes::from(buf))
    }

    fn try_recv(&self) -> io::Result<Option<Bytes>> {
        let mut buf = vec![0u8; self.link.mtu()];
        Ok(self.link.try_recv(&mut buf)?.map(|n| {
            buf.truncate(n);
            Bytes::from(buf)
        }))
    }
}
