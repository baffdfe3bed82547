//! The server role over any [`Net`]: accepts TCP connections, finishes the WebSocket
//! handshake (inside TLS when serving `wss://`), and pumps the sans-IO [`Server`] machine. One reader task and one writer
//! task per connection; the machine sits behind one mutex and decides everything. Each
//! connection's writer drains its own queue, so a slow reader only fills its own queue
//! (bounded by the machine's `max_queued`; the excess is dropped) and never holds up the
//! others.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tunnelbed_carrier::tls::ServerTls;
use tunnelbed_carrier::BoxStream;
use tunnelbed_netio::{Net, TcpConn, TcpListen, Trace};

use crate::server::{ConnId, Server, ServerConfig, ServerEvent, ServerStats};
use crate::ws::{self, UnixClock};

/// Settings of the server role.
#[derive(Clone)]
pub struct ServeConfig {
    /// The machine's rules and bounds.
    pub server: ServerConfig,
    /// The Unix time (timestamps are checked against it).
    pub clock: UnixClock,
    /// How long the WebSocket handshake may take.
    pub handshake_timeout: Duration,
    /// Also take unmasked client frames (the simulator's deterministic clients).
    pub accept_unmasked: bool,
    /// Serve `wss://`: every connection starts with a TLS handshake with this.
    pub tls: Option<Arc<ServerTls>>,
}

enum Out {
    Msg(Bytes),
    Close,
}

struct Handle {
    tx: mpsc::UnboundedSender<Out>,
    kill: Arc<Notify>,
}

struct Shared {
    machine: Server,
    conns: BTreeMap<ConnId, Handle>,
}

/// A running server's state, shared by its tasks; lets tests read the counters.
pub struct ServerHandle {
    shared: Mutex<Shared>,
    clock: UnixClock,
    next: AtomicU64,
    max_message: usize,
    handshake_timeout: Duration,
    unmasked: bool,
    tls: Option<Arc<ServerTls>>,
}

impl ServerHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The machine's counters.
    pub fn stats(&self) -> ServerStats {
        self.lock().machine.stats()
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.lock().machine.connections()
    }

    /// Whether a connection has authenticated as `ip` (packets to it are routed), so a
    /// test can wait for a peer's AUTH to have arrived.
    pub fn is_routed(&self, ip: std::net::Ipv4Addr) -> bool {
        self.owner(ip).is_some()
    }

    /// The connection that authenticated as `ip`, if any (a takeover changes it).
    pub fn owner(&self, ip: std::net::Ipv4Addr) -> Option<ConnId> {
        self.lock().machine.owner(ip)
    }

    /// Sends what the machine queued and closes what it decided to close.
    fn flush(sh: &mut Shared) {
        while let Some(t) = sh.machine.poll_transmit() {
            match sh.conns.get(&t.conn) {
                Some(h) => {
                    let n = t.data.len();
                    if h.tx.send(Out::Msg(t.data)).is_err() {
                        sh.machine.handle_written(t.conn, n);
                    }
                }
                None => sh.machine.handle_written(t.conn, t.data.len()),
            }
        }
        while let Some(ServerEvent::Close(c, why)) = sh.machine.poll_event() {
            tracing::info!(
                conn = c,
                reason = why.name(),
                "candy server closes a connection"
            );
            if let Some(h) = sh.conns.remove(&c) {
                let _ = h.tx.send(Out::Close);
                h.kill.notify_one();
            }
        }
    }
}

/// Starts a server on `listener`; returns its handle and runs until the listener fails.
pub async fn serve<N: Net>(
    listener: N::Listener,
    cfg: ServeConfig,
    trace: Trace,
) -> io::Result<()> {
    let handle = server_handle(&cfg, trace)?;
    serve_with(listener, handle).await
}

/// The shared state of a server, for [`serve_with`] (tests keep a clone to read stats).
pub fn server_handle(cfg: &ServeConfig, trace: Trace) -> io::Result<Arc<ServerHandle>> {
    let machine = Server::new(cfg.server.clone(), trace)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(Arc::new(ServerHandle {
        shared: Mutex::new(Shared {
            machine,
            conns: BTreeMap::new(),
        }),
        clock: cfg.clock.clone(),
        next: AtomicU64::new(1),
        max_message: cfg.server.max_message,
        handshake_timeout: cfg.handshake_timeout,
        unmasked: cfg.accept_unmasked,
        tls: cfg.tls.clone(),
    }))
}

/// Runs the accept loop and the timer for `h` until the listener fails.
pub async fn serve_with<L: TcpListen>(listener: L, h: Arc<ServerHandle>) -> io::Result<()> {
    let timer = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = ServerStats::default();
            loop {
                tick.tick().await;
                let mut sh = h.lock();
                let now = (h.clock)();
                sh.machine.handle_timeout(now);
                ServerHandle::flush(&mut sh);
                // At most one line a second, and only when something changed: enough
                // to see from a log whether a stalled flow was relayed, dropped or
                // never arrived.
                let st = sh.machine.stats();
                if st != last {
                    last = st;
                    let queued: Vec<(ConnId, usize)> = sh
                        .conns
                        .keys()
                        .map(|&c| (c, sh.machine.queued(c)))
                        .collect();
                    tracing::info!(?st, ?queued, "candy server stats");
                }
            }
        })
    };
    let r = loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let h = h.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(tcp, h).await {
                        tracing::debug!(%peer, "candy connection ended: {e}");
                    }
                });
            }
            Err(e) => break e,
        }
    };
    timer.abort();
    Err(r)
}

async fn connection<S: TcpConn>(tcp: S, h: Arc<ServerHandle>) -> io::Result<()> {
    let handshake = async {
        let s: BoxStream = match &h.tls {
            Some(t) => Box::new(t.accept(tcp).await?),
            None => Box::new(tcp),
        };
        ws::accept(s, h.max_message, h.unmasked).await
    };
    let ws = tokio::time::timeout(h.handshake_timeout, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "websocket handshake"))??;
    let id = h.next.fetch_add(1, Ordering::Relaxed);
    tracing::info!(conn = id, "candy connection open");
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let kill = Arc::new(Notify::new());
    {
        let mut sh = h.lock();
        sh.conns.insert(
            id,
            Handle {
                tx,
                kill: kill.clone(),
            },
        );
        let now = (h.clock)();
        sh.machine.handle_connect(now, id);
        ServerHandle::flush(&mut sh);
    }
    let writer = {
        let h = h.clone();
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let Out::Msg(b) = out else { break };
                let n = b.len();
                let r = sink.send(WsMessage::Binary(b)).await;
                h.lock().machine.handle_written(id, n);
                if let Err(e) = r {
                    tracing::info!(conn = id, "candy connection write failed: {e}");
                    break;
                }
            }
            // Dropping the sink (and the reader's stream) closes the TCP connection
            // without a WebSocket close frame: a refused client learns nothing.
        })
    };
    let result = loop {
        tokio::select! {
            biased;
            _ = kill.notified() => break Ok(()),
            m = stream.next() => match m {
                Some(Ok(WsMessage::Binary(b))) => {
                    let mut sh = h.lock();
                    let now = (h.clock)();
                    sh.machine.handle_input(now, id, &b);
                    ServerHandle::flush(&mut sh);
                }
                Some(Ok(WsMessage::Text(t))) => {
                    let mut sh = h.lock();
                    let now = (h.clock)();
                    sh.machine.handle_input(now, id, t.as_bytes());
                    ServerHandle::flush(&mut sh);
                }
                Some(Ok(WsMessage::Close(_))) | None => break Ok(()),
                Some(Ok(_)) => {} // ping (answered by tungstenite), pong
                Some(Err(e)) => break Err(io::Error::other(e)),
            }
        }
    };
    {
        let mut sh = h.lock();
        let now = (h.clock)();
        sh.machine.handle_disconnect(now, id);
        if let Some(hd) = sh.conns.remove(&id) {
            let _ = hd.tx.send(Out::Close);
        }
        ServerHandle::flush(&mut sh);
    }
    let _ = writer.await;
    drop(stream);
    tracing::info!(conn = id, ?result, "candy connection closed");
    result
}
