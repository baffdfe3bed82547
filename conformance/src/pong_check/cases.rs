//! The pong remote cases: one per rule, each with a stable id `PONG-<AREA>-<RULE>`, the
//! level (MUST, or SHOULD which only counts under `--strict`), where the rule comes from,
//! and an async body that plays it on a connection of its own.
//!
//! Every wait is bounded by the configured wait (5 s by default), so a silent remote gives
//! "no answer within 5s", never a hang. Destinations are the checker's own
//! ([`super::targets`]), fresh for each case. Bytes are built with the codec's
//! `encode_raw` (or by hand for malformed frames), never with higher-level helpers that
//! could hide what goes on the wire.
//!
//! Decisions where the seed is silent (tunnelbed's reading, stated in the clauses):
//! - codes in an rst are optional ("rst 可以不包含错误码"): a dial failure answered by an
//!   empty rst passes PONG-DIAL-*, and PONG-RST-CODE (SHOULD) asks for the code. A code
//!   the seed does not define is tolerated (pong-go numbers some differently); a code the
//!   seed defines with another meaning fails.
//! - for a repeated id and an unknown type the code *is* the rule (9 and 7), so those
//!   cases need it.
//! - relay streams carry one datagram per data frame each way. Sizes checked: 1, 30, 512,
//!   1472, 8192, 65500. An empty data frame is not sent: on a connect stream it carries
//!   nothing, and the seed does not say it means an empty datagram on a relay stream.
//! - after close or rst, "frames for that id are ignored": data must not come back; an
//!   rst or close in answer is tolerated (and shown).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tunnelbed_pong::wire::{frame_type, Address, RstCode, FRAME_HEADER_LEN, MAX_PAYLOAD};

use super::client::{frame, secs, Client, End, Seen, Stop, StreamSeen};
use super::ctx::Ctx;
use super::targets::{self, conn_closed, half_close_reply, TcpTarget, UdpEcho};
use crate::framework::{self, Level, Outcome, Verdict};

/// What a case body returns.
pub type CaseFuture = framework::CaseFuture;

/// Plays one case on connections of its own.
pub type CaseBody = framework::CaseBody<Ctx>;

/// One case: id `PONG-<AREA>-<RULE>`; source `seed` (seed 001), `notes`
/// (shared/protocols/pong.md) or `tunnelbed` (our reading where both are silent).
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
        case!(
            "PONG-HDR-ACCEPT",
            Must,
            "seed",
            "header (ver 0, allowed id) then connect + data at once, no waiting: relayed",
            hdr_accept
        ),
        case!(
            "PONG-HDR-UNKNOWN-ID",
            Must,
            "seed",
            "unknown client id: connection closed, nothing written back, nothing dialed",
            hdr_unknown_id
        ),
        case!(
            "PONG-HDR-BAD-VERSION",
            Should,
            "seed",
            "header with ver 1 (only 0 is defined): connection closed",
            hdr_bad_version
        ),
        case!(
            "PONG-DATA-SMALL-UP",
            Must,
            "seed",
            "data frames of 1..30 bytes from local reach the destination",
            data_small_up
        ),
        case!(
            "PONG-DATA-SMALL-DOWN",
            Must,
            "seed",
            "destination writes of 1..30 bytes reach local",
            data_small_down
        ),
        case!(
            "PONG-DATA-MAX",
            Must,
            "seed",
            "a data frame with the largest payload (65500 B) is relayed",
            data_max
        ),
        case!(
            "PONG-FINISH-HALF-CLOSE",
            Must,
            "seed",
            "finish is a half close: the reply after EOF still arrives, then finish",
            finish_half_close
        ),
        case!(
            "PONG-CLOSE-ENDS-STREAM",
            Must,
            "seed",
            "close ends the stream: destination closed, later frames ignored",
            close_ends_stream
        ),
        case!(
            "PONG-RST-LOCAL",
            Must,
            "seed",
            "rst from local ends the stream: destination closed, later frames ignored",
            rst_local
        ),
        case!(
            "PONG-RST-REPEAT-ID",
            Must,
            "seed",
            "connect with the id of a live stream: rst 9 (repeat stream id)",
            rst_repeat_id
        ),
        case!(
            "PONG-RST-LONG-DESC",
            Must,
            "notes",
            "rst with a 40-byte description ends only its stream; connection goes on",
            rst_long_desc
        ),
        case!(
            "PONG-TYPE-UNKNOWN",
            Must,
            "notes",
            "unknown frame type (0x0a) on a live stream: rst 7; connection goes on",
            type_unknown
        ),
        case!(
            "PONG-DIAL-REFUSED",
            Must,
            "seed",
            "dial refused: rst on the stream (code 5 if a code is given)",
            dial_refused
        ),
        case!(
            "PONG-DIAL-UNRESOLVABLE",
            Must,
            "seed",
            "unresolvable name (.invalid): rst (code 4 if given); N/A if it resolves",
            dial_unresolvable
        ),
        case!(
            "PONG-CONNECT-LONG-DOMAIN",
            Must,
            "seed",
            "connect with a 241-byte payload (long domain) is answered, not dropped",
            connect_long_domain
        ),
        case!(
            "PONG-FRAME-LEN-SHORT",
            Must,
            "seed",
            "frame len < 7 (shorter than its header): connection closed",
            frame_len_short
        ),
        case!(
            "PONG-FRAME-LEN-LONG",
            Must,
            "seed",
            "frame len 65535 (payload over 65500): connection closed",
            frame_len_long
        ),
        case!(
            "PONG-RELAY-DATAGRAMS",
            Must,
            "tunnelbed",
            "relay: one datagram per data frame each way, intact (1..65500 B)",
            relay_datagrams
        ),
        case!(
            "PONG-STREAMS-CONCURRENT",
            Must,
            "seed",
            "50 concurrent streams on one connection, data interleaved, all intact",
            streams_concurrent
        ),
        case!(
            "PONG-RST-CODE",
            Should,
            "seed",
            "a failed dial's rst carries an error code",
            rst_code
        ),
        case!(
            "PONG-RST-DESC",
            Should,
            "seed",
            "a failed dial's rst carries a UTF-8 description after the code",
            rst_desc
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// helpers

/// Time left for a late frame to show after a probe already came back.
const QUIET: Duration = Duration::from_millis(200);

fn pass(s: impl Into<String>) -> Outcome {
    Ok(Verdict::Pass(s.into()))
}

fn na(s: impl Into<String>) -> Outcome {
    Ok(Verdict::NotApplicable(s.into()))
}

fn target_err(e: std::io::Error) -> String {
    format!("checker error: cannot start a destination: {e}")
}

/// A deterministic payload, different for each `seed`.
fn payload(seed: u32, n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(101)) % 253) as u8)
        .collect()
}

/// A connect (or relay, with `kind`) frame to `addr`.
fn open_frame(sid: u32, kind: u8, addr: &Address) -> Bytes {
    let mut p = BytesMut::new();
    // Our addresses are valid (domains of 1..=255 bytes).
    let _ = addr.encode(&mut p);
    frame(sid, kind, &p)
}

fn connect(sid: u32, addr: SocketAddr) -> Bytes {
    open_frame(sid, frame_type::CONNECT, &Address::Ip(addr))
}

/// Compares what came back with what was expected, saying how they differ.
fn same(got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let common = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    if got.len() != want.len() && common == got.len().min(want.len()) {
        return Err(format!("got {} of {} bytes", got.len(), want.len()));
    }
    Err(format!(
        "got {} of {} bytes, first difference at byte {common}",
        got.len(),
        want.len()
    ))
}

/// Waits until `want.len()` bytes came back on `sid` (or it ended) and compares them.
async fn echo_on(
    c: &mut Client,
    sid: u32,
    want: &[u8],
    within: Duration,
    what: &str,
) -> Result<(), String> {
    let n = want.len();
    let r = c
        .pump_until(within, |s| s.data_len(sid) >= n || s.ended(sid))
        .await;
    let st = c.seen.stream(sid);
    if let Err(stop) = r {
        return Err(format!(
            "{what}: {stop}; stream {sid} got {} of {n} bytes",
            st.data.len()
        ));
    }
    if let (Some(end), true) = (&st.end, st.data.len() < n) {
        return Err(format!(
            "{what}: stream {sid} ended by the remote ({end}) after {} of {n} bytes",
            st.data.len()
        ));
    }
    same(&st.data, want).map_err(|e| format!("{what}: stream {sid}: {e}"))
}

/// Opens stream `sid` to the echo `t` on the same connection and checks a round trip:
/// evidence that the connection goes on.
async fn probe(
    c: &mut Client,
    sid: u32,
    t: &TcpTarget,
    within: Duration,
    what: &str,
) -> Result<(), String> {
    let d = payload(sid + 1000, 300);
    c.send_bytes(connect(sid, t.addr));
    c.send_frame(sid, frame_type::DATA, &d);
    echo_on(c, sid, &d, within, what).await
}

/// Opens stream 1 to a fresh echo and checks one round trip of `n` bytes.
async fn live_stream(ctx: &Ctx, n: usize) -> Result<(Client, TcpTarget), String> {
    let t = TcpTarget::echo(ctx.ip()).await.map_err(target_err)?;
    let mut c = ctx.open().await?;
    let d = payload(1, n);
    c.send_bytes(connect(1, t.addr));
    c.send_frame(1, frame_type::DATA, &d);
    echo_on(&mut c, 1, &d, ctx.wait(), "setting up stream 1 (echo)").await?;
    Ok((c, t))
}

fn ms(t0: Instant) -> u128 {
    t0.elapsed().as_millis()
}

fn answered(s: &Seen, sid: u32) -> bool {
    s.streams.get(&sid).is_some_and(StreamSeen::answered)
}

fn uuid_text(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

// ---------------------------------------------------------------------------------------
// HDR

async fn hdr_accept(ctx: Arc<Ctx>) -> Outcome {
    let t = TcpTarget::echo(ctx.ip()).await.map_err(target_err)?;
    let mut c = ctx.carrier().await?;
    let data = payload(1, 1000);
    let mut b = ctx.our_header();
    b.extend_from_slice(&connect(1, t.addr));
    b.extend_from_slice(&frame(1, frame_type::DATA, &data));
    let t0 = Instant::now();
    c.send_bytes(b);
    echo_on(
        &mut c,
        1,
        &data,
        ctx.wait(),
        "echo of 1000 B sent with the header",
    )
    .await?;
    pass(format!(
        "header + connect + 1000 B data in one write; echo intact after {} ms",
        ms(t0)
    ))
}

async fn hdr_unknown_id(ctx: Arc<Ctx>) -> Outcome {
    let mut t = TcpTarget::echo(ctx.ip()).await.map_err(target_err)?;
    let mut other: [u8; 16] = rand::random();
    // A version-4 UUID, and never the allowed one.
    other[6] = (other[6] & 0x0f) | 0x40;
    other[8] = (other[8] & 0x3f) | 0x80;
    if other == ctx.cfg.client_id {
        other[15] ^= 1;
    }
    let mut c = ctx.carrier().await?;
    let mut b = Ctx::header(0, other);
    b.extend_from_slice(&connect(1, t.addr));
    b.extend_from_slice(&frame(1, frame_type::DATA, &payload(2, 100)));
    c.send_bytes(b);
    let r = c.wait_closed(ctx.wait()).await;
    let written = c.seen.bytes_in;
    let dialed = t.accepted();
    match r {
        Ok(how) if written == 0 && dialed == 0 => pass(format!(
            "id {} closed ({how}) with 0 bytes written back; destination not dialed",
            uuid_text(&other)
        )),
        Ok(how) if written == 0 => Err(format!(
            "closed ({how}) with nothing written back, but the remote dialed the \
             destination for unknown id {}",
            uuid_text(&other)
        )),
        Ok(how) => Err(format!(
            "closed ({how}), but {written} bytes were written back first (id {})",
            uuid_text(&other)
        )),
        Err(Stop::Timeout(_)) => Err(format!(
            "connection still open {} after a header with unknown id {}; {written} bytes \
             written back",
            secs(ctx.wait()),
            uuid_text(&other)
        )),
        Err(e) => Err(format!("{e}; {written} bytes written back")),
    }
}

async fn hdr_bad_version(ctx: Arc<Ctx>) -> Outcome {
    let t = TcpTarget::echo(ctx.ip()).await.map_err(target_err)?;
    let mut c = ctx.carrier().await?;
    let mut b = Ctx::header(1, ctx.cfg.client_id);
    b.extend_from_slice(&connect(1, t.addr));
    b.extend_from_slice(&frame(1, frame_type::DATA, &payload(3, 100)));
    c.send_bytes(b);
    match c.wait_closed_or(ctx.wait(), |s| s.data_len(1) > 0).await {
        Ok(Some(how)) => pass(format!(
            "closed ({how}); {} bytes written back",
            c.seen.bytes_in
        )),
        Ok(None) => Err("the remote accepted a header with ver 1 and relayed stream 1".into()),
        Err(Stop::Timeout(_)) => Err(format!(
            "connection still open {} after a header with ver 1",
            secs(ctx.wait())
        )),
        Err(e) => Err(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// DATA

async fn data_small_up(ctx: Arc<Ctx>) -> Outcome {
    let t = TcpTarget::echo(ctx.ip()).await.map_err(target_err)?;
    let mut c = ctx.open().await?;
    c.send_bytes(connect(1, t.addr));
    let mut small = Vec::new();
    for n in 1..=30u32 {
        let p = payload(n, n as usize);
        c.send_frame(1, frame_type::DATA, &p);
        small.extend_from_slice(&p);
    }
    // A larger frame after them: if only it comes back, the small ones were dropped.
    let marker = payload(99, 100);
    c.send_frame(1, frame_type::DATA, &marker);
    let mut want = small.clone();
    want.extend_from_slice(&marker);
    let n = want.len();
    let r = c
        .pump_until(ctx.wait(), |s| {
            let d = &s.stream(1).data;
            d.len() >= n || d.ends_with(&marker) || s.ended(1)
        })
        .await;
    let st = c.seen.stream(1);
    if st.data == want {
        return pass(format!(
            "30 data frames of 1..30 bytes ({} B) and a 100 B frame echoed intact",
            small.len()
        ));
    }
    if st.data == marker {
        return Err(
            "the 30 data frames of 1..30 bytes were lost: only the 100 B frame sent after \
             them came back"
                .into(),
        );
    }
    let how = match (r, &st.end) {
        (Err(stop), _) => format!("{stop}; "),
        (Ok(()), Some(end)) => format!("stream ended by the remote ({end}); "),
        _ => String::new(),
    };
    Err(format!(
        "{how}{} (30 frames of 1..30 bytes, then 100 B)",
        same(&st.data, &want).err().unwrap_or_default()
    ))
}

async fn data_small_down(ctx: Arc<Ctx>) -> Outcome {
    const TOTAL: usize = 4 * 465;
    let t = TcpTarget::dribble(ctx.ip(), TOTAL)
        .await
        .map_err(target_err)?;
    let mut c = ctx.open().await?;
    c.send_bytes(connect(1, t.addr));
    let r = c
        .pump_until(ctx.wait(), |s| s.done(1) || s.data_len(1) >= TOTAL)
        .await;
    let st = c.seen.stream(1);
    let want = targets::pattern(TOTAL);
    if st.data == want {
        return pass(format!(
            "{TOTAL} B written by the destination in pieces of 1..30 bytes arrived intact \
             ({} frames)",
            st.frame_sizes.len()
        ));
    }
    let how = match r {
        Err(stop) => format!("{stop}; "),
        Ok(()) if st.done_marker().is_some() => {
            format!("stream {} first; ", st.done_marker().unwrap_or_default())
        }
        Ok(()) => String::new(),
    };
    Err(format!(
        "{how}{} (the destination wrote {TOTAL} B in pieces of 1..30 bytes)",
        same(&st.data, &want).err().unwrap_or_default()
    ))
}

async fn data_max(ctx: Arc<Ctx>) -> Outcome {
    let t = TcpTarget::echo(ctx.ip()).await.map_err(target_err)?;
    let mut c = ctx.open().await?;
    let d = payload(5, MAX_PAYLOAD);
    c.send_bytes(connect(1, t.addr));
    c.send_frame(1, frame_type::DATA, &d);
    echo_on(&mut c, 1, &d, ctx.wait(), "echo of one 65500 B data frame").await?;
    pass(format!(
        "65500 B echoed intact in {} frame(s)",
        c.seen.stream(1).frame_sizes.len()
    ))
}

// ---------------------------------------------------------------------------------------
// FINISH / CLOSE / RST

async fn finish_half_close(ctx: Arc<Ctx>) -> Outcome {
    let t = TcpTarget::reply_after_eof(ctx.ip())
        .await
        .map_err(target_err)?;
    let mut c = ctx.open().await?;
    let d = payload(6, 500);
    c.send_bytes(connect(1, t.addr));
    c.send_frame(1, frame_type::DATA, &d);
    c.send_frame(1, frame_type::FINISH, &[]);
    let want = half_close_reply(d.len() as u64);
    let r = c.pump_until(ctx.wait(), |s| s.done(1)).await;
    let st = c.seen.stream(1);
    let shown = |b: &[u8]| super::client::cut(&String::from_utf8_lossy(b), 60);
    if let Err(stop) = r {
        return Err(format!(
            "after our finish: {stop}; stream 1 got {} (want the destination's {}-byte \
             reply, then finish)",
            st.summary(),
            want.len()
        ));
    }
    if let Some(End::Rst(r)) = &st.end {
        let r = r
            .as_ref()
            .map_or("without payload".into(), |r| r.to_string());
        return Err(format!(
            "stream 1 reset by the remote after our finish (rst {r}); got {} of the \
             {}-byte reply",
            st.data.len(),
            want.len()
        ));
    }
    if st.data != want {
        let end = if st.fin { "finish" } else { "close" };
        return Err(format!(
            "after our finish the stream ended ({end}) without the destination's reply: \
             got {:?}, want {:?}",
            shown(&st.data),
            shown(&want)
        ));
    }
    pass(format!(
        "the destination's {}-byte reply arrived after our finish, then {}",
        want.len(),
        if st.fin { "finish" } else { "close" }
    ))
}

/// Ends stream 1 with `kind` (close or rst), then checks: the destination connection is
/// closed, data sent on the id afterwards does not come back, a new stream works.
async fn end_then_ignored(ctx: &Ctx, kind: u8, p: &[u8], what: &str) -> Outcome {
    let (mut c, mut t) = live_stream(ctx, 200).await?;
    let t0 = Instant::now();
    c.send_frame(1, kind, p);
    if !t.wait_for(ctx.wait(), |l| conn_closed(l, 0)).await {
        return Err(format!(
            "the destination connection of stream 1 was still open {} after our {what}",
            secs(ctx.wait())
        ));
    }
    let closed_ms = ms(t0);
    c.send_frame(1, frame_type::DATA, &payload(9, 100));
    probe(
        &mut c,
        3,
        &t,
        ctx.wait(),
        &format!("a new stream after {what}"),
    )
    .await
    .map_err(|e| format!("{e} (connection after our {what} on stream 1)"))?;
    match c.pump_until(QUIET, |_| false).await {
        Err(Stop::Timeout(_)) => {}
        Err(e) => return Err(format!("after our {what} on stream 1: {e}")),
        Ok(()) => {}
    }
    let st = c.seen.stream(1);
    if st.data.len() > 200 {
        return Err(format!(
            "data for stream 1 came back after our {what}: {} B",
            st.data.len() - 200
        ));
    }
    let answer = match (&st.end, st.fin) {
        (Some(e), _) => format!("; the remote answered with {e}"),
        (None, true) => "; the remote answered with finish".into(),
        (None, false) => String::new(),
    };
    pass(format!(
        "destination closed {closed_ms} ms after {what}; later data ignored; stream 3 \
         echoed{answer}"
    ))
}

async fn close_ends_stream(ctx: Arc<Ctx>) -> Outcome {
    end_then_ignored(&ctx, frame_type::CLOSE, &[], "close").await
}

async fn rst_local(ctx: Arc<Ctx>) -> Outcome {
    // Code only (11, reset by peer): a long description is PONG-RST-LONG-DESC's business.
    end_then_ignored(&ctx, frame_type::RST, &[RstCode::DstReset.to_u8()], "rst").await
}

/// Waits for the rst on stream 1 and wants `code`.
async fn want_rst(
    c: &mut Client,
    within: Duration,
    code: RstCode,
    after: &str,
) -> Result<String, String> {
    let r = c.pump_until(within, |s| s.ended(1)).await;
    let st = c.seen.stream(1);
    let want = format!("rst {} ({})", code.to_u8(), code.description());
    if let Err(stop) = r {
        return Err(format!(
            "{stop} after {after}; stream 1 got {}; want {want}",
            st.summary()
        ));
    }
    match &st.end {
        Some(End::Rst(Some(r))) if r.code == code.to_u8() => Ok(format!("rst {r}")),
        Some(End::Rst(Some(r))) => Err(format!("after {after}: rst {r}; want {want}")),
        Some(End::Rst(None)) => Err(format!("after {after}: rst without a code; want {want}")),
        Some(End::Close) => Err(format!("after {after}: close; want {want}")),
        None => Err(format!("after {after}: no rst; want {want}")),
    }
}

async fn rst_repeat_id(ctx: Arc<Ctx>) -> Outcome {
    let (mut c, t) = live_stream(&ctx, 100).await?;
    c.send_bytes(connect(1, t.addr));
    let r = want_rst(
        &mut c,
        ctx.wait(),
        RstCode::RepeatedStreamId,
        "a second connect for live stream 1",
    )
    .await?;
    pass(r)
}

async fn rst_long_desc(ctx: Arc<Ctx>) -> Outcome {
    let (mut c, t) = live_stream(&ctx, 100).await?;
    let desc = "pong-check: the local application reset";
    let mut p = vec![RstCode::General.to_u8()];
    p.extend_from_slice(desc.as_bytes());
    c.send_frame(1, frame_type::RST, &p);
    probe(&mut c, 3, &t, ctx.wait(), "a new stream after the rst")
        .await
        .map_err(|e| format!("{e} (after an rst with a {}-byte description)", desc.len()))?;
    pass(format!(
        "rst with a {}-byte description; the connection went on (stream 3 echoed)",
        desc.len()
    ))
}

async fn type_unknown(ctx: Arc<Ctx>) -> Outcome {
    let (mut c, t) = live_stream(&ctx, 100).await?;
    c.send_frame(1, 0x0a, &[]);
    let r = want_rst(
        &mut c,
        ctx.wait(),
        RstCode::CommandNotSupported,
        "a frame of type 0x0a on live stream 1",
    )
    .await?;
    probe(&mut c, 3, &t, ctx.wait(), "a new stream after the rst")
        .await
        .map_err(|e| format!("{r}, but then {e}"))?;
    pass(format!("{r}; the connection went on (stream 3 echoed)"))
}

// ---------------------------------------------------------------------------------------
// DIAL

/// Connects stream 1 to a closed port and returns what the remote said about it.
async fn refused(ctx: &Ctx) -> Result<(StreamSeen, SocketAddr), String> {
    let a = targets::closed_port(ctx.ip()).await.map_err(target_err)?;
    let mut c = ctx.open().await?;
    c.send_bytes(connect(1, a));
    // Data right away, as a local does: it must not confuse the answer.
    c.send_frame(1, frame_type::DATA, &payload(7, 64));
    c.pump_until(ctx.wait(), |s| answered(s, 1))
        .await
        .map_err(|stop| format!("{stop}: no rst for a connect to {a} (nothing listens there)"))?;
    // A little more, in case the rst follows something else.
    if !c.seen.done(1) {
        let _ = c.pump_until(QUIET, |s| s.done(1)).await;
    }
    Ok((c.seen.stream(1), a))
}

/// Judges the rst for a failed dial: `want` or none or an unknown code pass.
fn judge_dial_rst(st: &StreamSeen, want: RstCode, what: &str) -> Outcome {
    match &st.end {
        Some(End::Rst(None)) => pass(format!(
            "{what}: rst without payload (a code is optional; see PONG-RST-CODE)"
        )),
        Some(End::Rst(Some(r))) if r.code == want.to_u8() => pass(format!("{what}: rst {r}")),
        Some(End::Rst(Some(r))) if matches!(RstCode::from_u8(r.code), RstCode::Other(_)) => {
            pass(format!(
                "{what}: rst {r}: tolerated (the seed's code is {} {})",
                want.to_u8(),
                want.description()
            ))
        }
        Some(End::Rst(Some(r))) => Err(format!(
            "{what}: rst {r}; want code {} ({})",
            want.to_u8(),
            want.description()
        )),
        _ => Err(format!("{what}: stream 1 got {}; want rst", st.summary())),
    }
}

async fn dial_refused(ctx: Arc<Ctx>) -> Outcome {
    let (st, a) = refused(&ctx).await?;
    judge_dial_rst(
        &st,
        RstCode::DstRefused,
        &format!("connect to {a} (refused)"),
    )
}

async fn rst_code(ctx: Arc<Ctx>) -> Outcome {
    let Ok((st, _)) = refused(&ctx).await else {
        return na("no rst to look at (see PONG-DIAL-REFUSED)");
    };
    match &st.end {
        Some(End::Rst(Some(r))) => pass(format!("refused dial: rst {r}")),
        Some(End::Rst(None)) => Err("refused dial: rst without payload (no error code)".into()),
        _ => na(format!(
            "no rst to look at: stream 1 got {} (see PONG-DIAL-REFUSED)",
            st.summary()
        )),
    }
}

async fn rst_desc(ctx: Arc<Ctx>) -> Outcome {
    let Ok((st, _)) = refused(&ctx).await else {
        return na("no rst to look at (see PONG-DIAL-REFUSED)");
    };
    match &st.end {
        Some(End::Rst(Some(r))) if !r.utf8 => Err(format!("refused dial: rst {r}")),
        Some(End::Rst(Some(r))) if r.description.is_empty() => {
            Err(format!("refused dial: rst {r} has no description"))
        }
        Some(End::Rst(Some(r))) => pass(format!("refused dial: rst {r}")),
        Some(End::Rst(None)) => Err("refused dial: rst without payload (no description)".into()),
        _ => na(format!(
            "no rst to look at: stream 1 got {} (see PONG-DIAL-REFUSED)",
            st.summary()
        )),
    }
}

async fn dial_unresolvable(ctx: Arc<Ctx>) -> Outcome {
    let name = "unresolvable.pong-check.invalid";
    let mut c = ctx.open().await?;
    c.send_bytes(open_frame(
        1,
        frame_type::CONNECT,
        &Address::Domain(name.into(), 80),
    ));
    match c.pump_until(ctx.wait(), |s| answered(s, 1)).await {
        Ok(()) => {}
        Err(Stop::Timeout(_)) => {
            return na(format!(
                "no answer within {} for {name}: the remote's resolver may be slow, or may \
                 answer for .invalid names",
                secs(ctx.wait())
            ))
        }
        Err(e) => return Err(format!("{e} (after a connect to {name}:80)")),
    }
    if !c.seen.done(1) {
        let _ = c.pump_until(QUIET, |s| s.done(1)).await;
    }
    let st = c.seen.stream(1);
    match &st.end {
        Some(End::Rst(_)) => judge_dial_rst(&st, RstCode::HostUnreachable, name),
        _ => na(format!(
            "{name} seems to resolve at the remote: stream 1 got {}",
            st.summary()
        )),
    }
}

async fn connect_long_domain(ctx: Arc<Ctx>) -> Outcome {
    let short = "short.pong-check.invalid".to_string();
    let mut long = String::new();
    while long.len() < 220 {
        long.push_str("pong-check-long-domain-label-0123456789abcdef.");
    }
    long.push_str("invalid");
    let plen = 2 + long.len() + 2;
    let mut c = ctx.open().await?;
    c.send_bytes(open_frame(
        1,
        frame_type::CONNECT,
        &Address::Domain(short.clone(), 80),
    ));
    c.send_bytes(open_frame(
        3,
        frame_type::CONNECT,
        &Address::Domain(long.clone(), 80),
    ));
    let r = c
        .pump_until(ctx.wait(), |s| answered(s, 1) && answered(s, 3))
        .await;
    let (s1, s3) = (c.seen.stream(1), c.seen.stream(3));
    match r {
        Ok(()) => pass(format!(
            "connect with a {plen}-byte payload answered: {} (short name: {})",
            s3.summary(),
            s1.summary()
        )),
        Err(Stop::Timeout(_)) if s3.answered() => pass(format!(
            "connect with a {plen}-byte payload answered: {}",
            s3.summary()
        )),
        Err(Stop::Timeout(_)) if s1.answered() => Err(format!(
            "a connect with a {plen}-byte payload ({}-byte domain) got no answer within {}, \
             while one with a {}-byte payload got {}",
            long.len(),
            secs(ctx.wait()),
            2 + short.len() + 2,
            s1.summary()
        )),
        Err(Stop::Timeout(_)) => na(format!(
            "neither a short nor a long unresolvable name was answered within {} (see \
             PONG-DIAL-UNRESOLVABLE)",
            secs(ctx.wait())
        )),
        Err(e) => Err(format!("{e} (after a connect with a {plen}-byte payload)")),
    }
}

// ---------------------------------------------------------------------------------------
// FRAME

/// Sends `bad` on a working connection, then a new stream; the remote must close the
/// connection rather than go on.
async fn bad_framing(ctx: &Ctx, bad: Vec<u8>, what: &str) -> Outcome {
    let (mut c, t) = live_stream(ctx, 100).await?;
    c.send_bytes(bad);
    let d = payload(33, 300);
    c.send_bytes(connect(3, t.addr));
    c.send_frame(3, frame_type::DATA, &d);
    let went_on = |s: &Seen| s.data_len(3) >= d.len() || s.data_len(1) > 100;
    match c.wait_closed_or(ctx.wait(), went_on).await {
        Ok(Some(how)) => pass(format!("connection closed ({how}) after {what}")),
        Ok(None) if c.seen.data_len(1) > 100 => Err(format!(
            "{what} accepted: its payload was relayed on stream 1"
        )),
        Ok(None) => Err(format!(
            "{what} not rejected: the remote went on and relayed stream 3 sent after it"
        )),
        Err(Stop::Timeout(_)) => Err(format!(
            "connection still open {} after {what}",
            secs(ctx.wait())
        )),
        Err(e) => Err(format!("{e} (after {what})")),
    }
}

async fn frame_len_short(ctx: Arc<Ctx>) -> Outcome {
    // len 3 on stream 1, type data: the header alone is 7 bytes.
    let bad = vec![0x00, 0x03, 0, 0, 0, 1, frame_type::DATA];
    bad_framing(&ctx, bad, "a frame with len 3").await
}

async fn frame_len_long(ctx: Arc<Ctx>) -> Outcome {
    // len 65535 on stream 1, type data, with all its 65528 payload bytes: a remote that
    // takes it relays the payload, one that waits for the bytes would hang otherwise.
    let len = u16::MAX as usize;
    let mut bad = Vec::with_capacity(len);
    bad.extend_from_slice(&(len as u16).to_be_bytes());
    bad.extend_from_slice(&1u32.to_be_bytes());
    bad.push(frame_type::DATA);
    bad.extend_from_slice(&payload(34, len - FRAME_HEADER_LEN));
    bad_framing(
        &ctx,
        bad,
        &format!(
            "a frame with len 65535 (payload {} > {MAX_PAYLOAD})",
            len - FRAME_HEADER_LEN
        ),
    )
    .await
}

// ---------------------------------------------------------------------------------------
// RELAY, STREAMS

async fn relay_datagrams(ctx: Arc<Ctx>) -> Outcome {
    const SIZES: [usize; 6] = [1, 30, 512, 1472, 8192, MAX_PAYLOAD];
    let u = UdpEcho::start(ctx.ip()).await.map_err(target_err)?;
    let mut c = ctx.open().await?;
    c.send_bytes(open_frame(1, frame_type::RELAY, &Address::Ip(u.addr)));
    let mut want = Vec::new();
    for (i, &n) in SIZES.iter().enumerate() {
        let d = payload(40 + i as u32, n);
        c.send_frame(1, frame_type::DATA, &d);
        want.extend_from_slice(&d);
        let total = want.len();
        let what = format!("datagram {} of {} ({n} B)", i + 1, SIZES.len());
        let r = c
            .pump_until(ctx.wait(), |s| s.data_len(1) >= total || s.ended(1))
            .await;
        let st = c.seen.stream(1);
        if let Err(stop) = r {
            return Err(format!("{what}: {stop}"));
        }
        if let (Some(end), true) = (&st.end, st.data.len() < total) {
            return Err(format!("{what}: stream ended by the remote ({end})"));
        }
        if st.frame_sizes[..] != SIZES[..=i] {
            let earlier: usize = st.frame_sizes.len().min(i);
            return Err(format!(
                "{what} came back as data frame(s) of {:?} B; want one frame per datagram",
                &st.frame_sizes[earlier..]
            ));
        }
        same(&st.data, &want).map_err(|e| format!("{what}: {e}"))?;
    }
    pass(format!(
        "{} datagrams of {:?} B, one data frame each way, echoed intact",
        SIZES.len(),
        SIZES
    ))
}

async fn streams_concurrent(ctx: Arc<Ctx>) -> Outcome {
    const N: u32 = 50;
    const EACH: usize = 2000;
    let mut t = TcpTarget::echo(ctx.ip()).await.map_err(target_err)?;
    let mut c = ctx.open().await?;
    let sids: Vec<u32> = (0..N).map(|k| 2 * k + 1).collect();
    let mut b = Vec::new();
    for &sid in &sids {
        b.extend_from_slice(&connect(sid, t.addr));
    }
    c.send_bytes(b);
    for half in 0..2 {
        let mut b = Vec::new();
        for &sid in &sids {
            let d = payload(sid, EACH);
            let part = &d[half * EACH / 2..(half + 1) * EACH / 2];
            b.extend_from_slice(&frame(sid, frame_type::DATA, part));
        }
        c.send_bytes(b);
    }
    let r = c
        .pump_until(ctx.wait(), |s| {
            sids.iter()
                .all(|&sid| s.data_len(sid) >= EACH || s.ended(sid))
        })
        .await;
    let mut bad = Vec::new();
    for &sid in &sids {
        let st = c.seen.stream(sid);
        if let Err(e) = same(&st.data, &payload(sid, EACH)) {
            let end = st
                .end
                .as_ref()
                .map(|e| format!(", {e}"))
                .unwrap_or_default();
            bad.push(format!("stream {sid}: {e}{end}"));
        }
    }
    if bad.is_empty() {
        return pass(format!(
            "{N} streams x {EACH} B, interleaved on one connection, all echoed intact \
             ({} destination connections)",
            t.accepted()
        ));
    }
    let stop = r.err().map(|s| format!("{s}; ")).unwrap_or_default();
    Err(format!(
        "{stop}{} of {N} streams wrong: {}",
        bad.len(),
        bad.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
    ))
}

impl StreamSeen {
    /// `finish`, `close` or `rst ...` if the remote ended or finished the stream.
    fn done_marker(&self) -> Option<String> {
        match (&self.end, self.fin) {
            (Some(e), _) => Some(e.to_string()),
            (None, true) => Some("finish".into()),
            (None, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for c in all() {
            assert!(c.id.starts_with("PONG-"), "{}", c.id);
            assert!(c.id.split('-').count() >= 3, "{}", c.id);
            assert!(
                c.id.chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '-'),
                "{}",
                c.id
            );
            assert!(seen.insert(c.id), "duplicate {}", c.id);
            assert!(c.clause.chars().count() <= 80, "{}: clause too long", c.id);
            assert!(["seed", "notes", "tunnelbed"].contains(&c.source));
        }
    }

    #[test]
    fn payloads_differ_and_compare() {
        assert_ne!(payload(1, 10), payload(2, 10));
        assert_eq!(same(b"abc", b"abc"), Ok(()));
        assert_eq!(same(b"ab", b"abc"), Err("got 2 of 3 bytes".into()));
        assert_eq!(
            same(b"abd", b"abc"),
            Err("got 3 of 3 bytes, first difference at byte 2".into())
        );
        assert_eq!(
            uuid_text(&[0x12; 16]),
            "12121212-1212-1212-1212-121212121212"
        );
    }
}
