//! The Internet checksum (RFC 1071): one's complement sum of 16-bit words, and the IPv4
//! pseudo header that TCP's checksum covers.

use std::net::Ipv4Addr;

/// Adds `data` to a running sum as big-endian 16-bit words (an odd last byte is padded
/// with zero). The sum is kept wide; [`fold`] reduces it.
pub fn add(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a wide sum into 16 bits and complements it: the value written into a header.
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The sum of the IPv4 pseudo header (source, destination, zero, protocol, length).
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u64 {
    let mut acc = add(0, &src.octets());
    acc = add(acc, &dst.octets());
    acc + u64::from(protocol) + u64::from(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &d)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(add(0, &[0x12])), fold(add(0, &[0x12, 0x00])));
    }
}
