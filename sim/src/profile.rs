//! Named link profiles, and `swarm`, which draws the parameters from the seed (as
//! TigerBeetle's VOPR does) so a sweep explores many different networks.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::link::{GilbertElliott, LinkParams};

/// The fixed profiles (swarm is drawn per seed).
pub const NAMED: &[&str] = &["clean", "lossy", "hostile"];

/// Every profile name accepted on the command line.
pub const ALL: &[&str] = &["clean", "lossy", "hostile", "swarm"];

/// The parameters of profile `name` for `seed` (only `swarm` uses the seed).
pub fn params(name: &str, seed: u64) -> Option<LinkParams> {
    Some(match name {
        "clean" => LinkParams {
            latency: Duration::from_millis(5),
            ..LinkParams::default()
        },
        "lossy" => LinkParams {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            loss: 0.05,
            duplicate: 0.01,
            corrupt: 0.01,
            mtu: 1472,
            bandwidth: Some(20_000_000),
            queue_limit: 1024 * 1024,
            ..LinkParams::default()
        },
        "hostile" => LinkParams {
            latency: Duration::from_millis(40),
            jitter: Duration::from_millis(40),
            loss: 0.05,
            burst: Some(GilbertElliott {
                p_good_to_bad: 0.02,
                p_bad_to_good: 0.25,
                loss_bad: 0.5,
            }),
            duplicate: 0.05,
            corrupt: 0.02,
            mtu: 1400,
            bandwidth: Some(5_000_000),
            queue_limit: 512 * 1024,
            ..LinkParams::default()
        },
        "swarm" => swarm(seed),
        _ => return None,
    })
}

/// Parameters drawn from the seed: anything from a clean LAN to a bad mobile link.
pub fn swarm(seed: u64) -> LinkParams {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x5741_524d_5741_524d);
    let pick = |r: &mut ChaCha8Rng, max: f64| {
        if r.gen_bool(0.3) {
            0.0
        } else {
            r.gen_range(0.0..max)
        }
    };
    let loss = pick(&mut r, 0.2);
    let burst = if r.gen_bool(0.3) {
        Some(GilbertElliott {
            p_good_to_bad: r.gen_range(0.001..0.05),
            p_bad_to_good: r.gen_range(0.1..0.5),
            loss_bad: r.gen_range(0.2..0.8),
        })
    } else {
        None
    };
    LinkParams {
        latency: Duration::from_millis(r.gen_range(1..120)),
        jitter: Duration::from_millis(if r.gen_bool(0.5) {
            r.gen_range(0..60)
        } else {
            0
        }),
        loss,
        burst,
        duplicate: pick(&mut r, 0.05),
        corrupt: pick(&mut r, 0.03),
        corrupt_delivered: false,
        mtu: r.gen_range(1300..=1500),
        bandwidth: if r.gen_bool(0.5) {
            Some(r.gen_range(1_000_000..50_000_000))
        } else {
            None
        },
        queue_limit: r.gen_range(64 * 1024..2 * 1024 * 1024),
    }
}

/// A one-line description of parameters for reports.
pub fn describe(p: &LinkParams) -> String {
    let burst = match (
        &p.burst,
        p.burst.and_then(|b| b.mean_bad().zip(b.mean_good())),
    ) {
        (Some(b), Some((bad, good))) => format!(
            ", bad spells {}ms every {:.1}s at {:.0}% loss",
            bad.as_millis(),
            (bad + good).as_secs_f64(),
            b.loss_bad * 100.0
        ),
        _ => String::new(),
    };
    format!(
        "latency {}ms jitter {}ms loss {:.1}% (effective {:.1}%{burst}) dup {:.1}% corrupt {:.1}% mtu {} bw {}",
        p.latency.as_millis(),
        p.jitter.as_millis(),
        p.loss * 100.0,
        p.expected_loss() * 100.0,
        p.duplicate * 100.0,
        p.corrupt * 100.0,
        p.mtu,
        p.bandwidth
            .map(|b| format!("{:.1}MB/s", b as f64 / 1e6))
            .unwrap_or_else(|| "unlimited".into())
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::link::tests::ips;
    use crate::link::LinkModel;

    /// Over 100 000 datagrams the measured rates are within one percentage point of the
    /// parameters, for every named profile.
    #[test]
    fn measured_rates_match_profiles() {
        for name in NAMED {
            let p = params(name, 1).unwrap();
            let m = LinkModel::new(42, p.clone());
            let (a, b) = ips();
            let n = 100_000u64;
            for i in 0..n {
                // Spread sends in time so the bandwidth queue does not dominate.
                m.transmit(Duration::from_millis(i * 10), a, b, &[0u8; 100]);
            }
            let s = m.stats();
            assert_eq!(s.sent, n);
            let rate = |x: u64| x as f64 / n as f64;
            let loss = rate(s.dropped_loss);
            assert!(
                (loss - p.expected_loss()).abs() < 0.01,
                "{name}: loss {loss} vs {}",
                p.expected_loss()
            );
            // Duplication and corruption apply to datagrams that survived loss.
            let survived = (n - s.dropped_loss) as f64;
            let dup = s.duplicated as f64 / survived;
            let cor = s.corrupted as f64 / survived;
            assert!((dup - p.duplicate).abs() < 0.01, "{name}: dup {dup}");
            assert!((cor - p.corrupt).abs() < 0.01, "{name}: corrupt {cor}");
            assert_eq!(s.dropped_queue, 0, "{name}: queue drops at low rate");
        }
    }

    #[test]
    fn same_seed_same_fates() {
        let (a, b) = ips();
        let p = params("hostile", 0).unwrap();
        let run = || {
            let m = LinkModel::new(9, p.clone());
            (0..2000)
                .map(|i| m.transmit(Duration::from_millis(i), a, b, &[i as u8; 50]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
