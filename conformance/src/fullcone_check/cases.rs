//! The `check fullcone` cases (RFC 4787 behaviour tests T1-T6, ids `FULLCONE-<AREA>-<RULE>`)
//! and the NAT type they add up to. T1-T4 read one [`Survey`]; T5 and T6 run their own
//! associations and need the proxy's mapping timeout or an idle time to be given.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::survey::Survey;
use crate::framework::{self, Level, Outcome, Verdict};

/// What a case reads or runs.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    /// Judged from the T1-T4 survey.
    Survey(fn(&Survey) -> Outcome),
    /// T5: outbound traffic refreshes a mapping (needs the proxy's timeout).
    Refresh,
    /// T6: a mapping survives an idle time (needs `--idle`).
    Idle,
}

/// One case.
pub type Case = framework::Case<Body>;

macro_rules! case {
    ($id:literal, $clause:literal, $body:expr) => {
        Case {
            id: $id,
            level: Level::Must,
            source: "RFC 4787",
            clause: $clause,
            differs: None,
            body: $body,
        }
    };
}

/// Every case, in report order.
pub fn all() -> Vec<Case> {
    vec![
        case!("FULLCONE-MAP-ADDRESS",
            "T1: a new destination address is sent from the same external address:port (endpoint-independent mapping, REQ-1)",
            Body::Survey(map_address)),
        case!("FULLCONE-MAP-PORT",
            "T4: a new port on a contacted address is sent from the same external port (no port dependence); port preservation reported",
            Body::Survey(map_port)),
        case!("FULLCONE-FILTER-ADDRESS",
            "T2: a datagram from an address the application never contacted reaches it (endpoint-independent filtering, REQ-8)",
            Body::Survey(filter_address)),
        case!("FULLCONE-FILTER-SOURCE",
            "T2: that datagram reaches the application with its true source address",
            Body::Survey(filter_source)),
        case!("FULLCONE-FILTER-PORT",
            "T2: a datagram from a contacted address but a new port reaches the application, with its true source",
            Body::Survey(filter_port)),
        case!("FULLCONE-REPLY-PORT",
            "T3: the application's answer to that unsolicited source leaves from the mapping it wrote to",
            Body::Survey(reply_port)),
        case!("FULLCONE-TIMER-REFRESH",
            "T5: outbound traffic refreshes the mapping: sending every timeout/4 for 2x the timeout keeps one mapping, inbound still delivered (REQ-6)",
            Body::Refresh),
        case!("FULLCONE-TIMER-FLOOR",
            "T6: a mapping idle for --idle seconds still works both ways (REQ-5: a timer under 120 s is not allowed)",
            Body::Idle),
    ]
}

fn need(v: &Survey) -> Result<(), String> {
    match &v.error {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

fn show(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "nothing".into())
}

fn map_address(v: &Survey) -> Outcome {
    need(v)?;
    let (Some(m1), Some(m2)) = (v.m1, v.m2) else {
        return Err(format!("P2 {} got nothing through the proxy", show(v.p2)));
    };
    if m1 == m2 {
        Ok(Verdict::Pass(format!(
            "P1 {} and P2 {} both saw {m1}",
            show(v.p1),
            show(v.p2)
        )))
    } else {
        Err(format!(
            "P1 {} saw {m1}, P2 {} (another address) saw {m2}",
            show(v.p1),
            show(v.p2)
        ))
    }
}

fn map_port(v: &Survey) -> Outcome {
    need(v)?;
    let (Some(m1), Some(m3)) = (v.m1, v.m3) else {
        return Err(format!("P3 {} got nothing through the proxy", show(v.p3)));
    };
    let preserved = match v.app {
        Some(a) if a.port() == m1.port() => "port preserved",
        Some(_) => "port not preserved",
        None => "application port unknown",
    };
    if m1 == m3 {
        Ok(Verdict::Pass(format!(
            "P1 {} and P3 {} (same address) both saw {m1}; application {} -> {m1}: {preserved}",
            show(v.p1),
            show(v.p3),
            show(v.app)
        )))
    } else {
        Err(format!(
            "P1 {} saw {m1}, P3 {} (same address, other port) saw {m3}; {preserved}",
            show(v.p1),
            show(v.p3)
        ))
    }
}

fn filter_address(v: &Survey) -> Outcome {
    need(v)?;
    match v.q_delivered_as {
        Some(as_) => Ok(Verdict::Pass(format!(
            "Q {} wrote to {}: delivered (as from {as_})",
            show(v.q),
            show(v.m1)
        ))),
        None => Err(format!(
            "Q {} wrote to {}: never delivered",
            show(v.q),
            show(v.m1)
        )),
    }
}

fn filter_source(v: &Survey) -> Outcome {
    need(v)?;
    match v.q_delivered_as {
        None => Ok(Verdict::NotApplicable(
            "Q's datagram was not delivered (FULLCONE-FILTER-ADDRESS)".into(),
        )),
        Some(a) if Some(a) == v.q => Ok(Verdict::Pass(format!("delivered as from {a}"))),
        Some(a) => Err(format!(
            "Q {} was delivered as from {a}{}",
            show(v.q),
            if Some(a) == v.p1 {
                " (P1, the destination of that mapping: the application is told the wrong sender)"
            } else {
                ""
            }
        )),
    }
}

fn filter_port(v: &Survey) -> Outcome {
    need(v)?;
    match v.r_delivered_as {
        None => Err(format!(
            "R {} (P1's address, new port) wrote to {}: never delivered",
            show(v.r),
            show(v.m1)
        )),
        Some(a) if Some(a) == v.r => Ok(Verdict::Pass(format!(
            "R {} delivered with its own address",
            show(v.r)
        ))),
        Some(a) => Err(format!("R {} delivered, but as from {a}", show(v.r))),
    }
}

fn reply_port(v: &Survey) -> Outcome {
    need(v)?;
    match (v.reply_from, v.m1) {
        (Some(f), Some(m1)) if f == m1 => Ok(Verdict::Pass(format!(
            "the answer to Q {} left from {m1}",
            show(v.q)
        ))),
        (Some(f), m1) => Err(format!(
            "the answer to Q {} left from {f}; Q had written to {}",
            show(v.q),
            show(m1)
        )),
        (None, _) => Err(format!("the answer to Q {} never arrived", show(v.q))),
    }
}

/// RFC 4787 mapping behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Same external port for every destination.
    EndpointIndependent,
    /// Same for one address, new for another.
    AddressDependent,
    /// New for every destination address and port.
    AddressAndPortDependent,
}

/// RFC 4787 filtering behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    /// Anyone may write to a mapping.
    EndpointIndependent,
    /// Only contacted addresses (any port).
    AddressDependent,
    /// Only contacted address:port pairs.
    AddressAndPortDependent,
}

/// What the survey adds up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Mapping.
    pub mapping: Mapping,
    /// Filtering.
    pub filtering: Filtering,
    /// Whether every delivered datagram carried its true source.
    pub true_sources: bool,
}

impl Behaviour {
    /// The classic (RFC 3489) name, when the pair has one.
    pub fn name(&self) -> &'static str {
        use Filtering as F;
        use Mapping as M;
        match (self.mapping, self.filtering) {
            (M::EndpointIndependent, F::EndpointIndependent) => "full cone",
            (M::EndpointIndependent, F::AddressDependent) => "restricted cone",
            (M::EndpointIndependent, F::AddressAndPortDependent) => "port-restricted cone",
            (_, F::AddressAndPortDependent) | (_, F::AddressDependent) => "symmetric",
            (_, F::EndpointIndependent) => {
                "no classic name (endpoint-dependent mapping, endpoint-independent filtering)"
            }
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = match self.mapping {
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::AddressDependent => "address-dependent",
            Mapping::AddressAndPortDependent => "address-and-port-dependent",
        };
        let fl = match self.filtering {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
        };
        write!(
            f,
            "{}: mapping {m}, filtering {fl}; {}",
            self.name(),
            if self.true_sources {
                "sources reported truly"
            } else {
                "sources MISREPORTED"
            }
        )
    }
}

/// The behaviour the survey shows, if it got that far.
pub fn classify(v: &Survey) -> Option<Behaviour> {
    if v.error.is_some() {
        return None;
    }
    let m1 = v.m1?;
    let mapping = if v.m2 == Some(m1) && v.m3 == Some(m1) {
        Mapping::EndpointIndependent
    } else if v.m3 == Some(m1) {
        Mapping::AddressDependent
    } else {
        Mapping::AddressAndPortDependent
    };
    let filtering = if v.q_delivered_as.is_some() {
        Filtering::EndpointIndependent
    } else if v.r_delivered_as.is_some() {
        Filtering::AddressDependent
    } else {
        Filtering::AddressAndPortDependent
    };
    let true_sources = v.q_delivered_as.is_none_or(|a| Some(a) == v.q)
        && v.r_delivered_as.is_none_or(|a| Some(a) == v.r);
    Some(Behaviour {
        mapping,
        filtering,
        true_sources,
    })
}

/// The timer settings T5 and T6 need.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timers {
    /// The proxy's mapping timeout (T5 runs when set).
    pub mapping_timeout: Option<Duration>,
    /// How long T6 leaves a mapping idle (T6 runs when set).
    pub idle: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn full() -> Survey {
        Survey {
            app: a("127.0.0.1:5000"),
            p1: a("127.0.0.2:1"),
            p2: a("127.0.0.3:2"),
            p3: a("127.0.0.2:3"),
            q: a("127.0.0.4:4"),
            r: a("127.0.0.2:5"),
            m1: a("127.0.0.1:9000"),
            m2: a("127.0.0.1:9000"),
            m3: a("127.0.0.1:9000"),
            q_delivered_as: a("127.0.0.4:4"),
            r_delivered_as: a("127.0.0.2:5"),
            reply_from: a("127.0.0.1:9000"),
            error: None,
        }
    }

    #[test]
    fn every_case_passes_a_full_cone_and_the_class_says_so() {
        let v = full();
        for c in all() {
            if let Body::Survey(f) = c.body {
                assert!(matches!(f(&v), Ok(Verdict::Pass(_))), "{}", c.id);
            }
        }
        assert_eq!(classify(&v).unwrap().name(), "full cone");
    }

    #[test]
    fn each_departure_fails_its_case() {
        let mut v = full();
        v.m2 = a("127.0.0.1:9001");
        assert!(map_address(&v).is_err());
        assert_eq!(classify(&v).unwrap().mapping, Mapping::AddressDependent);
        v.m3 = a("127.0.0.1:9002");
        assert!(map_port(&v).is_err());
        let mut v = full();
        v.q_delivered_as = v.p1;
        assert!(filter_source(&v).unwrap_err().contains("wrong sender"));
        assert!(!classify(&v).unwrap().true_sources);
        v.q_delivered_as = None;
        assert!(filter_address(&v).is_err());
        assert!(matches!(filter_source(&v), Ok(Verdict::NotApplicable(_))));
        assert_eq!(classify(&v).unwrap().name(), "restricted cone");
        v.r_delivered_as = None;
        assert!(filter_port(&v).is_err());
        assert_eq!(classify(&v).unwrap().name(), "port-restricted cone");
        v.reply_from = a("127.0.0.1:9005");
        assert!(reply_port(&v).is_err());
        v.error = Some("x".into());
        assert!(classify(&v).is_none() && map_address(&v).is_err());
    }
}
