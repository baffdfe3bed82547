//! smoltcp, a TCP we did not write, as the active client of our stack over the seeded
//! lossy link in virtual time: it uploads while it downloads, both sides half-close,
//! integrity by SHA-256, and our table is empty at the end. smoltcp runs sans-IO over
//! netio's queue device.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::link::{Faults, Link};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tunnelbed_netio::iplink::smol::QueueDevice;
use tunnelbed_netio::Trace;
use tunnelbed_tcpstack::{Stack, StackConfig, StackError};

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn ts(d: Duration) -> SInstant {
    SInstant::from_micros(d.as_micros() as i64)
}

struct Outcome {
    virtual_time: Duration,
    carried: u64,
    lost: u64,
    retransmits: u64,
}

fn run(seed: u64, faults: Faults, down: usize, up: usize) -> Outcome {
    let srv = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80);
    let mut ours = Stack::new(
        StackConfig {
            isn_seed: seed,
            ..StackConfig::default()
        },
        Trace::disabled(),
    );
    let lid = ours.listen(Duration::ZERO, srv, 4).unwrap();
    let mut dev = QueueDevice::new(1500);
    let mut cfg = Config::new(HardwareAddress::Ip);
    cfg.random_seed = seed;
    let mut iface = Interface::new(cfg, &mut dev, SInstant::ZERO);
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(10, 0, 0, 2), 24)).unwrap();
    });
    let sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        tcp::SocketBuffer::new(vec![0; 256 * 1024]),
    );
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(sock);
    sockets
        .get_mut::<tcp::Socket>(h)
        .connect(iface.context(), (IpAddress::v4(10, 0, 0, 1), 80), 49152)
        .unwrap();

    let down_data = data(seed ^ 1, down);
    let up_data = data(seed ^ 2, up);
    let mut link = Link::new(seed, faults);
    let mut now = Duration::ZERO;
    // Our application.
    let mut conn = None;
    let (mut s_sent, mut s_shut, mut s_eof, mut s_closed) = (0usize, false, false, false);
    let mut s_got = Vec::new();
    // smoltcp's application.
    let (mut c_sent, mut c_closed) = (0usize, false);
    let mut c_got = Vec::new();
    let mut buf = vec![0u8; 65536];

    loop {
        assert!(now < Duration::from_secs(1200), "seed {seed}: no end");
        // Our side.
        if conn.is_none() {
            conn = ours.accept(lid);
        }
        if let (Some(c), false) = (conn, s_closed) {
            while s_sent < down {
                match ours.write(now, c, &down_data[s_sent..(s_sent + 65536).min(down)]) {
                    Ok(n) => s_sent += n,
                    Err(StackError::WouldBlock) => break,
                    Err(e) => panic!("seed {seed}: our write: {e}"),
                }
            }
            if s_sent == down && !s_shut {
                ours.shutdown(now, c).unwrap();
                s_shut = true;
            }
            loop {
                match ours.read(now, c, &mut buf) {
                    Ok(0) => {
                        s_eof = true;
                        break;
                    }
                    Ok(n) => s_got.extend_from_slice(&buf[..n]),
                    Err(StackError::WouldBlock) => break,
                    Err(e) => panic!("seed {seed}: our read: {e}"),
                }
            }
            if s_eof && s_shut && ours.unacked(c) == 0 {
                ours.close(now, c).unwrap();
                s_closed = true;
            }
        }
        // smoltcp's side.
        iface.poll(ts(now), &mut dev, &mut sockets);
        {
            let s = sockets.get_mut::<tcp::Socket>(h);
            while s.can_send() && c_sent < up {
                c_sent += s.send_slice(&up_data[c_sent..]).unwrap();
            }
            if c_sent == up && !c_closed && s.state() == tcp::State::Established {
                s.close();
                c_closed = true;
            }
            while s.can_recv() {
                let n = s.recv_slice(&mut buf).unwrap();
                c_got.extend_from_slice(&buf[..n]);
            }
        }
        iface.poll(ts(now), &mut dev, &mut sockets);
        while let Some(p) = dev.tx.pop_front() {
            link.send(now, true, p.into());
        }
        while let Some(p) = ours.poll_transmit() {
            link.send(now, false, p);
        }
        while ours.poll_event().is_some() {}
        let client_done = {
            let s = sockets.get::<tcp::Socket>(h);
            matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait)
        };
        if client_done && s_closed && ours.connection_count() == 0 && link.queue.is_empty() {
            break;
        }
        let smol = iface
            .poll_delay(ts(now), &sockets)
            .map(|d| now + Duration::from_micros(d.total_micros()));
        let next = [link.next_due(), ours.poll_timeout(), smol]
            .into_iter()
            .flatten()
            .min()
            .expect("something pending while not done");
        now = now.max(next).max(now + Duration::from_micros(1));
        while let Some((to_smol, p)) = link.pop_due(now) {
            if to_smol {
                ours.handle_input(now, &p)
                    .expect("smoltcp's packets decode");
            } else {
                dev.rx.push_back(p.to_vec());
            }
        }
        ours.handle_timeout(now);
    }
    assert_eq!(c_got.len(), down, "seed {seed}: smoltcp got the download");
    assert_eq!(
        Sha256::digest(&c_got),
        Sha256::digest(&down_data),
        "seed {seed}"
    );
    assert_eq!(s_got.len(), up, "seed {seed}: we got the upload");
    assert_eq!(
        Sha256::digest(&s_got),
        Sha256::digest(&up_data),
        "seed {seed}"
    );
    Outcome {
        virtual_time: now,
        carried: link.carried,
        lost: link.lost,
        retransmits: ours.stats().retransmits,
    }
}

#[test]
fn smoltcp_client_over_a_clean_link() {
    let f = Faults {
        loss: 0.0,
        dup: 0.0,
        delay_ms: 5,
        jitter_ms: 0,
    };
    let o = run(1, f, 2 << 20, 1 << 20);
    assert_eq!(o.retransmits, 0);
    eprintln!("clean: {} packets, {:?} virtual", o.carried, o.virtual_time);
}

#[test]
fn smoltcp_client_over_a_lossy_link() {
    let f = Faults {
        loss: 0.03,
        dup: 0.01,
        delay_ms: 5,
        jitter_ms: 3,
    };
    for seed in [2, 3] {
        let o = run(seed, f, 2 << 20, 1 << 20);
        assert!(o.lost > 0);
        eprintln!(
            "seed {seed}: {} packets, {} lost, {} rto (ours), {:?} virtual",
            o.carried, o.lost, o.retransmits, o.virtual_time
        );
    }
}
