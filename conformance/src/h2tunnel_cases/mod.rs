//! Conformance cases for vproxy's HTTP/2-framed tunnel (seed 000 and
//! `shared/protocols/h2tunnel.md`), one per statement of the seed and per row or rule of
//! the notes' tables, each with a stable ID, on the shared [`crate::framework`].
//!
//! Each case is a scripted frame exchange against one sans-IO tunnel machine, driven by
//! the [`harness`]; the bodies are in [`tunnel`] (the tunnel as a whole) and [`streams`].
//! Each run returns a [`CaseResult`] whose `log` (frames both ways, events, clock steps,
//! then the transition trace) is what the tests snapshot.

pub mod harness;
mod streams;
mod tunnel;

use std::fmt::Write as _;
use std::time::Duration;

use crate::framework::{self, markdown_table, CaseReport, Level, Verdict};

pub use harness::{describe_frames, frame, CaseResult, Script, HS, R};
use streams::*;
use tunnel::*;

/// Runs one case's scripted exchange.
pub type CaseBody = fn() -> CaseResult;

/// One h2tunnel case. Every rule is a MUST; `source` is `seed 000`, `notes` or
/// `tunnelbed` (a rule of ours where both are silent, documented in the clause).
pub type Case = framework::Case<CaseBody>;

/// The source names of the case list.
const SEED000: &str = "seed 000";
const NOTES: &str = "notes";
const OURS: &str = "tunnelbed";

macro_rules! case {
    ($id:literal, $src:ident, $clause:literal, $run:ident) => {
        Case {
            id: $id,
            level: Level::Must,
            source: $src,
            clause: $clause,
            differs: None,
            body: $run,
        }
    };
    ($id:literal, $src:ident, $clause:literal, $run:ident, differs: $d:literal) => {
        Case {
            id: $id,
            level: Level::Must,
            source: $src,
            clause: $clause,
            differs: Some($d),
            body: $run,
        }
    };
}

/// Every case, in report order. IDs are stable: add new ones, never renumber.
pub fn cases() -> Vec<Case> {
    vec![
        case!("H2T-HANDSHAKE-EXACT", NOTES, "handshake (both ways): `00 00 00 04 00 00 00 00 00` exactly; the client sends SETTINGS on connect and the exact SETTINGS back makes it ready (seed: handshake is an empty SETTINGS frame; states init -> handshake_sent -> ready)", handshake_exact),
        case!("H2T-HANDSHAKE-SERVER", SEED000, "flow 1-2: the client sends a HANDSHAKE frame, the server sends HANDSHAKE-ACK (an empty SETTINGS) and is ready; notes: the server waits for SETTINGS, answers SETTINGS, is ready", handshake_server),
        case!("H2T-HANDSHAKE-INVALID", NOTES, "client: anything but the exact SETTINGS back fails (\"handshake message is invalid\"); a failure sends GOAWAY(reason) first, closes after ~1 s", handshake_invalid),
        case!("H2T-HANDSHAKE-INVALID-SERVER", NOTES, "server waits for SETTINGS; another frame first is a violation that fails the tunnel with GOAWAY", handshake_invalid_server),
        case!("H2T-HANDSHAKE-NOT-STANDARD-SETTINGS", NOTES, "the handshake is the empty SETTINGS byte for byte: a standard SETTINGS with parameters is invalid", handshake_settings_payload),
        case!("H2T-HANDSHAKE-TIMEOUT", NOTES, "the client arms a 5 s handshake timer; on expiry the tunnel fails (GOAWAY) and closes ~1 s later", handshake_timeout),
        case!("H2T-GOAWAY-DURING-HANDSHAKE", NOTES, "GOAWAY during the handshake invalidates it; a received GOAWAY closes without answering", goaway_during_handshake),
        case!("H2T-CARRIER-SPLIT", NOTES, "carrier: a frame may be split across ARQ segments; the receiver buffers and parses in a loop (fed 1 byte per read)", carrier_split),
        case!("H2T-CARRIER-COALESCED", NOTES, "carrier: frames are concatenated; several frames in one read are all handled", carrier_coalesced),
        case!("H2T-PING-ECHO", NOTES, "a PING is answered at once with the ACK flag and the same id (seed: keepalive ack carries the same integer)", ping_echo),
        case!("H2T-PING-ECHO-CLIENT", NOTES, "the client answers a PING too (the rule is not role-specific)", ping_echo_client),
        case!("H2T-PING-EXTRA-IGNORED", NOTES, "PING: extra bytes (beyond 8) ignored", ping_extra_ignored),
        case!("H2T-PING-SHORT-IGNORED", NOTES, "PING shorter than 8 is ignored", ping_short_ignored),
        case!("H2T-GOAWAY-SHORT-REASON", NOTES, "GOAWAY shorter than 8 reads as reason \"GOAWAY\"", goaway_short_reason),
        case!("H2T-GOAWAY-RECEIVED", SEED000, "shutdown closes the tunnel and all connections inside it (flow 9); notes: a received GOAWAY closes without answering", goaway_received),
        case!("H2T-SHUTDOWN-SEND", NOTES, "shutdown: GOAWAY, sid 0, payload `FF FF FF FF` (last sid) `FF FF FF FF` (code) + UTF-8 reason; every stream dies", shutdown_send),
        case!("H2T-FAIL-GOAWAY-FIRST", NOTES, "failure: every stream dies, GOAWAY(reason) goes out first, the tunnel is closed after ~1 s", fail_goaway_first),
        case!("H2T-SETTINGS-AFTER-HANDSHAKE-FAILS", NOTES, "after the handshake only DATA, HEADERS, PING, GOAWAY are valid; a violation fails the tunnel (GOAWAY with the reason)", settings_after_handshake),
        case!("H2T-UNKNOWN-TYPE-FAILS", NOTES, "after the handshake only DATA, HEADERS, PING, GOAWAY are valid (RST_STREAM type 3 fails)", unknown_type_fails),
        case!("H2T-HEADERS-NONEMPTY-FAILS", NOTES, "non-zero length only on DATA, PING, GOAWAY: a HEADERS with a payload fails the tunnel", headers_nonempty),
        case!("H2T-UNKNOWN-FLAGS-IGNORED", NOTES, "unknown flags ignored (also the reserved stream-id bit, as RFC 9113 says)", unknown_flags_ignored),
        case!("H2T-GZIP-RECEIVE", NOTES, "flag 0x04 on DATA = payload is gzip (RFC 1952): delivered gunzipped (blob made by Python's gzip)", gzip_receive),
        case!("H2T-GZIP-SEND", NOTES, "PSH: DATA, flags 0 (or 0x04 when gzip is smaller and payload > 1024)", gzip_send),
        case!("H2T-GZIP-INVALID-FAILS", NOTES, "a DATA with 0x04 that does not gunzip fails the tunnel", gzip_invalid),
        case!("H2T-FRAME-CAP", NOTES, "do not copy vproxy's unbounded frame sizes: a frame over 16 KiB fails the tunnel as soon as its header arrives", frame_cap, differs: "vproxy accepts any u24 length and buffers it; we fail the tunnel on a payload over 16384 bytes"),
        case!("H2T-FRAME-CAP-EXACT", OURS, "the cap is inclusive: a 16384-byte DATA is accepted", frame_cap_exact),
        case!("H2T-FRAME-CAP-SEND", NOTES, "cap frames, e.g. 16 KiB payload per DATA: a large send is split, in order", frame_cap_send, differs: "vproxy sends one DATA frame per write, of any size; we split at 16384 bytes"),
        case!("H2T-KEEPALIVE-SEND", NOTES, "the client checks every 10 s; sends a PING (length 8, flags 0, sid 0, id as i64 BE) when nothing is queued and nothing was read for 5 s; ids count up from 1", keepalive_send),
        case!("H2T-KEEPALIVE-BUSY", NOTES, "a PING is sent only when nothing is queued and nothing was read for 5 s", keepalive_busy),
        case!("H2T-KEEPALIVE-FIRST-MUST-SUCCEED", NOTES, "5 s timeout per PING; the first must succeed, else the tunnel fails (\"keepalive response timeout\")", keepalive_first_must_succeed),
        case!("H2T-KEEPALIVE-WRONG-ACK", SEED000, "keepalive ack: PING with the ACK flag and the same integer; another id, or no ACK flag, does not answer it", keepalive_wrong_ack),
        case!("H2T-KEEPALIVE-TOLERANCE", NOTES, "after two successes two consecutive misses are tolerated, then the tunnel fails", keepalive_tolerance),
        case!("H2T-KEEPALIVE-TOLERANCE-RESETS", NOTES, "the misses tolerated are consecutive: a success in between starts the count again", keepalive_tolerance_resets),
        case!("H2T-KEEPALIVE-CLIENT-ONLY", NOTES, "the client checks liveness; the server only answers", keepalive_client_only),
        case!("H2T-STREAM-OPEN-ODD-IDS", NOTES, "client opens odd ids 1, 3, 5, ... per tunnel; SYN: HEADERS, length 0, flags 0, sid; state syn_sent", stream_open),
        case!("H2T-STREAM-OPEN-NOT-READY", SEED000, "flow 3 comes after flow 2: streams are opened once the tunnel is established", stream_open_before_ready),
        case!("H2T-STREAM-SYN-ACK", NOTES, "SYN-ACK moves syn_sent -> established, else ignored", stream_syn_ack),
        case!("H2T-STREAM-SYN-DATA-BEFORE-ACK", NOTES, "open: SYN -> syn_sent; data may follow the SYN before SYN-ACK arrives", stream_syn_data_before_ack),
        case!("H2T-STREAM-SERVER-ACCEPT", NOTES, "server: SYN for a new id creates the stream (established) and answers SYN-ACK (HEADERS, length 0, flags 0, sid)", stream_server_accept),
        case!("H2T-STREAM-SYN-LIVE-IGNORED", NOTES, "a SYN for a live id is ignored", stream_syn_live_ignored),
        case!("H2T-STREAM-SERVER-NEVER-OPENS", NOTES, "the server never opens", stream_server_never_opens),
        case!("H2T-STREAM-PSH", SEED000, "PSH: a DATA frame containing the pushed data in the payload; both ends may send (flow 5)", stream_psh),
        case!("H2T-STREAM-DATA-UNKNOWN-IGNORED", NOTES, "DATA for an unknown id is ignored", stream_data_unknown),
        case!("H2T-STREAM-DATA-DEAD-IGNORED", NOTES, "DATA is delivered unless the stream is dead", stream_data_dead_ignored),
        case!("H2T-STREAM-DATA-AFTER-FIN", NOTES, "DATA is delivered unless the stream is dead (so also after the peer's FIN, as vproxy does)", stream_data_after_fin),
        case!("H2T-STREAM-FIN-HALF-CLOSE", NOTES, "FIN (DATA, length 0, flags 0x01): established -> fin_recv; the other direction stays open", stream_fin_half_close),
        case!("H2T-STREAM-PSH-FIN", NOTES, "PSH-FIN: DATA with payload, flags 0x01 (data first, then FIN)", stream_psh_fin),
        case!("H2T-STREAM-FIN-AFTER-OWN-FIN", NOTES, "FIN after our own FIN (fin_sent) -> dead; shutdown of output: established -> FIN, fin_sent", stream_fin_after_own_fin),
        case!("H2T-STREAM-SHUTDOWN-AFTER-FIN-RECV", NOTES, "shutdown of output: fin_recv -> FIN, dead", stream_shutdown_after_fin_recv),
        case!("H2T-STREAM-RST-NO-ECHO", NOTES, "RST: live stream -> dead, reads/writes fail \"reset by peer\" (and nothing is sent back)", stream_rst_no_echo),
        case!("H2T-STREAM-RST-UNKNOWN-IGNORED", NOTES, "RST to an unknown or dead stream is ignored", stream_rst_unknown_ignored),
        case!("H2T-STREAM-RESET-SEND", NOTES, "RST: HEADERS, length 0, flags 0x01 (seed: both endpoints may send RST on an established connection)", stream_reset_send),
        case!("H2T-STREAM-CLOSE-LINGER", NOTES, "close() with linger 0 sends RST, else FIN; the id is then forgotten (real_closed)", stream_close_linger),
        case!("H2T-STREAM-NO-SECOND-FIN", NOTES, "do not copy vproxy's slip of a second FIN after shutdown+close", stream_no_second_fin, differs: "vproxy sends FIN again when close() follows shutdown(); we send one FIN"),
        case!("H2T-STREAM-REFUSE-NOT-FAIL", NOTES, "do not fail a whole tunnel because one stream could not be accepted: answer that stream with RST", stream_refuse_not_fail, differs: "vproxy fails the tunnel when it cannot accept a stream; we answer that SYN with RST and keep the tunnel"),
        case!("H2T-STREAM-EVEN-ID-REFUSED", OURS, "clients open odd ids: a SYN with an even id is refused with RST, like a stream that cannot be accepted", stream_even_id_refused),
        case!("H2T-STREAM-RX-CAP-RST", OURS, "a stream whose unread input exceeds its buffer cap is reset (RST), not the tunnel", stream_rx_cap),
        case!("H2T-FLOW-END-TO-END", SEED000, "flow 1-9 between our client and our server: handshake, SYN/SYN-ACK, PSH both ways, FIN each way, RST, shutdown", flow_end_to_end),
    ]
}

/// Runs every case.
pub fn run_all() -> Vec<(Case, CaseResult)> {
    cases()
        .into_iter()
        .map(|c| {
            let r = (c.body)();
            (c, r)
        })
        .collect()
}

/// The Markdown report: one row per case with its result.
pub fn report(results: &[(Case, CaseResult)]) -> String {
    let mut md = String::new();
    md.push_str("# h2tunnel conformance\n\n");
    md.push_str("Generated by `cargo test -p tunnelbed-conformance --test h2tunnel_cases` from\n");
    md.push_str(
        "`conformance/src/h2tunnel_cases/`; do not edit by hand. Each case is a scripted\n",
    );
    md.push_str(
        "frame exchange with one tunnel machine; its frames and transitions are snapshotted\n",
    );
    md.push_str("in `conformance/tests/snapshots/`.\n\n");
    let passed = results.iter().filter(|(_, r)| r.passed()).count();
    let _ = writeln!(md, "{passed} of {} cases pass.\n", results.len());
    let lines: Vec<CaseReport> = results
        .iter()
        .map(|(c, r)| {
            let outcome = r.outcome.clone().map(|()| Verdict::Pass(String::new()));
            CaseReport::new(c, outcome, true, Duration::ZERO)
        })
        .collect();
    md.push_str(&markdown_table(&lines, "vproxy"));
    md
}
