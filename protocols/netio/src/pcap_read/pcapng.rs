//! pcapng files through `pcap-file`'s `PcapNgParser`. Blocks are taken raw and only the
//! packet blocks (enhanced, simple, and the obsolete packet block) are parsed further:
//! statistics, name resolution and custom blocks are skipped unread, so a capture whose
//! extra blocks a tool wrote oddly still replays (replay needs only the packets).

use std::time::Duration;

use byteorder::{BigEndian, LittleEndian};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::{ENHANCED_PACKET_BLOCK, PACKET_BLOCK, SIMPLE_PACKET_BLOCK};
use pcap_file::pcapng::{Block, PcapNgParser, RawBlock};
use pcap_file::Endianness;

use super::{At, CapturedPacket, PcapReadError, MAX_BLOCK};

/// Type, length and trailing length: the smallest block.
const BLOCK_HEADER: usize = 12;

/// Reads every packet of a pcapng file (the caller has checked the magic).
pub(super) fn read(bytes: &[u8]) -> Result<Vec<CapturedPacket>, PcapReadError> {
    let first = At {
        packet: 1,
        offset: 0,
    };
    let (mut rest, mut parser) = PcapNgParser::new(bytes).map_err(|e| {
        first.error(
            e,
            bytes.len(),
            BLOCK_HEADER,
            "block header",
            "section header",
        )
    })?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let at = At::next(bytes, rest, out.len());
        let (next, raw) = parser
            .next_raw_block(rest)
            .map_err(|e| at.error(e, rest.len(), BLOCK_HEADER, "block header", "block body"))?;
        if raw.initial_len as usize > MAX_BLOCK {
            return Err(at.bad_length("block length", raw.initial_len.into()));
        }
        if matches!(
            raw.type_,
            ENHANCED_PACKET_BLOCK | SIMPLE_PACKET_BLOCK | PACKET_BLOCK
        ) {
            let block = parse(raw, parser.section().endianness).map_err(|e| at.malformed(e))?;
            out.push(packet(&parser, block, at)?);
        }
        rest = next;
    }
    Ok(out)
}

/// Parses a packet block with the section's byte order.
fn parse(raw: RawBlock<'_>, order: Endianness) -> Result<Block<'_>, pcap_file::PcapError> {
    match order {
        Endianness::Big => raw.try_into_block::<BigEndian>(),
        Endianness::Little => raw.try_into_block::<LittleEndian>(),
    }
}

/// What a packet block says, with its interface's link type, name and time scale.
fn packet(
    parser: &PcapNgParser,
    block: Block<'_>,
    at: At,
) -> Result<CapturedPacket, PcapReadError> {
    let (iface, units, data) = match block {
        // pcap-file reads the raw timestamp units as nanoseconds; `units` undoes that
        // so the interface's own resolution applies.
        Block::EnhancedPacket(b) => (b.interface_id, Some(b.timestamp.as_nanos()), b.data),
        Block::Packet(b) => (u32::from(b.interface_id), Some(b.timestamp.into()), b.data),
        Block::SimplePacket(b) => {
            // Interface 0, no timestamp; the body is padded, the original length is not.
            let keep = (b.original_len as usize).min(b.data.len());
            let data = match b.data {
                std::borrow::Cow::Borrowed(d) => std::borrow::Cow::Borrowed(&d[..keep]),
                std::borrow::Cow::Owned(mut d) => {
                    d.truncate(keep);
                    std::borrow::Cow::Owned(d)
                }
            };
            (0, None, data)
        }
        _ => {
            return Err(PcapReadError::Malformed {
                packet: at.packet,
                offset: at.offset,
                reason: "not a packet block".to_string(),
            })
        }
    };
    let desc = parser
        .interfaces()
        .get(iface as usize)
        .ok_or(PcapReadError::UnknownInterface {
            packet: at.packet,
            iface,
        })?;
    let ts = match units {
        Some(u) => scale(u, units_per_second(desc)),
        None => Duration::ZERO,
    };
    Ok(CapturedPacket {
        number: at.packet,
        iface,
        iface_name: name(desc),
        ts,
        linktype: (u32::from(desc.linktype) & 0xffff) as u16,
        data: data.into_owned(),
    })
}

/// The interface's `if_name`, if given.
fn name(desc: &InterfaceDescriptionBlock<'_>) -> Option<String> {
    desc.options.iter().find_map(|o| match o {
        InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Timestamp units per second from `if_tsresol` (microseconds when absent): a power of
/// ten, or of two when the top bit is set; an exponent too large for u64 is clamped.
fn units_per_second(desc: &InterfaceDescriptionBlock<'_>) -> u64 {
    let r = desc.options.iter().rev().find_map(|o| match o {
        InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
        _ => None,
    });
    let div = match r {
        None => 1_000_000,
        Some(r) if r & 0x80 == 0 => 10u64.checked_pow(u32::from(r)).unwrap_or(1_000_000_000),
        Some(r) => 2u64.checked_pow(u32::from(r & 0x7f)).unwrap_or(1 << 30),
    };
    div.max(1)
}

/// `units` (at `per_second` a second) as a duration; never overflows.
fn scale(units: u128, per_second: u64) -> Duration {
    let per_second = u128::from(per_second);
    let secs = u64::try_from(units / per_second).unwrap_or(u64::MAX);
    let nanos = (units % per_second) * 1_000_000_000 / per_second;
    Duration::from_secs(secs) + Duration::from_nanos(nanos as u64)
}
