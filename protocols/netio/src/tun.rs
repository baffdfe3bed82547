//! A Linux TUN device as an [`IpLink`]: `/dev/net/tun` opened with `IFF_TUN | IFF_NO_PI`
//! (raw IP packets, no packet-information header), the device created when missing, the
//! kernel's side given an address and brought up with ioctls (`SIOCSIFADDR`,
//! `SIOCSIFNETMASK`, `SIOCSIFFLAGS`), and non-blocking reads and writes through tokio's
//! `AsyncFd`. Written directly on `libc` (a workspace dependency already) instead of a
//! TUN crate: it is five ioctls, and this way every error is ours to type.
//!
//! A device this link creates is not persistent: it disappears when the link is
//! dropped. A device made beforehand (`ip tuntap add NAME mode tun`) is attached to and
//! stays.

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::unix::AsyncFd;

use crate::iplink::{
    check_ipv4, check_recv_buf, check_send, IpLink, IpLinkConfig, IpLinkError, IpNet,
};
use crate::tokio_net::TokioNet;

/// An open TUN device.
pub struct TunLink {
    fd: AsyncFd<OwnedFd>,
    name: String,
    mtu: usize,
    skipped: AtomicU64,
}

fn os_err(op: &'static str) -> IpLinkError {
    IpLinkError::Io {
        op,
        source: io::Error::last_os_error(),
    }
}

/// An `ifreq` naming `name` (validated: at most 15 bytes, no NUL).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    r
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux (16 bytes); the kernel
    // reads the address as a sockaddr_in because the family says AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Runs one interface ioctl on the control socket `sock`.
fn if_ioctl(
    sock: &OwnedFd,
    req: libc::Ioctl,
    r: &mut libc::ifreq,
    op: &'static str,
) -> Result<(), IpLinkError> {
    // SAFETY: `r` is a valid, exclusively borrowed ifreq for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req, r as *mut libc::ifreq) } < 0 {
        return Err(os_err(op));
    }
    Ok(())
}

impl TunLink {
    /// Opens the TUN device `cfg.name` (creating it when missing), sets its MTU and, when
    /// `cfg.addr` is given, gives the kernel's side that address and prefix and brings the
    /// device up. Needs CAP_NET_ADMIN and a tokio runtime with I/O enabled.
    pub fn open(cfg: &IpLinkConfig) -> Result<Self, IpLinkError> {
        cfg.validate()?;
        // SAFETY: a NUL-terminated path; the returned descriptor is checked below.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(os_err("open /dev/net/tun"));
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut r = ifreq(&cfg.name);
        r.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes the ifreq we pass.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut r as *mut libc::ifreq) } < 0 {
            return Err(os_err("TUNSETIFF"));
        }
        // The kernel writes back the name it used.
        // SAFETY: ifr_name is NUL-terminated by the kernel (IFNAMSIZ includes the NUL).
        let name = unsafe { CStr::from_ptr(r.ifr_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();

        // SAFETY: plain socket(2) call; the result is checked.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(os_err("socket(AF_INET) for interface ioctls"));
        }
        // SAFETY: `s` is a descriptor we just opened and own.
        let sock = unsafe { OwnedFd::from_raw_fd(s) };
        let mut r = ifreq(&name);
        r.ifr_ifru.ifru_mtu = cfg.mtu as libc::c_int;
        if_ioctl(&sock, libc::SIOCSIFMTU, &mut r, "SIOCSIFMTU")?;
        if let Some(cidr) = cfg.addr {
            let mut r = ifreq(&name);
            r.ifr_ifru.ifru_addr = sockaddr_in(cidr.addr);
            if_ioctl(&sock, libc::SIOCSIFADDR, &mut r, "SIOCSIFADDR")?;
            let mut r = ifreq(&name);
            r.ifr_ifru.ifru_netmask = sockaddr_in(cidr.netmask());
            if_ioctl(&sock, libc::SIOCSIFNETMASK, &mut r, "SIOCSIFNETMASK")?;
            let mut r = ifreq(&name);
            if_ioctl(&sock, libc::SIOCGIFFLAGS, &mut r, "SIOCGIFFLAGS")?;
            // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
            let flags = unsafe { r.ifr_ifru.ifru_flags };
            r.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if_ioctl(&sock, libc::SIOCSIFFLAGS, &mut r, "SIOCSIFFLAGS")?;
        }
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it from here on and
        // neither replaces nor closes it while registered.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| IpLinkError::Io {
            op: "register the TUN descriptor with tokio",
            source: e.into(),
        })?;
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
}

impl IpLink for TunLink {
    async fn send(&self, packet: &[u8]) -> Result<(), IpLinkError> {
        check_send(packet, self.mtu)?;
        loop {
            let mut guard = self.fd.writable().await.map_err(|source| IpLinkError::Io {
                op: "wait for the TUN device to take a packet",
                source,
            })?;
            let r = guard.try_io(|fd| {
                // SAFETY: writes `packet.len()` bytes from a live slice.
                let n = unsafe {
                    libc::write(
                        fd.as_raw_fd(),
                        packet.as_ptr().cast::<libc::c_void>(),
                        packet.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(source)) => {
                    return Err(IpLinkError::Io {
                        op: "write to the TUN device",
                        source,
                    })
                }
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, IpLinkError> {
        check_recv_buf(buf, self.mtu)?;
        loop {
            let mut guard = self.fd.readable().await.map_err(|source| IpLinkError::Io {
                op: "wait for a packet from the TUN device",
                source,
            })?;
            let r = guard.try_io(|fd| {
                // SAFETY: reads at most `buf.len()` bytes into a live, exclusive slice.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast::<libc::c_void>(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(Ok(n)) => {
                    if check_ipv4(&buf[..n]).is_ok() {
                        return Ok(n);
                    }
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(source)) => {
                    return Err(IpLinkError::Io {
                        op: "read from the TUN device",
                        source,
                    })
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
            // SAFETY: reads at most `buf.len()` bytes into a live, exclusive slice.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(IpLinkError::Io {
                        op: "read from the TUN device",
                        source: e,
                    }),
                };
            }
            let n = n as usize;
            if check_ipv4(&buf[..n]).is_ok() {
                return Ok(Some(n));
            }
            self.skipped.fetch_add(1, Ordering::Relaxed);
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
