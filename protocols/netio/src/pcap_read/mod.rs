//! Reading captures back for `tunnelbed replay` and the tests: pcapng and classic pcap
//! files are parsed by the `pcap-file` crate (the one [`crate::capture`] writes with);
//! this module adds what replay needs on top: a bound on every block and packet, errors
//! that name the packet (1-based, as Wireshark counts) and the byte offset, timestamps
//! scaled by each interface's `if_tsresol`, and the IP/UDP/TCP decoding in
//! [`transport`]. Nothing here panics, whatever the bytes (fuzzed: [`fuzzing`]).

pub mod fuzzing;
mod pcap;
mod pcapng;
pub mod transport;

use std::time::Duration;

use thiserror::Error;

pub use transport::{decode_transport, Transport, TransportError};

/// Largest block or packet accepted (pcapng allows more; real captures never need it).
pub const MAX_BLOCK: usize = 16 * 1024 * 1024;

/// The first four bytes of a pcapng file (a section header block's type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// The four magics of classic pcap: micro- and nanosecond, either byte order.
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];

/// Why a capture could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PcapReadError {
    /// Not a pcapng or pcap file.
    #[error("not a pcapng or pcap file (first bytes {0:02x?})")]
    NotACapture(Vec<u8>),
    /// The file ends inside a block or packet.
    #[error("truncated at packet {packet} (byte offset {offset}): {what}")]
    Truncated {
        /// 1-based packet number being read.
        packet: usize,
        /// Byte offset of the block.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A length field is impossible or over our bound.
    #[error("bad {what} at packet {packet} (byte offset {offset}): {value}")]
    BadLength {
        /// 1-based packet number.
        packet: usize,
        /// Byte offset.
        offset: usize,
        /// Which field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A packet names an interface that was never described.
    #[error("packet {packet} names interface {iface}, which the file does not describe")]
    UnknownInterface {
        /// 1-based packet number.
        packet: usize,
        /// Interface id.
        iface: u32,
    },
    /// A block the parser rejected (a bad field, an option that does not fit, bad UTF-8).
    #[error("malformed block at packet {packet} (byte offset {offset}): {reason}")]
    Malformed {
        /// 1-based packet number being read.
        packet: usize,
        /// Byte offset of the block.
        offset: usize,
        /// What the parser said.
        reason: String,
    },
}

/// One captured packet with its link type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedPacket {
    /// 1-based position among packets.
    pub number: usize,
    /// Interface index (0 for classic pcap).
    pub iface: u32,
    /// Interface name when the file gives one.
    pub iface_name: Option<String>,
    /// Timestamp since 1970.
    pub ts: Duration,
    /// Link-layer type (101 raw IP, 1 Ethernet, 113 Linux cooked, 0/108 loopback).
    pub linktype: u16,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Reads every packet of a pcapng or classic pcap file held in memory.
pub fn read_capture(bytes: &[u8]) -> Result<Vec<CapturedPacket>, PcapReadError> {
    let head: Option<[u8; 4]> = bytes.get(..4).and_then(|h| h.try_into().ok());
    match head {
        Some(h) if h == PCAPNG_MAGIC => pcapng::read(bytes),
        Some(h) if PCAP_MAGICS.contains(&h) => pcap::read(bytes),
        _ => Err(PcapReadError::NotACapture(
            bytes.iter().take(8).copied().collect(),
        )),
    }
}

/// Where the reader is: which packet it is about to produce and at which byte offset,
/// so every error says both.
#[derive(Clone, Copy)]
struct At {
    packet: usize,
    offset: usize,
}

impl At {
    /// The packet after `read` packets, whose block starts where `rest` of `file` does.
    fn next(file: &[u8], rest: &[u8], read: usize) -> Self {
        At {
            packet: read + 1,
            offset: file.len() - rest.len(),
        }
    }

    /// Turns a `pcap-file` error into ours. `IncompleteBuffer` means the file ended:
    /// `header` names what was cut when fewer than `header_len` bytes were left,
    /// `body` otherwise.
    fn error(
        self,
        e: pcap_file::PcapError,
        left: usize,
        header_len: usize,
        header: &'static str,
        body: &'static str,
    ) -> PcapReadError {
        match e {
            pcap_file::PcapError::IncompleteBuffer => PcapReadError::Truncated {
                packet: self.packet,
                offset: self.offset,
                what: if left < header_len { header } else { body },
            },
            pcap_file::PcapError::InvalidInterfaceId(iface) => PcapReadError::UnknownInterface {
                packet: self.packet,
                iface,
            },
            other => self.malformed(other),
        }
    }

    /// A block that is all there but that the parser rejected.
    fn malformed(self, e: pcap_file::PcapError) -> PcapReadError {
        let reason = match e {
            pcap_file::PcapError::IncompleteBuffer => "a field runs past its block".to_string(),
            other => other.to_string(),
        };
        PcapReadError::Malformed {
            packet: self.packet,
            offset: self.offset,
            reason,
        }
    }

    fn bad_length(self, what: &'static str, value: u64) -> PcapReadError {
        PcapReadError::BadLength {
            packet: self.packet,
            offset: self.offset,
            what,
            value,
        }
    }
}

#[cfg(test)]
mod tests;
