//! The Linux kernel's TCP as a script target: a TUN device (netio's [`TunLink`]) whose
//! kernel side is [`TARGET_IP`]/24, so the checker's packets from [`PEER_IP`] reach the
//! kernel's listener and its answers come back through the device. Must run inside a
//! network namespace of its own ([`in_new_netns`]) so nothing else sees the traffic.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddrV4;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tunnelbed_netio::{IpLink, IpLinkConfig, Ipv4Cidr, TunLink};

use super::target::{AppOp, AppResult, Target, LISTEN_PORT, TARGET_IP};

/// How long a read waits for data before it reports "nothing to read".
const READ_WAIT: Duration = Duration::from_millis(200);
/// How long an accept waits.
const ACCEPT_WAIT: Duration = Duration::from_secs(2);

/// Runs `f` on a new thread inside a new network namespace (needs root) and returns its
/// result; the namespace goes away with the thread's last user.
pub fn in_new_netns<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {} (the kernel run needs root to make a network namespace)",
                io::Error::last_os_error()
            ));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| "the kernel run's thread panicked".to_string())?
}

/// The kernel behind a TUN device, listening on [`TARGET_IP`]:[`LISTEN_PORT`].
pub struct KernelTarget {
    rt: Runtime,
    link: TunLink,
    listener: TcpListener,
    origin: Instant,
    conns: BTreeMap<u16, TcpStream>,
    buf: Vec<u8>,
}

impl KernelTarget {
    /// Opens TUN `name` with the kernel's side at [`TARGET_IP`]/24 and listens. Call it
    /// inside [`in_new_netns`].
    pub fn open(name: &str) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let cfg = IpLinkConfig::new(name, Ipv4Cidr::new(TARGET_IP, 24));
        let (link, listener) = rt.block_on(async {
            let link = TunLink::open(&cfg).map_err(|e| {
                format!("TUN {name}: {e} (needs root and /dev/net/tun: modprobe tun)")
            })?;
            let listener = TcpListener::bind(SocketAddrV4::new(TARGET_IP, LISTEN_PORT))
                .await
                .map_err(|e| format!("kernel listener: {e}"))?;
            Ok::<_, String>((link, listener))
        })?;
        let buf = vec![0u8; link.mtu()];
        Ok(Self {
            rt,
            link,
            listener,
            origin: Instant::now(),
            conns: BTreeMap::new(),
            buf,
        })
    }
}

fn classify(e: io::Error) -> AppResult {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => AppResult::Reset,
        io::ErrorKind::WouldBlock => AppResult::WouldBlock,
        _ => AppResult::Err(e.to_string()),
    }
}

impl Target for KernelTarget {
    fn name(&self) -> String {
        format!(
            "Linux {} TCP over TUN {}",
            kernel_release(),
            self.link.name()
        )
    }

    fn now(&self) -> Duration {
        Instant::now().duration_since(self.origin)
    }

    fn inject(&mut self, packet: &[u8]) {
        // A refused packet (never for the scripts' well-formed IPv4) shows as silence.
        let _ = self.rt.block_on(self.link.send(packet));
    }

    fn poll_packet(&mut self, deadline: Duration) -> Option<(Duration, Vec<u8>)> {
        let at = self.origin + deadline;
        let (link, buf) = (&self.link, &mut self.buf);
        let r = self
            .rt
            .block_on(async { tokio::time::timeout_at(at, link.recv(buf)).await });
        match r {
            Ok(Ok(n)) => Some((self.now(), self.buf[..n].to_vec())),
            _ => None,
        }
    }

    fn app(&mut self, sport: u16, op: AppOp) -> AppResult {
        if op == AppOp::Accept {
            let listener = &self.listener;
            let r = self
                .rt
                .block_on(async { tokio::time::timeout(ACCEPT_WAIT, listener.accept()).await });
            return match r {
                Ok(Ok((s, peer))) if peer.port() == sport => {
                    self.conns.insert(sport, s);
                    AppResult::Done
                }
                Ok(Ok((_, peer))) => AppResult::Err(format!("accepted {peer}, not port {sport}")),
                Ok(Err(e)) => classify(e),
                Err(_) => AppResult::Err(format!("no connection to accept within {ACCEPT_WAIT:?}")),
            };
        }
        if op == AppOp::Close {
            return match self.conns.remove(&sport) {
                Some(s) => {
                    drop(s);
                    AppResult::Done
                }
                None => AppResult::Err("script error: no accepted connection".into()),
            };
        }
        let Some(s) = self.conns.get_mut(&sport) else {
            return AppResult::Err("script error: no accepted connection".into());
        };
        self.rt.block_on(async {
            match op {
                AppOp::Read(n) => {
                    let mut buf = vec![0u8; n];
                    match tokio::time::timeout(READ_WAIT, s.read(&mut buf)).await {
                        Ok(Ok(k)) => AppResult::Bytes(k),
                        Ok(Err(e)) => classify(e),
                        Err(_) => AppResult::WouldBlock,
                    }
                }
                AppOp::Write(n) => {
                    let data = vec![b'x'; n];
                    let mut done = 0;
                    while done < n {
                        match s.try_write(&data[done..]) {
                            Ok(k) => done += k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return classify(e),
                        }
                    }
                    AppResult::Bytes(done)
                }
                AppOp::Shutdown => match s.shutdown().await {
                    Ok(()) => AppResult::Done,
                    Err(e) => classify(e),
                },
                AppOp::Accept | AppOp::Close => AppResult::Done,
            }
        })
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "kernel".into())
}
