//! Client machine rules, and client and server machines joined in memory.

use super::*;
use crate::server::{Server, ServerConfig, ServerEvent};
use tunnelbed_netio::iplink::echo::build_udp;

const PW: &[u8] = b"pw";
const T0: u64 = 1_700_000_000;

fn now(ms: u64) -> Duration {
    Duration::from_secs(T0) + Duration::from_millis(ms)
}

fn sent(c: &mut Client) -> Vec<Message> {
    let mut v = Vec::new();
    while let Some(b) = c.poll_transmit() {
        v.push(Message::decode(&b).unwrap());
    }
    v
}

fn events(c: &mut Client) -> Vec<ClientEvent> {
    let mut v = Vec::new();
    while let Some(e) = c.poll_event() {
        v.push(e);
    }
    v
}

fn dhcp_client(want: Option<&str>) -> Client {
    let cfg = ClientConfig::new(
        PW,
        *b"0123456789abcdef",
        AddrMode::Dhcp(want.map(|w| w.parse().unwrap())),
    );
    Client::new(cfg, "a", Trace::recording())
}

#[test]
fn vmac_dhcp_auth_up() {
    let mut c = dhcp_client(None);
    assert_eq!(events(&mut c), vec![ClientEvent::Connect]);
    c.handle_connected(now(0));
    let m = sent(&mut c);
    assert_eq!(m.len(), 2);
    let Message::Vmac(v) = &m[0] else {
        panic!("{m:?}")
    };
    assert!(v.check(PW));
    assert_eq!(&v.vmac, b"0123456789abcdef");
    let Message::Dhcp(d) = &m[1] else {
        panic!("{m:?}")
    };
    assert_eq!(d.cidr, "0.0.0.0/0");
    assert!(d.check(PW));
    assert!(!c.is_up());
    // Packets before up are dropped.
    let p = build_udp(
        Ipv4Addr::new(10, 0, 0, 2),
        1,
        Ipv4Addr::new(10, 0, 0, 3),
        2,
        0,
        b"x",
    )
    .unwrap();
    c.handle_packet(now(1), &p);
    assert!(sent(&mut c).is_empty());
    let ans = Message::Dhcp(Dhcp::new(PW, "10.0.0.2/24", T0 as i64, vec![1, 2]));
    c.handle_input(now(2), &ans.to_bytes().unwrap());
    let m = sent(&mut c);
    let [Message::Auth(a)] = &m[..] else {
        panic!("{m:?}")
    };
    assert_eq!(a.ip, Ipv4Addr::new(10, 0, 0, 2));
    assert!(a.check(PW));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Up("10.0.0.2/24".parse().unwrap())]
    );
    assert!(c.is_up());
    c.handle_packet(now(3), &p);
    assert_eq!(sent(&mut c), vec![Message::Forward(p.clone())]);
    let mut fwd = vec![1u8];
    fwd.extend_from_slice(&p);
    c.handle_input(now(4), &fwd);
    assert_eq!(events(&mut c), vec![ClientEvent::Packet(p)]);
}

#[test]
fn static_address_goes_up_at_once() {
    let cfg = ClientConfig::new(
        PW,
        [1; 16],
        AddrMode::Static("10.0.0.7/24".parse().unwrap()),
    );
    let mut c = Client::new(cfg, "s", Trace::disabled());
    events(&mut c);
    c.handle_connected(now(0));
    let m = sent(&mut c);
    assert!(
        matches!(&m[..], [Message::Vmac(_), Message::Auth(a)] if a.ip == Ipv4Addr::new(10, 0, 0, 7))
    );
    assert!(c.is_up());
}

#[test]
fn bad_dhcp_answer_drops_the_connection() {
    let mut c = dhcp_client(None);
    events(&mut c);
    c.handle_connected(now(0));
    sent(&mut c);
    let ans = Message::Dhcp(Dhcp::new(b"other", "10.0.0.2/24", T0 as i64, vec![]));
    c.handle_input(now(1), &ans.to_bytes().unwrap());
    assert_eq!(events(&mut c), vec![ClientEvent::Drop]);
    assert!(!c.is_up());
}

#[test]
fn keepalive_then_drop_then_backoff_doubles() {
    let mut c = dhcp_client(Some("10.0.0.9/24"));
    events(&mut c);
    c.handle_connected(now(0));
    let ans = Message::Dhcp(Dhcp::new(PW, "10.0.0.9/24", T0 as i64, vec![]));
    c.handle_input(now(0), &ans.to_bytes().unwrap());
    events(&mut c);
    assert_eq!(c.poll_timeout(), Some(now(15_000)));
    c.handle_timeout(now(15_000));
    assert_eq!(events(&mut c), vec![ClientEvent::Ping]);
    assert_eq!(c.poll_timeout(), Some(now(45_000)));
    c.handle_timeout(now(45_000));
    assert_eq!(events(&mut c), vec![ClientEvent::Drop]);
    // First retry after 1..1.25 s (the up lasted long enough to reset the backoff).
    let t1 = c.poll_timeout().unwrap();
    assert!(t1 >= now(46_000) && t1 <= now(46_250), "{t1:?}");
    c.handle_timeout(t1);
    assert_eq!(events(&mut c), vec![ClientEvent::Connect]);
    c.handle_disconnected(t1);
    let t2 = c.poll_timeout().unwrap();
    assert!(t2 >= t1 + Duration::from_secs(2) && t2 <= t1 + Duration::from_millis(2500));
    c.handle_timeout(t2);
    events(&mut c);
    c.handle_disconnected(t2);
    let t3 = c.poll_timeout().unwrap();
    assert!(t3 >= t2 + Duration::from_secs(4));
    // Capped.
    for _ in 0..10 {
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        c.handle_disconnected(t);
    }
    let last = c.poll_timeout().unwrap();
    c.handle_timeout(last);
    c.handle_disconnected(last);
    assert!(c.poll_timeout().unwrap() <= last + Duration::from_millis(37_500));
    // Reconnect asks for the same address.
    c.handle_timeout(c.poll_timeout().unwrap());
    c.handle_connected(now(999_000));
    let m = sent(&mut c);
    assert!(matches!(&m[1], Message::Dhcp(d) if d.cidr == "10.0.0.9/24"));
    insta::assert_snapshot!(c.trace.render());
}

/// Client and server machines wired together in memory: two DHCP clients get distinct
/// addresses, exchange a packet, and one that reconnects gets its address back.
#[test]
fn two_clients_through_the_server_machine() {
    let mut s = Server::new(
        ServerConfig {
            password: PW.to_vec(),
            pool: Some("10.9.0.0/24".parse().unwrap()),
            ..ServerConfig::default()
        },
        Trace::disabled(),
    )
    .unwrap();
    let mk = |v: u8| {
        let mut cfg = ClientConfig::new(PW, [v; 16], AddrMode::Dhcp(None));
        cfg.seed = u64::from(v);
        Client::new(cfg, "x", Trace::disabled())
    };
    let mut cs = [mk(b'a'), mk(b'b')];
    let pump = |s: &mut Server, cs: &mut [Client; 2], t: Duration| {
        for _ in 0..4 {
            for (i, c) in cs.iter_mut().enumerate() {
                while let Some(b) = c.poll_transmit() {
                    s.handle_input(t, i as u64, &b);
                }
            }
            while let Some(tx) = s.poll_transmit() {
                cs[tx.conn as usize].handle_input(t, &tx.data);
            }
            assert_eq!(s.poll_event(), None::<ServerEvent>);
        }
    };
    for (i, c) in cs.iter_mut().enumerate() {
        s.handle_connect(now(0), i as u64);
        c.handle_connected(now(0));
    }
    pump(&mut s, &mut cs, now(0));
    let a = cs[0].addr().unwrap();
    let b = cs[1].addr().unwrap();
    assert!(cs[0].is_up() && cs[1].is_up() && a != b);
    let p = build_udp(a.addr, 1, b.addr, 2, 0, b"across").unwrap();
    cs[0].handle_packet(now(1), &p);
    pump(&mut s, &mut cs, now(1));
    let got: Vec<_> = std::iter::from_fn(|| cs[1].poll_event()).collect();
    assert!(got.contains(&ClientEvent::Packet(p)));
    // Client 0 reconnects (new connection id 2 on the server): same address.
    s.handle_disconnect(now(2_000), 0);
    cs[0].handle_disconnected(now(2_000));
    let t = cs[0].poll_timeout().unwrap();
    cs[0].handle_timeout(t);
    s.handle_connect(t, 2);
    cs[0].handle_connected(t);
    while let Some(b) = cs[0].poll_transmit() {
        s.handle_input(t, 2, &b);
    }
    while let Some(tx) = s.poll_transmit() {
        assert_eq!(tx.conn, 2);
        cs[0].handle_input(t, &tx.data);
    }
    while let Some(b) = cs[0].poll_transmit() {
        s.handle_input(t, 2, &b);
    }
    assert_eq!(cs[0].addr(), Some(a));
    assert_eq!(s.owner(a.addr), Some(2));
}

#[test]
fn vmac_text_forms() {
    assert_eq!(parse_vmac("0123456789abcdef"), Some(*b"0123456789abcdef"));
    assert_eq!(parse_vmac(&"ab".repeat(16)), Some([0xab; 16]));
    assert_eq!(parse_vmac("short"), None);
    assert_eq!(parse_vmac(&"zz".repeat(16)), None);
    let v = random_vmac(&mut ChaCha8Rng::seed_from_u64(1));
    assert!(v.iter().all(|b| b.is_ascii_hexdigit()));
}
