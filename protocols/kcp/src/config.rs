//! KCP knobs and the presets tunnelbed uses: the reference ikcp default and vproxy's
//! tunnel profiles.

/// Every knob of a KCP session. Field meanings follow ikcp (`ikcp_nodelay`,
/// `ikcp_wndsize`, `ikcp_setmtu`, ...); [`crate::Kcp::new`] applies them in ikcp's way
/// (intervals clamped to 10..=5000 ms, receive window at least 128).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KcpConfig {
    /// Largest datagram (mss = mtu - 24). At least 50.
    pub mtu: u32,
    /// Send window in segments.
    pub snd_wnd: u32,
    /// Receive window in segments (ikcp raises it to at least 128).
    pub rcv_wnd: u32,
    /// 0: normal RTO backoff (x2); 1: gentler backoff (x1.5) and minrto 30; 2: x1.5 of rx_rto.
    pub nodelay: i32,
    /// Flush interval in ms.
    pub interval: u32,
    /// Fast retransmit after this many later segments were acknowledged (0: off).
    pub resend: i32,
    /// Turn the congestion window off.
    pub nc: bool,
    /// Minimum RTO override (None: ikcp's, 30 with nodelay else 100).
    pub minrto: Option<u32>,
    /// A segment sent this many times marks the link dead.
    pub dead_link: u32,
    /// Most fast retransmits per segment (<= 0: unlimited).
    pub fastlimit: i32,
    /// Stream mode: no message boundaries, sends coalesce.
    pub stream: bool,
    /// Cap on segments waiting in the send queue; `send` fails beyond it (bounds memory).
    pub max_send_queue: usize,
}

impl Default for KcpConfig {
    /// The reference ikcp defaults.
    fn default() -> Self {
        Self {
            mtu: 1400,
            snd_wnd: 32,
            rcv_wnd: 128,
            nodelay: 0,
            interval: 100,
            resend: 0,
            nc: false,
            minrto: None,
            dead_link: 20,
            fastlimit: 5,
            stream: false,
            max_send_queue: 1 << 16,
        }
    }
}

impl KcpConfig {
    /// vproxy's tunnel base: stream mode, nc on, mtu 1250, dead link 20, fastlimit 5.
    fn vproxy(nodelay: i32, interval: u32, resend: i32, snd: u32, rcv: u32, minrto: u32) -> Self {
        Self {
            mtu: 1250,
            snd_wnd: snd,
            rcv_wnd: rcv,
            nodelay,
            interval,
            resend,
            nc: true,
            minrto: Some(minrto),
            dead_link: 20,
            fastlimit: 5,
            stream: true,
            ..Self::default()
        }
    }

    /// vproxy fast1.
    pub fn fast1() -> Self {
        Self::vproxy(0, 30, 2, 1024, 1024, 60)
    }
    /// vproxy fast2.
    pub fn fast2() -> Self {
        Self::vproxy(1, 20, 2, 1024, 1024, 30)
    }
    /// vproxy fast3.
    pub fn fast3() -> Self {
        Self::vproxy(1, 10, 2, 1024, 1024, 30)
    }
    /// vproxy fast4, the server default.
    pub fn fast4() -> Self {
        Self::vproxy(1, 10, 1, 1024, 1024, 30)
    }
    /// vproxy clientFast3.
    pub fn client_fast3() -> Self {
        Self::vproxy(1, 10, 2, 128, 1024, 30)
    }
    /// vproxy clientFast4, the client default.
    pub fn client_fast4() -> Self {
        Self::vproxy(1, 10, 1, 256, 1024, 30)
    }
    /// vproxy normal.
    pub fn normal() -> Self {
        Self::vproxy(0, 40, 2, 1024, 1024, 100)
    }

    /// A preset by name: `default`, `fast1`..`fast4`, `clientFast3`, `clientFast4`, `normal`.
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "default" => Self::default(),
            "fast1" => Self::fast1(),
            "fast2" => Self::fast2(),
            "fast3" => Self::fast3(),
            "fast4" => Self::fast4(),
            "clientFast3" | "client-fast3" => Self::client_fast3(),
            "clientFast4" | "client-fast4" => Self::client_fast4(),
            "normal" => Self::normal(),
            _ => return None,
        })
    }

    /// Every preset name [`KcpConfig::preset`] accepts.
    pub const PRESETS: &'static [&'static str] = &[
        "default",
        "fast1",
        "fast2",
        "fast3",
        "fast4",
        "clientFast3",
        "clientFast4",
        "normal",
    ];
}
