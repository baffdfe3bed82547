//! The server's DHCP address pool: which host address a client gets. Sans-IO and pure:
//! who holds an address is asked through a callback, so the pool never goes stale.
//!
//! Rules (seed 003 and Candy's notes): the requested address is granted when it is a
//! host address of the pool and free, or held by a client with the same vmac; otherwise
//! the address this vmac already holds, if any (a client that reconnects without naming
//! its address, as Candy's client does after a dropped connection, keeps it); otherwise
//! the next free host address after the last one handed out (wrapping). Never the
//! network or the broadcast address, never an address in use.

use std::net::Ipv4Addr;

use thiserror::Error;
use tunnelbed_netio::Ipv4Cidr;

/// Who holds an address, as the server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Nobody: it may be handed out.
    Free,
    /// A client, known by its vmac when it sent one.
    Client(Option<[u8; 16]>),
}

/// Why a pool cannot be made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PoolError {
    /// A prefix longer than /30 has no two host addresses.
    #[error("pool {0} has no room: use a prefix of /30 or shorter (and at least /8)")]
    BadPrefix(Ipv4Cidr),
}

/// A pool of host addresses in one IPv4 prefix.
#[derive(Clone, Debug)]
pub struct Pool {
    net: u32,
    prefix: u8,
    /// The last host offset handed out by allocation (not by a granted request).
    cursor: u32,
}

impl Pool {
    /// The pool of `cidr`'s network; /8 to /30.
    pub fn new(cidr: Ipv4Cidr) -> Result<Self, PoolError> {
        if !(8..=30).contains(&cidr.prefix) {
            return Err(PoolError::BadPrefix(cidr));
        }
        let mask = u32::from(cidr.netmask());
        Ok(Self {
            net: u32::from(cidr.addr) & mask,
            prefix: cidr.prefix,
            cursor: 0,
        })
    }

    /// The pool's network as a CIDR.
    pub fn cidr(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::from(self.net),
            prefix: self.prefix,
        }
    }

    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` is a host address of the pool (not its network or broadcast).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        let off = v.wrapping_sub(self.net);
        self.cidr().contains(ip) && off != 0 && off != self.size() - 1
    }

    /// The pool's directed broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net | (self.size() - 1))
    }

    /// The address to grant for a request of `requested` by a client with `vmac`, or
    /// `None` when every host address is held. `held` says who holds an address;
    /// `previous` is an address the server knows this vmac holds (from an earlier
    /// connection or grant), used when the request names none it can have.
    pub fn pick(
        &mut self,
        requested: Option<Ipv4Addr>,
        vmac: Option<[u8; 16]>,
        previous: Option<Ipv4Addr>,
        held: impl Fn(Ipv4Addr) -> Holder,
    ) -> Option<Ipv4Cidr> {
        let grant = |a| Ipv4Cidr {
            addr: a,
            prefix: self.prefix,
        };
        let mine = |a| match held(a) {
            Holder::Free => true,
            Holder::Client(Some(v)) => vmac == Some(v),
            Holder::Client(None) => false,
        };
        for a in [requested, previous].into_iter().flatten() {
            if self.is_host(a) && mine(a) {
                return Some(grant(a));
            }
        }
        let hosts = self.size() - 2;
        for i in 1..=hosts {
            let off = (self.cursor + i - 1) % hosts + 1;
            let a = Ipv4Addr::from(self.net + off);
            if held(a) == Holder::Free {
                self.cursor = off;
                return Some(grant(a));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Pool {
        Pool::new(s.parse().unwrap()).unwrap()
    }

    #[test]
    fn never_network_or_broadcast() {
        let mut p = pool("10.0.0.0/30");
        let a = p.pick(Some(Ipv4Addr::new(10, 0, 0, 0)), None, None, |_| {
            Holder::Free
        });
        assert_eq!(a.unwrap().addr, Ipv4Addr::new(10, 0, 0, 1));
        let b = p.pick(Some(Ipv4Addr::new(10, 0, 0, 3)), None, None, |a| {
            if a == Ipv4Addr::new(10, 0, 0, 1) {
                Holder::Client(None)
            } else {
                Holder::Free
            }
        });
        assert_eq!(b.unwrap().addr, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.broadcast(), Ipv4Addr::new(10, 0, 0, 3));
    }

    #[test]
    fn requested_free_or_same_vmac() {
        let mut p = pool("10.0.0.0/24");
        let want = Ipv4Addr::new(10, 0, 0, 9);
        let mine = [1u8; 16];
        let held = |a| {
            if a == want {
                Holder::Client(Some(mine))
            } else {
                Holder::Free
            }
        };
        assert_eq!(
            p.pick(Some(want), Some(mine), None, held).unwrap().addr,
            want
        );
        let other = p.pick(Some(want), Some([2; 16]), None, held).unwrap().addr;
        assert_ne!(other, want);
        assert_ne!(
            p.pick(Some(want), None, None, held).unwrap().addr,
            want,
            "no vmac never matches"
        );
        let outside = p
            .pick(Some(Ipv4Addr::new(10, 0, 1, 9)), None, None, |_| {
                Holder::Free
            })
            .unwrap();
        assert!(p.is_host(outside.addr));
        assert_eq!(outside.prefix, 24);
    }

    #[test]
    fn a_vmac_without_a_usable_request_gets_what_it_holds() {
        let mut p = pool("10.0.0.0/24");
        let had = Ipv4Addr::new(10, 0, 0, 1);
        let (mine, theirs) = ([1u8; 16], [2u8; 16]);
        let held_by = |v: [u8; 16]| {
            move |a| {
                if a == had {
                    Holder::Client(Some(v))
                } else {
                    Holder::Free
                }
            }
        };
        // No address asked for (Candy's "0.0.0.0/0"): the held one, not the next free.
        let any = Some(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            p.pick(any, Some(mine), Some(had), held_by(mine))
                .unwrap()
                .addr,
            had
        );
        // A free address asked for still wins over the held one.
        let want = Ipv4Addr::new(10, 0, 0, 7);
        assert_eq!(
            p.pick(Some(want), Some(mine), Some(had), held_by(mine))
                .unwrap()
                .addr,
            want
        );
        // Another vmac's address is never handed over, whatever `previous` says.
        let got = p
            .pick(any, Some(mine), Some(had), held_by(theirs))
            .unwrap()
            .addr;
        assert_ne!(got, had);
        // Neither is it without a vmac.
        let got = p.pick(any, None, Some(had), held_by(mine)).unwrap().addr;
        assert_ne!(got, had);
    }

    #[test]
    fn full_pool_and_wrap_never_duplicate() {
        let mut p = pool("10.0.0.0/29");
        let mut used = std::collections::BTreeSet::new();
        for _ in 0..6 {
            let a = p
                .pick(None, None, None, |a| {
                    if used.contains(&a) {
                        Holder::Client(None)
                    } else {
                        Holder::Free
                    }
                })
                .unwrap()
                .addr;
            assert!(p.is_host(a));
            assert!(used.insert(a), "{a} granted twice");
        }
        assert_eq!(p.pick(None, None, None, |_| Holder::Client(None)), None);
        // Free one in the middle: the wrapped allocator finds exactly it.
        let freed = Ipv4Addr::new(10, 0, 0, 3);
        used.remove(&freed);
        let a = p.pick(None, None, None, |a| {
            if used.contains(&a) {
                Holder::Client(None)
            } else {
                Holder::Free
            }
        });
        assert_eq!(a.unwrap().addr, freed);
    }

    #[test]
    fn prefix_bounds() {
        assert!(Pool::new("10.0.0.0/31".parse().unwrap()).is_err());
        assert!(Pool::new("10.0.0.0/7".parse().unwrap()).is_err());
    }
}
