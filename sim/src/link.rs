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

/// Simulated time in which [`GilbertElliott`]'s transition chances apply.
pub const BURST_STEP: Duration = Duration::from_millis(10);

/// Two-state burst-loss model: in the bad state datagrams are lost with `loss_bad`.
///
/// The state moves in simulated time, not per datagram: a burst lasts about as long
/// whether the direction carries a thousand datagrams a second or one every ten
/// seconds (as on a real fading or congested link). Observed once per [`BURST_STEP`],
/// the state is exactly a two-state Markov chain with the chances below; between two
/// datagrams `dt` apart the model uses that chain's continuous-time form, so any `dt`
/// works and the long-run share of time spent bad is [`GilbertElliott::bad_share`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Chance per [`BURST_STEP`] to move good -> bad.
    pub p_good_to_bad: f64,
    /// Chance per [`BURST_STEP`] to move bad -> good.
    pub p_bad_to_good: f64,
    /// Loss probability while bad.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// Long-run share of time (and so of datagrams) in the bad state.
    pub fn bad_share(&self) -> f64 {
        let s = self.p_good_to_bad + self.p_bad_to_good;
        if s <= 0.0 {
            0.0
        } else {
            self.p_good_to_bad / s
        }
    }

    /// The chance to be bad `dt` after a moment when the state was `bad`: the share the
    /// chain tends to, plus what is left of the starting state after `dt` (it fades by
    /// the factor `1 - p_good_to_bad - p_bad_to_good` per [`BURST_STEP`]).
    pub fn p_bad_after(&self, bad: bool, dt: Duration) -> f64 {
        let share = self.bad_share();
        let start = if bad { 1.0 } else { 0.0 };
        let fade = (1.0 - self.p_good_to_bad - self.p_bad_to_good).clamp(0.0, 1.0);
        let steps = dt.as_secs_f64() / BURST_STEP.as_secs_f64();
        let left = if steps <= 0.0 { 1.0 } else { fade.powf(steps) };
        share + (start - share) * left
    }

    /// Mean time a bad period lasts (None when the state never leaves bad or never
    /// enters it).
    pub fn mean_bad(&self) -> Option<Duration> {
        self.mean_stay(self.p_bad_to_good)
    }

    /// Mean time a good period lasts (None as for [`GilbertElliott::mean_bad`]).
    pub fn mean_good(&self) -> Option<Duration> {
        self.mean_stay(self.p_good_to_bad)
    }

    /// Mean stay in a state left with chance `p_leave` per step, in the continuous-time
    /// chain: the leaving rate is `p_leave`'s share of the total fading rate.
    fn mean_stay(&self, p_leave: f64) -> Option<Duration> {
        let sum = self.p_good_to_bad + self.p_bad_to_good;
        let fade = 1.0 - sum;
        if p_leave <= 0.0 || sum <= 0.0 || fade <= 0.0 {
            return None;
        }
        let total_rate = -fade.ln() / BURST_STEP.as_secs_f64();
        let rate = total_rate * p_leave / sum;
        Some(Duration::from_secs_f64(1.0 / rate))
    }
}

/// Parameters of one direction of a link. Probabilities are per datagram, except the
/// burst state's changes (per [`BURST_STEP`] of simulated time).
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
    /// When the burst state was last decided (the start of the run at first).
    state_at: Duration,
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
            state_at: Duration::ZERO,
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
                // The state evolves with time since it was last decided, so datagrams
                // sent together share it and sparse ones meet it afresh.
                let dt = now.saturating_sub(d.state_at);
                d.bad = r_state < ge.p_bad_after(d.bad, dt);
                d.state_at = d.state_at.max(now);
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
pub(crate) mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Two host addresses for link tests (also profile.rs's).
    pub(crate) fn ips() -> (IpAddr, IpAddr) {
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        )
    }

    /// Observed once per step, the time-based chain is the per-step chain the profile
    /// numbers describe.
    #[test]
    fn burst_chain_per_step_is_the_profile_chain() {
        let ge = GilbertElliott {
            p_good_to_bad: 0.02,
            p_bad_to_good: 0.25,
            loss_bad: 0.5,
        };
        assert!((ge.p_bad_after(true, BURST_STEP) - 0.75).abs() < 1e-12);
        assert!((ge.p_bad_after(false, BURST_STEP) - 0.02).abs() < 1e-12);
        assert_eq!(ge.p_bad_after(true, Duration::ZERO), 1.0);
        assert_eq!(ge.p_bad_after(false, Duration::ZERO), 0.0);
        let far = ge.p_bad_after(true, Duration::from_secs(10));
        assert!((far - ge.bad_share()).abs() < 1e-9, "{far}");
    }

    /// Losses of a burst-only link (every datagram lost while bad), sent every `gap`.
    fn burst_losses(gap: Duration, n: u64) -> (GilbertElliott, Vec<bool>) {
        let ge = GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.2,
            loss_bad: 1.0,
        };
        let p = LinkParams {
            burst: Some(ge),
            ..LinkParams::default()
        };
        let m = LinkModel::new(11, p);
        let (a, b) = ips();
        let lost = (0..n)
            .map(|i| m.transmit(gap * i as u32, a, b, &[0u8; 40]).is_empty())
            .collect();
        (ge, lost)
    }

    /// A burst lasts a stretch of simulated time, whatever the packet rate: with one
    /// datagram per 10 s each meets the state afresh (a loss says nothing about the next:
    /// with the state moved per datagram, the next was lost 80% of the time), and with
    /// one per millisecond the runs of losses last the mean bad time (with the state
    /// moved per datagram they lasted 5 datagrams, 5 ms).
    #[test]
    fn bursts_last_in_time_not_in_datagrams() {
        let (ge, sparse) = burst_losses(Duration::from_secs(10), 40_000);
        let share = ge.bad_share();
        let after_loss: Vec<bool> = sparse.windows(2).filter(|w| w[0]).map(|w| w[1]).collect();
        let again = after_loss.iter().filter(|l| **l).count() as f64 / after_loss.len() as f64;
        assert!(after_loss.len() > 1000, "{} losses", after_loss.len());
        assert!(
            (again - share).abs() < 0.02,
            "loss after a loss {again}, share {share}"
        );

        let (ge, dense) = burst_losses(Duration::from_millis(1), 400_000);
        let mut runs = Vec::new();
        let mut run = 0u64;
        for l in &dense {
            if *l {
                run += 1;
            } else if run > 0 {
                runs.push(run);
                run = 0;
            }
        }
        let mean_ms = runs.iter().sum::<u64>() as f64 / runs.len() as f64;
        let want_ms = ge.mean_bad().unwrap().as_secs_f64() * 1000.0;
        assert!(runs.len() > 100, "{} bursts", runs.len());
        assert!(
            (mean_ms - want_ms).abs() < 0.15 * want_ms,
            "mean burst {mean_ms} ms, model {want_ms} ms"
        );
        let loss = dense.iter().filter(|l| **l).count() as f64 / dense.len() as f64;
        assert!((loss - ge.bad_share()).abs() < 0.01, "loss {loss}");
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
}
