//! The experiments `check fullcone` runs through one SOCKS5 UDP association each, and
//! what they saw. [`survey`] is RFC 4787's T1-T4 in one session: the application sends
//! to three peers (two on one address, one on another), then two peers it never
//! contacted (one on a fresh address, one on a contacted address with a fresh port)
//! write to the first mapping, and the application answers the first of them.
//! [`refresh`] (T5) and [`idle`] (T6) are the timer experiments.
//!
//! Every exchange is retried until seen or the wait passes (UDP through a proxy that is
//! still setting up a carrier may lose the first datagram).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use super::app::SocksApp;
use crate::vless_check::peer::UdpPeer;

/// How often a datagram is resent until it is seen.
const RESEND: Duration = Duration::from_millis(400);

/// Where the checker runs and how long it waits.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The SOCKS5 proxy under test.
    pub socks: SocketAddr,
    /// Outside addresses: the first holds the peers that get contacted, the others are
    /// fresh addresses (at least two are needed).
    pub peer_ips: Vec<IpAddr>,
    /// The per-exchange wait.
    pub wait: Duration,
}

/// What the T1-T4 session saw (`None` where a step got nothing).
#[derive(Clone, Debug, Default)]
pub struct Survey {
    /// The application's UDP address (before the proxy).
    pub app: Option<SocketAddr>,
    /// The peers: P1 and P3 on the first address, P2 on the second; Q on a fresh
    /// address and R on P1's address with a fresh port, neither contacted.
    pub p1: Option<SocketAddr>,
    /// See `p1`.
    pub p2: Option<SocketAddr>,
    /// See `p1`.
    pub p3: Option<SocketAddr>,
    /// See `p1`.
    pub q: Option<SocketAddr>,
    /// See `p1`.
    pub r: Option<SocketAddr>,
    /// The mapped (external) address P1, P2 and P3 saw.
    pub m1: Option<SocketAddr>,
    /// See `m1`.
    pub m2: Option<SocketAddr>,
    /// See `m1`.
    pub m3: Option<SocketAddr>,
    /// The source the proxy claimed for Q's datagram, if it was delivered.
    pub q_delivered_as: Option<SocketAddr>,
    /// The source the proxy claimed for R's datagram, if it was delivered.
    pub r_delivered_as: Option<SocketAddr>,
    /// Where the application's answer to Q came from, as Q saw it.
    pub reply_from: Option<SocketAddr>,
    /// A step that could not be played (an error in the checker or the proxy).
    pub error: Option<String>,
}

async fn peer(ip: IpAddr) -> Result<UdpPeer, String> {
    UdpPeer::bind(SocketAddr::new(ip, 0), false)
        .await
        .map_err(|e| format!("checker: UDP peer on {ip}: {e}"))
}

/// The application sends `payload` to `p` (resent) until `p` gets it; the source `p` saw.
async fn out(
    app: &SocksApp,
    p: &mut UdpPeer,
    payload: &[u8],
    wait: Duration,
) -> Option<SocketAddr> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if app.send_to(p.addr, payload).await.is_err() {
            return None;
        }
        let step = RESEND.min(deadline.saturating_duration_since(Instant::now()));
        if p.wait_for(step, |l| l.iter().any(|g| g.payload == payload))
            .await
        {
            return p.find(payload).map(|g| g.from);
        }
    }
    None
}

/// `p` sends `payload` to `to` (resent) until the application gets it; the source the
/// proxy claimed for it.
async fn inbound(
    app: &mut SocksApp,
    p: &UdpPeer,
    to: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> Option<SocketAddr> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let _ = p.send_to(payload, to).await;
        let step = RESEND.min(deadline.saturating_duration_since(Instant::now()));
        if app
            .wait_for(step, |l| l.iter().any(|g| g.payload == payload))
            .await
        {
            return app.find(payload).map(|g| g.from);
        }
    }
    None
}

/// T1-T4 in one association (see the module doc).
pub async fn survey(s: &Setup) -> Survey {
    let mut v = Survey::default();
    if let Err(e) = survey_into(s, &mut v).await {
        v.error = Some(e);
    }
    v
}

async fn survey_into(s: &Setup, v: &mut Survey) -> Result<(), String> {
    let (a, b) = match s.peer_ips.as_slice() {
        [a, b, ..] => (*a, *b),
        _ => return Err("checker: two outside addresses are needed".into()),
    };
    let fresh = *s.peer_ips.get(2).unwrap_or(&b);
    let mut app = SocksApp::open(s.socks, s.wait).await?;
    v.app = app.local();
    let (mut p1, mut p2, mut p3) = (peer(a).await?, peer(b).await?, peer(a).await?);
    let (mut q, r) = (peer(fresh).await?, peer(a).await?);
    v.p1 = Some(p1.addr);
    v.p2 = Some(p2.addr);
    v.p3 = Some(p3.addr);
    v.q = Some(q.addr);
    v.r = Some(r.addr);
    v.m1 = out(&app, &mut p1, b"to p1", s.wait).await;
    let m1 = v.m1.ok_or_else(|| {
        format!(
            "nothing reached P1 {} through the proxy within {:?}",
            p1.addr, s.wait
        )
    })?;
    v.m2 = out(&app, &mut p2, b"to p2", s.wait).await;
    v.m3 = out(&app, &mut p3, b"to p3", s.wait).await;
    v.q_delivered_as = inbound(&mut app, &q, m1, b"from q", s.wait).await;
    v.r_delivered_as = inbound(&mut app, &r, m1, b"from r", s.wait).await;
    v.reply_from = out(&app, &mut q, b"answer to q", s.wait).await;
    Ok(())
}

/// T5: outbound datagrams to one peer every `timeout / 4` for `2 * timeout`; whether they
/// all left from one mapping, and whether the peer still reaches the application after.
pub async fn refresh(s: &Setup, timeout: Duration) -> Result<String, String> {
    let ip = *s.peer_ips.first().ok_or("checker: no outside address")?;
    let mut app = SocksApp::open(s.socks, s.wait).await?;
    let mut p = peer(ip).await?;
    let first = out(&app, &mut p, b"refresh 0", s.wait)
        .await
        .ok_or_else(|| format!("nothing reached {} within {:?}", p.addr, s.wait))?;
    let step = timeout / 4;
    let rounds = 9u32;
    for i in 1..rounds {
        tokio::time::sleep(step).await;
        let payload = format!("refresh {i}");
        let m = out(&app, &mut p, payload.as_bytes(), s.wait)
            .await
            .ok_or_else(|| format!("{payload}: nothing reached {}", p.addr))?;
        if m != first {
            return Err(format!(
                "after {:?} of outbound traffic every {step:?} the mapping moved from {first} to {m}",
                step * i
            ));
        }
    }
    match inbound(&mut app, &p, first, b"still mapped", s.wait).await {
        Some(_) => Ok(format!(
            "{} datagrams over {:?} (timeout {timeout:?}) all left from {first}; the peer still reaches the application",
            rounds,
            step * (rounds - 1)
        )),
        None => Err(format!(
            "after {:?} of refreshes, {} writing to {first} no longer reaches the application",
            step * (rounds - 1),
            p.addr
        )),
    }
}

/// T6: one outbound datagram, `idle` of silence, then the peer writes to the mapping and
/// the application writes to the peer again.
pub async fn idle(s: &Setup, idle: Duration) -> Result<String, String> {
    let ip = *s.peer_ips.first().ok_or("checker: no outside address")?;
    let mut app = SocksApp::open(s.socks, s.wait).await?;
    let mut p = peer(ip).await?;
    let m = out(&app, &mut p, b"before idle", s.wait)
        .await
        .ok_or_else(|| format!("nothing reached {} within {:?}", p.addr, s.wait))?;
    tokio::time::sleep(idle).await;
    if inbound(&mut app, &p, m, b"after idle", s.wait)
        .await
        .is_none()
    {
        return Err(format!(
            "after {idle:?} idle, {} writing to {m} no longer reaches the application",
            p.addr
        ));
    }
    match out(&app, &mut p, b"again", s.wait).await {
        Some(m2) if m2 == m => Ok(format!(
            "after {idle:?} idle the mapping {m} still works both ways"
        )),
        Some(m2) => Err(format!(
            "after {idle:?} idle the peer got through, but the next datagram left from {m2}, not {m}"
        )),
        None => Err(format!("after {idle:?} idle nothing reached {}", p.addr)),
    }
}
