//! What a case body gets: the settings of the run and the ways to reach the server under
//! test. The cases import this; the runner imports the cases (no cycle).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::CarrierUrl;
use tunnelbed_netio::TokioNet;
use tunnelbed_vless::wire::{Address, Command, Request, Version};

use super::conn::Conn;
use crate::framework::text::secs;

/// What to check and how.
#[derive(Clone)]
pub struct CheckConfig {
    /// The server under test.
    pub server: CarrierUrl,
    /// TLS settings for `tls://` and `wss://` (ignored for the others).
    pub tls: ClientTls,
    /// A user id the server allows.
    pub uuid: [u8; 16],
    /// Highest version the server is expected to serve: v1 cases are N/A below it.
    pub version: Version,
    /// SHOULD-level cases count (a failure is FAIL, not WARN).
    pub strict: bool,
    /// How long each wait for the server may take.
    pub wait: Duration,
    /// Address the checker's destinations bind to and the server is asked to reach.
    pub target_ip: IpAddr,
    /// Case ids to run (all when empty).
    pub cases: Vec<&'static str>,
}

impl CheckConfig {
    /// Defaults: v0, not strict, 5 s waits, destinations on 127.0.0.1, every case.
    pub fn new(server: CarrierUrl, tls: ClientTls, uuid: [u8; 16]) -> Self {
        Self {
            server,
            tls,
            uuid,
            version: Version::V0,
            strict: false,
            wait: Duration::from_secs(5),
            target_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            cases: Vec::new(),
        }
    }
}

/// What a case body gets.
pub struct Ctx {
    /// The settings.
    pub cfg: CheckConfig,
    /// The case id, for logs.
    pub id: &'static str,
}

impl Ctx {
    /// The per-wait time limit.
    pub fn wait(&self) -> Duration {
        self.cfg.wait
    }

    /// The per-wait limit as people write it (`5s`).
    pub fn wait_text(&self) -> String {
        secs(self.cfg.wait)
    }

    /// Where destinations bind.
    pub fn ip(&self) -> IpAddr {
        self.cfg.target_ip
    }

    /// A socket address on the destination IP, port 0.
    pub fn any_port(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), 0)
    }

    /// A fresh connection to the server, nothing sent yet.
    pub async fn conn(&self) -> Result<Conn, String> {
        let c = tokio::time::timeout(
            self.wait(),
            tunnelbed_carrier::connect(&TokioNet, &self.cfg.server, &self.cfg.tls),
        )
        .await
        .map_err(|_| {
            format!(
                "carrier to {}: not set up within {}",
                self.cfg.server,
                self.wait_text()
            )
        })?
        .map_err(|e| format!("carrier to {}: {e}", self.cfg.server))?;
        Ok(Conn::new(c))
    }

    /// A request header with our user id and no addons.
    pub fn header(&self, version: Version, command: Command, target: Option<Address>) -> Vec<u8> {
        raw_header(version.byte(), self.cfg.uuid, &[], command.byte(), target)
    }

    /// Whether the server is expected to serve v1.
    pub fn v1(&self) -> bool {
        self.cfg.version == Version::V1
    }
}

/// A request header from raw parts, so cases can send what the encoder refuses
/// (unknown versions and commands): `ver | uuid | M | addons | cmd | [port atyp addr]`.
pub fn raw_header(
    ver: u8,
    uuid: [u8; 16],
    addons: &[u8],
    cmd: u8,
    target: Option<Address>,
) -> Vec<u8> {
    let mut b = vec![ver];
    b.extend_from_slice(&uuid);
    b.push(addons.len().min(255) as u8);
    b.extend_from_slice(&addons[..addons.len().min(255)]);
    b.push(cmd);
    if let Some(t) = target {
        let mut a = bytes::BytesMut::new();
        // A domain of a bad length is built by hand by the cases that need one.
        if t.encode(&mut a).is_ok() {
            b.extend_from_slice(&a);
        }
    }
    b
}

/// The same header through our encoder (for a cross-check in the unit tests).
pub fn encoded_header(
    version: Version,
    uuid: [u8; 16],
    command: Command,
    target: Option<Address>,
) -> Option<Vec<u8>> {
    Request {
        version,
        uuid,
        addons: Vec::new(),
        command,
        target,
    }
    .to_bytes()
    .ok()
    .map(|b| b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_header_equals_the_encoder() {
        let t = Address::Ip("127.0.0.1:80".parse().unwrap());
        for (v, c) in [(Version::V0, Command::Tcp), (Version::V1, Command::Udp)] {
            assert_eq!(
                raw_header(v.byte(), [7; 16], &[], c.byte(), Some(t.clone())),
                encoded_header(v, [7; 16], c, Some(t.clone())).unwrap()
            );
        }
        assert_eq!(
            raw_header(1, [7; 16], &[], 4, None),
            encoded_header(Version::V1, [7; 16], Command::Crumfurs, None).unwrap()
        );
    }
}
