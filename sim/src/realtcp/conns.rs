//! [`Conns`]: one host's TCP connections, each in a smoltcp socket set of its own, found
//! by four-tuple, with a timer queue. smoltcp walks every socket of a set on each
//! ingress packet, each egress round and each `poll_at`; with one set per connection a
//! pump touches only the connections a packet, the application or a timer woke (the
//! remote of `pong-streams` holds 300+ connections).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

/// A connection's id on its host (never reused within an incarnation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(u64);

/// (local port, peer address, peer port).
pub type Tuple = (u16, Ipv4Addr, u16);

/// One connection: its socket set (holding just its socket) and its routing and timer.
pub struct Conn {
    set: SocketSet<'static>,
    h: SocketHandle,
    tuple: Option<Tuple>,
    due: Option<Duration>,
    /// The application's bound on unacknowledged bytes (`TCP_USER_TIMEOUT`), if any.
    user_timeout: Option<Duration>,
}

impl Conn {
    /// The connection's socket.
    pub fn tcp(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket>(self.h)
    }

    /// The connection's socket, read only.
    pub fn peek(&self) -> &tcp::Socket<'static> {
        self.set.get::<tcp::Socket>(self.h)
    }
}

/// The connection table of one host stack (see the module notes).
#[derive(Default)]
pub struct Conns {
    map: BTreeMap<ConnId, Conn>,
    routes: BTreeMap<Tuple, ConnId>,
    timers: BTreeSet<(Duration, ConnId)>,
    /// Connections the application, a packet or the stall watch touched since the last
    /// egress: they get one whatever their timer says.
    dirty: BTreeSet<ConnId>,
    next: u64,
}

impl Conns {
    /// Adds `socket` as a new connection, routed by `tuple` if known.
    pub fn add(&mut self, socket: tcp::Socket<'static>, tuple: Option<Tuple>) -> ConnId {
        let id = ConnId(self.next);
        self.next += 1;
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let h = set.add(socket);
        self.map.insert(
            id,
            Conn {
                set,
                h,
                tuple: None,
                due: None,
                user_timeout: None,
            },
        );
        if let Some(t) = tuple {
            self.route(id, t);
        }
        self.dirty.insert(id);
        id
    }

    /// Routes packets of `tuple` to `id` from now on (a connection that held the tuple
    /// before keeps its socket but no longer receives).
    pub fn route(&mut self, id: ConnId, tuple: Tuple) {
        if let Some(c) = self.map.get_mut(&id) {
            c.tuple = Some(tuple);
            self.routes.insert(tuple, id);
        }
    }

    /// The connection packets of `tuple` go to.
    pub fn find(&self, tuple: &Tuple) -> Option<ConnId> {
        self.routes.get(tuple).copied()
    }

    /// The four-tuple `id` was routed by (kept after smoltcp forgot it on a reset).
    pub fn tuple(&self, id: ConnId) -> Option<Tuple> {
        self.map.get(&id).and_then(|c| c.tuple)
    }

    /// Whether `id` exists.
    pub fn contains(&self, id: ConnId) -> bool {
        self.map.contains_key(&id)
    }

    /// The socket of `id`, marked for an egress (the caller may change it). Panics on an
    /// id already removed: streams and listeners hold theirs until they release them.
    pub fn tcp(&mut self, id: ConnId) -> &mut tcp::Socket<'static> {
        self.dirty.insert(id);
        self.map.get_mut(&id).expect("a live connection id").tcp()
    }

    /// The socket of `id`, read only.
    pub fn peek(&self, id: ConnId) -> &tcp::Socket<'static> {
        self.map.get(&id).expect("a live connection id").peek()
    }

    /// The connection `id`, not marked (for the stack's own upkeep during a pump).
    pub fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.map.get_mut(&id)
    }

    /// The socket set of `id` (for smoltcp's ingress and egress).
    pub fn set_mut(&mut self, id: ConnId) -> Option<&mut SocketSet<'static>> {
        self.map.get_mut(&id).map(|c| &mut c.set)
    }

    /// Bounds how long `id`'s written bytes may stay unacknowledged (Linux's
    /// `TCP_USER_TIMEOUT`). smoltcp's own timeout is not that: it aborts whenever the
    /// peer has sent nothing for the duration, also with nothing of ours outstanding, so
    /// a quiet peer (a target waiting for a request still crossing a congested tunnel)
    /// was reset after 30 s of silence (h2tunnel-streams-tcp hostile seed 3). The stack
    /// arms smoltcp's timeout only while bytes wait in the send buffer
    /// ([`Conns::arm_user_timeout`]); smoltcp restarts its count when bytes go into an
    /// empty buffer.
    pub fn set_user_timeout(&mut self, id: ConnId, timeout: Duration) {
        if let Some(c) = self.map.get_mut(&id) {
            c.user_timeout = Some(timeout);
        }
        self.arm_user_timeout(id);
        self.dirty.insert(id);
    }

    /// Arms `id`'s user timeout if bytes wait to be acknowledged, disarms it if not (see
    /// [`Conns::set_user_timeout`]); call before smoltcp looks at the socket.
    pub fn arm_user_timeout(&mut self, id: ConnId) {
        let Some(c) = self.map.get_mut(&id) else {
            return;
        };
        let Some(t) = c.user_timeout else {
            return;
        };
        let waiting = c.peek().send_queue() > 0;
        c.tcp().set_timeout(waiting.then(|| super::smol(t)));
    }

    /// Marks `id` for an egress at the next pump.
    pub fn mark(&mut self, id: ConnId) {
        self.dirty.insert(id);
    }

    /// Frees `id`: its socket, its route (if still its own) and its timer.
    pub fn remove(&mut self, id: ConnId) {
        let Some(c) = self.map.remove(&id) else {
            return;
        };
        if let Some(t) = c.tuple {
            if self.routes.get(&t) == Some(&id) {
                self.routes.remove(&t);
            }
        }
        if let Some(d) = c.due {
            self.timers.remove(&(d, id));
        }
        self.dirty.remove(&id);
    }

    /// Whether a connection uses local port `port`.
    pub fn port_in_use(&self, port: u16) -> bool {
        let lo = (port, Ipv4Addr::UNSPECIFIED, 0);
        let hi = (port, Ipv4Addr::BROADCAST, u16::MAX);
        self.routes.range(lo..=hi).next().is_some()
    }

    /// Every connection, in id order (not marked: the caller marks what it changes).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut Conn)> {
        self.map.iter_mut().map(|(id, c)| (*id, c))
    }

    /// The connections due for an egress at `now` (touched, or timer expired), in id
    /// order; their timers are cleared until [`Self::schedule`] sets them again.
    pub fn take_due(&mut self, now: Duration) -> Vec<ConnId> {
        while let Some(&(d, id)) = self.timers.first() {
            if d > now {
                break;
            }
            self.timers.pop_first();
            if let Some(c) = self.map.get_mut(&id) {
                c.due = None;
            }
            self.dirty.insert(id);
        }
        let due: Vec<ConnId> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter(|id| self.map.contains_key(id))
            .collect();
        for id in &due {
            if let Some(c) = self.map.get_mut(id) {
                if let Some(d) = c.due.take() {
                    self.timers.remove(&(d, *id));
                }
            }
        }
        due
    }

    /// Sets when `id` next needs an egress (`None`: only when something touches it).
    pub fn schedule(&mut self, id: ConnId, at: Option<Duration>) {
        let Some(c) = self.map.get_mut(&id) else {
            return;
        };
        if let Some(d) = c.due.take() {
            self.timers.remove(&(d, id));
        }
        if let Some(d) = at {
            c.due = Some(d);
            self.timers.insert((d, id));
        }
    }

    /// The earliest timer, or now if a connection is marked.
    pub fn next_due(&self, now: Duration) -> Option<Duration> {
        if !self.dirty.is_empty() {
            return Some(now);
        }
        self.timers.first().map(|(d, _)| *d)
    }
}
