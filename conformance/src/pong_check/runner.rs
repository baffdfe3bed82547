//! Plays the selected cases one after another against the remote, each on its own
//! connection and under a time limit, and gathers the [`Report`].

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::CarrierUrl;
use tunnelbed_netio::TokioNet;
use tunnelbed_pong::wire::{ConnHeader, VERSION};

use super::cases::{self, Case};
use super::client::{secs, Client};
use super::report::{CaseReport, Report, Status};

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

/// What a case body concludes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The rule holds; the text says what was seen.
    Pass(String),
    /// The case cannot tell on this remote (e.g. its resolver answers `.invalid`).
    NotApplicable(String),
}

/// A case body's result: `Err` is a failure, with what differed.
pub type Outcome = Result<Verdict, String>;

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

/// The ids matching `patterns`: an exact id, or a prefix up to a `-` (`PONG-RST` selects
/// every `PONG-RST-...`), case-insensitive. Empty patterns select every case. An unknown
/// pattern is an error that lists the ids.
pub fn select(patterns: &[String]) -> Result<Vec<&'static str>, String> {
    let all = cases::all();
    if patterns.is_empty() {
        return Ok(all.iter().map(|c| c.id).collect());
    }
    let mut chosen = Vec::new();
    for p in patterns {
        let p = p.trim().to_ascii_uppercase();
        let hits: Vec<&'static str> = all
            .iter()
            .map(|c| c.id)
            .filter(|id| *id == p || id.starts_with(&format!("{p}-")))
            .collect();
        if hits.is_empty() {
            let ids: Vec<&str> = all.iter().map(|c| c.id).collect();
            return Err(format!(
                "no case matches {p:?}; known ids: {}",
                ids.join(", ")
            ));
        }
        for h in hits {
            if !chosen.contains(&h) {
                chosen.push(h);
            }
        }
    }
    // Keep the list's order, whatever order they were asked in.
    Ok(all
        .iter()
        .map(|c| c.id)
        .filter(|id| chosen.contains(id))
        .collect())
}

/// Runs the chosen cases (all when `cfg.cases` is empty) and reports. Never panics on
/// anything the remote does: each case runs in its own task under a time limit.
pub async fn run(cfg: CheckConfig) -> Report {
    run_with(cfg, |_| {}).await
}

/// Like [`run`], calling `progress` after each case.
pub async fn run_with(cfg: CheckConfig, mut progress: impl FnMut(&CaseReport)) -> Report {
    let started = Instant::now();
    let chosen: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| cfg.cases.is_empty() || cfg.cases.contains(&c.id))
        .collect();
    // One connection first: if the carrier cannot be set up at all, say so once per
    // case at once instead of waiting out every case.
    let probe = Ctx {
        cfg: cfg.clone(),
        id: "preflight",
    };
    let unreachable = probe.carrier().await.err();
    if let Some(e) = &unreachable {
        tracing::warn!("pong check: {e}");
    }
    let mut out = Vec::new();
    for case in chosen {
        let t0 = Instant::now();
        let outcome = match &unreachable {
            Some(e) => Err(e.clone()),
            None => run_one(&case, &cfg).await,
        };
        let (status, detail) = match outcome {
            Ok(Verdict::Pass(d)) => (Status::Pass, d),
            Ok(Verdict::NotApplicable(d)) => (Status::NotApplicable, d),
            Err(d) if case.level.counts(cfg.strict) => (Status::Fail, d),
            Err(d) => (Status::Warn, d),
        };
        let r = CaseReport {
            id: case.id,
            level: case.level,
            clause: case.clause,
            status,
            detail,
            elapsed: t0.elapsed(),
        };
        tracing::info!(
            "{} {} ({} ms): {}",
            r.id,
            r.status.name(),
            r.elapsed.as_millis(),
            r.detail
        );
        progress(&r);
        out.push(r);
    }
    Report {
        remote: cfg.remote.to_string(),
        strict: cfg.strict,
        wait: cfg.wait,
        cases: out,
        elapsed: started.elapsed(),
    }
}

async fn run_one(case: &Case, cfg: &CheckConfig) -> Outcome {
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        id: case.id,
    });
    // Every wait inside a case is bounded by `wait`; this outer limit only catches a case
    // that chains too many of them (or a bug).
    let limit = cfg.wait * 6 + Duration::from_secs(2);
    let task = tokio::spawn((case.run)(ctx));
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Err(format!("checker error: the case task failed: {e}")),
        Err(_) => {
            abort.abort();
            Err(format!("the case did not finish within {}", secs(limit)))
        }
    }
}
