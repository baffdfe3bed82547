//! Replays the committed capture-reader corpus (`corpora/pcap_read/`: small captures the
//! simulator wrote with `tunnelbed sim run ... --pcap`, cut with editcap, as pcapng and
//! classic micro- and nanosecond pcap, plus cut, flipped and foreign ones) through its
//! fuzz body on stable Rust.

use tunnelbed_netio::corpus::{corpus, replay};
use tunnelbed_netio::pcap_read::fuzzing::fuzz_read_capture;
use tunnelbed_netio::pcap_read::{read_capture, PcapReadError};

#[test]
fn pcap_read_corpus() {
    replay("pcap_read", fuzz_read_capture);
}

/// The corpus must reach past the file header: whole captures of both formats that
/// read, and broken ones that fail on a packet after the first.
#[test]
fn pcap_read_corpus_covers_the_reader() {
    let results: Vec<_> = corpus("pcap_read")
        .iter()
        .map(|(_, d)| (d.first().copied(), read_capture(d)))
        .collect();
    let read = |first: u8| {
        results
            .iter()
            .any(|(f, r)| *f == Some(first) && r.as_ref().is_ok_and(|p| p.len() > 3))
    };
    assert!(read(0x0a), "a pcapng capture with packets");
    assert!(read(0xd4), "a microsecond classic pcap with packets");
    assert!(read(0x4d), "a nanosecond classic pcap with packets");
    let failed_late = |pick: fn(&PcapReadError) -> Option<usize>| {
        results
            .iter()
            .any(|(_, r)| r.as_ref().err().and_then(pick).is_some_and(|n| n >= 2))
    };
    assert!(
        failed_late(|e| match e {
            PcapReadError::Truncated { packet, .. } => Some(*packet),
            _ => None,
        }),
        "a capture cut after its first packet"
    );
    assert!(
        failed_late(|e| match e {
            PcapReadError::Malformed { packet, .. } => Some(*packet),
            _ => None,
        }),
        "a capture with a bad block after its first packet"
    );
    assert!(
        failed_late(|e| match e {
            PcapReadError::UnknownInterface { packet, .. } => Some(*packet),
            _ => None,
        }) || results
            .iter()
            .any(|(_, r)| matches!(r, Err(PcapReadError::UnknownInterface { .. }))),
        "a packet naming an undescribed interface"
    );
    assert!(results
        .iter()
        .any(|(_, r)| matches!(r, Err(PcapReadError::NotACapture(_)))));
}
