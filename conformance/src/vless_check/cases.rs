//! The VLESS server cases: one per rule, each with a stable id `VLESS-<AREA>-<RULE>`, the
//! level (MUST, or SHOULD which only counts under `--strict`), where the rule comes from
//! (`seed` 004, `notes` = shared/protocols/vless.md, `tunnelbed` = our reading where both
//! are silent, stated in the clause) and an async body that plays it on connections of its
//! own, against destinations of its own (so "nothing was dialed" can be checked at the
//! destination, not guessed from the answer).
//!
//! Every wait is bounded by the configured wait (5 s by default). Headers are built from
//! raw parts ([`raw_header`]) so a case can send what our encoder refuses.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tunnelbed_carrier::CarrierKind;
use tunnelbed_vless::wire::{Address, Command, Umfurs, Version, CRUMFURS_ESTABLISHED};

use super::conn::Conn;
use super::ctx::{raw_header, Ctx};
use super::peer::UdpPeer;
use crate::framework::{self, Level, Outcome, Verdict};
use crate::pong_check::targets::{pattern, TcpTarget};
use crate::ports::RefusingPort;

/// What a case body returns.
pub type CaseFuture = framework::CaseFuture;

/// Plays one case on connections of its own.
pub type CaseBody = framework::CaseBody<Ctx>;

/// One case: id `VLESS-<AREA>-<RULE>`.
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
}

/// Every case, in the order they run and are reported.
pub fn all() -> Vec<Case> {
    vec![
        case!("VLESS-HDR-V0-ACCEPT", Must, "notes",
            "v0 header (known uuid, cmd 1, IPv4) and payload in one write: dialed, payload relayed, echo back",
            hdr_v0_accept),
        case!("VLESS-RESP-HEADER", Must, "notes",
            "response is `ver M addons` with the request's version; the downlink follows the M addon bytes",
            resp_header),
        case!("VLESS-RESP-NOT-AWAITED", Must, "notes",
            "header alone, no payload: the target is dialed at once and its first bytes come back (nothing awaited from the client)",
            resp_not_awaited),
        case!("VLESS-HDR-SPLIT", Must, "tunnelbed",
            "a header arriving one byte per write is read whole and served",
            hdr_split),
        case!("VLESS-HDR-ADDONS-SKIPPED", Must, "notes",
            "addons with unknown protobuf fields are skipped by their length M; the request is served",
            addons_skipped),
        case!("VLESS-HDR-ADDONS-MALFORMED", Must, "tunnelbed",
            "addons that are not valid protobuf: closed, nothing written back, nothing dialed",
            addons_malformed),
        case!("VLESS-HDR-FLOW-UNKNOWN", Must, "notes",
            "a flow the server does not implement: closed, nothing written back, nothing dialed",
            flow_unknown),
        case!("VLESS-AUTH-UNKNOWN-UUID-SILENT", Must, "notes",
            "unknown uuid: closed, zero bytes written back, nothing dialed",
            unknown_uuid),
        case!("VLESS-HDR-BAD-VERSION", Must, "notes",
            "a version byte the server does not serve (0x7f; a v0 server also 1): closed silently, nothing dialed",
            bad_version),
        case!("VLESS-HDR-TRUNCATED", Must, "seed",
            "header cut after 20 bytes, then EOF: closed, nothing written back, nothing dialed",
            truncated),
        case!("VLESS-CMD-UNKNOWN", Must, "notes",
            "command 9 with a valid address: closed, nothing written back, nothing dialed",
            cmd_unknown),
        case!("VLESS-CMD-CRUMFURS-V0", Must, "tunnelbed",
            "command 4 (CRUMFURS) exists in v1 only: in a v0 request it is closed silently",
            cmd_crumfurs_v0),
        case!("VLESS-ADDR-DOMAIN", Must, "notes",
            "atyp 2 (domain \"localhost\") is resolved and relayed",
            addr_domain),
        case!("VLESS-ADDR-IPV6", Must, "notes",
            "atyp 3 (IPv6 ::1) is relayed",
            addr_ipv6),
        case!("VLESS-ADDR-BAD-TYPE", Must, "notes",
            "atyp 9 (VLESS has 1, 2, 3) before an IPv4 address: closed silently, nothing dialed",
            addr_bad_type),
        case!("VLESS-ADDR-EMPTY-DOMAIN", Should, "tunnelbed",
            "a domain of length 0: closed silently",
            addr_empty_domain),
        case!("VLESS-TCP-BULK", Must, "notes",
            "1 MiB through an echo comes back byte for byte",
            tcp_bulk),
        case!("VLESS-TCP-HALF-CLOSE", Should, "tunnelbed",
            "the client's FIN reaches the target; the target's answer after it still comes back (tcp/tls carriers)",
            tcp_half_close),
        case!("VLESS-TCP-TARGET-END", Must, "tunnelbed",
            "when the target ends, the client's connection ends after the last byte (no hang)",
            tcp_target_end),
        case!("VLESS-TCP-DIAL-REFUSED", Must, "tunnelbed",
            "a refused dial closes the client's connection (no hang)",
            dial_refused),
        case!("VLESS-UDP-ECHO", Must, "notes",
            "cmd 2: frames `len u16 | payload` of 1, 100, 1400 and 2046 bytes each reach the target as one datagram and come back framed",
            udp_echo),
        case!("VLESS-UDP-LEN", Must, "notes",
            "a frame split across writes, and two frames in one write, are cut by their lengths into exactly those datagrams",
            udp_len),
        case!("VLESS-UDP-LEN-PARTIAL", Must, "tunnelbed",
            "a frame announcing 1000 bytes with 10 sent: nothing reaches the target until the rest comes, then one datagram of 1000",
            udp_len_partial),
        case!("VLESS-UDP-LARGE", Should, "tunnelbed",
            "a frame of 8192 bytes reaches the target as one datagram of 8192 (datagram boundaries kept)",
            udp_large),
        case!("VLESS-UDP-LEN-OVERSIZE", Should, "tunnelbed",
            "a frame of 65535 bytes (over the IPv4 limit of 65507) sends no datagram cut from it",
            udp_oversize),
        case!("VLESS-UDP-ONLY-TARGET", Should, "notes",
            "a v0 UDP flow carries only its target's datagrams: another source writing to the server's port is not passed off as the target",
            udp_only_target),
        case!("VLESS-V1-RESP-VERSION", Must, "seed",
            "v1: a cmd 1 request is relayed and answered with version 1",
            v1_resp_version),
        case!("VLESS-V1-CRUMFURS", Must, "seed",
            "v1: cmd 4 is answered with the one byte 0x14 and the connection is kept open",
            v1_crumfurs),
        case!("VLESS-V1-UMFURS", Must, "seed",
            "v1: a datagram from a source the client never contacted arrives as UMFURS on the CRUMFURS channel with its true address",
            v1_umfurs),
        case!("VLESS-V1-REPLY-SAME-PORT", Must, "seed",
            "v1: the client's answer to that source (new cmd 2) leaves the server from the port the source wrote to",
            v1_reply_same_port),
    ]
}

// ---------------------------------------------------------------------------------------
// Helpers

fn ip(a: SocketAddr) -> Option<Address> {
    Some(Address::Ip(a))
}

/// Length of the response header at the start of `b`: `Ok(None)` until it is whole.
fn resp_len(b: &[u8], ver: u8) -> Result<Option<usize>, String> {
    let Some(&v) = b.first() else { return Ok(None) };
    if v != ver {
        return Err(format!("response version {v}, request was {ver}"));
    }
    let Some(&m) = b.get(1) else { return Ok(None) };
    let n = 2 + m as usize;
    Ok((b.len() >= n).then_some(n))
}

/// Waits for the response header and `want` bytes after it; returns the bytes after it.
async fn downlink(c: &mut Conn, ctx: &Ctx, ver: u8, want: usize) -> Result<Vec<u8>, String> {
    let w = ctx.wait();
    c.read_until(w, |b| {
        matches!(resp_len(b, ver), Ok(Some(n)) if b.len() >= n + want) || resp_len(b, ver).is_err()
    })
    .await;
    match resp_len(&c.got, ver)? {
        Some(n) if c.got.len() >= n + want => Ok(c.got[n..].to_vec()),
        _ => Err(format!(
            "expected a response header and {want} bytes within {}; {}",
            ctx.wait_text(),
            c.summary()
        )),
    }
}

/// Sends `bytes` (then FIN when `fin`), and requires the server to close with nothing
/// written; `dialed` says after the close whether anything reached a destination.
async fn silent_close(ctx: &Ctx, bytes: Vec<u8>, fin: bool, dialed: impl AsyncCheck) -> Outcome {
    let mut c = ctx.conn().await?;
    c.send(bytes);
    if fin {
        c.shutdown();
    }
    let ended = c.wait_end(ctx.wait()).await;
    if !c.got.is_empty() {
        return Err(format!("the server wrote back: {}", c.summary()));
    }
    if !ended {
        return Err(format!(
            "still open after {} with nothing written (a server must close)",
            ctx.wait_text()
        ));
    }
    if let Some(d) = dialed.check().await {
        return Err(format!("closed silently, but {d}"));
    }
    Ok(Verdict::Pass(format!("{}, nothing dialed", c.summary())))
}

/// Whether a destination was reached (`Some(what)` if so).
trait AsyncCheck {
    fn check(self) -> impl Future<Output = Option<String>> + Send;
}

impl AsyncCheck for &mut TcpTarget {
    async fn check(self) -> Option<String> {
        let n = self.accepted();
        (n > 0).then(|| format!("the target was dialed {n} time(s)"))
    }
}

impl AsyncCheck for &mut UdpPeer {
    async fn check(self) -> Option<String> {
        self.drain();
        (!self.log.is_empty()).then(|| format!("the target got {} datagram(s)", self.log.len()))
    }
}

async fn echo_target(ctx: &Ctx) -> Result<TcpTarget, String> {
    TcpTarget::echo(ctx.ip())
        .await
        .map_err(|e| format!("checker: TCP target on {}: {e}", ctx.ip()))
}

async fn udp_peer(ctx: &Ctx, echo: bool) -> Result<UdpPeer, String> {
    UdpPeer::bind(ctx.any_port(), echo)
        .await
        .map_err(|e| format!("checker: UDP peer on {}: {e}", ctx.ip()))
}

/// Header + payload in one write to the echo `t`; the echo must come back after a
/// response of version `ver`.
async fn echoed(ctx: &Ctx, t: &mut TcpTarget, header: Vec<u8>, ver: u8, what: &str) -> Outcome {
    let payload = format!("vless check {}", ctx.id).into_bytes();
    let mut c = ctx.conn().await?;
    let mut b = header;
    b.extend_from_slice(&payload);
    c.send(b);
    let got = downlink(&mut c, ctx, ver, payload.len()).await?;
    if got[..payload.len()] != payload[..] {
        return Err(format!("echo differs: {}", c.summary()));
    }
    Ok(Verdict::Pass(format!(
        "{what}: dialed {}x, {}-byte echo back after response {:02x?}",
        t.accepted(),
        payload.len(),
        &c.got[..c.got.len() - got.len()]
    )))
}

fn frame(p: &[u8]) -> Vec<u8> {
    let mut v = (p.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(p);
    v
}

/// The whole frames in `b` (after the response header).
fn frames(b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(&h), Some(&l)) = (b.get(at), b.get(at + 1)) {
        let n = u16::from_be_bytes([h, l]) as usize;
        let Some(p) = b.get(at + 2..at + 2 + n) else {
            break;
        };
        out.push(p.to_vec());
        at += 2 + n;
    }
    out
}

/// Reads until `n` whole frames followed the response header.
async fn read_frames(c: &mut Conn, ctx: &Ctx, ver: u8, n: usize) -> Result<Vec<Vec<u8>>, String> {
    c.read_until(ctx.wait(), |b| match resp_len(b, ver) {
        Ok(Some(h)) => frames(&b[h..]).len() >= n,
        Ok(None) => false,
        Err(_) => true,
    })
    .await;
    let h = resp_len(&c.got, ver)?.ok_or_else(|| {
        format!(
            "no response header within {}; {}",
            ctx.wait_text(),
            c.summary()
        )
    })?;
    Ok(frames(&c.got[h..]))
}

fn sizes(l: &[super::peer::Got]) -> Vec<usize> {
    l.iter().map(|g| g.payload.len()).collect()
}

fn numbered(n: usize, tag: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ tag).collect()
}

// ---------------------------------------------------------------------------------------
// Header and response

async fn hdr_v0_accept(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    let payload = b"hello vless".to_vec();
    let mut c = ctx.conn().await?;
    let mut b = ctx.header(Version::V0, Command::Tcp, ip(t.addr));
    b.extend_from_slice(&payload);
    c.send(b);
    let got = downlink(&mut c, &ctx, 0, payload.len()).await?;
    if got[..payload.len()] != payload[..] {
        return Err(format!("echo differs: {}", c.summary()));
    }
    Ok(Verdict::Pass(format!(
        "dialed {}x; echo of {} bytes after the response",
        t.accepted(),
        payload.len()
    )))
}

async fn resp_header(ctx: Arc<Ctx>) -> Outcome {
    let t = echo_target(&ctx).await?;
    let mut c = ctx.conn().await?;
    let payload = b"0123456789".to_vec();
    let mut b = ctx.header(Version::V0, Command::Tcp, ip(t.addr));
    b.extend_from_slice(&payload);
    c.send(b);
    let got = downlink(&mut c, &ctx, 0, payload.len()).await?;
    let m = c.got[1] as usize;
    if got != payload {
        return Err(format!(
            "after `00 {m:02x}` and {m} addon bytes expected exactly the 10-byte echo; {}",
            c.summary()
        ));
    }
    Ok(Verdict::Pass(format!(
        "response `00 {m:02x}` + {m} addon bytes, then the echo"
    )))
}

async fn resp_not_awaited(ctx: Arc<Ctx>) -> Outcome {
    let mut t = TcpTarget::dribble(ctx.ip(), 300)
        .await
        .map_err(|e| format!("checker: target: {e}"))?;
    let mut c = ctx.conn().await?;
    c.send(ctx.header(Version::V0, Command::Tcp, ip(t.addr)));
    let got = downlink(&mut c, &ctx, 0, 300).await?;
    if got[..300] != pattern(300)[..] {
        return Err(format!("target's bytes differ: {}", c.summary()));
    }
    Ok(Verdict::Pass(format!(
        "dialed {}x; the target's 300 bytes came back with no client payload sent",
        t.accepted()
    )))
}

async fn hdr_split(ctx: Arc<Ctx>) -> Outcome {
    let t = echo_target(&ctx).await?;
    let mut c = ctx.conn().await?;
    let h = ctx.header(Version::V0, Command::Tcp, ip(t.addr));
    let n = h.len();
    for b in h {
        c.send(vec![b]);
        // Apart in time so each byte is a write (and most likely a segment) of its own.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    c.send(b"split".to_vec());
    let got = downlink(&mut c, &ctx, 0, 5).await?;
    if &got[..5] != b"split" {
        return Err(format!("echo differs: {}", c.summary()));
    }
    Ok(Verdict::Pass(format!(
        "{n} one-byte writes, then the payload: echoed"
    )))
}

async fn addons_skipped(ctx: Arc<Ctx>) -> Outcome {
    let t = echo_target(&ctx).await?;
    // field 15 varint 1; field 16 length-delimited "abc"
    let addons = [0x78, 0x01, 0x82, 0x01, 0x03, b'a', b'b', b'c'];
    let h = raw_header(0, ctx.cfg.uuid, &addons, 1, ip(t.addr));
    let mut c = ctx.conn().await?;
    let mut b = h;
    b.extend_from_slice(b"addons");
    c.send(b);
    let got = downlink(&mut c, &ctx, 0, 6).await?;
    if &got[..6] != b"addons" {
        return Err(format!("echo differs: {}", c.summary()));
    }
    Ok(Verdict::Pass(format!(
        "{} addon bytes (unknown fields 15 and 16) skipped; echoed",
        addons.len()
    )))
}

async fn addons_malformed(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    // field 1 (flow) announcing 16 bytes with 1 present
    let h = raw_header(0, ctx.cfg.uuid, &[0x0a, 0x10, b'x'], 1, ip(t.addr));
    silent_close(&ctx, h, false, &mut t).await
}

async fn flow_unknown(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    let flow = b"xtls-rprx-tunnelbed-unknown";
    let mut addons = vec![0x0a, flow.len() as u8];
    addons.extend_from_slice(flow);
    let mut h = raw_header(0, ctx.cfg.uuid, &addons, 1, ip(t.addr));
    h.extend_from_slice(b"payload");
    silent_close(&ctx, h, false, &mut t).await
}

async fn unknown_uuid(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    let mut other = ctx.cfg.uuid;
    other[15] ^= 0x01;
    let mut h = raw_header(0, other, &[], 1, ip(t.addr));
    h.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    silent_close(&ctx, h, false, &mut t).await
}

async fn bad_version(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    let mut h = raw_header(0x7f, ctx.cfg.uuid, &[], 1, ip(t.addr));
    h.extend_from_slice(b"payload");
    let first = silent_close(&ctx, h, false, &mut t).await?;
    if ctx.v1() {
        return Ok(first);
    }
    let mut h = raw_header(1, ctx.cfg.uuid, &[], 1, ip(t.addr));
    h.extend_from_slice(b"payload");
    match silent_close(&ctx, h, false, &mut t).await {
        Ok(Verdict::Pass(d)) => Ok(Verdict::Pass(format!("0x7f and 1 (v0 server): {d}"))),
        Ok(v) => Ok(v),
        Err(e) => Err(format!("version 1 to a v0 server: {e}")),
    }
}

async fn truncated(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    let h = ctx.header(Version::V0, Command::Tcp, ip(t.addr));
    silent_close(&ctx, h[..20].to_vec(), true, &mut t).await
}

async fn cmd_unknown(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    let mut h = raw_header(0, ctx.cfg.uuid, &[], 9, ip(t.addr));
    h.extend_from_slice(b"payload");
    silent_close(&ctx, h, false, &mut t).await
}

async fn cmd_crumfurs_v0(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    // cmd 4 with no address; an address after it would be nonsense to either reading.
    let h = raw_header(0, ctx.cfg.uuid, &[], 4, None);
    silent_close(&ctx, h, false, &mut t).await
}

// ---------------------------------------------------------------------------------------
// Addresses

fn loopback_only(ctx: &Ctx) -> Option<Outcome> {
    (!ctx.ip().is_loopback()).then(|| {
        Ok(Verdict::NotApplicable(
            "destinations are not on loopback (--target-ip)".into(),
        ))
    })
}

async fn addr_domain(ctx: Arc<Ctx>) -> Outcome {
    if let Some(o) = loopback_only(&ctx) {
        return o;
    }
    let mut t = echo_target(&ctx).await?;
    let h = ctx.header(
        Version::V0,
        Command::Tcp,
        Some(Address::Domain("localhost".into(), t.addr.port())),
    );
    echoed(&ctx, &mut t, h, 0, "localhost").await
}

async fn addr_ipv6(ctx: Arc<Ctx>) -> Outcome {
    if let Some(o) = loopback_only(&ctx) {
        return o;
    }
    let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let mut t = match TcpTarget::echo(lo6).await {
        Ok(t) => t,
        Err(e) => {
            return Ok(Verdict::NotApplicable(format!(
                "the checker cannot listen on [::1]: {e}"
            )))
        }
    };
    let mut c = ctx.conn().await?;
    let mut b = ctx.header(Version::V0, Command::Tcp, ip(t.addr));
    b.extend_from_slice(b"ipv6");
    c.send(b);
    let got = downlink(&mut c, &ctx, 0, 4).await?;
    if &got[..4] != b"ipv6" {
        return Err(format!("echo differs: {}", c.summary()));
    }
    let n = t.accepted();
    Ok(Verdict::Pass(format!("{} dialed {n}x, echoed", t.addr)))
}

async fn addr_bad_type(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    let mut h = raw_header(0, ctx.cfg.uuid, &[], 1, None);
    h.extend_from_slice(&t.addr.port().to_be_bytes());
    h.push(9);
    match t.addr.ip() {
        IpAddr::V4(a) => h.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => h.extend_from_slice(&a.octets()),
    }
    h.extend_from_slice(b"payload");
    silent_close(&ctx, h, false, &mut t).await
}

async fn addr_empty_domain(ctx: Arc<Ctx>) -> Outcome {
    let mut t = echo_target(&ctx).await?;
    let mut h = raw_header(0, ctx.cfg.uuid, &[], 1, None);
    h.extend_from_slice(&t.addr.port().to_be_bytes());
    h.extend_from_slice(&[2, 0]);
    h.extend_from_slice(b"payload");
    silent_close(&ctx, h, false, &mut t).await
}

// ---------------------------------------------------------------------------------------
// TCP relay

async fn tcp_bulk(ctx: Arc<Ctx>) -> Outcome {
    let t = echo_target(&ctx).await?;
    let data = numbered(1 << 20, 0x3c);
    let mut c = ctx.conn().await?;
    c.send(ctx.header(Version::V0, Command::Tcp, ip(t.addr)));
    for piece in data.chunks(32 * 1024) {
        c.send(piece.to_vec());
    }
    // 1 MiB may take a while on a loaded machine: four waits.
    let w = ctx.wait() * 4;
    c.read_until(
        w,
        |b| matches!(resp_len(b, 0), Ok(Some(n)) if b.len() >= n + data.len()),
    )
    .await;
    let n = resp_len(&c.got, 0)?.ok_or_else(|| format!("no response; {}", c.summary()))?;
    let got = &c.got[n..];
    if got.len() < data.len() {
        return Err(format!(
            "{} of {} bytes back within {w:?}; {}",
            got.len(),
            data.len(),
            c.summary()
        ));
    }
    if got[..data.len()] != data[..] {
        let at = got.iter().zip(&data).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("echo differs from byte {at}"));
    }
    Ok(Verdict::Pass("1 048 576 bytes echoed intact".into()))
}

async fn tcp_half_close(ctx: Arc<Ctx>) -> Outcome {
    if !matches!(ctx.cfg.server.kind, CarrierKind::Tcp | CarrierKind::Tls) {
        return Ok(Verdict::NotApplicable(
            "a WebSocket carrier has no half-close".into(),
        ));
    }
    let t = TcpTarget::reply_after_eof(ctx.ip())
        .await
        .map_err(|e| format!("checker: target: {e}"))?;
    let mut c = ctx.conn().await?;
    let mut b = ctx.header(Version::V0, Command::Tcp, ip(t.addr));
    b.extend_from_slice(&[7u8; 1000]);
    c.send(b);
    c.shutdown();
    let want = crate::pong_check::targets::half_close_reply(1000);
    let got = downlink(&mut c, &ctx, 0, want.len()).await?;
    if got[..want.len()] != want[..] {
        return Err(format!("answer differs: {}", c.summary()));
    }
    Ok(Verdict::Pass(
        "the target saw EOF after 1000 bytes and its answer came back".into(),
    ))
}

async fn tcp_target_end(ctx: Arc<Ctx>) -> Outcome {
    let t = TcpTarget::dribble(ctx.ip(), 100)
        .await
        .map_err(|e| format!("checker: target: {e}"))?;
    let mut c = ctx.conn().await?;
    c.send(ctx.header(Version::V0, Command::Tcp, ip(t.addr)));
    let got = downlink(&mut c, &ctx, 0, 100).await?;
    if got[..100] != pattern(100)[..] {
        return Err(format!("bytes differ: {}", c.summary()));
    }
    // Over WebSocket a server may linger a little before closing (v2ray's does): two waits.
    if !c.wait_end(ctx.wait() * 2).await {
        return Err(format!(
            "the target ended but the connection is still open after {:?}; {}",
            ctx.wait() * 2,
            c.summary()
        ));
    }
    Ok(Verdict::Pass(format!(
        "100 bytes, then {}",
        c.end.clone().map(|e| e.to_string()).unwrap_or_default()
    )))
}

async fn dial_refused(ctx: Arc<Ctx>) -> Outcome {
    let p = RefusingPort::new().map_err(|e| format!("checker: refusing port: {e}"))?;
    let mut c = ctx.conn().await?;
    let mut b = ctx.header(Version::V0, Command::Tcp, ip(p.addr()));
    b.extend_from_slice(b"payload");
    c.send(b);
    if !c.wait_end(ctx.wait() * 2).await {
        return Err(format!(
            "dial to a refusing port, connection still open after {:?}; {}",
            ctx.wait() * 2,
            c.summary()
        ));
    }
    Ok(Verdict::Pass(c.summary()))
}

// ---------------------------------------------------------------------------------------
// UDP

async fn udp_echo(ctx: Arc<Ctx>) -> Outcome {
    let mut p = udp_peer(&ctx, true).await?;
    let sz = [1usize, 100, 1400, 2046];
    let mut c = ctx.conn().await?;
    let mut b = ctx.header(Version::V0, Command::Udp, ip(p.addr));
    for (i, n) in sz.iter().enumerate() {
        b.extend_from_slice(&frame(&numbered(*n, i as u8)));
    }
    c.send(b);
    let back = read_frames(&mut c, &ctx, 0, sz.len()).await?;
    p.wait_for(ctx.wait(), |l| l.len() >= sz.len()).await;
    let seen = sizes(&p.log);
    if seen != sz {
        return Err(format!(
            "the target got datagrams of {seen:?} bytes, sent frames of {sz:?}"
        ));
    }
    let want: Vec<Vec<u8>> = sz
        .iter()
        .enumerate()
        .map(|(i, n)| numbered(*n, i as u8))
        .collect();
    if back != want {
        return Err(format!(
            "frames back of {:?} bytes, wanted the echoes of {sz:?}",
            back.iter().map(Vec::len).collect::<Vec<_>>()
        ));
    }
    Ok(Verdict::Pass(format!(
        "4 datagrams {sz:?} out and 4 framed echoes back"
    )))
}

async fn udp_len(ctx: Arc<Ctx>) -> Outcome {
    let mut p = udp_peer(&ctx, false).await?;
    let c = ctx.conn().await?;
    let a = numbered(300, 1);
    let fa = frame(&a);
    let mut h = ctx.header(Version::V0, Command::Udp, ip(p.addr));
    h.push(fa[0]);
    c.send(h);
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(fa[1..150].to_vec());
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(fa[150..].to_vec());
    let (b1, b2) = (numbered(5, 2), numbered(700, 3));
    let mut two = frame(&b1);
    two.extend_from_slice(&frame(&b2));
    c.send(two);
    p.wait_for(ctx.wait(), |l| l.len() >= 3).await;
    // A server that misreads lengths may send more: give it a moment to show.
    p.wait_for(Duration::from_millis(300), |l| l.len() > 3)
        .await;
    let got: Vec<Vec<u8>> = p.log.iter().map(|g| g.payload.clone()).collect();
    if got != [a, b1, b2] {
        return Err(format!(
            "the target got datagrams of {:?} bytes, wanted [300, 5, 700]; connection: {}",
            sizes(&p.log),
            c.summary()
        ));
    }
    Ok(Verdict::Pass(
        "a frame in 3 pieces and 2 frames in one write became datagrams of 300, 5, 700".into(),
    ))
}

async fn udp_len_partial(ctx: Arc<Ctx>) -> Outcome {
    let mut p = udp_peer(&ctx, false).await?;
    let c = ctx.conn().await?;
    let d = numbered(1000, 4);
    let f = frame(&d);
    let mut h = ctx.header(Version::V0, Command::Udp, ip(p.addr));
    h.extend_from_slice(&f[..12]);
    c.send(h);
    // Nothing may reach the target while the frame is incomplete (a bounded look).
    if p.wait_for(Duration::from_secs(1), |l| !l.is_empty()).await {
        return Err(format!(
            "the target got datagrams of {:?} bytes from an incomplete frame",
            sizes(&p.log)
        ));
    }
    c.send(f[12..].to_vec());
    p.wait_for(ctx.wait(), |l| !l.is_empty()).await;
    p.wait_for(Duration::from_millis(300), |l| l.len() > 1)
        .await;
    if p.log.len() != 1 || p.log[0].payload != d {
        return Err(format!(
            "after the rest, the target got datagrams of {:?} bytes, wanted [1000]; {}",
            sizes(&p.log),
            c.summary()
        ));
    }
    Ok(Verdict::Pass(
        "nothing for 1 s with 10 of 1000 bytes, then one datagram of 1000".into(),
    ))
}

async fn udp_large(ctx: Arc<Ctx>) -> Outcome {
    let mut p = udp_peer(&ctx, false).await?;
    let c = ctx.conn().await?;
    let d = numbered(8192, 5);
    let mut h = ctx.header(Version::V0, Command::Udp, ip(p.addr));
    h.extend_from_slice(&frame(&d));
    c.send(h);
    p.wait_for(ctx.wait(), |l| {
        l.iter().map(|g| g.payload.len()).sum::<usize>() >= 8192
    })
    .await;
    p.wait_for(Duration::from_millis(300), |l| l.len() > 1)
        .await;
    if p.log.len() == 1 && p.log[0].payload == d {
        return Ok(Verdict::Pass("one datagram of 8192 bytes".into()));
    }
    Err(format!(
        "the target got datagrams of {:?} bytes for one frame of 8192",
        sizes(&p.log)
    ))
}

async fn udp_oversize(ctx: Arc<Ctx>) -> Outcome {
    let mut p = udp_peer(&ctx, false).await?;
    let mut c = ctx.conn().await?;
    let d = numbered(65_535, 6);
    let mut h = ctx.header(Version::V0, Command::Udp, ip(p.addr));
    h.extend_from_slice(&frame(&d));
    // A frame after it: a server that goes on must still not cut datagrams.
    h.extend_from_slice(&frame(b"after"));
    c.send(h);
    // Either the connection closes, or (a server that drops the frame) it stays open;
    // what must not happen is a datagram cut from the frame at the target.
    c.wait_end(ctx.wait()).await;
    p.wait_for(Duration::from_millis(300), |l| l.len() > 1)
        .await;
    p.drain();
    let cut: Vec<usize> = p
        .log
        .iter()
        .filter(|g| g.payload != b"after")
        .map(|g| g.payload.len())
        .collect();
    if !cut.is_empty() {
        return Err(format!(
            "the target got datagrams of {cut:?} bytes cut from a 65535-byte frame"
        ));
    }
    let after = p.find(b"after").is_some();
    Ok(Verdict::Pass(format!(
        "no datagram cut from it; connection {}; the next frame {}",
        c.end
            .clone()
            .map(|e| e.to_string())
            .unwrap_or("still open".into()),
        if after { "was sent" } else { "was not sent" }
    )))
}

async fn udp_only_target(ctx: Arc<Ctx>) -> Outcome {
    let mut a = udp_peer(&ctx, false).await?;
    let b = udp_peer(&ctx, false).await?;
    let mut c = ctx.conn().await?;
    let mut h = ctx.header(Version::V0, Command::Udp, ip(a.addr));
    h.extend_from_slice(&frame(b"hello a"));
    c.send(h);
    if !a.wait_for(ctx.wait(), |l| !l.is_empty()).await {
        return Err(format!("the target got nothing within {}", ctx.wait_text()));
    }
    let mapped = a.log[0].from;
    b.send_to(b"from b", mapped)
        .await
        .map_err(|e| format!("checker: {e}"))?;
    // a's marker after b's datagram (both sent from here, in order, to one socket):
    // once the marker is back, b's datagram would be too.
    a.send_to(b"from a", mapped)
        .await
        .map_err(|e| format!("checker: {e}"))?;
    let got = read_frames(&mut c, &ctx, 0, 1).await?;
    c.read_until(ctx.wait(), |x| {
        resp_len(x, 0)
            .ok()
            .flatten()
            .is_some_and(|n| frames(&x[n..]).iter().any(|f| f == b"from a"))
    })
    .await;
    let n = resp_len(&c.got, 0)?.unwrap_or(c.got.len());
    let got_all = frames(&c.got[n..]);
    let _ = got;
    if got_all.iter().any(|f| f == b"from b") {
        return Err(format!(
            "a datagram from {} (not the target) came back on the target's flow, as if from {}",
            b.addr, a.addr
        ));
    }
    if !got_all.iter().any(|f| f == b"from a") {
        return Err(format!(
            "the target's own datagram did not come back; {}",
            c.summary()
        ));
    }
    Ok(Verdict::Pass(format!(
        "{} wrote to {mapped}: not delivered; the target's datagram was",
        b.addr
    )))
}

// ---------------------------------------------------------------------------------------
// v1

fn v1_only(ctx: &Ctx) -> Option<Outcome> {
    (!ctx.v1()).then(|| {
        Ok(Verdict::NotApplicable(
            "v1 case; the server is checked as v0 (--version 0)".into(),
        ))
    })
}

async fn v1_resp_version(ctx: Arc<Ctx>) -> Outcome {
    if let Some(o) = v1_only(&ctx) {
        return o;
    }
    relayed_v1(&ctx).await
}

async fn relayed_v1(ctx: &Ctx) -> Outcome {
    let mut t = echo_target(ctx).await?;
    let h = ctx.header(Version::V1, Command::Tcp, ip(t.addr));
    echoed(ctx, &mut t, h, 1, "v1").await
}

async fn open_crumfurs(ctx: &Ctx) -> Result<Conn, String> {
    let mut c = ctx.conn().await?;
    c.send(ctx.header(Version::V1, Command::Crumfurs, None));
    c.read_until(ctx.wait(), |b| !b.is_empty()).await;
    match c.got.first() {
        Some(&CRUMFURS_ESTABLISHED) => Ok(c),
        _ => Err(format!(
            "CRUMFURS: expected the byte 0x14 within {}; {}",
            ctx.wait_text(),
            c.summary()
        )),
    }
}

async fn v1_crumfurs(ctx: Arc<Ctx>) -> Outcome {
    if let Some(o) = v1_only(&ctx) {
        return o;
    }
    let mut c = open_crumfurs(&ctx).await?;
    // Kept open and silent: a bounded look for anything more or an end.
    c.read_until(Duration::from_secs(1), |b| b.len() > 1).await;
    if c.got.len() != 1 || c.end.is_some() {
        return Err(format!(
            "after 0x14 the channel must stay open and quiet; {}",
            c.summary()
        ));
    }
    Ok(Verdict::Pass(
        "answered 0x14, open and quiet 1 s later".into(),
    ))
}

/// The v1 hole-punching exchange: CRUMFURS open, cmd 2 to `a`, a fresh peer `b` writes
/// to the port `a` saw, the client answers `b` on a new cmd 2. Returns what each step saw.
struct Punch {
    mapped: SocketAddr,
    b: SocketAddr,
    umfurs: Result<Umfurs, String>,
    reply_from: Result<SocketAddr, String>,
}

async fn punch(ctx: &Ctx) -> Result<Punch, String> {
    let mut cr = open_crumfurs(ctx).await?;
    let mut a = udp_peer(ctx, false).await?;
    let mut b = udp_peer(ctx, false).await?;
    let ca = ctx.conn().await?;
    let mut h = ctx.header(Version::V1, Command::Udp, ip(a.addr));
    h.extend_from_slice(&frame(b"introduce"));
    ca.send(h);
    if !a.wait_for(ctx.wait(), |l| !l.is_empty()).await {
        return Err(format!(
            "cmd 2 to {}: nothing arrived within {}; {}",
            a.addr,
            ctx.wait_text(),
            ca.summary()
        ));
    }
    let mapped = a.log[0].from;
    b.send_to(b"unsolicited", mapped)
        .await
        .map_err(|e| format!("checker: {e}"))?;
    let max = 65_535;
    cr.read_until(ctx.wait(), |x| {
        !matches!(Umfurs::decode(&x[1..], max), Ok(None))
    })
    .await;
    let umfurs = match Umfurs::decode(&cr.got[1..], max) {
        Ok(Some((m, _))) => Ok(m),
        Ok(None) => Err(format!(
            "no UMFURS within {} after {} wrote to {mapped}; CRUMFURS: {}",
            ctx.wait_text(),
            b.addr,
            cr.summary()
        )),
        Err(e) => Err(format!("bad UMFURS: {e}; {}", cr.summary())),
    };
    let cb = ctx.conn().await?;
    let mut h = ctx.header(Version::V1, Command::Udp, ip(b.addr));
    h.extend_from_slice(&frame(b"answer"));
    cb.send(h);
    let reply_from = if b
        .wait_for(ctx.wait(), |l| l.iter().any(|g| g.payload == b"answer"))
        .await
    {
        Ok(b.find(b"answer").map(|g| g.from).unwrap_or(mapped))
    } else {
        Err(format!(
            "the answer to {} did not arrive within {}",
            b.addr,
            ctx.wait_text()
        ))
    };
    drop((ca, cb, cr));
    Ok(Punch {
        mapped,
        b: b.addr,
        umfurs,
        reply_from,
    })
}

async fn v1_umfurs(ctx: Arc<Ctx>) -> Outcome {
    if let Some(o) = v1_only(&ctx) {
        return o;
    }
    let p = punch(&ctx).await?;
    let m = p.umfurs?;
    if m.from != p.b || &m.payload[..] != b"unsolicited" {
        return Err(format!(
            "UMFURS from {} with {:?}; the sender was {} with \"unsolicited\"",
            m.from, m.payload, p.b
        ));
    }
    Ok(Verdict::Pass(format!(
        "{} wrote to {}: UMFURS from {} delivered",
        p.b, p.mapped, m.from
    )))
}

async fn v1_reply_same_port(ctx: Arc<Ctx>) -> Outcome {
    if let Some(o) = v1_only(&ctx) {
        return o;
    }
    let p = punch(&ctx).await?;
    let from = p.reply_from?;
    if from != p.mapped {
        return Err(format!(
            "the answer left from {from}; {} had written to {}",
            p.b, p.mapped
        ));
    }
    Ok(Verdict::Pass(format!(
        "the answer to {} left from {from}, the port it wrote to",
        p.b
    )))
}
