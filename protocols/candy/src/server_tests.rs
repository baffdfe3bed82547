//! One test per server rule.

use super::*;
use crate::wire::{Auth, Discovery, General, PeerInfo, Vmac};
use tunnelbed_netio::iplink::echo::build_udp;

const PW: &[u8] = b"secret";
const T0: u64 = 1_700_000_000;

fn now(s: u64) -> Duration {
    Duration::from_secs(T0 + s)
}

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, d)
}

fn server(pool: Option<&str>) -> Server {
    let cfg = ServerConfig {
        password: PW.to_vec(),
        pool: pool.map(|p| p.parse().unwrap()),
        ..ServerConfig::default()
    };
    Server::new(cfg, Trace::recording()).unwrap()
}

fn enc(m: Message) -> Vec<u8> {
    m.to_bytes().unwrap().to_vec()
}

fn auth_msg(a: Ipv4Addr, at: u64) -> Vec<u8> {
    enc(Message::Auth(Auth::new(
        PW,
        a,
        (T0 + at) as i64,
        vec![1, 2, 3],
    )))
}

fn packet(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let p = build_udp(src, 1000, dst, 2000, 1, b"hello").unwrap();
    let mut m = vec![wire::kind::FORWARD];
    m.extend_from_slice(&p);
    m
}

fn drain(s: &mut Server) -> (Vec<Transmit>, Vec<ServerEvent>) {
    let mut t = Vec::new();
    while let Some(x) = s.poll_transmit() {
        t.push(x);
    }
    let mut e = Vec::new();
    while let Some(x) = s.poll_event() {
        e.push(x);
    }
    (t, e)
}

/// Connects `conn` and authenticates it as `a`.
fn join(s: &mut Server, conn: ConnId, a: Ipv4Addr, at: u64) {
    s.handle_connect(now(at), conn);
    s.handle_input(now(at), conn, &auth_msg(a, at));
    assert_eq!(s.owner(a), Some(conn));
}

#[test]
fn bad_hash_auth_closes_silently() {
    let mut s = server(None);
    s.handle_connect(now(0), 1);
    let mut m = auth_msg(ip(1), 0);
    m[20] ^= 1;
    s.handle_input(now(0), 1, &m);
    let (t, e) = drain(&mut s);
    assert!(t.is_empty(), "nothing is sent back");
    assert_eq!(e, vec![ServerEvent::Close(1, CloseReason::BadHash)]);
    assert_eq!(s.owner(ip(1)), None);
    // A wrong password is a bad hash too.
    s.handle_connect(now(0), 2);
    let m = enc(Message::Auth(Auth::new(b"wrong", ip(1), T0 as i64, vec![])));
    s.handle_input(now(0), 2, &m);
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(2, CloseReason::BadHash)]
    );
}

#[test]
fn auth_outside_window_or_repeated_is_a_replay() {
    let mut s = server(None);
    s.handle_connect(now(100), 1);
    s.handle_input(now(100), 1, &auth_msg(ip(1), 69));
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(1, CloseReason::Replay)]
    );
    s.handle_connect(now(100), 2);
    s.handle_input(now(100), 2, &auth_msg(ip(1), 131));
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(2, CloseReason::Replay)]
    );
    // Inside the window: accepted; the very same AUTH again (a replay) is refused and
    // the first connection keeps the address.
    join(&mut s, 3, ip(1), 100);
    s.handle_connect(now(101), 4);
    s.handle_input(now(101), 4, &auth_msg(ip(1), 100));
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(4, CloseReason::Replay)]
    );
    assert_eq!(s.owner(ip(1)), Some(3));
    assert_eq!(s.stats().replays, 3);
    // A configurable window.
    let mut s = Server::new(
        ServerConfig {
            password: PW.to_vec(),
            replay_window: Duration::from_secs(5),
            ..ServerConfig::default()
        },
        Trace::disabled(),
    )
    .unwrap();
    s.handle_connect(now(100), 1);
    s.handle_input(now(100), 1, &auth_msg(ip(1), 94));
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(1, CloseReason::Replay)]
    );
}

#[test]
fn second_auth_replaces_the_older_connection() {
    let mut s = server(None);
    join(&mut s, 1, ip(1), 0);
    join(&mut s, 2, ip(2), 0);
    join(&mut s, 3, ip(1), 1);
    let (_, e) = drain(&mut s);
    assert_eq!(e, vec![ServerEvent::Close(1, CloseReason::Replaced)]);
    s.handle_input(now(1), 2, &packet(ip(2), ip(1)));
    let (t, _) = drain(&mut s);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].conn, 3);
}

#[test]
fn forward_routes_by_destination_and_checks_the_source() {
    let mut s = server(None);
    join(&mut s, 1, ip(1), 0);
    join(&mut s, 2, ip(2), 0);
    join(&mut s, 3, ip(3), 0);
    drain(&mut s);
    let p = packet(ip(1), ip(2));
    s.handle_input(now(1), 1, &p);
    let (t, e) = drain(&mut s);
    assert_eq!(
        t,
        vec![Transmit {
            conn: 2,
            data: Bytes::from(p)
        }]
    );
    assert!(e.is_empty());
    // Spoofed source: dropped, the connection stays.
    s.handle_input(now(1), 1, &packet(ip(3), ip(2)));
    let (t, e) = drain(&mut s);
    assert!(t.is_empty() && e.is_empty());
    assert_eq!(s.stats().spoofed, 1);
    // Unknown destination: dropped.
    s.handle_input(now(1), 1, &packet(ip(1), ip(99)));
    assert!(drain(&mut s).0.is_empty());
    assert_eq!(s.stats().no_route, 1);
    // Not IPv4: dropped.
    let mut bad = packet(ip(1), ip(2));
    bad[1] = 0x65;
    s.handle_input(now(1), 1, &bad);
    assert!(drain(&mut s).0.is_empty());
    assert_eq!(s.stats().malformed_packets, 1);
    // Source check off (Candy >= 6.0.3): the spoofed packet is delivered.
    let mut s = Server::new(
        ServerConfig {
            password: PW.to_vec(),
            check_source: false,
            ..ServerConfig::default()
        },
        Trace::disabled(),
    )
    .unwrap();
    join(&mut s, 1, ip(1), 0);
    join(&mut s, 2, ip(2), 0);
    s.handle_input(now(1), 1, &packet(ip(3), ip(2)));
    assert_eq!(drain(&mut s).0.len(), 1);
}

#[test]
fn broadcast_multicast_and_directed_broadcast_reach_every_other_client() {
    let mut s = server(Some("10.0.0.0/24"));
    for i in 1..=3 {
        join(&mut s, u64::from(i), ip(i), 0);
    }
    drain(&mut s);
    for dst in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 251),
        Ipv4Addr::new(239, 1, 2, 3),
        ip(255),
    ] {
        s.handle_input(now(1), 2, &packet(ip(2), dst));
        let (t, _) = drain(&mut s);
        let to: Vec<ConnId> = t.iter().map(|t| t.conn).collect();
        assert_eq!(to, vec![1, 3], "{dst}");
    }
}

#[test]
fn relays_need_auth_and_the_right_source() {
    let mut s = server(None);
    join(&mut s, 1, ip(1), 0);
    join(&mut s, 2, ip(2), 0);
    join(&mut s, 3, ip(3), 0);
    drain(&mut s);
    let pi = enc(Message::PeerInfo(PeerInfo {
        src: ip(1),
        dst: ip(2),
        ip: Ipv4Addr::new(1, 2, 3, 4),
        port: 5,
    }));
    s.handle_input(now(1), 1, &pi);
    assert_eq!(
        drain(&mut s).0.iter().map(|t| t.conn).collect::<Vec<_>>(),
        [2]
    );
    // PEER INFO to broadcast is not fanned out.
    let pib = enc(Message::PeerInfo(PeerInfo {
        src: ip(1),
        dst: BROADCAST,
        ip: Ipv4Addr::new(1, 2, 3, 4),
        port: 5,
    }));
    s.handle_input(now(1), 1, &pib);
    assert!(drain(&mut s).0.is_empty());
    let d = enc(Message::Discovery(Discovery {
        src: ip(1),
        dst: BROADCAST,
    }));
    s.handle_input(now(1), 1, &d);
    assert_eq!(
        drain(&mut s).0.iter().map(|t| t.conn).collect::<Vec<_>>(),
        [2, 3]
    );
    let g = enc(Message::General(General::lan_address(
        ip(1),
        ip(3),
        Ipv4Addr::new(192, 168, 0, 1),
        9,
    )));
    s.handle_input(now(1), 1, &g);
    assert_eq!(
        drain(&mut s).0.iter().map(|t| t.conn).collect::<Vec<_>>(),
        [3]
    );
    // Wrong source: dropped.
    let spoof = enc(Message::Discovery(Discovery {
        src: ip(2),
        dst: ip(3),
    }));
    s.handle_input(now(1), 1, &spoof);
    assert!(drain(&mut s).0.is_empty());
    assert_eq!(s.stats().spoofed, 1);
}

#[test]
fn anything_but_vmac_dhcp_auth_before_auth_closes() {
    let mut s = server(Some("10.0.0.0/24"));
    join(&mut s, 1, ip(1), 0);
    drain(&mut s);
    let msgs = [
        packet(ip(2), ip(1)),
        enc(Message::Discovery(Discovery {
            src: ip(2),
            dst: ip(1),
        })),
        enc(Message::General(General::lan_address(
            ip(2),
            ip(1),
            ip(9),
            1,
        ))),
    ];
    for (i, m) in msgs.iter().enumerate() {
        let c = 10 + i as u64;
        s.handle_connect(now(1), c);
        s.handle_input(
            now(1),
            c,
            &enc(Message::Vmac(Vmac::new(
                PW,
                [7; 16],
                (T0 + 1) as i64,
                vec![],
            ))),
        );
        s.handle_input(now(1), c, m);
        let (t, e) = drain(&mut s);
        assert!(t.is_empty());
        assert_eq!(e, vec![ServerEvent::Close(c, CloseReason::Unauthenticated)]);
    }
}

#[test]
fn vmac_needs_no_auth_and_checks_its_hash() {
    let mut s = server(None);
    s.handle_connect(now(0), 1);
    s.handle_input(
        now(0),
        1,
        &enc(Message::Vmac(Vmac::new(
            PW,
            [7; 16],
            T0 as i64,
            vec![0; 40],
        ))),
    );
    let (t, e) = drain(&mut s);
    assert!(t.is_empty() && e.is_empty());
    s.handle_input(
        now(0),
        1,
        &enc(Message::Vmac(Vmac::new(b"bad", [7; 16], T0 as i64, vec![]))),
    );
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(1, CloseReason::BadHash)]
    );
}

fn dhcp_ask(s: &mut Server, conn: ConnId, vmac: [u8; 16], want: &str, at: u64) -> Ipv4Cidr {
    s.handle_connect(now(at), conn);
    s.handle_input(
        now(at),
        conn,
        &enc(Message::Vmac(Vmac::new(PW, vmac, (T0 + at) as i64, vec![]))),
    );
    s.handle_input(
        now(at),
        conn,
        &enc(Message::Dhcp(Dhcp::new(
            PW,
            want,
            (T0 + at) as i64,
            vec![5],
        ))),
    );
    let (t, e) = drain(s);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(t.len(), 1);
    let Ok(Message::Dhcp(d)) = Message::decode(&t[0].data) else {
        panic!("not a DHCP answer")
    };
    assert!(d.check(PW), "the answer's hash is recomputed");
    assert_eq!(d.timestamp, (T0 + at) as i64);
    d.cidr.parse().unwrap()
}

#[test]
fn dhcp_grants_requested_free_or_same_vmac_and_never_duplicates() {
    let mut s = server(Some("10.0.0.0/24"));
    let a = dhcp_ask(&mut s, 1, [1; 16], "10.0.0.50/24", 0);
    assert_eq!(a.to_string(), "10.0.0.50/24");
    s.handle_input(now(0), 1, &auth_msg(a.addr, 0));
    // Another vmac asking for it gets another address.
    let b = dhcp_ask(&mut s, 2, [2; 16], "10.0.0.50/24", 0);
    assert_ne!(b.addr, a.addr);
    // Network and broadcast are never granted.
    let c = dhcp_ask(&mut s, 3, [3; 16], "10.0.0.0/24", 0);
    let d = dhcp_ask(&mut s, 4, [4; 16], "10.0.0.255/24", 0);
    for x in [c, d] {
        assert!(x.addr != Ipv4Addr::new(10, 0, 0, 0) && x.addr != ip(255));
    }
    assert!(c.addr != b.addr && d.addr != b.addr && c.addr != d.addr);
    // Client 1 disconnects and comes back with the same vmac: same address.
    s.handle_disconnect(now(5), 1);
    let again = dhcp_ask(&mut s, 5, [1; 16], "10.0.0.50/24", 6);
    assert_eq!(again, a);
    // A garbage request still gets an address.
    let e = dhcp_ask(&mut s, 6, [6; 16], "nonsense", 6);
    assert!(e.addr != a.addr && e.addr != b.addr);
}

/// Candy's client, reconnecting in the same process after its connection dropped, asks
/// for "0.0.0.0/0" again (its wish is read once at start): it must get its address back,
/// or its TUN comes back with another and every flow to the old one dies.
#[test]
fn a_reconnect_asking_for_any_address_keeps_its_own() {
    let mut s = server(Some("10.0.0.0/24"));
    let a = dhcp_ask(&mut s, 1, [1; 16], "0.0.0.0/0", 0);
    s.handle_input(now(0), 1, &auth_msg(a.addr, 0));
    let b = dhcp_ask(&mut s, 2, [2; 16], "0.0.0.0/0", 0);
    s.handle_input(now(0), 2, &auth_msg(b.addr, 0));
    assert_ne!(a, b);
    // Client 1's connection drops; it comes back asking for nothing in particular.
    s.handle_disconnect(now(18), 1);
    let again = dhcp_ask(&mut s, 3, [1; 16], "0.0.0.0/0", 19);
    assert_eq!(again, a, "the reconnecting vmac got another address");
    // Also when the old connection is still open (the server has not seen it drop).
    let again = dhcp_ask(&mut s, 4, [2; 16], "0.0.0.0/0", 20);
    assert_eq!(again, b);
    // A new vmac gets a fresh address, neither of theirs.
    let c = dhcp_ask(&mut s, 5, [3; 16], "0.0.0.0/0", 20);
    assert!(c != a && c != b, "{c}");
}

#[test]
fn dhcp_without_pool_or_full_pool_closes() {
    let mut s = server(None);
    s.handle_connect(now(0), 1);
    s.handle_input(
        now(0),
        1,
        &enc(Message::Dhcp(Dhcp::new(PW, "0.0.0.0/0", T0 as i64, vec![]))),
    );
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(1, CloseReason::NoAddress)]
    );
    let mut s = server(Some("10.0.0.0/30"));
    dhcp_ask(&mut s, 1, [1; 16], "0.0.0.0/0", 0);
    dhcp_ask(&mut s, 2, [2; 16], "0.0.0.0/0", 0);
    s.handle_connect(now(0), 3);
    s.handle_input(
        now(0),
        3,
        &enc(Message::Dhcp(Dhcp::new(PW, "0.0.0.0/0", T0 as i64, vec![]))),
    );
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(3, CloseReason::NoAddress)]
    );
    // A bad DHCP hash closes.
    s.handle_connect(now(0), 4);
    s.handle_input(
        now(0),
        4,
        &enc(Message::Dhcp(Dhcp::new(
            b"x",
            "0.0.0.0/0",
            T0 as i64,
            vec![],
        ))),
    );
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(4, CloseReason::BadHash)]
    );
}

#[test]
fn auth_for_unusable_addresses_closes() {
    let mut s = server(Some("10.0.0.0/24"));
    for (i, a) in [
        Ipv4Addr::UNSPECIFIED,
        BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        ip(0),
        ip(255),
    ]
    .into_iter()
    .enumerate()
    {
        let c = i as u64;
        s.handle_connect(now(0), c);
        s.handle_input(now(0), c, &auth_msg(a, 0));
        assert_eq!(
            drain(&mut s).1,
            vec![ServerEvent::Close(c, CloseReason::BadAddress)]
        );
    }
}

#[test]
fn bounds_message_size_clients_and_queue() {
    let mut s = Server::new(
        ServerConfig {
            password: PW.to_vec(),
            max_clients: 2,
            max_message: 100,
            max_queued: 100,
            ..ServerConfig::default()
        },
        Trace::disabled(),
    )
    .unwrap();
    join(&mut s, 1, ip(1), 0);
    join(&mut s, 2, ip(2), 0);
    s.handle_connect(now(0), 3);
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(3, CloseReason::Full)]
    );
    assert_eq!(s.connections(), 2);
    // 34-byte messages: two fit in 100 queued bytes, the third is dropped.
    let p = packet(ip(1), ip(2));
    assert_eq!(p.len(), 34);
    for _ in 0..3 {
        s.handle_input(now(1), 1, &p);
    }
    assert_eq!(drain(&mut s).0.len(), 2);
    assert_eq!(s.stats().slow_drops, 1);
    assert_eq!(s.queued(2), 68);
    s.handle_written(2, 68);
    s.handle_input(now(1), 1, &p);
    assert_eq!(drain(&mut s).0.len(), 1);
    // A message over the limit closes its sender.
    s.handle_input(now(1), 1, &[1u8; 101]);
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(1, CloseReason::TooLong)]
    );
    // Malformed closes.
    s.handle_input(now(1), 2, &[9]);
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(2, CloseReason::Malformed)]
    );
}

#[test]
fn unauthenticated_connections_time_out() {
    let mut s = server(None);
    s.handle_connect(now(0), 1);
    join(&mut s, 2, ip(2), 0);
    assert_eq!(s.poll_timeout(), Some(now(30)));
    s.handle_timeout(now(29));
    assert!(drain(&mut s).1.is_empty());
    s.handle_timeout(now(30));
    assert_eq!(
        drain(&mut s).1,
        vec![ServerEvent::Close(1, CloseReason::AuthTimeout)]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn scripted_exchange_trace() {
    let mut s = server(Some("10.0.0.0/24"));
    let a = dhcp_ask(&mut s, 1, [1; 16], "0.0.0.0/0", 0);
    s.handle_input(now(0), 1, &auth_msg(a.addr, 0));
    join(&mut s, 2, ip(9), 1);
    s.handle_connect(now(2), 3);
    s.handle_input(now(2), 3, &auth_msg(ip(9), 2));
    s.handle_connect(now(3), 4);
    s.handle_input(now(3), 4, &[0; 45]);
    s.handle_disconnect(now(4), 1);
    s.handle_timeout(now(200));
    insta::assert_snapshot!(s.trace.render());
}
