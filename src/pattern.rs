//! The bytes `tunnelbed http-source` serves: a fixed pseudo-random pattern, so a client
//! (a test, a benchmark) can check a download by SHA-256 without a file on disk. Its own
//! module, so the benchmarks and the commands both use it without importing each other.

use sha2::{Digest, Sha256};

/// Byte `i` of every body: a fixed pseudo-random pattern, so a client can compute the
/// expected SHA-256 itself ([`expected_sha256`]).
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// Fills `buf` with the pattern starting at offset `off`.
pub fn fill_pattern(off: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(off + k as u64);
    }
}

/// SHA-256 (hex) of the first `n` pattern bytes: what `GET /bytes/n` must hash to.
pub fn expected_sha256(n: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < n {
        let k = (n - off).min(buf.len() as u64) as usize;
        fill_pattern(off, &mut buf[..k]);
        h.update(&buf[..k]);
        off += k as u64;
    }
    hex::encode(h.finalize())
}
