//! The Candy server cases: one per rule, each with a stable id `CANDY-<AREA>-<RULE>`,
//! the level, where the rule comes from (`seed` = seed 003, `notes` =
//! shared/protocols/candy.md, `tunnelbed` = our reading where both are silent), and an
//! async body that plays it with fake clients of its own.
//!
//! Readings where the texts are silent:
//! - "close silently" after a bad hash: the connection must carry nothing back; a close
//!   is expected but a server that stays silent and open also passes (nothing leaked).
//! - replay: the seed says the timestamp guards against replay. An AUTH an hour old, and
//!   a second copy of an AUTH the server already accepted, must both be refused: the
//!   replayer must not receive the victim's traffic, nor reach others.

use std::net::Ipv4Addr;
use std::sync::Arc;

use tunnelbed_candy::wire::{Discovery, General, Message, PeerInfo, BROADCAST};

use super::ctx::{forward, forward_text, unix_now, Ctx, Seen};
use crate::framework::{self, Level, Outcome, Verdict};

/// What a case body returns.
pub type CaseFuture = framework::CaseFuture;

/// Plays one case.
pub type CaseBody = framework::CaseBody<Ctx>;

/// One case.
pub type Case = framework::Case<CaseBody>;

macro_rules! case {
    ($id:literal, $level:ident, $source:literal, $clause:literal, $f:ident) => {
        Case {
            id: $id,
            level: Level::$level,
            source: $source,
            clause: $clause,
            differs: None,
            body: |c| Box::pin($f(c)),
        }
    };
    ($id:literal, $level:ident, $source:literal, $clause:literal, $f:ident, $differs:literal) => {
        Case {
            id: $id,
            level: Level::$level,
            source: $source,
            clause: $clause,
            differs: Some($differs),
            body: |c| Box::pin($f(c)),
        }
    };
}

/// Every case, in report order.
pub fn all() -> Vec<Case> {
    vec![
        case!("CANDY-FWD-UNICAST", Must, "seed", "FORWARD is delivered to the client that authenticated with its destination, byte for byte", fwd_unicast),
        case!("CANDY-AUTH-BAD-HASH-SILENT", Must, "seed", "an AUTH with a bad hash gets no answer, and the address is not bound to the sender", auth_bad_hash),
        case!("CANDY-AUTH-REPLAY", Must, "seed", "an AUTH replayed (copied from an accepted one, or an hour old) is refused: the replayer gets no traffic", auth_replay, "Candy accepts both (no replay check; it only logs a clock skew over 300 s)"),
        case!("CANDY-AUTH-REPLACE", Must, "notes", "a second AUTH for an address replaces the older connection", auth_replace),
        case!("CANDY-AUTH-REQUIRED", Must, "seed", "FORWARD before AUTH is not delivered", auth_required),
        case!("CANDY-FWD-SPOOFED-SOURCE", Must, "notes", "a FORWARD whose source is not the sender's address is dropped", fwd_spoofed, "Candy after 6.0.2 delivers it (no source check)"),
        case!("CANDY-FWD-UNKNOWN-DST", Should, "notes", "a FORWARD to an address nobody has is dropped", fwd_unknown),
        case!("CANDY-BROADCAST", Must, "notes", "FORWARD to 255.255.255.255 reaches every other client, not the sender", broadcast),
        case!("CANDY-MULTICAST", Must, "notes", "FORWARD to a multicast address reaches every other client", multicast),
        case!("CANDY-PEERINFO-RELAY", Must, "seed", "PEER INFO is relayed to its destination", peerinfo_relay),
        case!("CANDY-DISCOVERY-BROADCAST", Must, "seed", "DISCOVERY to 255.255.255.255 reaches every other client", discovery_broadcast),
        case!("CANDY-GENERAL-LAN-RELAY", Must, "seed", "GENERAL (LAN address subtype) is relayed to its destination", general_relay),
        case!("CANDY-RELAY-SPOOFED-SOURCE", Must, "notes", "DISCOVERY whose src is not the sender's address is not relayed", relay_spoofed),
        case!("CANDY-VMAC-NO-AUTH", Must, "seed", "VMAC is accepted before AUTH (the connection stays usable)", vmac_no_auth),
        case!("CANDY-DHCP-GRANT", Must, "seed", "DHCP answers with the same message type, a hash made with the password and an address of the pool", dhcp_grant),
        case!("CANDY-DHCP-NO-DUPLICATE", Must, "seed", "DHCP never grants an address a client with another vmac holds", dhcp_no_duplicate),
        case!("CANDY-DHCP-SAME-VMAC", Must, "notes", "DHCP grants the requested address again to the same vmac", dhcp_same_vmac),
        case!("CANDY-DHCP-NOT-NET-BCAST", Must, "notes", "DHCP never grants the pool's network or broadcast address", dhcp_not_net_bcast, "Candy grants them when asked"),
    ]
}

fn pass(s: impl Into<String>) -> Outcome {
    Ok(Verdict::Pass(s.into()))
}

/// Two authenticated clients, with a first packet A -> B proving both are bound.
async fn pair(c: &Ctx) -> Result<(super::ctx::Peer, super::ctx::Peer), String> {
    let mut a = c.authed().await?;
    let mut b = c.authed().await?;
    c.bind(&mut a, &mut b).await?;
    c.bind(&mut b, &mut a).await?;
    Ok((a, b))
}

async fn fwd_unicast(c: Arc<Ctx>) -> Outcome {
    let (mut a, mut b) = pair(&c).await?;
    let m = forward(a.ip, b.ip, "exact");
    a.send(&m).await?;
    let got = b.expect_msg("the FORWARD").await?;
    if forward_text(&got).as_deref() != Some("exact") {
        return Err(format!("{} got {:?} instead", b.ip, forward_text(&got)));
    }
    let want = m.to_bytes().map_err(|e| e.to_string())?;
    if got[..] != want[..] {
        return Err(format!(
            "delivered {} bytes differ from the {} sent",
            got.len(),
            want.len()
        ));
    }
    pass(format!("{} -> {}: {} bytes intact", a.ip, b.ip, got.len()))
}

/// Whether a client claiming `ip` got the traffic for it: a bound peer sends a probe to
/// `ip`, then a marker to itself-through-`witness`. Returns what the claimer saw.
async fn claimer_sees(
    c: &Ctx,
    claimer: &mut super::ctx::Peer,
    ip: Ipv4Addr,
) -> Result<Option<String>, String> {
    let (mut a, mut w) = pair(c).await?;
    a.send(&forward(a.ip, ip, "for-the-claimed-address"))
        .await?;
    // The marker goes A -> W after the probe on the same connection: once W has it, the
    // server has routed the probe.
    a.send(&forward(a.ip, w.ip, "marker")).await?;
    w.expect_text("marker").await?;
    match claimer.recv_for(c.wait() / 2).await {
        Seen::Msg(b) => Ok(Some(
            forward_text(&b).unwrap_or_else(|| format!("a {}-byte message", b.len())),
        )),
        Seen::Closed | Seen::Silent => Ok(None),
    }
}

async fn auth_bad_hash(c: Arc<Ctx>) -> Outcome {
    let ip = c.fresh_ip();
    let mut x = c.connect().await?;
    x.ip = ip;
    let mut m = c
        .auth_msg(ip, unix_now())
        .to_bytes()
        .map_err(|e| e.to_string())?;
    m[20] ^= 0x5a;
    x.send_raw(m.to_vec()).await?;
    match x.recv().await {
        Seen::Msg(b) => {
            return Err(format!(
                "the server answered a bad AUTH ({} bytes)",
                b.len()
            ))
        }
        Seen::Closed | Seen::Silent => {}
    }
    if let Some(t) = claimer_sees(&c, &mut x, ip).await? {
        return Err(format!(
            "traffic for {ip} reached the bad-hash client: {t:?}"
        ));
    }
    pass("no answer; the address was not bound")
}

async fn auth_replay(c: Arc<Ctx>) -> Outcome {
    // 1. A copy of an AUTH the server accepted.
    let ip = c.fresh_ip();
    let vm = c.vmac();
    let mut v = c.connect().await?;
    v.ip = ip;
    let auth = c.auth_msg(ip, unix_now());
    v.send(&c.vmac_msg(vm)).await?;
    v.send(&auth).await?;
    let mut a = c.authed().await?;
    c.bind(&mut a, &mut v).await?;
    let mut r = c.connect().await?;
    r.ip = ip;
    r.send(&auth).await?;
    // If the replay were accepted, the replayer's packets from `ip` would flow too.
    r.send(&forward(ip, a.ip, "from-replayer")).await?;
    a.send(&forward(a.ip, ip, "after-replay")).await?;
    let seen_r = r.recv_for(c.wait() / 2).await;
    if let Seen::Msg(b) = &seen_r {
        return Err(format!(
            "a replayed AUTH took over {ip}: the replayer got {:?}",
            forward_text(b)
        ));
    }
    match v.expect_text("after-replay").await {
        Ok(_) => {}
        Err(e) => {
            return Err(format!(
                "after a replayed AUTH the victim lost its traffic: {e}"
            ))
        }
    }
    if let Seen::Msg(b) = a.recv_for(c.wait() / 2).await {
        if forward_text(&b).as_deref() == Some("from-replayer") {
            return Err("a replayed AUTH let its sender's packets through".into());
        }
    }
    // 2. An AUTH an hour old.
    let old_ip = c.fresh_ip();
    let mut o = c.connect().await?;
    o.ip = old_ip;
    o.send(&c.auth_msg(old_ip, unix_now() - 3600)).await?;
    if let Some(t) = claimer_sees(&c, &mut o, old_ip).await? {
        return Err(format!(
            "an AUTH timestamped an hour ago was accepted: {old_ip}'s traffic reached it ({t:?})"
        ));
    }
    pass("a copied AUTH and an hour-old AUTH were both refused")
}

async fn auth_replace(c: Arc<Ctx>) -> Outcome {
    let (mut a, _b) = pair(&c).await?;
    let ip = c.fresh_ip();
    let vm = c.vmac();
    let mut old = c.authed_as(ip, vm).await?;
    c.bind(&mut a, &mut old).await?;
    let mut new = c.connect().await?;
    new.ip = ip;
    new.send(&c.vmac_msg(vm)).await?;
    // One second later than the first AUTH, so a server refusing repeats still takes it.
    new.send(&c.auth_msg(ip, unix_now() + 1)).await?;
    // The new connection's own packet proves its AUTH was processed.
    new.send(&forward(ip, a.ip, "new-bound")).await?;
    a.expect_text("new-bound").await?;
    a.send(&forward(a.ip, ip, "to-new")).await?;
    new.expect_text("to-new").await?;
    match old.recv_for(c.wait() / 2).await {
        Seen::Msg(b) if forward_text(&b).as_deref() == Some("to-new") => {
            Err("the old connection still gets the address's traffic".into())
        }
        Seen::Closed => pass("the new connection gets the traffic; the old one was closed"),
        _ => pass("the new connection gets the traffic"),
    }
}

async fn auth_required(c: Arc<Ctx>) -> Outcome {
    let (mut a, mut b) = pair(&c).await?;
    let mut u = c.connect().await?;
    let ip = c.fresh_ip();
    u.send(&forward(ip, b.ip, "unauthenticated")).await?;
    let closed = matches!(u.recv_for(c.wait() / 2).await, Seen::Closed);
    a.send(&forward(a.ip, b.ip, "marker")).await?;
    let before = b.expect_text("marker").await?;
    if before.iter().any(|t| t == "unauthenticated") {
        return Err("a FORWARD from a connection without AUTH was delivered".into());
    }
    pass(if closed {
        "not delivered; the connection was closed"
    } else {
        "not delivered"
    })
}

async fn fwd_spoofed(c: Arc<Ctx>) -> Outcome {
    let (mut a, mut b) = pair(&c).await?;
    let other = c.fresh_ip();
    a.send(&forward(other, b.ip, "spoofed")).await?;
    a.send(&forward(a.ip, b.ip, "marker")).await?;
    let before = b.expect_text("marker").await?;
    if before.iter().any(|t| t == "spoofed") {
        return Err(format!(
            "a packet from {} with source {other} was delivered to {}",
            a.ip, b.ip
        ));
    }
    pass("dropped; the honest packet after it arrived")
}

async fn fwd_unknown(c: Arc<Ctx>) -> Outcome {
    let (mut a, mut b) = pair(&c).await?;
    let nobody = c.fresh_ip();
    a.send(&forward(a.ip, nobody, "nobody")).await?;
    a.send(&forward(a.ip, b.ip, "marker")).await?;
    let before = b.expect_text("marker").await?;
    if !before.is_empty() {
        return Err(format!(
            "a packet for {nobody} reached {}: {before:?}",
            b.ip
        ));
    }
    pass("dropped")
}

async fn fan_out(c: &Ctx, dst: Ipv4Addr) -> Outcome {
    let (mut a, mut b) = pair(c).await?;
    let mut d = c.authed().await?;
    c.bind(&mut b, &mut d).await?;
    a.send(&forward(a.ip, dst, "group")).await?;
    b.expect_text("group").await?;
    d.expect_text("group").await?;
    // The sender must not get its own packet back: B -> A marker decides.
    b.send(&forward(b.ip, a.ip, "marker")).await?;
    let before = a.expect_text("marker").await?;
    if before.iter().any(|t| t == "group") {
        return Err("the sender got its own group packet back".into());
    }
    pass(format!(
        "{dst}: both other clients got it, the sender did not"
    ))
}

async fn broadcast(c: Arc<Ctx>) -> Outcome {
    fan_out(&c, BROADCAST).await
}

async fn multicast(c: Arc<Ctx>) -> Outcome {
    fan_out(&c, Ipv4Addr::new(224, 0, 0, 251)).await
}

async fn peerinfo_relay(c: Arc<Ctx>) -> Outcome {
    let (mut a, mut b) = pair(&c).await?;
    let m = Message::PeerInfo(PeerInfo {
        src: a.ip,
        dst: b.ip,
        ip: Ipv4Addr::new(198, 51, 100, 7),
        port: 4242,
    });
    a.send(&m).await?;
    let got = b.expect_msg("PEER INFO").await?;
    match Message::decode(&got) {
        Ok(g) if g == m => pass("relayed intact"),
        other => Err(format!("got {other:?} instead of {m:?}")),
    }
}

async fn discovery_broadcast(c: Arc<Ctx>) -> Outcome {
    let (mut a, mut b) = pair(&c).await?;
    let m = Message::Discovery(Discovery {
        src: a.ip,
        dst: BROADCAST,
    });
    a.send(&m).await?;
    let got = b.expect_msg("DISCOVERY").await?;
    match Message::decode(&got) {
        Ok(g) if g == m => pass("relayed to the other client"),
        other => Err(format!("got {other:?} instead of {m:?}")),
    }
}

async fn general_relay(c: Arc<Ctx>) -> Outcome {
    let (mut a, mut b) = pair(&c).await?;
    let m = Message::General(General::lan_address(
        a.ip,
        b.ip,
        Ipv4Addr::new(192, 168, 7, 9),
        5555,
    ));
    a.send(&m).await?;
    let got = b.expect_msg("GENERAL").await?;
    match Message::decode(&got) {
        Ok(g) if g == m => pass("relayed intact"),
        other => Err(format!("got {other:?} instead of {m:?}")),
    }
}

async fn relay_spoofed(c: Arc<Ctx>) -> Outcome {
    let (mut a, mut b) = pair(&c).await?;
    let mut d = c.authed().await?;
    // D spoofs A as the source of a DISCOVERY to B.
    d.send(&Message::Discovery(Discovery {
        src: a.ip,
        dst: b.ip,
    }))
    .await?;
    let closed = matches!(d.recv_for(c.wait() / 2).await, Seen::Closed);
    a.send(&forward(a.ip, b.ip, "marker")).await?;
    match b.recv().await {
        Seen::Msg(x) if forward_text(&x).as_deref() == Some("marker") => {}
        Seen::Msg(x) => {
            return Err(format!(
                "B got {:?} (the spoofed DISCOVERY was relayed)",
                Message::decode(&x)
            ))
        }
        other => return Err(format!("B saw {other:?} instead of the marker")),
    }
    pass(if closed {
        "not relayed; the spoofer was closed"
    } else {
        "not relayed"
    })
}

async fn vmac_no_auth(c: Arc<Ctx>) -> Outcome {
    let mut p = c.connect().await?;
    p.send(&c.vmac_msg(c.vmac())).await?;
    if let Seen::Msg(b) = p.recv_for(c.wait() / 2).await {
        return Err(format!("VMAC got an answer of {} bytes", b.len()));
    }
    let ip = c.fresh_ip();
    p.send(&c.auth_msg(ip, unix_now())).await?;
    p.ip = ip;
    let mut a = c.authed().await?;
    c.bind(&mut a, &mut p).await?;
    pass("the connection authenticated after its VMAC and gets traffic")
}

/// The pool as DHCP reveals it, or N/A when the server has none.
async fn pool_grant(
    c: &Ctx,
    want: &str,
    vmac: [u8; 16],
) -> Result<Option<tunnelbed_netio::Ipv4Cidr>, String> {
    let mut p = c.connect().await?;
    p.send(&c.vmac_msg(vmac)).await?;
    c.dhcp(&mut p, want).await
}

fn no_pool() -> Outcome {
    Ok(Verdict::NotApplicable(
        "the server closed the connection on DHCP (no address pool?)".into(),
    ))
}

async fn dhcp_grant(c: Arc<Ctx>) -> Outcome {
    let Some(g) = pool_grant(&c, "0.0.0.0/0", c.vmac()).await? else {
        return no_pool();
    };
    if g.addr.is_unspecified() || g.prefix == 0 || g.prefix > 30 {
        return Err(format!("granted {g}"));
    }
    pass(format!("granted {g}"))
}

async fn dhcp_no_duplicate(c: Arc<Ctx>) -> Outcome {
    let Some(g) = pool_grant(&c, "0.0.0.0/0", c.vmac()).await? else {
        return no_pool();
    };
    // X takes `g` and authenticates; Y (another vmac) asks for the same address.
    let mut x = c.connect().await?;
    x.send(&c.vmac_msg(c.vmac())).await?;
    let Some(gx) = c.dhcp(&mut x, &g.to_string()).await? else {
        return Err("the server closed X's DHCP".into());
    };
    x.send(&c.auth_msg(gx.addr, unix_now())).await?;
    x.ip = gx.addr;
    let mut a = c.authed().await?;
    c.bind(&mut a, &mut x).await?;
    let Some(gy) = pool_grant(&c, &gx.to_string(), c.vmac()).await? else {
        return Err("the server closed Y's DHCP".into());
    };
    if gy.addr == gx.addr {
        return Err(format!(
            "{} granted to Y while X (another vmac) holds it",
            gy.addr
        ));
    }
    pass(format!("X holds {gx}; Y asking for it got {gy}"))
}

async fn dhcp_same_vmac(c: Arc<Ctx>) -> Outcome {
    let vm = c.vmac();
    let mut x = c.connect().await?;
    x.send(&c.vmac_msg(vm)).await?;
    let Some(gx) = c.dhcp(&mut x, "0.0.0.0/0").await? else {
        return no_pool();
    };
    x.send(&c.auth_msg(gx.addr, unix_now())).await?;
    x.ip = gx.addr;
    let mut a = c.authed().await?;
    c.bind(&mut a, &mut x).await?;
    // The same client reconnects (its old connection still open) and asks again.
    let Some(again) = pool_grant(&c, &gx.to_string(), vm).await? else {
        return Err("the server closed the reconnect's DHCP".into());
    };
    if again != gx {
        return Err(format!("the same vmac asked for {gx} and got {again}"));
    }
    pass(format!("{gx} again"))
}

async fn dhcp_not_net_bcast(c: Arc<Ctx>) -> Outcome {
    let Some(g) = pool_grant(&c, "0.0.0.0/0", c.vmac()).await? else {
        return no_pool();
    };
    let mask = u32::from(g.netmask());
    let net = Ipv4Addr::from(u32::from(g.addr) & mask);
    let bcast = Ipv4Addr::from(u32::from(g.addr) | !mask);
    let mut bad = Vec::new();
    for want in [net, bcast] {
        let ask = format!("{want}/{}", g.prefix);
        match pool_grant(&c, &ask, c.vmac()).await? {
            Some(got) if got.addr == net || got.addr == bcast => {
                bad.push(format!("asked {ask}, granted {got}"))
            }
            _ => {}
        }
    }
    if bad.is_empty() {
        pass(format!("neither {net} nor {bcast} granted"))
    } else {
        Err(bad.join("; "))
    }
}
