//! The cases: one script per rule of seed 002's diagram and the protocol notes, each with
//! a stable id, and what the Linux kernel is expected to do with the same script.

use std::time::Duration;

use tunnelbed_tcpstack::TcpFlags;

use super::script::{AppWant, Num, Script, Seg, Step, Want};
use super::target::{AppOp, CLOSED_PORT};
use crate::framework::{Case, Level};

/// What the kernel does with a case's script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The kernel follows the same rule: the script must pass against it too.
    Holds,
    /// The kernel behaves otherwise, on purpose (seed 002 simplifies TCP): how.
    Differs(&'static str),
}

/// A case's body: its script and the kernel's expected behaviour.
#[derive(Clone, Copy)]
pub struct Body {
    /// Builds the script.
    pub script: fn() -> Script,
    /// What the kernel does with it.
    pub kernel: Kernel,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The bound for an answer that should come at once (real kernels, scheduling).
const PROMPT: Duration = Duration::from_millis(150);

fn p(k: i64) -> Num {
    Num::Peer(k)
}

fn t(k: i64) -> Num {
    Num::Target(k)
}

const A: TcpFlags = TcpFlags::ACK;

fn fl(a: TcpFlags, b: TcpFlags) -> TcpFlags {
    TcpFlags(a.0 | b.0)
}

fn syn_ack() -> TcpFlags {
    fl(TcpFlags::SYN, A)
}

fn fin_ack() -> TcpFlags {
    fl(TcpFlags::FIN, A)
}

fn psh_ack() -> TcpFlags {
    fl(TcpFlags::PSH, A)
}

fn rst_ack() -> TcpFlags {
    fl(TcpFlags::RST, A)
}

fn expect_synack() -> Step {
    let mut w = Want::flags(syn_ack(), PROMPT);
    w.ack = Some(p(1));
    w.learn_isn = true;
    Step::Expect(w)
}

/// SYN, SYN-ACK, ACK.
fn handshake() -> Vec<Step> {
    vec![
        Step::Send(Seg::syn()),
        expect_synack(),
        Step::Send(Seg::new(A, p(1), t(1))),
    ]
}

/// The handshake, then the application accepts.
fn established() -> Vec<Step> {
    let mut v = handshake();
    v.push(Step::App(AppOp::Accept, AppWant::Ok));
    v
}

fn script(sport: u16, steps: Vec<Step>) -> Script {
    Script {
        sport,
        isn: 5000,
        steps,
    }
}

fn with(mut a: Vec<Step>, b: impl IntoIterator<Item = Step>) -> Vec<Step> {
    a.extend(b);
    a
}

fn data(seq: Num, len: usize) -> Step {
    Step::Send(Seg::new(psh_ack(), seq, t(1)).len(len))
}

fn hs_synack() -> Script {
    let mut w = Want::flags(syn_ack(), PROMPT);
    w.ack = Some(p(1));
    w.learn_isn = true;
    w.wscale = Some(true);
    script(42001, vec![Step::Send(Seg::syn()), Step::Expect(w)])
}

fn hs_accept() -> Script {
    script(
        42002,
        with(
            handshake(),
            [
                Step::Silence(ms(300)),
                Step::App(AppOp::Accept, AppWant::Ok),
            ],
        ),
    )
}

fn hs_no_wscale() -> Script {
    let mut syn = Seg::syn();
    syn.options = false;
    let mut w = Want::flags(syn_ack(), PROMPT);
    w.ack = Some(p(1));
    w.wscale = Some(false);
    script(42003, vec![Step::Send(syn), Step::Expect(w)])
}

fn hs_mss() -> Script {
    let mut w = Want::flags(syn_ack(), PROMPT);
    w.mss = Some(Some(1360));
    script(42004, vec![Step::Send(Seg::syn()), Step::Expect(w)])
}

fn synack_only_on_syn_retry() -> Script {
    let mut again = Want::flags(syn_ack(), PROMPT).nums(t(0), p(1));
    again.min = Some(Duration::ZERO);
    script(
        42005,
        vec![
            Step::Send(Seg::syn()),
            expect_synack(),
            Step::Silence(ms(1500)),
            Step::Send(Seg::syn()),
            Step::Expect(again),
        ],
    )
}

fn no_listener_rst() -> Script {
    let mut syn = Seg::syn();
    syn.dport = Some(CLOSED_PORT);
    // The RST comes from the closed port, to the checker's port: the flow filter keys
    // on the checker's port only.
    script(
        42006,
        vec![
            Step::Send(syn),
            Step::Expect(Want::flags(rst_ack(), PROMPT).nums(Num::Abs(0), p(1))),
        ],
    )
}

fn no_conn_rst() -> Script {
    script(
        42007,
        vec![
            Step::Send(Seg::new(A, p(0), Num::Abs(777_777))),
            Step::Expect(Want::flags(TcpFlags::RST, PROMPT).nums(Num::Abs(777_777), Num::Abs(0))),
        ],
    )
}

fn ack_after_read() -> Script {
    script(
        42008,
        with(
            established(),
            [
                data(p(1), 100),
                Step::Silence(ms(300)),
                Step::App(AppOp::Read(100), AppWant::Bytes(100)),
                Step::Expect(
                    Want::flags(A, ms(200))
                        .nums(t(1), p(101))
                        .not_before(Duration::ZERO),
                ),
            ],
        ),
    )
}

fn ack_fin_at_once() -> Script {
    script(
        42009,
        with(
            established(),
            [
                Step::Send(Seg::new(fin_ack(), p(1), t(1))),
                Step::Expect(Want::flags(A, PROMPT).nums(t(1), p(2))),
                Step::App(AppOp::Read(10), AppWant::Eof),
            ],
        ),
    )
}

fn retransmit_data() -> Script {
    script(
        42010,
        with(
            established(),
            [
                Step::App(AppOp::Write(100), AppWant::Bytes(100)),
                Step::Expect(Want::flags(psh_ack(), PROMPT).nums(t(1), p(1)).len(100)),
                Step::Expect(
                    Want::flags(psh_ack(), Duration::from_secs(3))
                        .nums(t(1), p(1))
                        .len(100)
                        .not_before(ms(150)),
                ),
            ],
        ),
    )
}

fn retransmit_fin() -> Script {
    script(
        42011,
        with(
            established(),
            [
                Step::App(AppOp::Shutdown, AppWant::Ok),
                Step::Expect(Want::flags(fin_ack(), PROMPT).nums(t(1), p(1))),
                Step::Expect(
                    Want::flags(fin_ack(), Duration::from_secs(3))
                        .nums(t(1), p(1))
                        .not_before(ms(150)),
                ),
            ],
        ),
    )
}

fn no_retransmit_ack() -> Script {
    // An ACK the peer never acknowledges (it cannot) is never sent again.
    script(
        42012,
        with(
            established(),
            [
                data(p(1), 10),
                Step::App(AppOp::Read(10), AppWant::Bytes(10)),
                Step::Expect(Want::flags(A, ms(200)).nums(t(1), p(11))),
                Step::Silence(ms(1500)),
            ],
        ),
    )
}

fn close_rst_when_idle() -> Script {
    script(
        42013,
        with(
            established(),
            [
                Step::App(AppOp::Close, AppWant::Ok),
                Step::Expect(Want::flags(rst_ack(), PROMPT).nums(t(1), p(1))),
            ],
        ),
    )
}

fn close_drain_then_rst() -> Script {
    script(
        42014,
        with(
            established(),
            [
                Step::App(AppOp::Write(100), AppWant::Bytes(100)),
                Step::Expect(Want::flags(psh_ack(), PROMPT).nums(t(1), p(1)).len(100)),
                Step::App(AppOp::Close, AppWant::Ok),
                Step::Expect(Want::flags(fin_ack(), PROMPT).nums(t(101), p(1))),
                Step::Send(Seg::new(A, p(1), t(102))),
                Step::Expect(Want::flags(rst_ack(), PROMPT).nums(t(102), p(1))),
            ],
        ),
    )
}

fn passive_close() -> Script {
    script(
        42015,
        with(
            established(),
            [
                Step::Send(Seg::new(fin_ack(), p(1), t(1))),
                Step::Expect(Want::flags(A, PROMPT).nums(t(1), p(2))),
                Step::App(AppOp::Read(10), AppWant::Eof),
                Step::App(AppOp::Shutdown, AppWant::Ok),
                Step::Expect(Want::flags(fin_ack(), PROMPT).nums(t(1), p(2))),
                Step::Send(Seg::new(A, p(2), t(2))),
                Step::Silence(ms(500)),
            ],
        ),
    )
}

fn fin_wait_2_fin_rst() -> Script {
    script(
        42016,
        with(
            established(),
            [
                Step::App(AppOp::Shutdown, AppWant::Ok),
                Step::Expect(Want::flags(fin_ack(), PROMPT).nums(t(1), p(1))),
                Step::Send(Seg::new(A, p(1), t(2))),
                Step::Silence(ms(100)),
                Step::Send(Seg::new(fin_ack(), p(1), t(2))),
                Step::Expect(Want::flags(rst_ack(), PROMPT).nums(t(2), p(2))),
            ],
        ),
    )
}

fn rst_exact_closes() -> Script {
    script(
        42017,
        with(
            established(),
            [
                Step::Send(Seg::new(TcpFlags::RST, p(1), Num::Abs(0))),
                Step::Silence(ms(200)),
                Step::App(AppOp::Read(10), AppWant::Reset),
            ],
        ),
    )
}

fn rst_in_window_challenge() -> Script {
    script(
        42018,
        with(
            established(),
            [
                Step::Send(Seg::new(TcpFlags::RST, p(101), Num::Abs(0))),
                Step::Expect(Want::flags(A, PROMPT).nums(t(1), p(1))),
                Step::App(AppOp::Read(10), AppWant::WouldBlock),
            ],
        ),
    )
}

fn rst_out_of_window() -> Script {
    script(
        42019,
        with(
            established(),
            [
                Step::Send(Seg::new(TcpFlags::RST, p(1 << 30), Num::Abs(0))),
                Step::Silence(ms(200)),
                Step::App(AppOp::Read(10), AppWant::WouldBlock),
            ],
        ),
    )
}

fn syn_challenge() -> Script {
    let mut syn = Seg::syn();
    syn.seq = p(500);
    script(
        42020,
        with(
            established(),
            [
                Step::Send(syn),
                Step::Expect(Want::flags(A, PROMPT).nums(t(1), p(1))),
                Step::App(AppOp::Read(10), AppWant::WouldBlock),
            ],
        ),
    )
}

fn bad_checksum() -> Script {
    let mut bad = Seg::new(psh_ack(), p(1), t(1)).len(50);
    bad.bad_checksum = true;
    script(
        42021,
        with(
            established(),
            [
                Step::Send(bad),
                Step::Silence(ms(200)),
                Step::App(AppOp::Read(100), AppWant::WouldBlock),
                data(p(1), 50),
                Step::App(AppOp::Read(100), AppWant::Bytes(50)),
            ],
        ),
    )
}

fn seq_wrap() -> Script {
    let mut s = script(
        42022,
        with(
            established(),
            [
                data(p(1), 100),
                Step::App(AppOp::Read(100), AppWant::Bytes(100)),
                Step::Expect(Want::flags(A, ms(200)).nums(t(1), p(101))),
            ],
        ),
    );
    // The checker's sequence numbers cross 2^32 inside the data.
    s.isn = u32::MAX - 49;
    s
}

fn cap_unacked() -> Script {
    script(
        42023,
        with(
            established(),
            [
                Step::App(AppOp::Write(200_000), AppWant::Ok),
                Step::Burst {
                    during: ms(150),
                    min: 1,
                    max: 45 * 1460,
                },
            ],
        ),
    )
}

fn ooo_dupack() -> Script {
    script(
        42024,
        with(
            established(),
            [
                data(p(101), 100),
                Step::Expect(Want::flags(A, PROMPT).nums(t(1), p(1))),
                data(p(1), 100),
                Step::App(AppOp::Read(300), AppWant::Bytes(200)),
                Step::Expect(Want::flags(A, ms(200)).nums(t(1), p(201))),
            ],
        ),
    )
}

const KERNEL_ACKS_ON_ARRIVAL: &str =
    "Linux acks data when it reaches the receive buffer (delayed ACK or quick ACK), not after the application reads it";

/// Every case, in report order.
pub fn all() -> Vec<Case<Body>> {
    let c = |id, level, source, clause, differs, script, kernel| Case {
        id,
        level,
        source,
        clause,
        differs,
        body: Body { script, kernel },
    };
    use Kernel::{Differs, Holds};
    use Level::{Must, Should};
    vec![
        c("TCP-HS-SYNACK", Must, "seed", "LISTEN: recv SYN, send SYN|ACK acking SYN+1 (window scale offered back)", None, hs_synack as fn() -> Script, Holds),
        c("TCP-HS-ACCEPT", Must, "seed", "SYN_RCVD: recv ACK, send nothing; the connection is ESTABLISHED and accepted", None, hs_accept, Holds),
        c("TCP-HS-WSCALE-ONLY-IF-OFFERED", Must, "notes", "no window-scale option in the SYN-ACK when the SYN had none", Some("vproxy always sends window scale"), hs_no_wscale, Holds),
        c("TCP-HS-MSS-1360", Should, "notes", "the SYN-ACK offers MSS 1360 (vproxy's constant)", None, hs_mss, Differs("Linux offers the device MTU minus 40 (1460 on a 1500-byte TUN)")),
        c("TCP-SYNACK-ONLY-ON-SYN-RETRY", Must, "seed", "a lost SYN-ACK is sent again only when the SYN comes again (no timer)", None, synack_only_on_syn_retry, Differs("Linux retransmits the SYN-ACK on a timer (1 s, then doubling), and answers the repeated SYN too")),
        c("TCP-NO-LISTENER-RST", Must, "notes", "a SYN to a port with no listener gets RST|ACK with ack = seq + 1", None, no_listener_rst, Holds),
        c("TCP-NO-CONN-RST", Must, "notes", "a segment for no connection gets RST with seq = its ack", None, no_conn_rst, Holds),
        c("TCP-ACK-AFTER-READ", Must, "seed", "data is acked after the application reads it (20 ms later), never while unread", None, ack_after_read, Differs(KERNEL_ACKS_ON_ARRIVAL)),
        c("TCP-ACK-FIN-AT-ONCE", Must, "notes", "a FIN is acked at once (when all data before it was read)", None, ack_fin_at_once, Holds),
        c("TCP-RETRANSMIT-DATA", Must, "seed", "un-acked data is retransmitted after the RTO (200 ms)", None, retransmit_data, Holds),
        c("TCP-RETRANSMIT-FIN", Must, "seed", "an un-acked FIN is retransmitted after the RTO", None, retransmit_fin, Holds),
        c("TCP-NO-RETRANSMIT-ACK", Must, "seed", "only data and FIN are retransmitted: a pure ACK is sent once", None, no_retransmit_ack, Holds),
        c("TCP-CLOSE-RST-WHEN-IDLE", Must, "seed", "ESTABLISHED: appl close with nothing in flight sends RST (no FIN, no TIME_WAIT)", None, close_rst_when_idle, Differs("Linux close() sends FIN and lingers in FIN_WAIT/TIME_WAIT")),
        c("TCP-CLOSE-DRAIN-THEN-RST", Must, "seed", "close with data pending: FIN_WAIT_1 first, RST once all data and the FIN are acked", None, close_drain_then_rst, Differs("Linux sends data and FIN, then waits in FIN_WAIT_2 without a RST")),
        c("TCP-PASSIVE-CLOSE", Must, "seed", "ESTABLISHED: recv FIN, send ACK (CLOSE_WAIT); appl shutdown sends FIN; its ACK ends the exchange", None, passive_close, Holds),
        c("TCP-FIN-WAIT-2-FIN-RST", Must, "seed", "FIN_WAIT_2: recv FIN, send RST (no TIME_WAIT)", None, fin_wait_2_fin_rst, Differs("Linux acks the FIN and enters TIME_WAIT")),
        c("TCP-RST-EXACT-CLOSES", Must, "notes", "a RST at exactly rcv_nxt resets the connection (RFC 5961 3.2)", Some("vproxy ignores incoming RSTs"), rst_exact_closes, Holds),
        c("TCP-RST-IN-WINDOW-CHALLENGE", Must, "notes", "a RST inside the window but not at rcv_nxt gets a challenge ACK, the connection lives (RFC 5961 3.2)", Some("vproxy ignores incoming RSTs"), rst_in_window_challenge, Holds),
        c("TCP-RST-OUT-OF-WINDOW-IGNORED", Must, "notes", "a RST outside the window is dropped silently (RFC 5961 3.2)", None, rst_out_of_window, Holds),
        c("TCP-SYN-IN-ESTABLISHED-CHALLENGE", Must, "notes", "a SYN on a synchronized connection gets a challenge ACK (RFC 5961 4.2)", None, syn_challenge, Holds),
        c("TCP-BAD-CHECKSUM-IGNORED", Must, "notes", "a segment with a wrong checksum changes nothing and is not answered", Some("vproxy does not verify inbound checksums"), bad_checksum, Holds),
        c("TCP-SEQ-WRAP", Must, "notes", "sequence numbers wrap at 2^32: data across the wrap is read and acked", Some("vproxy has no wrap-around handling"), seq_wrap, Holds),
        c("TCP-CAP-UNACKED", Must, "notes", "congestion control: at most min(window, 45 x MSS) un-acked bytes", None, cap_unacked, Holds),
        c("TCP-OOO-DUPACK", Should, "tunnelbed", "an out-of-order segment is answered with a duplicate ACK and kept", Some("vproxy drops out-of-order segments without acking"), ooo_dupack, Holds),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_ports_distinct() {
        let all = all();
        let mut ids: Vec<_> = all.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        let mut ports: Vec<_> = all.iter().map(|c| (c.body.script)().sport).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), all.len());
    }
}
