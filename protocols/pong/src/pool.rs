//! The local role's pool of carrier connections, as pong-go keeps one: a new stream goes
//! on a connection with fewer than `max_streams_per_conn` live streams that is younger
//! than `max_age`; otherwise a new carrier is dialed. Connections with no live stream
//! for `idle_close` are closed; connections past `max_age` take no new streams and close
//! once their last stream ends. A dead connection is dropped at once, and the next
//! stream dials a new carrier.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tunnelbed_carrier::tls::ClientTls;
use tunnelbed_carrier::CarrierUrl;
use tunnelbed_netio::{Net, Trace};

use crate::driver::{spawn_local, DriverConfig, Opener, PongConn, PongDatagrams, PongStream};
use crate::wire::Address;

/// Settings of a local's pool.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Where the remote listens.
    pub remote: CarrierUrl,
    /// Our client id (raw UUID bytes).
    pub client_id: [u8; 16],
    /// Live streams a connection may carry before another is opened (pong-go: 30).
    pub max_streams_per_conn: usize,
    /// A connection with no live stream for this long is closed (pong-go: about 60 s).
    pub idle_close: Duration,
    /// A connection this old takes no new streams (pong-go: 1 h).
    pub max_age: Duration,
    /// A SOCKS5 stream with no byte either way for this long is failed both ways (rst 6
    /// to the remote, RST to the application; v2ray's `connIdle`, 300 s). The remote has
    /// the same bound, but a crashed remote cannot apply it: a carrier whose remote host
    /// died sends nothing, not even a reset, and an application that only reads sends
    /// nothing that could draw one, so without this bound its stream waits for good.
    pub idle_timeout: Duration,
    /// How long dialing a carrier may take.
    pub connect_timeout: Duration,
    /// Driver and session caps.
    pub driver: DriverConfig,
}

impl PoolConfig {
    /// pong-go's defaults for `remote` and `client_id`.
    pub fn new(remote: CarrierUrl, client_id: [u8; 16]) -> Self {
        Self {
            remote,
            client_id,
            max_streams_per_conn: 30,
            idle_close: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            idle_timeout: tunnelbed_netio::idle::DEFAULT_IDLE,
            connect_timeout: Duration::from_secs(10),
            driver: DriverConfig::default(),
        }
    }
}

struct Pooled {
    conn: PongConn,
    /// Tells this connection from the others while the lock is not held.
    id: u64,
    /// Opens under way on it (they count against `max_streams_per_conn`).
    opening: usize,
    born: Instant,
    idle_since: Option<Instant>,
}

/// Counts for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Carriers dialed so far.
    pub carriers_opened: u64,
    /// Carriers dialing failed.
    pub carrier_failures: u64,
    /// Connections held now.
    pub connections: usize,
    /// Live streams over all connections.
    pub live_streams: usize,
}

/// The pool. Cheap to share behind an `Arc`.
pub struct Pool<N: Net> {
    net: N,
    cfg: PoolConfig,
    tls: Arc<ClientTls>,
    trace: Trace,
    name: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conns: Vec<Pooled>,
    next_id: u64,
    opened: u64,
    failures: u64,
}

impl<N: Net> Pool<N> {
    /// A pool that dials carriers over `net`. Trace ids are `{name}/c{n}`.
    pub fn new(net: N, cfg: PoolConfig, tls: Arc<ClientTls>, trace: Trace, name: String) -> Self {
        Self {
            net,
            cfg,
            tls,
            trace,
            name,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Opens a connect stream to `addr` (data may be written at once; a failed dial at the
    /// remote shows up as a reset).
    pub async fn open_connect(&self, addr: Address) -> io::Result<PongStream> {
        self.open_with(|o| {
            let addr = addr.clone();
            async move { o.open_connect(addr).await }
        })
        .await
    }

    /// Opens a relay stream to `addr`.
    pub async fn open_relay(&self, addr: Address) -> io::Result<PongDatagrams> {
        self.open_with(|o| {
            let addr = addr.clone();
            async move { o.open_relay(addr).await }
        })
        .await
    }

    /// Opens a stream with `open` on a connection the pool chooses. The lock is held only
    /// to choose (and dial): the open itself waits for that carrier's room unlocked, so a
    /// backed-up carrier delays only the streams it was chosen for.
    async fn open_with<T, F, Fut>(&self, open: F) -> io::Result<T>
    where
        F: Fn(Opener) -> Fut,
        Fut: std::future::Future<Output = io::Result<T>>,
    {
        let mut last = None;
        // A connection can die between choosing and opening: try a fresh one once.
        for _ in 0..2 {
            let (opener, id) = {
                let mut inner = self.inner.lock().await;
                let i = self.choose(&mut inner).await?;
                let p = &mut inner.conns[i];
                p.opening += 1;
                (p.conn.opener(), p.id)
            };
            let r = open(opener).await;
            let mut inner = self.inner.lock().await;
            if let Some(i) = inner.conns.iter().position(|p| p.id == id) {
                inner.conns[i].opening -= 1;
                if r.is_err() {
                    inner.conns[i].conn.shutdown("open failed");
                    inner.conns.remove(i);
                }
            }
            match r {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no connection")))
    }

    /// Index of a connection that takes another stream, dialing one if none does.
    async fn choose(&self, inner: &mut Inner) -> io::Result<usize> {
        let now = Instant::now();
        inner.conns.retain(|p| !p.conn.is_closed());
        if let Some(i) = inner.conns.iter().position(|p| {
            p.conn.stats.live_streams() + p.opening < self.cfg.max_streams_per_conn
                && now.duration_since(p.born) < self.cfg.max_age
        }) {
            return Ok(i);
        }
        let n = inner.next_id;
        let id = format!("{}/c{n}", self.name);
        inner.next_id += 1;
        let dial = tunnelbed_carrier::connect(&self.net, &self.cfg.remote, &self.tls);
        let carrier = match tokio::time::timeout(self.cfg.connect_timeout, dial).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                inner.failures += 1;
                return Err(io::Error::new(
                    e.kind(),
                    format!("pong local: carrier to {}: {e}", self.cfg.remote),
                ));
            }
            Err(_) => {
                inner.failures += 1;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("pong local: carrier to {} timed out", self.cfg.remote),
                ));
            }
        };
        inner.opened += 1;
        tracing::info!("pong local {id}: carrier to {} open", self.cfg.remote);
        let conn = spawn_local(
            carrier,
            self.cfg.client_id,
            self.cfg.driver.clone(),
            self.trace.clone(),
            id,
        );
        inner.conns.push(Pooled {
            conn,
            id: n,
            opening: 0,
            born: now,
            idle_since: None,
        });
        Ok(inner.conns.len() - 1)
    }

    /// Closes idle and expired connections and forgets dead ones; call it periodically
    /// (see [`Pool::run_maintenance`]).
    pub async fn maintain(&self) {
        let now = Instant::now();
        let mut inner = self.inner.lock().await;
        let cfg = &self.cfg;
        inner.conns.retain_mut(|p| {
            if p.conn.is_closed() {
                return false;
            }
            let live = p.conn.stats.live_streams();
            if live > 0 || p.opening > 0 {
                p.idle_since = None;
                return true;
            }
            let since = *p.idle_since.get_or_insert(now);
            let expired = now.duration_since(p.born) >= cfg.max_age;
            if expired || now.duration_since(since) >= cfg.idle_close {
                p.conn
                    .shutdown(if expired { "max age reached" } else { "idle" });
                return false;
            }
            true
        });
    }

    /// Runs [`Pool::maintain`] every second, forever.
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            self.maintain().await;
        }
    }

    /// Current counts.
    pub async fn stats(&self) -> PoolStats {
        let inner = self.inner.lock().await;
        PoolStats {
            carriers_opened: inner.opened,
            carrier_failures: inner.failures,
            connections: inner.conns.iter().filter(|p| !p.conn.is_closed()).count(),
            live_streams: inner
                .conns
                .iter()
                .map(|p| p.conn.stats.live_streams())
                .sum(),
        }
    }

    /// Closes every connection (process exit).
    pub async fn shutdown(&self) {
        let mut inner = self.inner.lock().await;
        for p in inner.conns.drain(..) {
            p.conn.shutdown("local shutting down");
        }
    }
}
