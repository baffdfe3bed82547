//! A Linux TUN device as an [`IpLink`]: `/dev/net/tun` opened with `IFF_TUN | IFF_NO_PI`
//! (raw IP packets, no packet-information header), the device created when missing, the
//! kernel's side given an address and brought up with ioctls (`SIOCSIFADDR`,
//! `SIOCSIFNETMASK`, `SIOCSIFFLAGS`), and non-blocking reads and writes through tokio's
//! `AsyncFd` over the device's `File`. Written on `libc`'s ioctl definitions (a workspace
//! dependency already) instead of a TUN crate: it is five ioctls, and this way every
//! error is ours to type.
//!
//! A device this link creates is not persistent: it disappears when the link is
//! dropped. A device made beforehand (`ip tuntap add NAME mode tun`) is attached to and
//! stays.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::unix::AsyncFd;

use crate::iplink::{
    check_ipv4, check_recv_buf, check_send, IpLink, IpLinkConfig, IpLinkError, IpNet,
};
use crate::tokio_net::TokioNet;

/// An open TUN device.
///
/// The descriptor is a [`File`] owned by tokio's [`AsyncFd`]: it is closed exactly once,
/// when the link is dropped (on every error path of [`TunLink::open`] too), and reads and
/// writes go through `&File`'s `Read`/`Write`, so the only `unsafe` left in this module
/// is the ioctl calls themselves, reading back the flags one of them fills in, and
/// tokio's `AsyncFd::register` (unsafe by signature: it relies on the owned descriptor
/// staying open while registered, which owning the `File` guarantees).
pub struct TunLink {
    fd: AsyncFd<File>,
    name: String,
    mtu: usize,
    skipped: AtomicU64,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> IpLinkError {
    move |source| IpLinkError::Io { op, source }
}

/// An `ifreq` naming `name` (validated: at most 15 bytes, no NUL), its union zeroed.
fn ifreq(name: &str) -> libc::ifreq {
    let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (d, s) in ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    libc::ifreq {
        ifr_name,
        // The union's largest member, so every byte the kernel reads is written.
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_map: libc::__c_anonymous_ifru_map {
                mem_start: 0,
                mem_end: 0,
                base_addr: 0,
                irq: 0,
                dma: 0,
                port: 0,
            },
        },
    }
}

/// The interface name the kernel wrote back into `r` (up to its NUL).
fn ifreq_name(r: &libc::ifreq) -> String {
    let bytes: Vec<u8> = r
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `ip` as the generic `sockaddr` the interface ioctls take (an AF_INET address: family,
/// port 0, then the four address bytes).
fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let mut sa_data = [0 as libc::c_char; 14];
    for (d, s) in sa_data[2..6].iter_mut().zip(ip.octets()) {
        *d = s as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data,
    }
}

/// Runs one ioctl that reads and writes an `ifreq` on the descriptor `fd`.
fn ifreq_ioctl(
    fd: &impl AsRawFd,
    req: libc::Ioctl,
    r: &mut libc::ifreq,
    op: &'static str,
) -> Result<(), IpLinkError> {
    // SAFETY: `r` is a valid, fully initialised, exclusively borrowed ifreq that outlives
    // the call; every request used here reads and writes at most one ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, r as *mut libc::ifreq) } < 0 {
        return Err(io_err(op)(io::Error::last_os_error()));
    }
    Ok(())
}

/// The control socket the interface ioctls go through (an unbound UDP socket).
fn control_socket() -> Result<OwnedFd, IpLinkError> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(io_err("socket(AF_INET) for interface ioctls"))?;
    Ok(OwnedFd::from(s))
}

impl TunLink {
    /// Opens the TUN device `cfg.name` (creating it when missing), sets its MTU and, when
    /// `cfg.addr` is given, gives the kernel's side that address and prefix and brings the
    /// device up. Needs CAP_NET_ADMIN and a tokio runtime with I/O enabled.
    pub fn open(cfg: &IpLinkConfig) -> Result<Self, IpLinkError> {
        cfg.validate()?;
        // std opens with O_CLOEXEC; reads and writes must not block the runtime.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(io_err("open /dev/net/tun"))?;
        let mut r = ifreq(&cfg.name);
        r.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        ifreq_ioctl(&file, libc::TUNSETIFF, &mut r, "TUNSETIFF")?;
        // The kernel writes back the name it used.
        let name = ifreq_name(&r);

        let sock = control_socket()?;
        let mut r = ifreq(&name);
        r.ifr_ifru.ifru_mtu = cfg.mtu as libc::c_int;
        ifreq_ioctl(&sock, libc::SIOCSIFMTU, &mut r, "SIOCSIFMTU")?;
        if let Some(cidr) = cfg.addr {
            let mut r = ifreq(&name);
            r.ifr_ifru.ifru_addr = sockaddr_in(cidr.addr);
            ifreq_ioctl(&sock, libc::SIOCSIFADDR, &mut r, "SIOCSIFADDR")?;
            let mut r = ifreq(&name);
            r.ifr_ifru.ifru_netmask = sockaddr_in(cidr.netmask());
            ifreq_ioctl(&sock, libc::SIOCSIFNETMASK, &mut r, "SIOCSIFNETMASK")?;
            let mut r = ifreq(&name);
            ifreq_ioctl(&sock, libc::SIOCGIFFLAGS, &mut r, "SIOCGIFFLAGS")?;
            // SAFETY: SIOCGIFFLAGS succeeded, so the kernel wrote the flags member, and
            // `ifreq` initialised the whole union before that.
            let flags = unsafe { r.ifr_ifru.ifru_flags };
            r.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            ifreq_ioctl(&sock, libc::SIOCSIFFLAGS, &mut r, "SIOCSIFFLAGS")?;
        }
        // SAFETY: the AsyncFd takes the File by value and owns it from here on: nothing
        // else can close or replace the descriptor while it is registered (tokio asks
        // this of `register` since `AsyncFd::new` was deprecated for I/O safety).
        let fd = unsafe { AsyncFd::register(file) }
            .map_err(|e| io_err("register the TUN descriptor with tokio")(e.into()))?;
        Ok(Self {
            fd,
            name,
            mtu: cfg.mtu,
            skipped: AtomicU64::new(0),
        })
    }

    /// Packets the kernel handed us that were not IPv4 (e.g. IPv6 router solicitations)
    /// and that [`IpLink::recv`] therefore skipped.
    pub fn skipped_non_ipv4(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Keeps `n` bytes just read when they are IPv4; counts and drops anything else.
    fn keep(&self, buf: &[u8], n: usize) -> bool {
        if check_ipv4(&buf[..n]).is_ok() {
            return true;
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        false
    }
}

impl IpLink for TunLink {
    async fn send(&self, packet: &[u8]) -> Result<(), IpLinkError> {
        check_send(packet, self.mtu)?;
        loop {
            let mut guard = self
                .fd
                .writable()
                .await
                .map_err(io_err("wait for the TUN device to take a packet"))?;
            // A TUN write takes the whole packet or fails.
            match guard.try_io(|fd| fd.get_ref().write(packet)) {
                Ok(r) => return r.map(|_| ()).map_err(io_err("write to the TUN device")),
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, IpLinkError> {
        check_recv_buf(buf, self.mtu)?;
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(io_err("wait for a packet from the TUN device"))?;
            match guard.try_io(|fd| fd.get_ref().read(buf)) {
                Ok(r) => {
                    let n = r.map_err(io_err("read from the TUN device"))?;
                    if self.keep(buf, n) {
                        return Ok(n);
                    }
                }
                Err(_would_block) => continue,
            }
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>, IpLinkError> {
        check_recv_buf(buf, self.mtu)?;
        loop {
            // A plain non-blocking read, past tokio's readiness flag: the kernel queues
            // its answers during our own writes, before the reactor has seen the edge.
            // An empty queue (EAGAIN) leaves the flag alone; `recv` clears it itself.
            match self.fd.get_ref().read(buf) {
                Ok(n) => {
                    if self.keep(buf, n) {
                        return Ok(Some(n));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read from the TUN device")(e)),
            }
        }
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// On a real network an IP link is a TUN device.
impl IpNet for TokioNet {
    type Link = TunLink;

    async fn open_ip_link(&self, cfg: IpLinkConfig) -> Result<TunLink, IpLinkError> {
        TunLink::open(&cfg)
    }
}
