//! A generic driver for datagram ARQ machines (KCP today): each session becomes an
//! ordinary byte stream (`tokio::io::DuplexStream`) for the application, so anything that
//! runs over TCP — h2tunnel, echo, bulk transfers — runs over the ARQ unchanged.
//!
//! One task per session owns the machine. It feeds datagrams in, wakes at the machine's
//! next timeout, moves bytes from the application's stream into the machine only while the
//! machine has send room (that is the backpressure), moves received bytes back out, and
//! ends on a dead link, an idle timeout, or when the application closed its end and every
//! byte was acknowledged. Time is `tokio::time` (virtual inside the simulator).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::fault::DataFault;
use crate::net::{Net, UdpSock};

/// What the driver needs from a sans-IO datagram ARQ machine.
pub trait DatagramArq: Send + 'static {
    /// Input error type (bad datagram); logged, never fatal.
    type Error: fmt::Display;
    /// Feeds one datagram received at `now`.
    fn handle_input(&mut self, now: Duration, datagram: &[u8]) -> Result<(), Self::Error>;
    /// Runs timers and flushes at `now`.
    fn handle_timeout(&mut self, now: Duration);
    /// Next datagram to send.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// When `handle_timeout` must run next (absolute, same origin as `now`).
    fn poll_timeout(&mut self, now: Duration) -> Duration;
    /// Queues application bytes; the driver only calls this while [`Self::can_send`].
    fn send(&mut self, data: &[u8]) -> Result<(), Self::Error>;
    /// Appends received, in-order application bytes to `out`; false when none.
    fn recv(&mut self, out: &mut Vec<u8>) -> bool;
    /// Whether more application bytes may be queued now.
    fn can_send(&self) -> bool;
    /// Whether everything queued has been acknowledged.
    fn all_acked(&self) -> bool;
    /// Whether the peer stopped answering (dead link).
    fn is_dead(&self) -> bool;
    /// Sends what can go now without waiting for the next timer tick (ikcp_flush).
    /// The driver calls it right after queuing application data, so a small write goes
    /// out at once instead of up to one interval later (as kcp-go does on write).
    fn flush_now(&mut self) {}
}

/// Driver settings.
#[derive(Clone, Debug)]
pub struct ArqOptions {
    /// End a session after this long without a datagram from the peer.
    pub idle_timeout: Duration,
    /// Bytes buffered in the application's stream each way.
    pub stream_buffer: usize,
    /// Most sessions a server keeps; datagrams from new peers beyond it are dropped.
    pub max_sessions: usize,
    /// Most datagrams queued towards one session before new ones are dropped.
    pub inbox: usize,
}

impl Default for ArqOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            stream_buffer: 256 * 1024,
            max_sessions: 1024,
            inbox: 4096,
        }
    }
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The application closed its stream and everything was acknowledged.
    Finished,
    /// The machine declared the link dead.
    DeadLink,
    /// No datagram from the peer for the idle timeout.
    Idle,
    /// The socket failed.
    Socket(String),
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEnd::Finished => write!(f, "finished"),
            SessionEnd::DeadLink => write!(f, "dead link"),
            SessionEnd::Idle => write!(f, "idle timeout"),
            SessionEnd::Socket(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// Runs one session until it ends. `inbox` carries datagrams from the peer; `app` is the
/// driver's end of the application's stream.
async fn session<M: DatagramArq, U: UdpSock>(
    mut m: M,
    sock: Arc<U>,
    peer: SocketAddr,
    mut inbox: mpsc::Receiver<Vec<u8>>,
    app: DuplexStream,
    opts: ArqOptions,
    fault: Option<Arc<DataFault>>,
) -> SessionEnd {
    let (mut app_rd, mut app_wr) = tokio::io::split(app);
    let origin = Instant::now();
    let now = || origin.elapsed();
    let mut last_heard = Instant::now();
    let mut app_eof = false;
    let mut app_gone = false;
    // Received bytes not yet taken by the application. The machine is only asked for more
    // once this is empty, so a slow reader fills the machine's receive window and the
    // peer slows down, while timers and acknowledgements keep running.
    let mut pending: Vec<u8> = Vec::new();
    let mut sent_off = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if sent_off == pending.len() {
            pending.clear();
            sent_off = 0;
            while pending.len() < opts.stream_buffer && m.recv(&mut pending) {}
            if app_gone || fault.as_ref().is_some_and(|f| f.drop_chunk(pending.len())) {
                // (A data fault is the simulator's sabotage: these bytes are lost.)
                pending.clear();
            }
        }
        if m.is_dead() {
            return SessionEnd::DeadLink;
        }
        if (app_eof || app_gone) && m.all_acked() && pending.is_empty() {
            return SessionEnd::Finished;
        }
        let wake = origin + m.poll_timeout(now());
        let idle_at = last_heard + opts.idle_timeout;
        let read_app = !app_eof && !app_gone && m.can_send();
        let write_app = sent_off < pending.len();
        tokio::select! {
            biased;
            r = app_wr.write(&pending[sent_off..]), if write_app => match r {
                Ok(n) if n > 0 => sent_off += n,
                _ => {
                    app_gone = true;
                    pending.clear();
                    sent_off = 0;
                }
            },
            d = inbox.recv() => {
                let Some(d) = d else { return SessionEnd::Socket("receiver closed".into()) };
                last_heard = Instant::now();
                if let Err(e) = m.handle_input(now(), &d) {
                    tracing::debug!("arq {peer}: bad datagram: {e}");
                }
                // Take whatever else is already queued before flushing once.
                while let Ok(d) = inbox.try_recv() {
                    if let Err(e) = m.handle_input(now(), &d) {
                        tracing::debug!("arq {peer}: bad datagram: {e}");
                    }
                }
            }
            r = app_rd.read(&mut buf), if read_app => match r {
                Ok(0) | Err(_) => app_eof = true,
                Ok(n) => {
                    if let Err(e) = m.send(&buf[..n]) {
                        tracing::warn!("arq {peer}: send refused: {e}");
                    }
                    m.flush_now();
                }
            },
            _ = tokio::time::sleep_until(wake) => {}
            _ = tokio::time::sleep_until(idle_at) => return SessionEnd::Idle,
        }
        m.handle_timeout(now());
        while let Some(d) = m.poll_transmit() {
            if let Err(e) = sock.send_to(&d, peer).await {
                return SessionEnd::Socket(e.to_string());
            }
        }
    }
}

/// A client session to `peer` from a socket bound at `bind`. Returns the application's
/// stream and a handle that yields how the session ended.
pub async fn connect<N: Net, M: DatagramArq>(
    net: &N,
    bind: SocketAddr,
    peer: SocketAddr,
    machine: M,
    opts: ArqOptions,
) -> io::Result<(DuplexStream, tokio::task::JoinHandle<SessionEnd>)> {
    let sock = Arc::new(net.bind_udp(bind).await?);
    let fault = net.data_fault();
    let (tx, rx) = mpsc::channel(opts.inbox);
    let (mine, theirs) = tokio::io::duplex(opts.stream_buffer);
    let reader_sock = sock.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            match reader_sock.recv_from(&mut buf).await {
                Ok((n, from)) if from == peer => {
                    if tx.try_send(buf[..n].to_vec()).is_err() && tx.is_closed() {
                        break;
                    }
                }
                Ok(_) => {} // not our peer: ignore
                Err(e) => {
                    tracing::debug!("arq client socket: {e}");
                    break;
                }
            }
        }
    });
    let handle = tokio::spawn(async move {
        let end = session(machine, sock, peer, rx, theirs, opts, fault).await;
        reader.abort();
        end
    });
    Ok((mine, handle))
}

/// A server socket with one session per remote address (as vproxy keeps one KCP per
/// remote address and port).
pub struct ArqServer {
    accepted: mpsc::Receiver<(DuplexStream, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ArqServer {
    /// Binds `addr`; `make` builds a machine for each new peer (None refuses the peer).
    pub async fn bind<N, M, F>(
        net: &N,
        addr: SocketAddr,
        make: F,
        opts: ArqOptions,
    ) -> io::Result<Self>
    where
        N: Net,
        M: DatagramArq,
        F: Fn(SocketAddr, &[u8]) -> Option<M> + Send + 'static,
    {
        let sock = Arc::new(net.bind_udp(addr).await?);
        let local = sock.local_addr()?;
        let fault = net.data_fault();
        let (acc_tx, accepted) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            let mut sessions: BTreeMap<SocketAddr, mpsc::Sender<Vec<u8>>> = BTreeMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let (n, from) = match sock.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("arq server socket: {e}");
                        return;
                    }
                };
                let d = buf[..n].to_vec();
                if let Some(tx) = sessions.get(&from) {
                    if !tx.is_closed() {
                        let _ = tx.try_send(d);
                        continue;
                    }
                    sessions.remove(&from);
                }
                sessions.retain(|_, tx| !tx.is_closed());
                if sessions.len() >= opts.max_sessions {
                    tracing::warn!(
                        "arq server: session limit {} reached, dropping {from}",
                        opts.max_sessions
                    );
                    continue;
                }
                let Some(m) = make(from, &d) else { continue };
                let (tx, rx) = mpsc::channel(opts.inbox);
                let _ = tx.try_send(d);
                sessions.insert(from, tx);
                let (mine, theirs) = tokio::io::duplex(opts.stream_buffer);
                let (s2, o2, f2) = (sock.clone(), opts.clone(), fault.clone());
                tokio::spawn(async move {
                    let end = session(m, s2, from, rx, theirs, o2, f2).await;
                    tracing::debug!("arq server: session {from} ended: {end}");
                });
                if acc_tx.send((mine, from)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            accepted,
            local,
            task,
        })
    }

    /// The next new session: the application's stream and the peer's address.
    pub async fn accept(&mut self) -> Option<(DuplexStream, SocketAddr)> {
        self.accepted.recv().await
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for ArqServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
