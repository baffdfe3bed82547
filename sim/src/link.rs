//! The link model applied to every datagram before it reaches turmoil: loss (i.i.d. and
//! Gilbert-Elliott bursts), duplication, reordering through jitter, corruption, an MTU
//! limit, and a bandwidth cap with a bounded queue. Each direction of each host pair has
//! its own state and RNG (derived from the scenario seed and the pair), so one flow's
//! traffic never changes the fate of another's.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Two-state burst-loss model: in the bad state datagrams are lost with `loss_bad`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Chance per datagram to move good -> bad.
    pub p_good_to_bad: f64,
    /// Chance per datagram to move bad -> good.
    pub p_bad_to_good: f64,
    /// Loss probability while bad.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// Long-run share of datagrams seen in the bad state.
    pub fn bad_share(&self) -> f64 {
        let s = self.p_good_to_bad + self.p_bad_to_good;
        if s <= 0.0 {
            0.0
        } else {
            self.p_good_to_bad / s
        }
    }
}

/// Parameters of one direction of a link. Probabilities are per datagram.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkParams {
    /// One-way base latency.
    pub latency: Duration,
    /// Extra uniform random delay in `0..=jitter`; reorders datagrams.
    pub jitter: Duration,
    /// Independent loss probability (applies in the good state when `burst` is set).
    pub loss: f64,
    /// Optional burst loss on top of the i.i.d. figure.
    pub burst: Option<GilbertElliott>,
    /// Probability that a delivered datagram arrives twice.
    pub duplicate: f64,
    /// Probability that a datagram is corrupted in transit.
    pub corrupt: f64,
    /// When false (the default, as with real UDP checksums) a corrupted datagram is
    /// discarded by the receiver; when true it is delivered with flipped bits, to test
    /// decoders against hostile input.
    pub corrupt_delivered: bool,
    /// Largest UDP payload carried; larger datagrams are dropped (as with DF set).
    pub mtu: usize,
    /// Bandwidth cap in bytes per second (None: unlimited).
    pub bandwidth: Option<u64>,
    /// Queue in bytes in front of the bandwidth cap; tail drop beyond it.
    pub queue_limit: usize,
}

impl Default for LinkParams {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            corrupt: 0.0,
            corrupt_delivered: false,
            mtu: 1500,
            bandwidth: None,
            queue_limit: 256 * 1024,
        }
    }
}

impl LinkParams {
    /// The loss rate these parameters give in the long run (i.i.d. and burst combined).
    pub fn expected_loss(&self) -> f64 {
        match &self.burst {
            None => self.loss,
            Some(ge) => {
                let bad = ge.bad_share();
                (1.0 - bad) * self.loss + bad * ge.loss_bad
            }
        }
    }
}

/// Counters of what the model did, per run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered to the link.
    pub sent: u64,
    /// Datagrams handed to the receiver (duplicates included).
    pub delivered: u64,
    /// Lost by the loss model (i.i.d. or burst).
    pub dropped_loss: u64,
    /// Dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Dropped because the bandwidth queue was full.
    pub dropped_queue: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Corrupted in transit (discarded or delivered, per `corrupt_delivered`).
    pub corrupted: u64,
    /// Deliveries that waited longer than the base latency (jitter or queueing).
    pub delayed: u64,
}

impl LinkStats {
    /// Adds another run's (or direction's) counters.
    pub fn add(&mut self, o: &LinkStats) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.dropped_loss += o.dropped_loss;
        self.dropped_mtu += o.dropped_mtu;
        self.dropped_queue += o.dropped_queue;
        self.duplicated += o.duplicated;
        self.corrupted += o.corrupted;
        self.delayed += o.delayed;
    }

    /// Datagrams that did not arrive, for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_mtu + self.dropped_queue
    }
}

/// What happens to one copy of a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Extra delay beyond what turmoil adds (jitter plus queueing).
    pub extra_delay: Duration,
    /// Bytes to deliver (flipped bits when corrupted and delivered).
    pub payload: Vec<u8>,
}

struct Direction {
    rng: ChaCha8Rng,
    bad: bool,
    busy_until: Duration,
    stats: LinkStats,
}

/// The link model for a whole simulation: per-direction parameters and state.
#[derive(Clone)]
pub struct LinkModel {
    inner: Arc<Mutex<ModelInner>>,
}

struct ModelInner {
    seed: u64,
    default: LinkParams,
    overrides: BTreeMap<(IpAddr, IpAddr), LinkParams>,
    dirs: BTreeMap<(IpAddr, IpAddr), Direction>,
}

fn pair_seed(seed: u64, src: IpAddr, dst: IpAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in format!("{src}>{dst}").bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl LinkModel {
    /// A model where every direction uses `params`, with RNGs derived from `seed`.
    pub fn new(seed: u64, params: LinkParams) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ModelInner {
                seed,
                default: params,
                overrides: BTreeMap::new(),
                dirs: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ModelInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the parameters of one direction (`src` to `dst`).
    pub fn set_direction(&self, src: IpAddr, dst: IpAddr, params: LinkParams) {
        self.lock().overrides.insert((src, dst), params);
    }

    /// The parameters in force for one direction.
    pub fn params(&self, src: IpAddr, dst: IpAddr) -> LinkParams {
        let m = self.lock();
        m.overrides
            .get(&(src, dst))
            .cloned()
            .unwrap_or_else(|| m.default.clone())
    }

    /// Decides the fate of one datagram sent at `now`: zero, one or two deliveries.
    pub fn transmit(&self, now: Duration, src: IpAddr, dst: IpAddr, data: &[u8]) -> Vec<Delivery> {
        let mut m = self.lock();
        let p = m
            .overrides
            .get(&(src, dst))
            .cloned()
            .unwrap_or_else(|| m.default.clone());
        let seed = m.seed;
        let d = m.dirs.entry((src, dst)).or_insert_with(|| Direction {
            rng: ChaCha8Rng::seed_from_u64(pair_seed(seed, src, dst)),
            bad: false,
            busy_until: Duration::ZERO,
            stats: LinkStats::default(),
        });
        d.stats.sent += 1;
        // Draw every random number in a fixed order so one datagram's fate does not
        // depend on which branch the previous one took.
        let r_state: f64 = d.rng.gen();
        let r_loss: f64 = d.rng.gen();
        let r_corrupt: f64 = d.rng.gen();
        let r_dup: f64 = d.rng.gen();
        let r_jit1: f64 = d.rng.gen();
        let r_jit2: f64 = d.rng.gen();
        let r_pos: u64 = d.rng.gen();

        if data.len() > p.mtu {
            d.stats.dropped_mtu += 1;
            return Vec::new();
        }
        let loss_p = match &p.burst {
            Some(ge) => {
                d.bad = if d.bad {
                    r_state >= ge.p_bad_to_good
                } else {
                    r_state < ge.p_good_to_bad
                };
                if d.bad {
                    ge.loss_bad
                } else {
                    p.loss
                }
            }
            None => p.loss,
        };
        if r_loss < loss_p {
            d.stats.dropped_loss += 1;
            return Vec::new();
        }
        // Bandwidth: serialise behind earlier datagrams; tail-drop past the queue limit.
        let mut queue_delay = Duration::ZERO;
        if let Some(bw) = p.bandwidth.filter(|b| *b > 0) {
            let start = d.busy_until.max(now);
            let backlog = start - now;
            let backlog_bytes = (backlog.as_secs_f64() * bw as f64) as usize;
            if backlog_bytes + data.len() > p.queue_limit {
                d.stats.dropped_queue += 1;
                return Vec::new();
            }
            let tx = Duration::from_secs_f64(data.len() as f64 / bw as f64);
            d.busy_until = start + tx;
            queue_delay = d.busy_until - now;
        }
        let mut payload = data.to_vec();
        if r_corrupt < p.corrupt {
            d.stats.corrupted += 1;
            if !p.corrupt_delivered || payload.is_empty() {
                // The receiver's UDP checksum catches it: counted as corrupted, not lost.
                return Vec::new();
            }
            let bit = (r_pos % (payload.len() as u64 * 8)) as usize;
            payload[bit / 8] ^= 1 << (bit % 8);
        }
        let jitter = |r: f64| Duration::from_secs_f64(p.jitter.as_secs_f64() * r);
        let mut out = vec![Delivery {
            extra_delay: queue_delay + jitter(r_jit1),
            payload: payload.clone(),
        }];
        if r_dup < p.duplicate {
            d.stats.duplicated += 1;
            out.push(Delivery {
                extra_delay: queue_delay + jitter(r_jit2),
                payload,
            });
        }
        for o in &out {
            d.stats.delivered += 1;
            if !o.extra_delay.is_zero() {
                d.stats.delayed += 1;
            }
        }
        out
    }

    /// Totals over every direction.
    pub fn stats(&self) -> LinkStats {
        let m = self.lock();
        let mut s = LinkStats::default();
        for d in m.dirs.values() {
            s.add(&d.stats);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ips() -> (IpAddr, IpAddr) {
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        )
    }

    /// Over 100 000 datagrams the measured rates are within one percentage point of the
    /// parameters, for every named profile.
    #[test]
    fn measured_rates_match_profiles() {
        for name in crate::profile::NAMED {
            let p = crate::profile::params(name, 1).unwrap();
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
    fn mtu_and_queue_limits_drop() {
        let (a, b) = ips();
        let p = LinkParams {
            mtu: 100,
            bandwidth: Some(1000),
            queue_limit: 500,
            latency: Duration::ZERO,
            ..LinkParams::default()
        };
        let m = LinkModel::new(1, p);
        assert!(m.transmit(Duration::ZERO, a, b, &[0; 101]).is_empty());
        let mut queued = 0;
        for _ in 0..10 {
            if !m.transmit(Duration::ZERO, a, b, &[0; 100]).is_empty() {
                queued += 1;
            }
        }
        assert_eq!(queued, 5);
        let s = m.stats();
        assert_eq!((s.dropped_mtu, s.dropped_queue), (1, 5));
    }

    #[test]
    fn corrupt_delivered_flips_one_bit() {
        let (a, b) = ips();
        let p = LinkParams {
            corrupt: 1.0,
            corrupt_delivered: true,
            ..LinkParams::default()
        };
        let m = LinkModel::new(3, p);
        let d = m.transmit(Duration::ZERO, a, b, &[0u8; 64]);
        assert_eq!(d.len(), 1);
        let ones: u32 = d[0].payload.iter().map(|x| x.count_ones()).sum();
        assert_eq!(ones, 1);
    }

    #[test]
    fn same_seed_same_fates() {
        let (a, b) = ips();
        let p = crate::profile::params("hostile", 0).unwrap();
        let run = || {
            let m = LinkModel::new(9, p.clone());
            (0..2000)
                .map(|i| m.transmit(Duration::from_millis(i), a, b, &[i as u8; 50]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
