//! The socket driver against a peer that answers inside our send, into a bounded queue
//! only our reads empty: the shape of the Linux kernel behind a TUN device (it runs its
//! TCP input during our write and queues the ACK on the device, 500 packets deep, where
//! the excess is dropped and counted as TX drops).
//!
//! The regression: the driver wrote every packet the stack had (a go-back-N round of
//! every connection, thousands of segments) before it read again, so the answers to the
//! last ones overflowed the queue. The connections last in the table lost every ACK of
//! every round and doubled their retransmission timeout round after round; with 100
//! parallel curl downloads at 10% loss one passed the 120 s idle bound and was reset
//! (curl exit 56). The device's counters showed it: 24 571 TX drops in one run.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tunnelbed_netio::Trace;
use tunnelbed_tcpstack::socket::{PacketIo, TcpStack};
use tunnelbed_tcpstack::wire::PROTO_TCP;
use tunnelbed_tcpstack::{Ipv4Header, Packet, StackConfig, TcpFlags, TcpHeader, TcpOptions};

const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 9, 3, 2), 8080);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 3, 1);
const CLIENT_ISN: u32 = 7_000_000;
/// The answer queue's depth (a TUN device's is 500; smaller here, the bursts too).
const QUEUE: usize = 64;

#[derive(Default)]
struct Kernel {
    queue: VecDeque<Bytes>,
    /// Answers that found the queue full.
    dropped: u64,
    /// Per client port: the next byte expected from us.
    rcv_nxt: BTreeMap<u16, u32>,
}

/// A peer that acknowledges every segment at once (in order: cumulative ACK; out of
/// order: duplicate ACK), queueing its answers for our reads.
#[derive(Clone, Default)]
struct KernelIo {
    k: Arc<Mutex<Kernel>>,
    ready: Arc<Notify>,
}

fn segment(port: u16, seq: u32, ack: u32, flags: TcpFlags, options: TcpOptions) -> Bytes {
    Packet {
        ip: Ipv4Header {
            src: CLIENT,
            dst: *SERVER.ip(),
            protocol: PROTO_TCP,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_fragment: true,
        },
        tcp: TcpHeader {
            src_port: port,
            dst_port: SERVER.port(),
            seq,
            ack,
            flags,
            window: 65_535,
            urgent: 0,
            options,
        },
        payload: &[],
    }
    .to_bytes()
    .expect("encode")
}

impl KernelIo {
    fn push(&self, p: Bytes) {
        let mut k = self.k.lock().unwrap();
        if k.queue.len() >= QUEUE {
            k.dropped += 1;
        } else {
            k.queue.push_back(p);
        }
        drop(k);
        self.ready.notify_one();
    }

    fn syn(&self, port: u16) {
        let options = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            ..TcpOptions::default()
        };
        self.push(segment(port, CLIENT_ISN, 0, TcpFlags::SYN, options));
    }

    fn dropped(&self) -> u64 {
        self.k.lock().unwrap().dropped
    }
}

impl PacketIo for KernelIo {
    async fn send(&self, packet: Bytes) -> io::Result<()> {
        let p = Packet::decode(&packet).expect("our stack sends valid packets");
        let t = p.tcp;
        if t.flags.contains(TcpFlags::RST) {
            return Ok(());
        }
        let len = p.payload.len() as u32;
        let answer = {
            let mut k = self.k.lock().unwrap();
            if t.flags.contains(TcpFlags::SYN) {
                k.rcv_nxt.insert(t.dst_port, t.seq.wrapping_add(1));
            } else if let Some(n) = k.rcv_nxt.get_mut(&t.dst_port) {
                if t.seq == *n {
                    *n = n.wrapping_add(len + u32::from(t.flags.contains(TcpFlags::FIN)));
                } else if len == 0 && !t.flags.contains(TcpFlags::FIN) {
                    // A pure ACK needs no answer.
                    return Ok(());
                }
            }
            k.rcv_nxt.get(&t.dst_port).copied()
        };
        if let Some(ack) = answer {
            if len > 0 || t.flags.contains(TcpFlags::SYN) || t.flags.contains(TcpFlags::FIN) {
                self.push(segment(
                    t.dst_port,
                    CLIENT_ISN + 1,
                    ack,
                    TcpFlags::ACK,
                    TcpOptions::default(),
                ));
            }
        }
        Ok(())
    }

    async fn recv(&self) -> io::Result<Bytes> {
        loop {
            // Cancel-safe: nothing is taken unless it is returned.
            if let Some(p) = self.k.lock().unwrap().queue.pop_front() {
                return Ok(p);
            }
            self.ready.notified().await;
        }
    }

    fn try_recv(&self) -> io::Result<Option<Bytes>> {
        Ok(self.k.lock().unwrap().queue.pop_front())
    }
}

#[tokio::test(start_paused = true)]
async fn answers_given_during_a_burst_are_read_before_their_queue_overflows() {
    const CONNS: u16 = 20;
    const BYTES: usize = 200_000;
    let io = KernelIo::default();
    let (stack, _driver) = TcpStack::spawn(
        io.clone(),
        StackConfig {
            isn_seed: 3,
            ..StackConfig::default()
        },
        Trace::disabled(),
    );
    let listener = stack.listen(SERVER, 128).unwrap();
    for i in 0..CONNS {
        io.syn(40_000 + i);
    }
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let mut s = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("accept within 10 s")
            .expect("accept");
        tasks.push(tokio::spawn(async move {
            s.write_all(&vec![0x5a; BYTES]).await.expect("write");
            s.shutdown().await.expect("shutdown");
            tokio::time::timeout(Duration::from_secs(600), s.linger())
                .await
                .expect("every byte and the FIN acked within 600 s")
                .expect("linger");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = stack.stats();
    assert_eq!(
        io.dropped(),
        0,
        "answers dropped at the full queue (the driver wrote bursts without reading); \
         stack: {st:?}"
    );
    assert_eq!(
        st.retransmits, 0,
        "no ACK lost, so no retransmission timeout fires: {st:?}"
    );
}
