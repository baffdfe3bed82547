//! Property: over a lossless, in-order wire, whatever either side sends arrives intact
//! and in order, for every preset and both modes (stream bytes; message boundaries).

use std::time::Duration;

use proptest::prelude::*;
use tunnelbed_kcp::{Kcp, KcpConfig};
use tunnelbed_netio::Trace;

fn run(preset: usize, stream: bool, sends: &[(bool, usize)]) -> Result<(), TestCaseError> {
    let mut cfg = KcpConfig::preset(KcpConfig::PRESETS[preset]).unwrap();
    cfg.stream = stream;
    let mut k = [
        Kcp::new(7, &cfg, Trace::disabled(), "a"),
        Kcp::new(7, &cfg, Trace::disabled(), "b"),
    ];
    let mut sent: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut got: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for (i, &(from_b, len)) in sends.iter().enumerate() {
        let s = from_b as usize;
        let m: Vec<u8> = (0..len).map(|j| (i * 131 + j * 7 + s) as u8).collect();
        k[s].send(&m).unwrap();
        sent[s].push(m);
    }
    let mut now = Duration::ZERO;
    for _ in 0..10_000 {
        for kcp in &mut k {
            kcp.handle_timeout(now);
        }
        for s in 0..2 {
            while let Some(d) = k[s].poll_transmit() {
                k[1 - s].handle_input(now, &d).unwrap();
            }
            while let Some(m) = k[s].recv_bytes() {
                got[s].push(m);
            }
        }
        if k.iter().all(Kcp::all_acked) {
            break;
        }
        now += Duration::from_millis(10);
    }
    prop_assert!(k.iter().all(Kcp::all_acked), "not finished by {now:?}");
    for s in 0..2 {
        let (tx, rx) = (&sent[s], &got[1 - s]);
        if stream {
            prop_assert_eq!(tx.concat(), rx.concat());
        } else {
            // Empty messages are real messages in message mode.
            prop_assert_eq!(tx, rx);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lossless_pair_delivers_everything(
        preset in 0..KcpConfig::PRESETS.len(),
        stream in any::<bool>(),
        sends in proptest::collection::vec((any::<bool>(), 0usize..6000), 0..16),
    ) {
        run(preset, stream, &sends)?;
    }
}
