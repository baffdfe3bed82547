//! The application side of `check fullcone`: a SOCKS5 UDP ASSOCIATE client on loopback.
//! It sends datagrams to outside peers through the proxy and records every datagram the
//! proxy hands back with the source address the proxy claims for it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tunnelbed_socks5::handshake::udp_associate;
use tunnelbed_socks5::{Addr, UdpHeader};

use crate::vless_check::peer::Got;

/// Most datagrams the application keeps.
const MAX_LOG: usize = 4096;

/// One UDP association through the SOCKS5 proxy under test.
pub struct SocksApp {
    /// The association lives as long as this control connection.
    _ctrl: TcpStream,
    sock: UdpSocket,
    /// The proxy's UDP relay address.
    pub relay: SocketAddr,
    /// Every datagram the proxy handed back, with the source it claimed.
    pub log: Vec<Got>,
    /// Datagrams from the proxy that did not parse (or claimed a domain source).
    pub bad: usize,
}

impl SocksApp {
    /// Opens an association through `socks`, within `wait`.
    pub async fn open(socks: SocketAddr, wait: Duration) -> Result<SocksApp, String> {
        let go = async {
            let mut ctrl = TcpStream::connect(socks).await?;
            let sock = UdpSocket::bind(SocketAddr::new(socks.ip(), 0)).await?;
            let me = Addr::Ip(sock.local_addr()?);
            let (code, bound) = udp_associate(&mut ctrl, &me).await?;
            if code != 0 {
                return Err(io::Error::other(format!(
                    "UDP ASSOCIATE refused with code {code}"
                )));
            }
            let relay = match bound {
                Addr::Ip(a) if a.ip().is_unspecified() => SocketAddr::new(socks.ip(), a.port()),
                Addr::Ip(a) => a,
                Addr::Domain(h, _) => {
                    return Err(io::Error::other(format!("relay address is a name: {h}")))
                }
            };
            Ok::<_, io::Error>(SocksApp {
                _ctrl: ctrl,
                sock,
                relay,
                log: Vec::new(),
                bad: 0,
            })
        };
        match tokio::time::timeout(wait, go).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(format!("SOCKS5 UDP ASSOCIATE via {socks}: {e}")),
            Err(_) => Err(format!(
                "SOCKS5 UDP ASSOCIATE via {socks}: no answer within {wait:?}"
            )),
        }
    }

    /// The application's own UDP address.
    pub fn local(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok()
    }

    /// Sends `payload` to `to` through the proxy.
    pub async fn send_to(&self, to: SocketAddr, payload: &[u8]) -> Result<(), String> {
        let mut b = BytesMut::new();
        UdpHeader { addr: Addr::Ip(to) }
            .encode(payload, &mut b)
            .map_err(|e| format!("checker: {e}"))?;
        self.sock
            .send_to(&b, self.relay)
            .await
            .map(|_| ())
            .map_err(|e| format!("sending to the relay {}: {e}", self.relay))
    }

    /// Reads from the proxy until `cond` holds on the log or `within` passes.
    pub async fn wait_for(&mut self, within: Duration, cond: impl Fn(&[Got]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65_535];
        while !cond(&self.log) {
            match tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await {
                Err(_) => break,
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                Ok(Ok((n, _))) => match UdpHeader::decode(&buf[..n]) {
                    Ok(Some((
                        UdpHeader {
                            addr: Addr::Ip(from),
                        },
                        p,
                    ))) if self.log.len() < MAX_LOG => self.log.push(Got {
                        from,
                        payload: p.to_vec(),
                    }),
                    _ => self.bad += 1,
                },
            }
        }
        cond(&self.log)
    }

    /// The first logged datagram with this payload.
    pub fn find(&self, payload: &[u8]) -> Option<&Got> {
        self.log.iter().find(|g| g.payload == payload)
    }
}

/// Whether `ip` can be bound here (127.0.0.2 and up are loopback on Linux, not everywhere).
pub fn bindable(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}
