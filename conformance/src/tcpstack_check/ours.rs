//! Our stack as a script target: the sans-IO [`Stack`] under a virtual clock, so a
//! script's timings are exact and a run replays identically.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddrV4;
use std::time::Duration;

use tunnelbed_netio::Trace;
use tunnelbed_tcpstack::{ConnId, ListenerId, Stack, StackConfig, StackError};

use super::target::{AppOp, AppResult, Target, LISTEN_PORT, TARGET_IP};

/// The sans-IO stack listening on [`TARGET_IP`]:[`LISTEN_PORT`], vproxy's defaults.
pub struct OurStack {
    stack: Stack,
    lid: ListenerId,
    now: Duration,
    out: VecDeque<(Duration, Vec<u8>)>,
    conns: BTreeMap<u16, ConnId>,
}

impl OurStack {
    /// A fresh stack with `cfg`, listening with a backlog of 16.
    pub fn new(cfg: StackConfig, trace: Trace) -> Result<Self, StackError> {
        let mut stack = Stack::new(cfg, trace);
        let lid = stack.listen(
            Duration::ZERO,
            SocketAddrV4::new(TARGET_IP, LISTEN_PORT),
            16,
        )?;
        Ok(Self {
            stack,
            lid,
            now: Duration::ZERO,
            out: VecDeque::new(),
            conns: BTreeMap::new(),
        })
    }

    fn drain(&mut self) {
        while let Some(p) = self.stack.poll_transmit() {
            self.out.push_back((self.now, p.to_vec()));
        }
        while self.stack.poll_event().is_some() {}
    }
}

fn result(r: Result<usize, StackError>) -> AppResult {
    match r {
        Ok(n) => AppResult::Bytes(n),
        Err(StackError::WouldBlock) => AppResult::WouldBlock,
        Err(StackError::Reset) => AppResult::Reset,
        Err(e) => AppResult::Err(e.to_string()),
    }
}

impl Target for OurStack {
    fn name(&self) -> String {
        "tunnelbed-tcpstack (sans-IO, virtual time)".into()
    }

    fn now(&self) -> Duration {
        self.now
    }

    fn inject(&mut self, packet: &[u8]) {
        // A packet the stack refuses is counted in its stats; the script sees silence.
        let _ = self.stack.handle_input(self.now, packet);
        self.drain();
    }

    fn poll_packet(&mut self, deadline: Duration) -> Option<(Duration, Vec<u8>)> {
        loop {
            if let Some(p) = self.out.pop_front() {
                return Some(p);
            }
            match self.stack.poll_timeout() {
                Some(t) if t <= deadline => {
                    self.now = self.now.max(t);
                    self.stack.handle_timeout(self.now);
                    self.drain();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return None;
                }
            }
        }
    }

    fn app(&mut self, sport: u16, op: AppOp) -> AppResult {
        let now = self.now;
        let r = match op {
            AppOp::Accept => match self.stack.accept(self.lid) {
                Some(c) => {
                    self.conns.insert(sport, c);
                    AppResult::Done
                }
                None => AppResult::Err("no connection to accept".into()),
            },
            _ => {
                let Some(&c) = self.conns.get(&sport) else {
                    return AppResult::Err("script error: no accepted connection".into());
                };
                match op {
                    AppOp::Read(n) => {
                        let mut buf = vec![0u8; n];
                        result(self.stack.read(now, c, &mut buf))
                    }
                    AppOp::Write(n) => result(self.stack.write(now, c, &vec![b'x'; n])),
                    AppOp::Shutdown => match self.stack.shutdown(now, c) {
                        Ok(()) => AppResult::Done,
                        Err(e) => result(Err(e)),
                    },
                    AppOp::Close => match self.stack.close(now, c) {
                        Ok(()) => AppResult::Done,
                        Err(e) => result(Err(e)),
                    },
                    AppOp::Accept => AppResult::Done,
                }
            }
        };
        self.drain();
        r
    }
}
