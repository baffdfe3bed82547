//! The Internet checksum (RFC 1071) and the IPv4 pseudo header, for code that crafts or
//! checks IPv4 packets on an IP link.

use std::net::Ipv4Addr;

/// The one's-complement sum of `parts` read as one run of big-endian 16-bit words (an
/// odd part is padded only at the very end, so split points must fall on even offsets
/// except for the last part), folded to 16 bits, not yet complemented.
pub fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum to put in a header whose checksum field is zero in `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    !ones_sum(parts)
}

/// Whether `parts`, checksum field included, sum to all ones (the checksum verifies).
pub fn verifies(parts: &[&[u8]]) -> bool {
    ones_sum(parts) == 0xffff
}

/// The IPv4 pseudo header TCP and UDP checksums cover.
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = protocol;
    p[10..12].copy_from_slice(&len.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2.
    #[test]
    fn rfc1071_example() {
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_sum(&[&d]), 0xddf2);
        assert_eq!(checksum(&[&d]), !0xddf2);
        let c = checksum(&[&d]).to_be_bytes();
        assert!(verifies(&[&d, &c]));
    }

    #[test]
    fn odd_length_pads_at_the_end() {
        assert_eq!(ones_sum(&[&[0x01, 0x02, 0x03]]), 0x0402);
    }
}
