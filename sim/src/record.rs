//! One run as a small flat record: what a sweep shard writes as a JSON line, what
//! `sim merge` reads back, and what the JUnit and HTML reports are made from. Unlike a
//! [`RunReport`] it holds no trace or pcap, so a 100 000-seed sweep fits in memory.

use std::collections::BTreeMap;

use crate::flatjson::{self, Value};
use crate::realtcp::TcpMode;
use crate::scenario::RunReport;

/// A run's outcome without its trace and capture.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Scenario name.
    pub scenario: String,
    /// Profile name.
    pub profile: String,
    /// Seed.
    pub seed: u64,
    /// Every check held and the body succeeded.
    pub ok: bool,
    /// Simulated seconds the run took (deterministic, unlike wall time).
    pub duration_secs: f64,
    /// Hash of the transition trace (same seed, same hash).
    pub trace_hash: String,
    /// The command line that replays the run.
    pub replay: String,
    /// Why it failed (empty when it passed).
    pub failure: String,
    /// Measured numbers, `name=value` separated by spaces.
    pub metrics: String,
    /// Datagrams the link model sent and dropped.
    pub datagrams_sent: u64,
    /// Datagrams dropped (loss, MTU, queue).
    pub datagrams_dropped: u64,
    /// The run's capture file, relative to the report, when one was written.
    pub pcap: Option<String>,
    /// Which TCP the run used (`ideal` when a line written before the field lacks it).
    pub tcp: TcpMode,
}

impl RunRecord {
    /// The record of a finished run.
    pub fn from_report(r: &RunReport) -> Self {
        let ok = r.ok();
        RunRecord {
            scenario: r.scenario.clone(),
            profile: r.profile.clone(),
            seed: r.seed,
            ok,
            duration_secs: r.sim_time.as_secs_f64(),
            trace_hash: r.trace_hash.clone(),
            replay: r.replay_line(),
            failure: if ok {
                String::new()
            } else {
                r.failure_summary()
            },
            metrics: r
                .metrics
                .iter()
                .map(|(k, v)| format!("{k}={}", v.replace(' ', "_")))
                .collect::<Vec<_>>()
                .join(" "),
            datagrams_sent: r.link.sent,
            datagrams_dropped: r.link.dropped(),
            pcap: None,
            tcp: r.tcp,
        }
    }

    /// "pass" or "fail".
    pub fn verdict(&self) -> &'static str {
        if self.ok {
            "pass"
        } else {
            "fail"
        }
    }

    /// A metric's value parsed as a number (a trailing unit such as `ms` is ignored).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.split(' ').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            if k != name {
                return None;
            }
            let num: String = v
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
                .collect();
            num.parse().ok()
        })
    }

    /// One JSON line (no newline).
    pub fn to_json_line(&self) -> String {
        let mut s = format!(
            "{{\"scenario\":{},\"profile\":{},\"seed\":{},\"verdict\":{},\"duration_secs\":{:.6},\"trace_hash\":{},\"replay\":{},\"failure\":{},\"metrics\":{},\"datagrams_sent\":{},\"datagrams_dropped\":{}",
            flatjson::quote(&self.scenario),
            flatjson::quote(&self.profile),
            self.seed,
            flatjson::quote(self.verdict()),
            self.duration_secs,
            flatjson::quote(&self.trace_hash),
            flatjson::quote(&self.replay),
            flatjson::quote(&self.failure),
            flatjson::quote(&self.metrics),
            self.datagrams_sent,
            self.datagrams_dropped,
        );
        if let Some(p) = &self.pcap {
            s.push_str(&format!(",\"pcap\":{}", flatjson::quote(p)));
        }
        s.push_str(&format!(",\"tcp\":{}", flatjson::quote(self.tcp.name())));
        s.push('}');
        s
    }

    /// Reads a line written by [`RunRecord::to_json_line`].
    pub fn from_json_line(line: &str) -> Result<Self, String> {
        let m = flatjson::parse(line)?;
        let s = |k: &str| -> Result<String, String> {
            match m.get(k) {
                Some(Value::Str(v)) => Ok(v.clone()),
                _ => Err(format!("missing string field {k:?}")),
            }
        };
        let n = |k: &str| -> Result<&str, String> {
            match m.get(k) {
                Some(Value::Num(v)) => Ok(v.as_str()),
                _ => Err(format!("missing number field {k:?}")),
            }
        };
        let int = |k: &str| -> Result<u64, String> {
            n(k)?
                .parse::<u64>()
                .map_err(|e| format!("field {k:?}: {e}"))
        };
        let ok = match s("verdict")?.as_str() {
            "pass" => true,
            "fail" => false,
            v => return Err(format!("verdict {v:?} is neither pass nor fail")),
        };
        Ok(RunRecord {
            scenario: s("scenario")?,
            profile: s("profile")?,
            seed: int("seed")?,
            ok,
            duration_secs: n("duration_secs")?
                .parse()
                .map_err(|e| format!("duration_secs: {e}"))?,
            trace_hash: s("trace_hash")?,
            replay: s("replay")?,
            failure: s("failure")?,
            metrics: s("metrics")?,
            datagrams_sent: int("datagrams_sent")?,
            datagrams_dropped: int("datagrams_dropped")?,
            pcap: match m.get("pcap") {
                Some(Value::Str(p)) => Some(p.clone()),
                _ => None,
            },
            tcp: match m.get("tcp") {
                Some(Value::Str(t)) => t.parse()?,
                _ => TcpMode::Ideal,
            },
        })
    }
}

/// Reads a file of JSON lines (blank lines skipped); errors name the line.
pub fn read_json_lines(text: &str) -> Result<Vec<RunRecord>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| RunRecord::from_json_line(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// The records as JUnit suites, one per scenario and profile (in name order), one case
/// per seed; a failing run's replay line is in its failure text.
pub fn junit_suites(records: &[RunRecord]) -> Vec<tunnelbed_junit::Suite> {
    let mut groups: BTreeMap<(&str, &str), Vec<&RunRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.scenario.as_str(), r.profile.as_str()))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((scenario, profile), mut runs)| {
            runs.sort_by_key(|r| r.seed);
            let cases = runs
                .iter()
                .map(|r| tunnelbed_junit::Case {
                    classname: format!("sim.{scenario}.{profile}"),
                    name: format!("{scenario} --profile {profile} --seed {}", r.seed),
                    time: r.duration_secs,
                    outcome: if r.ok {
                        tunnelbed_junit::Outcome::Pass
                    } else {
                        tunnelbed_junit::Outcome::Failure {
                            message: r.failure.clone(),
                            kind: "invariant".into(),
                            text: format!("{}\nreplay: {}", r.failure, r.replay),
                        }
                    },
                    system_out: Some(format!(
                        "trace hash {}; replay: {}{}",
                        r.trace_hash,
                        r.replay,
                        r.pcap
                            .as_ref()
                            .map(|p| format!("; pcap {p}"))
                            .unwrap_or_default()
                    )),
                })
                .collect();
            tunnelbed_junit::Suite {
                name: format!("{scenario} on {profile}"),
                time: runs.iter().map(|r| r.duration_secs).sum(),
                properties: vec![
                    ("scenario".into(), scenario.into()),
                    ("profile".into(), profile.into()),
                    ("time_is".into(), "simulated seconds".into()),
                ],
                cases,
            }
        })
        .collect()
}

/// The whole JUnit document for a set of runs.
pub fn junit_xml(title: &str, records: &[RunRecord]) -> String {
    tunnelbed_junit::to_xml(title, &junit_suites(records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seed: u64, ok: bool) -> RunRecord {
        RunRecord {
            scenario: "kcp-bulk".into(),
            profile: "swarm".into(),
            seed,
            ok,
            duration_secs: 1.25,
            trace_hash: "abc".into(),
            replay: format!("tunnelbed sim run kcp-bulk --seed {seed} --profile swarm"),
            failure: if ok {
                String::new()
            } else {
                "integrity: \"x\"".into()
            },
            metrics: "p50=3ms goodput=1.5".into(),
            datagrams_sent: 10,
            datagrams_dropped: 1,
            pcap: (seed == 2).then(|| "x.pcapng".into()),
            tcp: if seed == 2 {
                TcpMode::Real
            } else {
                TcpMode::Ideal
            },
        }
    }

    #[test]
    fn json_lines_round_trip() {
        let rs = vec![rec(1, true), rec(2, false)];
        let text: String = rs.iter().map(|r| r.to_json_line() + "\n").collect();
        assert_eq!(read_json_lines(&text).unwrap(), rs);
        assert_eq!(rs[0].metric("p50"), Some(3.0));
        assert_eq!(rs[0].metric("goodput"), Some(1.5));
        assert!(read_json_lines("{\"seed\":1}")
            .unwrap_err()
            .starts_with("line 1:"));
    }

    #[test]
    fn junit_has_one_case_per_run() {
        let x = junit_xml("t", &[rec(2, false), rec(1, true)]);
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("replay: tunnelbed sim run kcp-bulk --seed 2 --profile swarm"));
        assert!(x.find("--seed 1\"").unwrap() < x.find("--seed 2\"").unwrap());
    }
}
