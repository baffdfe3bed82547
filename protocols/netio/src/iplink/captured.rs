//! Recording IP links: [`crate::CaptureNet`] hands out links wrapped in
//! [`CapturedIpLink`], which records every packet sent, and every packet received unless
//! its sender recorded it already ([`IpLink::sender_records`]), as it is (LINKTYPE_RAW).

use crate::capture::CaptureIface;
use crate::captured::CaptureNet;
use crate::net::Net;

use super::{IpLink, IpLinkConfig, IpLinkError, IpNet};

/// An IP link that records into a capture interface.
pub struct CapturedIpLink<L> {
    inner: L,
    iface: Option<CaptureIface>,
}

impl<L: IpLink> CapturedIpLink<L> {
    /// Wraps `inner`, recording into `iface` when given.
    pub fn new(inner: L, iface: Option<CaptureIface>) -> Self {
        Self { inner, iface }
    }

    /// The wrapped link.
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<L: IpLink> IpLink for CapturedIpLink<L> {
    async fn send(&self, packet: &[u8]) -> Result<(), IpLinkError> {
        self.inner.send(packet).await?;
        if let Some(i) = &self.iface {
            i.raw_ip(packet);
        }
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, IpLinkError> {
        let n = self.inner.recv(buf).await?;
        if let Some(i) = &self.iface {
            if !self.inner.sender_records() {
                i.raw_ip(&buf[..n]);
            }
        }
        Ok(n)
    }

    fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>, IpLinkError> {
        let n = self.inner.try_recv(buf)?;
        if let (Some(n), Some(i)) = (n, &self.iface) {
            if !self.inner.sender_records() {
                i.raw_ip(&buf[..n]);
            }
        }
        Ok(n)
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn sender_records(&self) -> bool {
        self.inner.sender_records()
    }
}

impl<N: Net + IpNet> IpNet for CaptureNet<N> {
    type Link = CapturedIpLink<N::Link>;

    async fn open_ip_link(&self, cfg: IpLinkConfig) -> Result<Self::Link, IpLinkError> {
        let link = self.inner().open_ip_link(cfg).await?;
        Ok(CapturedIpLink::new(link, self.iface().cloned()))
    }
}
