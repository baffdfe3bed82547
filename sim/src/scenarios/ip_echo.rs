//! `ip-echo`: the simulator's IP-packet link under every profile. A client host sends
//! numbered requests as raw IPv4 packets through its IP link, UDP datagrams and ICMP echo
//! requests in turn, retrying on timeout; the server host's link answers them with the
//! sans-IO echo endpoint. Every request must come back intact, through a partition and a
//! server crash and restart (the restarted server opens its link with the same address).

use std::net::Ipv4Addr;
use std::time::Duration;

use tunnelbed_netio::iplink::echo::{self, parse_icmp_echo, parse_ipv4, parse_udp, Answer};
use tunnelbed_netio::{IpLink, IpLinkConfig, IpNet, Ipv4Cidr};

use crate::clock::now;
use crate::fault::FaultPlan;
use crate::scenario::{Ctx, Scenario};
use crate::scenarios::fixture::random_payloads;

/// Registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: "ip-echo",
    about: "numbered UDP and ICMP echo requests as raw IPv4 packets over the IP link, a partition and a server crash",
    profiles: &["clean", "lossy", "hostile"],
    default_seeds: 3,
    run,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
const UDP_PORT: u16 = 7;
const CLIENT_PORT: u16 = 40_000;
const ICMP_IDENT: u16 = 0x1b1b;

fn link_cfg(addr: Ipv4Addr) -> IpLinkConfig {
    IpLinkConfig::new("ip0", Ipv4Cidr::new(addr, 32))
}

/// Request `i`: a UDP datagram (even `i`) or an ICMP echo request (odd), carrying `i` as
/// four bytes and then `payload`.
fn request(i: usize, payload: &[u8]) -> Option<Vec<u8>> {
    let mut body = (i as u32).to_be_bytes().to_vec();
    body.extend_from_slice(payload);
    let id = i as u16;
    if i.is_multiple_of(2) {
        echo::build_udp(CLIENT, CLIENT_PORT, SERVER, UDP_PORT, id, &body)
    } else {
        echo::build_icmp_echo(CLIENT, SERVER, 8, ICMP_IDENT, id, id, &body)
    }
}

/// The request number and payload of a valid answer to one of our requests.
fn reply(packet: &[u8]) -> Option<(u32, Vec<u8>)> {
    let v = parse_ipv4(packet).filter(|v| v.src == SERVER && v.dst == CLIENT)?;
    let body = if let Some((UDP_PORT, CLIENT_PORT, d)) = parse_udp(&v) {
        d
    } else if let Some((0, ICMP_IDENT, _, d)) = parse_icmp_echo(&v) {
        d
    } else {
        return None;
    };
    let n: [u8; 4] = body.get(..4)?.try_into().ok()?;
    Some((u32::from_be_bytes(n), body[4..].to_vec()))
}

/// The server's answer; when sabotaging, the 17th request's payload comes back with its
/// last byte flipped (and valid checksums, so only the integrity check can catch it).
fn serve(packet: &[u8], tamper: bool) -> Option<Vec<u8>> {
    if tamper {
        let v = parse_ipv4(packet)?;
        if let Some((sport, dport, d)) = parse_udp(&v) {
            let mut d = d.to_vec();
            if let Some(last) = d.last_mut() {
                *last ^= 0xff;
            }
            return echo::build_udp(SERVER, dport, v.src, sport, v.id, &d);
        }
        if let Some((8, ident, seq, d)) = parse_icmp_echo(&v) {
            let mut d = d.to_vec();
            if let Some(last) = d.last_mut() {
                *last ^= 0xff;
            }
            return echo::build_icmp_echo(SERVER, v.src, 0, ident, seq, v.id, &d);
        }
    }
    match echo::answer(packet, SERVER) {
        Answer::Pong(r) | Answer::UdpEcho(r) => Some(r),
        Answer::Ignored => None,
    }
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let requests: usize = 200;
    // The whole packet must fit the profile's MTU: 20 (IP) + 8 (UDP or ICMP) + 4 (number).
    let max_len = ctx.params.mtu.saturating_sub(32).clamp(1, 1200);
    let payloads = random_payloads(&mut ctx.rng, requests, max_len);
    let timeout = ctx.params.latency * 2 + ctx.params.jitter * 2 + Duration::from_millis(100);
    let sabotage = ctx.sabotaged();

    let mut sim = ctx.builder(Duration::from_secs(600)).build();
    let world = ctx.world.clone();
    sim.host("server", move || {
        let net = world.net("server");
        async move {
            let link = net.open_ip_link(link_cfg(SERVER)).await?;
            let mut buf = vec![0u8; link.mtu()];
            let mut answered = 0u64;
            loop {
                let n = link.recv(&mut buf).await?;
                if let Some(r) = serve(&buf[..n], sabotage && answered == 16) {
                    answered += 1;
                    link.send(&r).await?;
                }
            }
        }
    });

    let world = ctx.world.clone();
    let ledger = ctx.ledger.clone();
    sim.client("client", async move {
        let link = world.net("client").open_ip_link(link_cfg(CLIENT)).await?;
        let mut buf = vec![0u8; link.mtu()];
        for (i, payload) in payloads.iter().enumerate() {
            let flow = format!("ip-req-{i:04}");
            ledger.sent(&flow, payload);
            let machine = format!("ip-echo[{flow}]");
            world
                .trace
                .transition(now(), machine.clone(), "idle", "waiting", "send");
            let packet = request(i, payload).ok_or("request too large")?;
            let mut attempts = 0u32;
            'retry: loop {
                attempts += 1;
                link.send(&packet).await?;
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    match tokio::time::timeout_at(deadline, link.recv(&mut buf)).await {
                        Err(_) => continue 'retry,
                        Ok(r) => {
                            let n = r?;
                            // Late answers to earlier requests and duplicates: skipped.
                            let answer = reply(&buf[..n]).filter(|(k, _)| *k as usize == i);
                            if let Some((_, data)) = answer {
                                ledger.received(&flow, &data);
                                ledger.close(&flow);
                                break 'retry;
                            }
                        }
                    }
                }
            }
            world.trace.transition(
                now(),
                machine,
                "waiting",
                "done",
                format!("echoed after {attempts} attempt(s)"),
            );
        }
        Ok(())
    });

    let faults = if ctx.profile == "clean" {
        FaultPlan::new()
    } else {
        FaultPlan::partition_then_restart("client", "server")
    };
    ctx.drive(&mut sim, &faults, Duration::from_secs(300));
    ctx.check_flows(requests);
    let stats = ctx.world.link.stats();
    let routes = ctx.world.ip_routes.stats();
    ctx.metric("packets", stats.sent);
    ctx.metric("dropped", stats.dropped());
    ctx.metric("no-route", routes.no_route);
    Ok(())
}
