//! Classic (libpcap) files through `pcap-file`'s `PcapParser`. Packets are taken raw
//! (`next_raw_packet`) so that a capture cut by its snap length, whose original length
//! is larger than the snap length, still reads; our own bounds apply instead.

use std::time::Duration;

use pcap_file::pcap::PcapParser;
use pcap_file::TsResolution;

use super::{At, CapturedPacket, PcapReadError, MAX_BLOCK};

/// Size of the file header and of each packet header.
const FILE_HEADER: usize = 24;
const PACKET_HEADER: usize = 16;

/// Reads every packet of a classic pcap file (the caller has checked the magic).
pub(super) fn read(bytes: &[u8]) -> Result<Vec<CapturedPacket>, PcapReadError> {
    let start = At {
        packet: 0,
        offset: 0,
    };
    let (mut rest, parser) = PcapParser::new(bytes).map_err(|e| {
        start.error(
            e,
            bytes.len(),
            FILE_HEADER,
            "pcap file header",
            "pcap file header",
        )
    })?;
    let header = parser.header();
    let linktype = (u32::from(header.datalink) & 0xffff) as u16;
    let nanos = header.ts_resolution == TsResolution::NanoSecond;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let at = At::next(bytes, rest, out.len());
        let (next, raw) = parser
            .next_raw_packet(rest)
            .map_err(|e| at.error(e, rest.len(), PACKET_HEADER, "packet header", "packet data"))?;
        if raw.incl_len as usize > MAX_BLOCK {
            return Err(at.bad_length("captured length", raw.incl_len.into()));
        }
        let frac = u64::from(raw.ts_frac);
        let ts = Duration::from_secs(raw.ts_sec.into())
            + if nanos {
                Duration::from_nanos(frac)
            } else {
                Duration::from_micros(frac)
            };
        out.push(CapturedPacket {
            number: at.packet,
            iface: 0,
            iface_name: None,
            ts,
            linktype,
            data: raw.data.into_owned(),
        });
        rest = next;
    }
    Ok(out)
}
