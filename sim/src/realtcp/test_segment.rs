//! One IPv4 TCP segment with valid checksums, for the glue's unit tests (resets,
//! reset sequence numbers).

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};
use std::net::SocketAddrV4;

/// The fields a test varies.
pub(crate) struct Seg<'a> {
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
    pub control: TcpControl,
    pub seq: i32,
    pub ack: i32,
    pub window: u16,
    pub payload: &'a [u8],
}

/// The segment as an IPv4 packet.
pub(crate) fn build(s: Seg<'_>) -> Vec<u8> {
    let (src, dst) = (*s.from.ip(), *s.to.ip());
    let tcp = TcpRepr {
        src_port: s.from.port(),
        dst_port: s.to.port(),
        control: s.control,
        seq_number: TcpSeqNumber(s.seq),
        ack_number: Some(TcpSeqNumber(s.ack)),
        window_len: s.window,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: s.payload,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut b = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut p = Ipv4Packet::new_unchecked(&mut b);
    ip.emit(&mut p, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(p.payload_mut()),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps,
    );
    b
}
