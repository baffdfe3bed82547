//! The stack's constants. Defaults are vproxy's (see the protocol notes), except the
//! limits vproxy does not have, which are ours and marked so.

use std::time::Duration;

/// Tunables of a [`crate::Stack`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackConfig {
    /// MSS we offer, and the most payload we put in one segment (vproxy: 1360).
    pub mss: u16,
    /// Send buffer per connection, bytes (vproxy: 212992).
    pub send_buffer: usize,
    /// Receive buffer per connection, bytes; the window we advertise (vproxy: 212992).
    pub recv_buffer: usize,
    /// Retransmission timeout at start and after progress (vproxy: 200 ms).
    pub rto_initial: Duration,
    /// Largest retransmission timeout; it doubles up to this (vproxy: 120 s).
    pub rto_max: Duration,
    /// Delay between an application read and the ACK it allows (vproxy: 20 ms).
    pub delayed_ack: Duration,
    /// Half-open (SYN_RCVD) connections per listener (vproxy: 128).
    pub syn_backlog: usize,
    /// Window scale shift we offer when the peer offers one (vproxy: 6).
    pub window_scale: u8,
    /// Congestion cap: most un-acked bytes, in MSS units, beyond the oldest un-acked
    /// byte (vproxy: 45); the peer's window caps it too.
    pub cap_segments: u32,
    /// Retransmissions allowed after the application closed before the connection is
    /// reset (vproxy: 7).
    pub close_retries: u32,
    /// Retransmissions of one segment before the connection is reset (ours: vproxy has
    /// no limit, which leaks connections whose peer vanished).
    pub max_retries: u32,
    /// How long a SYN_RCVD connection waits for the handshake's ACK before it is dropped
    /// (ours: frees the backlog slot of a peer that vanished).
    pub syn_rcvd_timeout: Duration,
    /// Most connections in all states (ours: bounds memory against SYN floods).
    pub max_connections: usize,
    /// Challenge ACKs (RFC 5961) the whole stack sends per second at most (ours;
    /// RFC 5961 section 7 asks for a limit).
    pub challenge_acks_per_second: u32,
    /// TTL of packets we send.
    pub ttl: u8,
    /// Seed of the RNG that draws initial sequence numbers.
    pub isn_seed: u64,
    /// Use this ISN for every connection instead of drawing one (tests: wrap-around).
    pub fixed_isn: Option<u32>,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            mss: 1360,
            send_buffer: 212_992,
            recv_buffer: 212_992,
            rto_initial: Duration::from_millis(200),
            rto_max: Duration::from_secs(120),
            delayed_ack: Duration::from_millis(20),
            syn_backlog: 128,
            window_scale: 6,
            cap_segments: 45,
            close_retries: 7,
            max_retries: 15,
            syn_rcvd_timeout: Duration::from_secs(30),
            max_connections: 4096,
            challenge_acks_per_second: 100,
            ttl: 64,
            isn_seed: 0,
            fixed_isn: None,
        }
    }
}
