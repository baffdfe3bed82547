//! Scenarios: named, seeded simulations with invariant checks. A scenario function gets a
//! [`Ctx`] (seed, link parameters, world, checks), builds its turmoil simulation with
//! [`Ctx::builder`], drives it with [`Ctx::drive`], and records checks.

use std::fmt;
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::fault::{FaultAction, FaultPlan};
use crate::ledger::FlowLedger;
use crate::link::{LinkModel, LinkParams, LinkStats};
use crate::profile;
use crate::realtcp::TcpMode;
use crate::sabotage::Sabotage;
use crate::simnet::SimWorld;

/// Bytes that pass before the data-path sabotage drops a chunk: past most handshakes, so
/// it usually hits application data, and few enough for the smallest scenario.
const DATA_FAULT_AFTER: u64 = 2_000;

/// A registered scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// Name used on the command line.
    pub name: &'static str,
    /// One line on what it exercises.
    pub about: &'static str,
    /// Profiles `sim all` runs it on.
    pub profiles: &'static [&'static str],
    /// Seeds `sim all` runs per profile.
    pub default_seeds: u64,
    /// The body.
    pub run: fn(&mut Ctx) -> anyhow::Result<()>,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish()
    }
}

/// How to run one scenario once.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Seed for every random choice in the run.
    pub seed: u64,
    /// Link profile name (see [`profile::ALL`]).
    pub profile: String,
    /// Record a pcapng capture.
    pub capture: bool,
    /// Deliberately break an invariant (to prove the checks and the sweep report
    /// failures); acts on seeds that are multiples of 4 (see [`crate::sabotage`]).
    pub sabotage: Option<Sabotage>,
    /// Which TCP the hosts use: turmoil's ideal streams or real TCP over the link model.
    pub tcp: TcpMode,
}

/// One invariant's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Invariant name, e.g. `integrity`, `no-leak`, `liveness`.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// Numbers or the reason it failed.
    pub detail: String,
}

/// The context a scenario body runs with.
pub struct Ctx {
    /// The run's seed.
    pub seed: u64,
    /// Profile name.
    pub profile: String,
    /// Link parameters drawn for this run.
    pub params: LinkParams,
    /// Link model, capture and trace shared by the hosts.
    pub world: SimWorld,
    /// Byte accounting per flow.
    pub ledger: FlowLedger,
    /// Scenario-level RNG (sizes, timings), from the seed.
    pub rng: ChaCha8Rng,
    /// The sabotage asked for, if any (it acts only when [`Sabotage::applies_to`] the seed).
    pub sabotage: Option<Sabotage>,
    /// Seed for turmoil's own RNG (the run's seed, unless the determinism sabotage salted it).
    turmoil_seed: u64,
    checks: Vec<Check>,
    metrics: Vec<(String, String)>,
    elapsed: Duration,
}

/// Fixed simulation epoch (2026-01-01T00:00:00Z) so wall-clock reads inside the sim replay.
pub fn sim_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + tunnelbed_netio::capture::CAPTURE_EPOCH
}

impl Ctx {
    /// A context for `cfg`; fails on an unknown profile.
    pub fn new(cfg: &RunConfig) -> anyhow::Result<Self> {
        let params = profile::params(&cfg.profile, cfg.seed).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown profile {:?} (known: {})",
                cfg.profile,
                profile::ALL.join(", ")
            )
        })?;
        let active = cfg.sabotage.filter(|_| Sabotage::applies_to(cfg.seed));
        // The determinism sabotage: an unseeded salt in every RNG of the run.
        let salt = match active {
            Some(Sabotage::Determinism) => crate::sabotage::unseeded_salt(),
            _ => 0,
        };
        let link = LinkModel::new(cfg.seed ^ salt, params.clone());
        let mut world = SimWorld::new(link, cfg.capture);
        world.set_tcp_mode(cfg.tcp, cfg.seed ^ salt);
        if active == Some(Sabotage::DataPath) {
            world.set_data_fault(DATA_FAULT_AFTER);
        }
        let ledger = FlowLedger::new();
        if active == Some(Sabotage::Leak) {
            ledger.keep_first_close_open();
        }
        Ok(Self {
            seed: cfg.seed,
            profile: cfg.profile.clone(),
            params,
            world,
            ledger,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ salt),
            sabotage: cfg.sabotage,
            turmoil_seed: cfg.seed ^ salt,
            checks: Vec::new(),
            metrics: Vec::new(),
            elapsed: Duration::ZERO,
        })
    }

    /// A turmoil builder seeded and configured from this run: fixed epoch, latency from
    /// the profile (jitter halved onto streams), large socket buffers, `limit` of virtual time.
    pub fn builder(&self, limit: Duration) -> turmoil::Builder {
        let mut b = turmoil::Builder::new();
        b.rng_seed(self.turmoil_seed)
            .epoch(sim_epoch())
            .simulation_duration(limit)
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(self.params.latency)
            .max_message_latency(self.params.latency + self.params.jitter / 2)
            .udp_capacity(1 << 16)
            .tcp_capacity(1 << 14);
        b
    }

    /// Whether this run must spoil its data on purpose (the `integrity` sabotage, which
    /// each scenario implements its own way): `--sabotage integrity` was given and the
    /// seed is a multiple of 4, so a sweep shows some failing seeds among passing ones.
    /// The other kinds act without the scenario's help (see [`crate::sabotage`]).
    pub fn sabotaged(&self) -> bool {
        self.active_sabotage() == Some(Sabotage::Integrity)
    }

    /// The sabotage acting on this run, if any.
    pub fn active_sabotage(&self) -> Option<Sabotage> {
        self.sabotage.filter(|_| Sabotage::applies_to(self.seed))
    }

    /// Records an invariant's verdict.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        });
    }

    /// Records a measured number for the report (e.g. goodput).
    pub fn metric(&mut self, name: &str, value: impl fmt::Display) {
        self.metrics.push((name.to_string(), value.to_string()));
    }

    /// Checks every flow in the ledger: intact (same bytes and hash) and closed.
    pub fn check_flows(&mut self, expect_flows: usize) {
        self.check_flows_except(expect_flows, &[]);
    }

    /// [`Ctx::check_flows`] leaving out the flows named in `excused` (streams the verdict
    /// explained otherwise); `expect_flows` counts them too, and they are taken off it.
    pub fn check_flows_except(&mut self, expect_flows: usize, excused: &[String]) {
        let all = self.ledger.results();
        let results: Vec<_> = all.iter().filter(|r| !excused.contains(&r.name)).collect();
        let expect_flows = expect_flows.saturating_sub(excused.len());
        let broken: Vec<_> = results.iter().filter(|r| !r.intact).collect();
        let open: Vec<_> = results.iter().filter(|r| !r.closed).collect();
        let left_out = if excused.is_empty() {
            String::new()
        } else {
            format!(" ({} flows of excused streams left out)", excused.len())
        };
        let bytes: u64 = results.iter().map(|r| r.received_bytes).sum();
        self.check(
            "integrity",
            broken.is_empty() && results.len() == expect_flows,
            if broken.is_empty() && results.len() == expect_flows {
                format!(
                    "{} flows, {} bytes, hashes match{left_out}",
                    results.len(),
                    bytes
                )
            } else if broken.is_empty() {
                // Every flow that exists matches, but some never started (or extra ones
                // did): say so rather than "hashes match" under a FAIL.
                format!(
                    "{} flows where {expect_flows} were expected ({} bytes; the flows there are match)",
                    results.len(),
                    bytes
                )
            } else {
                let r = broken[0];
                format!(
                    "{} of {} flows differ; first {}: sent {} B, received {} B",
                    broken.len(),
                    results.len(),
                    r.name,
                    r.sent_bytes,
                    r.received_bytes
                )
            },
        );
        self.check(
            "no-leak",
            open.is_empty(),
            if open.is_empty() {
                "every flow closed".to_string()
            } else {
                format!("{} flows left open, first {}", open.len(), open[0].name)
            },
        );
    }

    /// Runs `sim` to completion, applying `faults` at their times. Then checks liveness:
    /// the clients must finish within `deadline` after the last fault. Returns the
    /// simulated time the run took.
    pub fn drive(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        faults: &FaultPlan,
        deadline: Duration,
    ) -> Duration {
        if self.active_sabotage() == Some(Sabotage::Liveness) {
            // The liveness sabotage: a client that is still busy when the deadline after
            // the last fault has passed (it ends a second later, so the run is not spun
            // out to its time limit).
            let late = faults.quiet_after() + deadline + Duration::from_secs(1);
            sim.client("sabotage-late", async move {
                tokio::time::sleep(late).await;
                Ok(())
            });
        }
        let mut next = 0;
        let outcome = loop {
            while next < faults.faults.len() && faults.faults[next].at <= sim.elapsed() {
                apply(sim, &self.world, &faults.faults[next].action);
                next += 1;
            }
            match sim.step() {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        let elapsed = sim.elapsed();
        self.elapsed = elapsed;
        let quiet = faults.quiet_after();
        match outcome {
            Ok(()) => {
                let after = elapsed.saturating_sub(quiet);
                let detail = if elapsed < quiet {
                    format!(
                        "finished at {:.3}s, before the faults ended ({:.3}s)",
                        elapsed.as_secs_f64(),
                        quiet.as_secs_f64()
                    )
                } else {
                    format!(
                        "finished {:.3}s after the last fault (deadline {:.1}s)",
                        after.as_secs_f64(),
                        deadline.as_secs_f64()
                    )
                };
                self.check("liveness", after <= deadline, detail);
            }
            Err(e) => {
                self.check("liveness", false, format!("simulation failed: {e}"));
            }
        }
        elapsed
    }
}

fn apply(sim: &mut turmoil::Sim<'_>, world: &SimWorld, a: &FaultAction) {
    match a {
        FaultAction::Partition(x, y) => sim.partition(x.as_str(), y.as_str()),
        FaultAction::PartitionOneway(x, y) => sim.partition_oneway(x.as_str(), y.as_str()),
        FaultAction::Repair(x, y) => sim.repair(x.as_str(), y.as_str()),
        FaultAction::Hold(x, y) => sim.hold(x.as_str(), y.as_str()),
        FaultAction::Release(x, y) => sim.release(x.as_str(), y.as_str()),
        // Both drop the host's tasks: close its streams in a fixed order (see
        // `simnet::SimWorld::crash_guard`).
        FaultAction::Crash(h) => {
            world.begin_crash(h);
            sim.crash(h.as_str());
            world.end_crash();
        }
        FaultAction::Bounce(h) => {
            world.begin_crash(h);
            sim.bounce(h.as_str());
            world.end_crash();
        }
    }
}

/// Everything one run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Profile name.
    pub profile: String,
    /// Invariant verdicts.
    pub checks: Vec<Check>,
    /// Measured numbers.
    pub metrics: Vec<(String, String)>,
    /// Link model counters.
    pub link: LinkStats,
    /// Hash of the transition trace.
    pub trace_hash: String,
    /// The rendered transition trace.
    pub trace: String,
    /// The pcapng bytes, when captured.
    pub pcap: Option<Vec<u8>>,
    /// Simulated time the run took.
    pub sim_time: Duration,
    /// A scenario error (setup failed or a host returned an error).
    pub error: Option<String>,
    /// The run was asked to break an invariant on purpose.
    pub sabotage: Option<Sabotage>,
    /// Which TCP the run used.
    pub tcp: TcpMode,
}

impl RunReport {
    /// True when the body succeeded and every check held (and there was at least one).
    pub fn ok(&self) -> bool {
        self.error.is_none() && !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// The one command line that replays this run exactly.
    pub fn replay_line(&self) -> String {
        format!(
            "tunnelbed sim run {} --seed {} --profile {}{}{}",
            self.scenario,
            self.seed,
            self.profile,
            match self.tcp {
                TcpMode::Ideal => String::new(),
                t => format!(" --tcp {t}"),
            },
            self.sabotage
                .map(|k| format!(" --sabotage {k}"))
                .unwrap_or_default()
        )
    }

    /// The first failure in one line, for sweeps.
    pub fn failure_summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("error: {e}");
        }
        self.checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .unwrap_or_else(|| "no checks recorded".into())
    }
}

/// Runs `scenario` once with `cfg`.
pub fn run(scenario: &Scenario, cfg: &RunConfig) -> anyhow::Result<RunReport> {
    let mut ctx = Ctx::new(cfg)?;
    let error = (scenario.run)(&mut ctx).err().map(|e| format!("{e:#}"));
    let trace = ctx.world.trace.render();
    Ok(RunReport {
        scenario: scenario.name.to_string(),
        seed: cfg.seed,
        profile: cfg.profile.clone(),
        checks: ctx.checks,
        metrics: ctx.metrics,
        link: ctx.world.link.stats(),
        trace_hash: tunnelbed_netio::trace::hash_text(&trace),
        trace,
        pcap: ctx.world.capture.as_ref().map(|c| c.to_bytes()),
        sim_time: ctx.elapsed,
        error,
        sabotage: cfg.sabotage,
        tcp: cfg.tcp,
    })
}

/// The outcome of running one configuration twice.
#[derive(Clone, Debug)]
pub struct Determinism {
    /// Both runs gave the same trace hash.
    pub same_trace: bool,
    /// Both runs gave the same pcap bytes.
    pub same_pcap: bool,
    /// The two trace hashes.
    pub hashes: (String, String),
    /// The two pcap sizes.
    pub pcap_sizes: (usize, usize),
}

impl Determinism {
    /// Both the trace and the capture replayed byte for byte.
    pub fn ok(&self) -> bool {
        self.same_trace && self.same_pcap
    }
}

/// Runs `cfg` twice (capturing) and compares trace hashes and pcap bytes.
pub fn check_determinism(
    scenario: &Scenario,
    cfg: &RunConfig,
) -> anyhow::Result<(RunReport, Determinism)> {
    let cfg = RunConfig {
        capture: true,
        ..cfg.clone()
    };
    let a = run(scenario, &cfg)?;
    let b = run(scenario, &cfg)?;
    let pa = a.pcap.clone().unwrap_or_default();
    let pb = b.pcap.clone().unwrap_or_default();
    let d = Determinism {
        same_trace: a.trace_hash == b.trace_hash,
        same_pcap: pa == pb,
        hashes: (a.trace_hash.clone(), b.trace_hash.clone()),
        pcap_sizes: (pa.len(), pb.len()),
    };
    Ok((a, d))
}
