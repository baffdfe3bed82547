//! The fuzz body for the capture reader. It lives here, not in `fuzz/`, so that a stable
//! `cargo test` replays the committed corpus (`corpora/pcap_read/`) without nightly or
//! libFuzzer; the cargo-fuzz target `pcap_read` is a one-line wrapper around it.

use super::{decode_transport, read_capture, PcapReadError, MAX_BLOCK};

/// Reads `data` as a capture and decodes every packet in it, checking what the reader
/// promises: no panic, packets numbered 1, 2, 3, ... in file order, no packet larger
/// than [`MAX_BLOCK`] or than the input, and errors that name a packet no further
/// than one past the last.
pub fn fuzz_read_capture(data: &[u8]) {
    match read_capture(data) {
        Ok(pkts) => {
            for (i, p) in pkts.iter().enumerate() {
                assert_eq!(p.number, i + 1, "packets are numbered in file order");
                assert!(p.data.len() <= MAX_BLOCK && p.data.len() <= data.len());
                let _ = decode_transport(p);
            }
        }
        Err(e) => {
            let (packet, offset) = match &e {
                PcapReadError::NotACapture(head) => {
                    assert!(head.len() <= 8);
                    (0, 0)
                }
                PcapReadError::Truncated { packet, offset, .. }
                | PcapReadError::BadLength { packet, offset, .. }
                | PcapReadError::Malformed { packet, offset, .. } => (*packet, *offset),
                PcapReadError::UnknownInterface { packet, .. } => (*packet, 0),
            };
            assert!(offset <= data.len(), "{e}: offset past the input");
            // A packet needs at least 16 bytes of header in either format.
            assert!(
                packet <= data.len() / 16 + 1,
                "{e}: packet number past the input"
            );
            assert!(!e.to_string().is_empty());
        }
    }
}
