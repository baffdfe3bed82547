//! What a case body gets: the settings of the run and the ways to reach the remote under
//! test. The cases import this; the runner imports the cases (no cycle).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::CarrierUrl;
use tunnelbed_netio::TokioNet;
use tunnelbed_pong::wire::{ConnHeader, VERSION};

use super::client::{secs, Client};

/// What to check and how.
#[derive(Clone)]
pub struct CheckConfig {
    /// The remote under test.
    pub remote: CarrierUrl,
    /// TLS settings for `tls://` and `wss://` (ignored for the others).
    pub tls: ClientTls,
    /// A client id the remote allows.
    pub client_id: [u8; 16],
    /// SHOULD-level cases count (a failure is FAIL, not WARN).
    pub strict: bool,
    /// How long each wait for the remote may take (a silent remote fails after this).
    pub wait: Duration,
    /// Address the checker's own destinations bind to, and that the remote is asked to
    /// dial: it must be reachable from the remote.
    pub target_ip: IpAddr,
    /// Case ids to run (all when empty); see [`select`].
    pub cases: Vec<&'static str>,
}

impl CheckConfig {
    /// Defaults: not strict, 5 s waits, targets on 127.0.0.1, every case.
    pub fn new(remote: CarrierUrl, tls: ClientTls, client_id: [u8; 16]) -> Self {
        Self {
            remote,
            tls,
            client_id,
            strict: false,
            wait: Duration::from_secs(5),
            target_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            cases: Vec::new(),
        }
    }
}

/// What a case body gets: the settings and ways to reach the remote.
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

    /// Where targets bind.
    pub fn ip(&self) -> IpAddr {
        self.cfg.target_ip
    }

    /// The connection header for `client_id` with version `ver`.
    pub fn header(ver: u8, client_id: [u8; 16]) -> Vec<u8> {
        let mut b = bytes::BytesMut::new();
        ConnHeader { client_id }.encode(&mut b);
        b[0] = ver;
        b.to_vec()
    }

    /// Our header: version 0 and the allowed client id.
    pub fn our_header(&self) -> Vec<u8> {
        Self::header(VERSION, self.cfg.client_id)
    }

    /// A carrier to the remote, nothing sent yet.
    pub async fn carrier(&self) -> Result<Client, String> {
        let c = tokio::time::timeout(
            self.wait(),
            tunnelbed_carrier::connect(&TokioNet, &self.cfg.remote, &self.cfg.tls),
        )
        .await
        .map_err(|_| {
            format!(
                "carrier to {}: not set up within {}",
                self.cfg.remote,
                secs(self.wait())
            )
        })?
        .map_err(|e| format!("carrier to {}: {e}", self.cfg.remote))?;
        Ok(Client::new(c, self.id))
    }

    /// A carrier with our header already queued (frames may follow at once).
    pub async fn open(&self) -> Result<Client, String> {
        let c = self.carrier().await?;
        c.send_bytes(self.our_header());
        Ok(c)
    }
}
