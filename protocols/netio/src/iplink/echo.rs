//! A sans-IO IPv4 endpoint that answers ICMP echo requests (ping) and echoes UDP
//! datagrams: what tests and scenarios put behind an IP link to have something answer.
//! Every checksum of the request is verified (a corrupted packet gets no answer), and the
//! reply is built with correct checksums.

use std::net::Ipv4Addr;

use super::checksum::{checksum, pseudo_header, verifies};
use super::ipv4_addrs;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Builds an IPv4 packet (20-byte header, no options, TTL 64, DF clear) around
/// `payload`, with the header checksum set. `None` when it would exceed 65 535 bytes.
pub fn build_ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    id: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let total = u16::try_from(20 + payload.len()).ok()?;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 64, protocol, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    Some(p)
}

/// An IPv4/UDP packet with a correct UDP checksum.
pub fn build_udp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    id: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let len = u16::try_from(8 + payload.len()).ok()?;
    let mut u = Vec::with_capacity(usize::from(len));
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let ph = pseudo_header(src, dst, PROTO_UDP, len);
    let mut c = checksum(&[&ph, &u]);
    if c == 0 {
        c = 0xffff; // zero means "no checksum" in UDP
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    build_ipv4(src, dst, PROTO_UDP, id, &u)
}

/// An IPv4/ICMP echo message (`kind` 8 = request, 0 = reply) with a correct checksum.
pub fn build_icmp_echo(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: u8,
    ident: u16,
    seq: u16,
    id: u16,
    data: &[u8],
) -> Option<Vec<u8>> {
    let mut m = Vec::with_capacity(8 + data.len());
    m.extend_from_slice(&[kind, 0, 0, 0]);
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = checksum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    build_ipv4(src, dst, PROTO_ICMP, id, &m)
}

/// A well-formed, unfragmented IPv4 packet with a valid header checksum, split into
/// (protocol, source, destination, identification, payload).
pub struct Ipv4View<'a> {
    /// The protocol number.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// The identification field.
    pub id: u16,
    /// What follows the header.
    pub payload: &'a [u8],
}

/// Parses `packet` into an [`Ipv4View`]; `None` unless well formed ([`super::check_ipv4`]),
/// unfragmented and with a header checksum that verifies.
pub fn parse_ipv4(packet: &[u8]) -> Option<Ipv4View<'_>> {
    super::check_ipv4(packet).ok()?;
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if !verifies(&[&packet[..ihl]]) {
        return None;
    }
    let frag = u16::from_be_bytes([packet[6], packet[7]]);
    if frag & 0x3fff != 0 {
        return None; // more fragments, or not the first: not reassembled here
    }
    let (src, dst) = ipv4_addrs(packet)?;
    Some(Ipv4View {
        protocol: packet[9],
        src,
        dst,
        id: u16::from_be_bytes([packet[4], packet[5]]),
        payload: &packet[ihl..],
    })
}

/// A UDP datagram whose checksum verified: (source port, destination port, payload).
pub fn parse_udp<'a>(v: &Ipv4View<'a>) -> Option<(u16, u16, &'a [u8])> {
    let u = v.payload;
    if v.protocol != PROTO_UDP || u.len() < 8 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if len != u.len() {
        return None;
    }
    let sum = u16::from_be_bytes([u[6], u[7]]);
    let ph = pseudo_header(v.src, v.dst, PROTO_UDP, len as u16);
    if sum != 0 && !verifies(&[&ph, u]) {
        return None;
    }
    Some((
        u16::from_be_bytes([u[0], u[1]]),
        u16::from_be_bytes([u[2], u[3]]),
        &u[8..],
    ))
}

/// An ICMP echo message whose checksum verified: (type, identifier, sequence, data).
pub fn parse_icmp_echo<'a>(v: &Ipv4View<'a>) -> Option<(u8, u16, u16, &'a [u8])> {
    let m = v.payload;
    if v.protocol != PROTO_ICMP || m.len() < 8 || m[1] != 0 || !(m[0] == 0 || m[0] == 8) {
        return None;
    }
    if !verifies(&[m]) {
        return None;
    }
    Some((
        m[0],
        u16::from_be_bytes([m[4], m[5]]),
        u16::from_be_bytes([m[6], m[7]]),
        &m[8..],
    ))
}

/// What [`answer`] did with one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An ICMP echo request: here is the echo reply.
    Pong(Vec<u8>),
    /// A UDP datagram: here it is back, ports swapped.
    UdpEcho(Vec<u8>),
    /// Not for us, malformed, corrupted, or nothing we answer.
    Ignored,
}

/// The answer of an endpoint at `ours` to `packet`: an echo reply to an ICMP echo request,
/// the same payload back to a UDP datagram, nothing to anything else.
pub fn answer(packet: &[u8], ours: Ipv4Addr) -> Answer {
    let Some(v) = parse_ipv4(packet) else {
        return Answer::Ignored;
    };
    if v.dst != ours {
        return Answer::Ignored;
    }
    if let Some((8, ident, seq, data)) = parse_icmp_echo(&v) {
        return build_icmp_echo(ours, v.src, 0, ident, seq, v.id, data)
            .map_or(Answer::Ignored, Answer::Pong);
    }
    if let Some((sport, dport, data)) = parse_udp(&v) {
        return build_udp(ours, dport, v.src, sport, v.id, data)
            .map_or(Answer::Ignored, Answer::UdpEcho);
    }
    Answer::Ignored
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn ping_gets_a_pong() {
        let req = build_icmp_echo(A, B, 8, 7, 9, 1, b"abc").unwrap();
        let Answer::Pong(rep) = answer(&req, B) else {
            panic!("no pong")
        };
        let v = parse_ipv4(&rep).unwrap();
        assert_eq!((v.src, v.dst), (B, A));
        assert_eq!(parse_icmp_echo(&v), Some((0, 7, 9, &b"abc"[..])));
        // Not ours: no answer.
        assert_eq!(answer(&req, A), Answer::Ignored);
    }

    #[test]
    fn udp_is_echoed_with_ports_swapped() {
        let req = build_udp(A, 5000, B, 7, 3, b"hello").unwrap();
        let Answer::UdpEcho(rep) = answer(&req, B) else {
            panic!("no echo")
        };
        let v = parse_ipv4(&rep).unwrap();
        assert_eq!(parse_udp(&v), Some((7, 5000, &b"hello"[..])));
    }

    #[test]
    fn any_flipped_bit_gets_no_answer_or_a_valid_one() {
        let req = build_udp(A, 5000, B, 7, 3, b"hello world").unwrap();
        for bit in 0..req.len() * 8 {
            let mut p = req.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            match answer(&p, B) {
                Answer::Ignored => {}
                // The one's-complement sum cannot catch every flip (e.g. 0x0000 <-> 0xffff
                // in the checksum field); then the reply is still well formed.
                Answer::UdpEcho(r) | Answer::Pong(r) => assert!(parse_ipv4(&r).is_some()),
            }
        }
    }

    #[test]
    fn never_panics_on_junk() {
        for len in 0..64 {
            for fill in [0u8, 0x45, 0xff] {
                let mut p = vec![fill; len];
                if len > 3 {
                    p[0] = 0x45;
                    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                }
                let _ = answer(&p, B);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn junk_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1600)) {
            let _ = answer(&data, B);
            let _ = super::super::check_ipv4(&data);
        }

        #[test]
        fn udp_round_trips(sport: u16, dport: u16, id: u16,
                           payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500)) {
            let p = build_udp(A, sport, B, dport, id, &payload).unwrap();
            let v = parse_ipv4(&p).unwrap();
            proptest::prop_assert_eq!((v.src, v.dst, v.id), (A, B, id));
            proptest::prop_assert_eq!(parse_udp(&v), Some((sport, dport, &payload[..])));
        }

        #[test]
        fn icmp_round_trips(ident: u16, seq: u16,
                            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500)) {
            let p = build_icmp_echo(A, B, 8, ident, seq, 0, &data).unwrap();
            let v = parse_ipv4(&p).unwrap();
            proptest::prop_assert_eq!(parse_icmp_echo(&v), Some((8, ident, seq, &data[..])));
        }
    }
}
